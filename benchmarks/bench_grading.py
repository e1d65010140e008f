"""What grading one submission costs: kernel CPU seconds per notebook and per cell.

Each notebook of ``notebooks/`` (the source notebooks: every solution and every hidden test in
place, so this is a correct submission, the most expensive kind) is run top to bottom in a
fresh kernel by nbclient, three ways:

* **source**: the committed notebook, every cell, as nbval and a lecturer run it;
* **self-study**: the working copy of a student who has written every exercise
  (``study.student_version(nb, solved=True)``: the hidden tests are not in it), every cell;
* **grading**: the source notebook as ``nbgrader autograde`` runs it with the course's configuration
  (``classroom/nbgrader_config.py``): the environment variable ``NBGRADER_EXECUTION=autograde``
  set and the cells tagged ``skip-when-grading`` (demonstrations whose results do not depend on
  the student's code) skipped.

The kernel's CPU time (user + system, its children included) and the wall clock are read before
and after each cell: wall seconds are what a student waits, CPU seconds what the cell cost the
machine whatever the thread count. The script prints each notebook's wall and CPU totals for
both runs, each run's slowest cells (by wall time) and the grading sum: the
CPU seconds one submission costs, beside the issue's budget of 120. With ``--nbgrader`` it also
runs the real ``nbgrader autograde`` of one full-solution submission in a temporary course
and prints the CPU seconds of nbgrader and its kernels together.

    .venv/bin/python benchmarks/bench_grading.py                  # all six notebooks
    .venv/bin/python benchmarks/bench_grading.py 05_grad_cam.ipynb --top 8 --only source
    .venv/bin/python benchmarks/bench_grading.py --only grading --nbgrader

A script, not a test: it prints numbers and asserts nothing about them. Run it on a quiet
machine; on a loaded one, CPU seconds grow too (threads that wait for a core spin).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "classroom"))
from contained_execute import SKIP_WHEN_GRADING  # noqa: E402

from featviz_helpers import study  # noqa: E402

BUDGET_CPU_S = 120.0
MODES = ("source", "self-study", "grading")


def kernel_cpu(process: psutil.Process) -> float:
    """CPU seconds the kernel and its children have used so far."""
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def run_notebook(path: Path, mode: str) -> tuple[float, float, list[tuple[int, float, float, str]]]:
    """(wall s, kernel CPU s, [(cell index, wall s, CPU s, first line)]) of one top-to-bottom
    run in ``mode`` (one of :data:`MODES`)."""
    grading = mode == "grading"
    source = json.loads(path.read_text("utf-8"))
    if mode == "self-study":
        source = study.student_version(source, solved=True)
    nb = nbformat.reads(json.dumps(source), as_version=4)      # sources joined, as read from disk
    env = dict(os.environ)
    if grading:
        env["NBGRADER_EXECUTION"] = "autograde"
    client = NotebookClient(nb, timeout=1800, kernel_name="python3", allow_errors=False,
                            skip_cells_with_tag=SKIP_WHEN_GRADING if grading else "skip-execution",
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent)}})
    per_cell = []
    start = time.perf_counter()
    with client.setup_kernel(env=env):
        kernel = psutil.Process(client.km.provisioner.pid)
        first = kernel_cpu(kernel)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            before, began = kernel_cpu(kernel), time.perf_counter()
            client.execute_cell(cell, index)
            line = next((s for s in cell.source.splitlines() if s.strip()), "")
            per_cell.append((index, time.perf_counter() - began, kernel_cpu(kernel) - before,
                             line[:60]))
        total = kernel_cpu(kernel) - first
    return time.perf_counter() - start, total, per_cell


def nbgrader_submission_cpu() -> float:
    """CPU seconds of a real `nbgrader autograde` of one full-solution submission."""
    sys.path.insert(0, str(ROOT / "tests"))
    from notebook_cells import grading, solution_cells  # noqa: E402

    course = Path(tempfile.mkdtemp(prefix="bench-course-"))
    try:
        shutil.copy(ROOT / "classroom" / "nbgrader_config.py", course)
        for extra in ("contained_execute.py", "feedback_preprocessors.py"):
            shutil.copy(ROOT / "classroom" / extra, course)
        (course / "source").mkdir()
        (course / "source" / "featviz").symlink_to(ROOT / "notebooks", target_is_directory=True)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
        nbgrader = [sys.executable, "-m", "nbgrader"]
        subprocess.run([*nbgrader, "generate_assignment", "featviz"], cwd=course, env=env,
                       check=True, capture_output=True)
        handed_in = course / "submitted" / "bench" / "featviz"
        handed_in.mkdir(parents=True)
        for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
            nb = json.loads((course / "release" / "featviz" / path.name).read_text("utf-8"))
            solutions = solution_cells(path)
            for cell in nb["cells"]:
                gid = grading(cell).get("grade_id")
                if cell["cell_type"] == "code" and gid in solutions:
                    cell["source"] = solutions[gid].splitlines(keepends=True)
            (handed_in / path.name).write_text(json.dumps(nb), "utf-8")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([*nbgrader, "autograde", "featviz"], cwd=course, env=env, check=True,
                       capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    finally:
        shutil.rmtree(course, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebook file names (default: all six)")
    parser.add_argument("--only", choices=MODES, help="run one of the three")
    parser.add_argument("--top", type=int, default=4, help="slowest cells to list per notebook")
    parser.add_argument("--nbgrader", action="store_true",
                        help="also time a real nbgrader autograde of one submission")
    args = parser.parse_args()

    paths = [ROOT / "notebooks" / n for n in args.notebooks] or \
        sorted((ROOT / "notebooks").glob("*.ipynb"))
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        known = ", ".join(p.name for p in sorted((ROOT / "notebooks").glob("*.ipynb")))
        parser.error(f"no notebook {', '.join(missing)} in notebooks/; the notebooks are {known}")
    modes = [args.only] if args.only else list(MODES)
    print(f"{platform.node()}: {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'notebook':<28}" + "".join(f"{m + ' wall s':>18}{m + ' CPU s':>18}" for m in modes))
    sums = {m: 0.0 for m in modes}
    slowest = {}
    for path in paths:
        row = f"{path.name:<28}"
        for mode in modes:
            wall, cpu, cells = run_notebook(path, mode)
            sums[mode] += cpu
            row += f"{wall:>18.1f}{cpu:>18.1f}"
            slowest[path.name, mode] = sorted(cells, key=lambda c: -c[1])[:args.top]
        print(row, flush=True)
    print(f"{'all (CPU s)':<28}" + "".join(f"{'':>18}{sums[m]:>18.1f}" for m in modes))
    for (name, mode), cells in slowest.items():
        print(f"\n{name}, {mode}: slowest cells    wall s   CPU s")
        for index, wall, cpu, line in cells:
            print(f"  cell {index:>3}  {wall:18.1f}  {cpu:6.1f}  {line}")
    if "grading" in sums:
        print(f"\nkernels of one graded submission: {sums['grading']:.0f} CPU s "
              f"(budget {BUDGET_CPU_S:.0f})")
    if args.nbgrader:
        print(f"real nbgrader autograde of one submission: {nbgrader_submission_cpu():.0f} CPU s "
              f"(nbgrader and its kernels)")


if __name__ == "__main__":
    main()
