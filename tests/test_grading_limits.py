"""Contained failures: submissions that loop forever, allocate without bound or kill their
kernel are stopped by the course's limits (classroom/contained_execute.py), scored for what
they completed, named in the parallel command's report, and leave the others' grading alone.

One small course (notebook 01 only, to keep it short), graded by the README's parallel command
with 2 workers and a short notebook limit. Every misbehaving student writes the first exercise
correctly and misbehaves in the second, so "scored for what it completed" is visible: full
marks on the first exercise, none on the second. And a run interrupted with Ctrl+C leaves no
job running and nothing half-graded: running it again grades everyone.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from notebook_cells import exercise_of, graded_test_cells, solution_cells
from test_classroom import (ASSIGNMENT, NOTEBOOKS, autograde_parallel, cell_scores, hand_in,
                            new_course, nbgrader, with_solutions)

pytestmark = pytest.mark.classroom
pytest.importorskip("nbgrader.api")

NOTEBOOK = NOTEBOOKS[0]                     # 01: two exercises, cheap to run
FIRST, SECOND = list(solution_cells(NOTEBOOK))
NOTEBOOK_TIMEOUT = 90                       # s; the notebook takes about 10 s
MISBEHAVIOUR = {                            # student → what the second exercise's cell starts with
    "loops-forever": "while True:\n    pass\n",
    "loops-ignoring-interrupts": ("import time\nwhile True:\n    try:\n        time.sleep(1)\n"
                                  "    except KeyboardInterrupt:\n        pass\n"),
    "exhausts-memory": "hoard = []\nwhile True:\n    hoard.append(torch.empty(2**28))\n",
    "kills-its-kernel": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
}
WELL_BEHAVED = "well-behaved"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    course = new_course(tmp_path_factory.mktemp("contained"), [NOTEBOOK])
    nbgrader(course, "generate_assignment", ASSIGNMENT)
    released = course / "release" / ASSIGNMENT / NOTEBOOK.name
    hand_in(course, WELL_BEHAVED, NOTEBOOK.name, with_solutions(released, NOTEBOOK))
    right = solution_cells(NOTEBOOK)
    for student, prefix in MISBEHAVIOUR.items():
        hand_in(course, student, NOTEBOOK.name,
                with_solutions(released, NOTEBOOK, {SECOND: prefix + right[SECOND]}))
    status, output = autograde_parallel(course, "--workers", "2",
                                        f"--notebook-timeout={NOTEBOOK_TIMEOUT}")
    return course, status, output


def exercise_scores(course: Path, student: str) -> dict[str, tuple[float, float]]:
    """exercise → (earned, possible) over its graded cells."""
    scores = cell_scores(course, student, NOTEBOOK)
    exercises = solution_cells(NOTEBOOK)
    out = {}
    for gid in graded_test_cells(NOTEBOOK):
        ex = exercise_of(gid, exercises)
        earned, possible = out.get(ex, (0.0, 0.0))
        out[ex] = (earned + scores[gid][0], possible + scores[gid][1])
    return out


def test_the_run_finishes_and_the_well_behaved_student_gets_full_marks(graded):
    course, status, output = graded
    assert status == 0, output
    assert all(earned == possible for earned, possible in
               exercise_scores(course, WELL_BEHAVED).values())
    assert WELL_BEHAVED not in output.split("misbehaved")[-1]


@pytest.mark.parametrize("student", MISBEHAVIOUR)
def test_a_misbehaving_submission_is_scored_for_what_it_completed(graded, student):
    course, _, output = graded
    scores = exercise_scores(course, student)
    assert scores[FIRST][0] == scores[FIRST][1] > 0, scores
    assert scores[SECOND][0] == 0, scores
    graded_nb = json.loads((course / "autograded" / student / ASSIGNMENT / NOTEBOOK.name)
                           .read_text(encoding="utf-8"))
    errors = [o["ename"] for c in graded_nb["cells"] for o in c.get("outputs", [])
              if o["output_type"] == "error"]
    assert errors, "no error recorded in the graded notebook"


@pytest.mark.parametrize("student, says", [
    ("loops-forever", rf"ran past its limit of {NOTEBOOK_TIMEOUT} s"),
    ("loops-ignoring-interrupts", rf"ran past its limit of {NOTEBOOK_TIMEOUT} s"),
    ("exhausts-memory", r"ran out of its 4 GiB"),
    ("kills-its-kernel", r"the kernel died"),
])
def test_the_report_names_each_misbehaving_student(graded, student, says):
    _, _, output = graded
    report = output.split("misbehaved:", 1)[-1]
    lines = [line for line in report.splitlines() if line.strip().startswith(f"{student}:")]
    assert lines and re.search(says, " ".join(lines)), report
    assert NOTEBOOK.stem in " ".join(lines)


def test_a_stopped_notebook_marks_every_later_cell_not_run(graded):
    course, _, _ = graded
    graded_nb = json.loads((course / "autograded" / "loops-forever" / ASSIGNMENT / NOTEBOOK.name)
                           .read_text(encoding="utf-8"))
    code = [c for c in graded_nb["cells"] if c["cell_type"] == "code"
            and "skip-when-grading" not in c["metadata"].get("tags", [])]
    first_stop = next(i for i, c in enumerate(code)
                      if any(o["output_type"] == "error" and o["ename"] == "CellTimeoutError"
                             for o in c.get("outputs", [])))
    for cell in code[first_stop + 1:]:
        assert [o["ename"] for o in cell["outputs"] if o["output_type"] == "error"] == ["NotRun"]


def test_interrupting_the_run_leaves_no_job_behind_and_a_rerun_grades_the_rest(tmp_path):
    course = new_course(tmp_path, [NOTEBOOK])
    nbgrader(course, "generate_assignment", ASSIGNMENT)
    released = course / "release" / ASSIGNMENT / NOTEBOOK.name
    right = solution_cells(NOTEBOOK)
    for student in ("loops-a", "loops-b"):
        hand_in(course, student, NOTEBOOK.name, with_solutions(
            released, NOTEBOOK, {SECOND: MISBEHAVIOUR["loops-forever"] + right[SECOND]}))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    run = subprocess.Popen([sys.executable, "autograde_parallel.py", ASSIGNMENT, "--workers", "2"],
                           cwd=course, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    deadline = time.monotonic() + 120
    while not list((course / "autograded").glob(f"*/{ASSIGNMENT}/{NOTEBOOK.name}")):
        assert time.monotonic() < deadline and run.poll() is None, "no job started"
        time.sleep(0.5)
    run.send_signal(signal.SIGINT)
    output, _ = run.communicate(timeout=60)
    assert run.returncode == 130 and "interrupted: 0 of 2 submissions graded" in output, output
    left = subprocess.run(["pgrep", "-f", f"autograde {ASSIGNMENT} --student=loops-"],
                          capture_output=True, text=True).stdout
    assert not left, f"jobs left running: {left}"
    assert not list((course / "autograded").glob(f"*/{ASSIGNMENT}"))
    status, output = autograde_parallel(course, "--workers", "2", "--notebook-timeout=20")
    assert status == 0 and "autograded 2 submissions" in output, output


def test_the_readme_shows_the_report_as_the_command_prints_it(graded):
    """The README's example report (graded by hand with --notebook-timeout 60) is, line for line,
    what this run printed (with its own limit)."""
    _, _, output = graded
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = readme.split("4 submission(s) misbehaved:\n", 1)[1].split("```", 1)[0]
    printed = output.split("misbehaved:\n", 1)[1]
    for line in example.strip().splitlines():
        assert line.replace("limit of 60 s", f"limit of {NOTEBOOK_TIMEOUT} s") in printed, line
