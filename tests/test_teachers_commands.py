"""The README's teachers' section, run as written: the LMS route end to end, with the committed
course configuration of ``classroom/`` (its zip_collect pattern, its feedback preprocessors and
template, its log filters).

One temporary course folder: ``nbgrader generate_assignment featviz``; an LMS archive in
``downloaded/featviz/archive/`` holding two students' notebooks, named as the README says
(alice: every solution filled in; bob: a wrong implementation); ``nbgrader zip_collect featviz``;
``nbgrader autograde featviz`` (one notebook, ``--notebook``, to keep the run short: the other
five are collected but not run); ``nbgrader generate_feedback featviz``. Then the files are
where the README says, alice has full marks and bob does not, the autograde log is free of the
expected noise, and the feedback pages load nothing from the internet, show no hidden test,
no empty widget box and no raw TeX.
"""
from __future__ import annotations

import html
import json
import re
import zipfile
from pathlib import Path

import pytest

from notebook_cells import cells, source
from test_classroom import nbgrader, new_course, with_solutions, wrong_submission

pytestmark = pytest.mark.classroom
nbgrader_api = pytest.importorskip("nbgrader.api")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
ASSIGNMENT = "featviz"
GRADED = NOTEBOOKS[0]                      # 01: exercises, hidden tests, formulas and panels
ARCHIVE_NAMES = {                          # student → how the LMS names each notebook
    "alice": "alice_attempt1_{}",
    "bob": "bob_{}",
}


def teachers_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## For teachers")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


@pytest.fixture(scope="module")
def lms_course(tmp_path_factory):
    course = new_course(tmp_path_factory.mktemp("course"))   # the committed course

    nbgrader(course, "generate_assignment", ASSIGNMENT)
    release = course / "release" / ASSIGNMENT

    # What the teacher downloads from the LMS: one zip of every student's files.
    archive = course / "downloaded" / ASSIGNMENT / "archive"
    archive.mkdir(parents=True)
    with zipfile.ZipFile(archive / "submissions.zip", "w") as zf:
        for path in NOTEBOOKS:
            alice = with_solutions(release / path.name, path, answers=True)
            bob = with_solutions(release / path.name, path, wrong_submission(0, path))
            for student, nb in (("alice", alice), ("bob", bob)):
                zf.writestr(ARCHIVE_NAMES[student].format(path.name), json.dumps(nb, indent=1))

    logs = {"zip_collect": nbgrader(course, "zip_collect", ASSIGNMENT)}
    logs["autograde"] = nbgrader(course, "autograde", ASSIGNMENT, f"--notebook={GRADED.stem}")
    logs["generate_feedback"] = nbgrader(course, "generate_feedback", ASSIGNMENT)
    return course, logs


def feedback(course: Path, student: str) -> str:
    return (course / "feedback" / student / ASSIGNMENT / f"{GRADED.stem}.html").read_text(
        encoding="utf-8")


def test_readme_states_the_lms_route_and_the_exchange():
    section = teachers_section()
    for text in ("downloaded/featviz/archive/", "nbgrader zip_collect featviz",
                 "<student id>_<anything>_<notebook>.ipynb", "submitted/<student id>/featviz/",
                 "/usr/local/share/nbgrader/exchange", "c.Exchange.root",
                 "python autograde_parallel.py featviz --workers", "--dask tcp://",
                 "--notebook-timeout", "--memory-limit", "misbehaved:"):
        assert text in section, text
    assert "/srv/nbgrader/exchange`" not in section.replace("c.Exchange.root", "")


def test_zip_collect_puts_every_notebook_in_submitted(lms_course):
    course, logs = lms_course
    assert "files skipped" not in logs["zip_collect"], logs["zip_collect"]
    for student in ARCHIVE_NAMES:
        folder = course / "submitted" / student / ASSIGNMENT
        assert sorted(p.name for p in folder.glob("*.ipynb")) == [p.name for p in NOTEBOOKS]


def test_autograde_gives_full_marks_to_the_solutions_only(lms_course):
    course, _ = lms_course
    with nbgrader_api.Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        def auto(student):
            nb = gb.find_submission_notebook(GRADED.stem, ASSIGNMENT, student)
            graded = [g for g in nb.grades if g.cell_type == "code"]
            return sum(g.score for g in graded), sum(g.max_score for g in graded)
        alice, bob = auto("alice"), auto("bob")
    assert alice[1] > 0 and alice[0] == alice[1], alice
    assert bob[0] < bob[1], bob
    assert (course / "autograded" / "alice" / ASSIGNMENT / GRADED.name).is_file()


def test_autograde_log_shows_progress_without_the_expected_noise(lms_course):
    _, logs = lms_course
    log = logs["autograde"]
    for student in ARCHIVE_NAMES:
        assert f"autograded/{student}/{ASSIGNMENT}/{GRADED.name}" in log, log[-3000:]
    for noise in ("'checksum' for cell", "not in session", "without encryption", "SAWarning"):
        assert noise not in log, f"{noise!r} in the autograde log:\n{log[-3000:]}"


@pytest.mark.parametrize("student", sorted(ARCHIVE_NAMES))
def test_feedback_reads_offline_and_hides_the_hidden_tests(lms_course, student):
    course, _ = lms_course
    page = feedback(course, student)
    assert "Score:" in page
    # No script, style or renderer from the internet: no MathJax CDN, no widget manager.
    assert "cdnjs.cloudflare.com" not in page and "mathjax/2.7.7" not in page.lower()
    assert not re.search(r"<script[^>]+src=[\"']https?:", page), "a script from the internet"
    assert "unpkg.com" not in page and "embed-amd.js" not in page
    # The hidden tests: not their source, not a traceback that quotes it.
    hidden = [source(c) for c in cells(GRADED) if "### BEGIN HIDDEN TESTS" in source(c)]
    assert hidden
    assert "hidden_check_" not in page and "BEGIN HIDDEN TESTS" not in page
    # Panels: their last drawing (pictures inline), no empty widget box.
    assert "application/vnd.jupyter.widget-view+json" not in page
    assert "featviz-static-panel" in page
    panel = page[page.index("featviz-static-panel"):]
    assert re.search(r'<img[^>]*src="data:image/png;base64,', panel[:20000])
    # Formulas: readable text, no raw TeX left for a renderer that is not there.
    assert page.count('class="featviz-math"') > 10
    assert "\\partial" not in re.sub(r'data-tex="[^"]*"', "", page)
    assert "Σ" in page


def test_wrong_submission_feedback_keeps_the_hidden_tests_verdict_not_their_source(lms_course):
    course, _ = lms_course
    page = feedback(course, "bob")
    graded = course / "autograded" / "bob" / ASSIGNMENT / GRADED.name
    verdicts = [o["evalue"] for c in cells(graded) if "BEGIN HIDDEN TESTS" in source(c)
                for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert verdicts, "bob's wrong code should fail a hidden test"
    for verdict in verdicts:            # the message is shown, its traceback (the source) is not
        assert html.escape(verdict.splitlines()[0][:60], quote=False) in page, verdict
