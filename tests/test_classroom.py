"""The classroom edition, graded by the real nbgrader: release, collect, autograde, export.

One course folder is built per test session (minutes: every submission runs its notebooks
top to bottom), with the teacher's commands from the README:

* the course configuration of ``classroom/`` and the source notebooks of ``notebooks/``;
* ``nbgrader generate_assignment`` and ``release_assignment`` into a private exchange;
* a student fetches, fills in every solution and submits; ``nbgrader collect``;
* beside it, the blank release as handed out, and the wrong implementations of
  ``tests/classroom_corpus.py``: student ``wrong-k`` hands in the k-th wrong implementation
  of every exercise that has one (and the right code elsewhere);
* one ``nbgrader autograde``; the answers of the collected student graded by hand through
  nbgrader's gradebook API, as a teacher would in the formgrader; ``nbgrader export`` and
  ``nbgrader generate_feedback``.

The tests then read the gradebook, the graded notebooks and the grades export.
"""
from __future__ import annotations

import csv
import getpass
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from classroom_corpus import WRONG, apply_edits
from notebook_cells import cells, exercise_of, graded_test_cells, grading, solution_cells, source

pytestmark = pytest.mark.classroom
nbgrader_api = pytest.importorskip("nbgrader.api")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "classroom"))
from contained_execute import SKIP_WHEN_GRADING  # noqa: E402
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ASSIGNMENT = "featviz"
STUDENT = getpass.getuser()          # the collected student: nbgrader submits under the login
BLANK = "blank-release"
CORPUS_SIZE = max(len(entries) for entries in WRONG.values())


def nbgrader(course: Path, *args: str, cwd: Path | None = None) -> str:
    """Run one nbgrader command the way the README does; its output, or a failure with it."""
    env = dict(os.environ)
    # nbgrader runs the `alembic` executable of its environment for the gradebook.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=cwd or course, env=env,
                          capture_output=True, text=True, timeout=3600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{output[-5000:]}"
    return output


def with_solutions(released: Path, source_nb: Path, wrong: dict[str, str] | None = None,
                   answers: bool = False) -> dict:
    """The released notebook with every solution cell filled in from the source notebook,
    except those in ``wrong`` (grade_id → the cell's wrong source); with ``answers``, each
    question's answer cell gets an answer too."""
    nb = json.loads(released.read_text(encoding="utf-8"))
    solutions = solution_cells(source_nb)
    for cell in nb["cells"]:
        gid = grading(cell).get("grade_id")
        if cell["cell_type"] == "code" and gid in solutions:
            text = (wrong or {}).get(gid, solutions[gid])
            cell["source"] = text.splitlines(keepends=True)
        elif cell["cell_type"] == "markdown" and grading(cell).get("solution") and answers:
            cell["source"] = [f"My answer to {gid}: the derivation, in my own words."]
    return nb


def wrong_submission(k: int, source_nb: Path) -> dict[str, str]:
    """grade_id → wrong source for the k-th corpus entry of each exercise of this notebook."""
    out = {}
    for gid, text in solution_cells(source_nb).items():
        entries = WRONG.get(gid, [])
        if k < len(entries):
            out[gid] = apply_edits(text, entries[k][1])
    return out


def new_course(course: Path, notebooks: list[Path] | None = None) -> Path:
    """The committed course of ``classroom/`` copied into ``course``, its source the notebooks
    folder (or, given ``notebooks``, a folder holding links to just those)."""
    for item in (ROOT / "classroom").iterdir():
        if item.name in ("source", "__pycache__") or item.name.startswith("."):
            continue
        if item.is_dir():
            shutil.copytree(item, course / item.name)
        else:
            shutil.copy(item, course)
    (course / "source").mkdir()
    if notebooks is None:
        (course / "source" / ASSIGNMENT).symlink_to(ROOT / "notebooks", target_is_directory=True)
    else:
        (course / "source" / ASSIGNMENT).mkdir()
        for path in notebooks:
            (course / "source" / ASSIGNMENT / path.name).symlink_to(path)
    return course


