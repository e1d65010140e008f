"""How ``nbgrader autograde`` runs a submitted notebook in this course: contained, and without
the demonstrations.

``ContainedExecute`` is nbgrader's own ``Execute`` preprocessor (the course config puts it in
``Autograde.autograde_preprocessors`` in its place) with three additions:

* **a wall-clock limit per notebook** (``notebook_timeout``, seconds, from the kernel's start):
  each cell may run only as long as the notebook has left. A cell that runs past it is
  interrupted (nbgrader records ``CellTimeoutError`` in it); every later cell is not run.
* **a memory limit per kernel** (``memory_limit_gib``): the kernel's data segment (``RLIMIT_DATA``,
  which on Linux counts the heap and every private anonymous mapping, where PyTorch allocates)
  is capped, so a runaway allocation raises ``MemoryError`` (or PyTorch's "can't allocate
  memory") in the student's cell instead of exhausting the machine.
* **a kernel that dies** (killed, ``os._exit``, a crash) ends the notebook there instead of failing
  the whole submission: the cell gets an error saying so and every later cell is not run.

A cell that is not run gets an error output ("not run: ..."), so nbgrader scores it zero: a
test cell without an error output would otherwise count as passed. Everything that ran before
keeps its score. Each event is logged as one line starting with ``CONTAINED`` (the parallel
command collects them into its report).

It also skips the cells tagged ``skip-when-grading``: demonstrations whose results do not depend
on the student's code (the notebooks' comparisons of library methods, their figures). They
still run for a student studying alone, and nbval runs them in CI; no graded cell depends on
them (``tests/test_classroom.py`` grades the solutions with them skipped and asserts full marks
and no error anywhere).
"""
from __future__ import annotations

import json
import math
import resource
import time

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.notebooknode import NotebookNode
from traitlets import Float

from nbgrader.preprocessors import Execute

SKIP_WHEN_GRADING = "skip-when-grading"
CONTAINED = "CONTAINED"          # the log lines that report a contained failure start with this


class ContainedExecute(Execute):
    """nbgrader's Execute with a per-notebook wall-clock limit, a per-kernel memory limit and a
    kernel death confined to its notebook; skips cells tagged ``skip-when-grading``."""

    notebook_timeout = Float(
        600.0, help="Seconds one notebook may run, kernel start included; 0 for no limit."
    ).tag(config=True)
    memory_limit_gib = Float(
        4.0, help="GiB of data segment (RLIMIT_DATA) each grading kernel may use; 0 for no limit."
    ).tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("skip_cells_with_tag", SKIP_WHEN_GRADING)
        super().__init__(*args, **kwargs)
        self.timeout_func = self._time_left

    # ------------------------------------------------------------------ one notebook
    def preprocess(self, nb, resources=None, km=None):
        self._deadline = (time.monotonic() + self.notebook_timeout
                          if self.notebook_timeout > 0 else math.inf)
        self._stopped = ""                       # why the rest of this notebook is not run
        self._notebook = (resources or {}).get("metadata", {}).get("name", "notebook")
        return super().preprocess(nb, resources, km)

    def _time_left(self, cell) -> int | None:
        if self._deadline == math.inf:
            return None
        return max(1, math.ceil(self._deadline - time.monotonic()))

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type != "code" or SKIP_WHEN_GRADING in cell.metadata.get("tags", []):
            return super().preprocess_cell(cell, resources, index)
        if not self._stopped and time.monotonic() >= self._deadline:
            self._stop(f"the notebook ran past its limit of {self.notebook_timeout:g} s", index)
        if self._stopped:
            cell.outputs = [_error("NotRun", f"not run: {self._stopped}")]
            return cell, self.resources
        try:
            cell, resources = super().preprocess_cell(cell, resources, index)
        except DeadKernelError:
            self._stop("the kernel died (killed, crashed, or out of memory)", index)
            cell.outputs.append(_error("DeadKernelError", f"{self._stopped}"))
            return cell, self.resources
        except CellTimeoutError:        # interrupted, and the kernel still did not answer
            self._stop(f"the notebook ran past its limit of {self.notebook_timeout:g} s", index)
            cell.outputs.append(_error("CellTimeoutError", f"{self._stopped}"))
            return cell, self.resources
        errors = [o for o in cell.outputs if o.output_type == "error"]
        if any(o.ename == "CellTimeoutError" for o in errors):
            self._stop(f"the notebook ran past its limit of {self.notebook_timeout:g} s", index)
        elif any(_out_of_memory(o) for o in errors):
            self._report("memory", index, f"ran out of its {self.memory_limit_gib:g} GiB")
        return cell, resources

    def _stop(self, why: str, index: int) -> None:
        self._stopped = f"{why} in cell {index}"
        self._report("stopped", index, why)

    def _report(self, kind: str, index: int, why: str) -> None:
        self.log.warning("%s %s", CONTAINED, json.dumps(
            {"notebook": self._notebook, "cell": index, "kind": kind, "why": why}))

    # ------------------------------------------------------------------ the kernel
    async def async_start_new_kernel(self, **kwargs):
        if self.memory_limit_gib > 0:
            kwargs.setdefault("preexec_fn", _memory_limit(int(self.memory_limit_gib * 2**30)))
        return await super().async_start_new_kernel(**kwargs)


def _memory_limit(nbytes: int):
    def limit() -> None:                # runs in the kernel's process, before Python starts
        resource.setrlimit(resource.RLIMIT_DATA, (nbytes, nbytes))
    return limit


def _out_of_memory(output) -> bool:
    return output.ename == "MemoryError" or (
        output.ename in ("RuntimeError", "OutOfMemoryError") and "alloc" in output.evalue)


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue,
                        traceback=[f"\x1b[0;31m{ename}\x1b[0m: {evalue}"])
