"""A cell run out of order: the NameError keeps its name and traceback and gains one hint line
(featviz_helpers.notebook_errors, installed by importing featviz_helpers in a kernel)."""
from __future__ import annotations

import nbformat
from nbclient import NotebookClient

from featviz_helpers import notebook_errors


def run(*sources: str) -> list[dict]:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="python3",
                   extra_arguments=["--IPKernelApp.log_level=ERROR"]).execute()
    return [o for c in nb.cells for o in c.outputs if o.output_type == "error"]


def test_a_name_error_says_to_run_the_cells_above():
    errors = run("import featviz_helpers", "import featviz_helpers", "print(batch_of_photos)",
                 "raise ValueError('other errors are left alone')")
    name_error, other = errors
    assert name_error.ename == "NameError" and "batch_of_photos" in name_error.evalue
    assert name_error.traceback[-1] == notebook_errors.HINT.format(name="batch_of_photos")
    assert other.ename == "ValueError" and "Hint" not in "".join(other.traceback)


def test_outside_a_kernel_nothing_is_installed():
    assert notebook_errors.install() is False