def hand_in(course: Path, student: str, name: str, nb: dict) -> None:
    """A submitted notebook placed where ``nbgrader collect`` puts it."""
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(nb, indent=1), encoding="utf-8")


def autograde_parallel(course: Path, *args: str) -> tuple[int, str]:
    """The README's parallel command, run from the course folder: (exit status, output)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run([sys.executable, "autograde_parallel.py", ASSIGNMENT, *args],
                          cwd=course, env=env, capture_output=True, text=True, timeout=3600)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A course folder after release, submission, collection, autograding and export."""
    course = new_course(tmp_path_factory.mktemp("course"))
    exchange = tmp_path_factory.mktemp("exchange")
    on_exchange = f"--Exchange.root={exchange}"

    nbgrader(course, "generate_assignment", ASSIGNMENT)
    nbgrader(course, "release_assignment", ASSIGNMENT, on_exchange)
    release = course / "release" / ASSIGNMENT

    # A student fetches the assignment, writes every exercise, and submits.
    home = tmp_path_factory.mktemp("student")
    nbgrader(course, "fetch_assignment", ASSIGNMENT, f"--course={ASSIGNMENT}", on_exchange, cwd=home)
    for path in NOTEBOOKS:
        mine = home / ASSIGNMENT / path.name
        mine.write_text(json.dumps(with_solutions(mine, path, answers=True), indent=1),
                        encoding="utf-8")
    nbgrader(course, "submit", ASSIGNMENT, f"--course={ASSIGNMENT}", on_exchange, cwd=home)
    nbgrader(course, "collect", ASSIGNMENT, on_exchange)

    # Hand-ins placed straight into submitted/ (what `collect` does): the blank release and
    # the corpus of wrong implementations.
    for path in NOTEBOOKS:
        hand_in(course, BLANK, path.name,
                json.loads((release / path.name).read_text(encoding="utf-8")))
        for k in range(CORPUS_SIZE):
            wrong = wrong_submission(k, path)
            if wrong:
                hand_in(course, f"wrong-{k + 1}", path.name,
                        with_solutions(release / path.name, path, wrong))

    # The teacher's parallel command, with the course's configuration (its limits included).
    # Every submission runs every panel cell: featviz_helpers.widgets draws without an Output
    # widget, whose mimic in nbclient used to stall about one panel cell in 30 for the whole
    # cell timeout (see tests/test_viz_widgets.py).
    status, output = autograde_parallel(course, "--workers", "2")
    assert status == 0 and "misbehaved" not in output, output
    AUTOGRADED_ROWS[course] = gradebook_rows(course, [STUDENT, BLANK] + CORPUS_STUDENTS)

    # The teacher grades the collected student's free-text answers (as in the formgrader).
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for path in NOTEBOOKS:
            submission = gb.find_submission_notebook(path.stem, ASSIGNMENT, STUDENT)
            for grade in submission.grades:
                if grade.needs_manual_grade:
                    grade.manual_score = grade.max_score
        gb.db.commit()

    nbgrader(course, "export")
    nbgrader(course, "generate_feedback", ASSIGNMENT)
    return course


AUTOGRADED_ROWS: dict[Path, dict] = {}       # course → its gradebook rows right after autograde
CORPUS_STUDENTS = [f"wrong-{k + 1}" for k in range(CORPUS_SIZE)]


def gradebook_rows(course: Path, students: list[str]) -> dict[tuple, tuple]:
    """Every gradebook value autograde writes for these students: (student, notebook, kind,
    name) → the row's values."""
    rows = {}
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student in students:
            submission = gb.find_submission(ASSIGNMENT, student)
            rows[student, "", "submission", ""] = (submission.timestamp, submission.extension)
            for notebook in submission.notebooks:
                rows[student, notebook.name, "notebook", ""] = (
                    notebook.flagged, notebook.late_submission_penalty)
                for g in notebook.grades:
                    rows[student, notebook.name, "grade", g.name] = (
                        g.auto_score, g.manual_score, g.extra_credit, g.needs_manual_grade)
                for c in notebook.comments:
                    rows[student, notebook.name, "comment", c.name] = (
                        c.auto_comment, c.manual_comment)
    return rows


def graded_again(tmp: Path, course: Path, students: list[str], *command: str) -> Path:
    """A second course with the same source and these students' submissions, graded by
    ``command`` (nbgrader's own serial autograde, or the parallel command with its options)."""
    again = new_course(tmp)
    nbgrader(again, "generate_assignment", ASSIGNMENT)
    for student in students:
        shutil.copytree(course / "submitted" / student, again / "submitted" / student)
    if command[0] == "nbgrader":
        nbgrader(again, *command[1:])
    else:
        status, output = autograde_parallel(again, *command)
        assert status == 0 and "misbehaved" not in output, output
    return again


def cell_scores(course: Path, student: str, notebook: Path) -> dict[str, tuple[float, float]]:
    """grade_id → (score, max score) of every graded cell of one submitted notebook."""
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        submission = gb.find_submission_notebook(notebook.stem, ASSIGNMENT, student)
        return {g.name: (g.score, g.max_score) for g in submission.grades}


def errors_by_cell(course: Path, student: str, notebook: Path) -> dict[str, str]:
    """Cell id → first error raised in it, in the autograded notebook."""
    graded = course / "autograded" / student / ASSIGNMENT / notebook.name
    out = {}
    for cell in cells(graded):
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                out[grading(cell).get("grade_id", cell.get("id"))] = \
                    f"{output['ename']}: {output['evalue'][:300]}"
                break
    return out


# ------------------------------------------------------------------ the source notebooks

def test_committed_course_uses_the_notebooks_folder():
    link = ROOT / "classroom" / "source" / ASSIGNMENT
    assert link.is_symlink() and link.resolve() == (ROOT / "notebooks").resolve()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_exercise_has_graded_cells_and_a_corpus(path):
    exercises = solution_cells(path)
    assert exercises, "no exercise"
    for gid in graded_test_cells(path):
        assert exercise_of(gid, exercises), f"graded cell {gid} belongs to no exercise"
    for gid in exercises:
        mine = [g for g in graded_test_cells(path) if exercise_of(g, exercises) == gid]
        assert len(mine) >= 2, f"{gid}: expected visible and hidden graded cells, got {mine}"
        assert len(WRONG.get(gid, [])) >= 5, f"{gid}: fewer than five wrong implementations"
        for label, edits in WRONG[gid]:
            wrong = apply_edits(exercises[gid], edits)        # each edit applies exactly once
            assert wrong != exercises[gid], label
    hidden = [c for c in cells(path) if "### BEGIN HIDDEN TESTS" in source(c)]
    assert hidden and all(grading(c).get("locked") for c in hidden)


# ------------------------------------------------------------------ release and grading

@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_release_hides_solutions_and_hidden_tests(course, path):
    released = cells(course / "release" / ASSIGNMENT / path.name)
    text = "\n".join(source(c) for c in released)
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "hidden_check_" not in text
    stubs = [source(c) for c in released if grading(c).get("solution")]
    assert stubs and all("raise NotImplementedError()" in s or s == "YOUR ANSWER HERE"
                         for s in stubs)
    assert all(not c.get("outputs") for c in released if c["cell_type"] == "code")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_collected_solutions_get_full_marks(course, path):
    scores = cell_scores(course, STUDENT, path)
    assert scores and all(score == top for score, top in scores.values()), scores
    assert not errors_by_cell(course, STUDENT, path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_blank_release_scores_zero_and_runs_top_to_bottom(course, path):
    scores = cell_scores(course, BLANK, path)
    tests = graded_test_cells(path)
    assert all(scores[gid][0] == 0 for gid in tests), scores
    errors = errors_by_cell(course, BLANK, path)
    assert set(errors) <= set(tests), {k: v for k, v in errors.items() if k not in tests}
    assert all(e.startswith("NotImplementedError") and "is not written yet" in e
               for e in errors.values()), errors


CORPUS = [(gid, k, label) for gid, entries in WRONG.items() for k, (label, _) in enumerate(entries)]


@pytest.mark.parametrize("gid, k, label", CORPUS, ids=[f"{g}-{k + 1}-{l}" for g, k, l in CORPUS])
def test_wrong_implementation_loses_points_on_its_exercise_only(course, gid, k, label):
    path = next(p for p in NOTEBOOKS if gid in solution_cells(p))
    student = f"wrong-{k + 1}"
    scores = cell_scores(course, student, path)
    exercises = solution_cells(path)
    mine = [g for g in graded_test_cells(path) if exercise_of(g, exercises) == gid]
    earned = sum(scores[g][0] for g in mine)
    possible = sum(scores[g][1] for g in mine)
    assert earned < possible, f"{label!r} earned full marks ({earned}/{possible})"
    errors = errors_by_cell(course, student, path)
    outside = {c: e for c, e in errors.items() if c not in graded_test_cells(path)}
    assert not outside, f"{label!r} broke cells outside the graded tests: {outside}"


def test_grades_export_and_feedback(course):
    with open(course / "grades.csv", newline="", encoding="utf-8") as f:
        rows = {row["student_id"]: row for row in csv.DictReader(f)}
    assert float(rows[STUDENT]["score"]) == float(rows[STUDENT]["max_score"]) > 0
    assert float(rows[BLANK]["score"]) == 0
    for k in range(CORPUS_SIZE):
        row = rows[f"wrong-{k + 1}"]
        assert float(row["score"]) < float(row["max_score"])
    for path in NOTEBOOKS:
        feedback = course / "feedback" / STUDENT / ASSIGNMENT / f"{path.stem}.html"
        page = feedback.read_text(encoding="utf-8")
        assert "Score:" in page
        skipped = [c for c in cells(path) if SKIP_WHEN_GRADING in c["metadata"].get("tags", [])]
        assert page.count("Not run when grading") == len(skipped), path.name
        assert "BEGIN HIDDEN TESTS" not in page and "hidden_check_" not in page


def test_graded_notebooks_skip_the_demonstrations_only(course):
    for path in NOTEBOOKS:
        graded = cells(course / "autograded" / STUDENT / ASSIGNMENT / path.name)
        for cell in graded:
            if cell["cell_type"] != "code":
                continue
            if SKIP_WHEN_GRADING in cell["metadata"].get("tags", []):
                assert not cell["outputs"] and grading(cell) == {}, source(cell)[:80]
            elif source(cell).strip():
                assert cell["execution_count"], f"{path.name}: not run: {source(cell)[:80]}"


# ------------------------------------------------------------------ parallel and Dask grading

def test_parallel_grading_equals_nbgraders_serial_autograde(course, tmp_path):
    students = [STUDENT, "wrong-1"]            # answers and a timestamp; failing exercises
    serial = graded_again(tmp_path, course, students, "nbgrader", "autograde", ASSIGNMENT)
    parallel = {k: v for k, v in AUTOGRADED_ROWS[course].items() if k[0] in students}
    assert gradebook_rows(serial, students) == parallel


def test_dask_local_cluster_grades_like_the_local_workers(course, tmp_path):
    pytest.importorskip("dask.distributed")
    students = [BLANK, "wrong-2"]
    on_dask = graded_again(tmp_path, course, students, "--dask", "--workers", "2")
    assert gradebook_rows(on_dask, students) == \
        {k: v for k, v in AUTOGRADED_ROWS[course].items() if k[0] in students}


def test_parallel_command_names_what_it_skips_and_refuses(course):
    status, output = autograde_parallel(course, "--workers", "2")
    assert status == 0 and "already autograded, not regraded (add --force" in output
    status, output = autograde_parallel(course, "--student", "nobody")
    assert status != 0 and "no submission of featviz for: nobody" in output
