"""The self-study flow in a real browser, as a student follows the README.

A fresh clone of the repository; ``python -m featviz_helpers.study --no-lab`` makes the working
copy ``work/``; JupyterLab serves that folder with the study command's pre-save hook. In
notebook 04 the student runs everything with the exercise blank (its check says what to do),
asks for the hint and then the solution in the "Stuck?" cell, writes the exercise (pastes the
solution) and runs everything (the check passes, the panels draw), saves, and reopens the
notebook: no widget error, each panel a one-line note. Through all of it, ``git status`` of the clone
stays clean.

Skips like tests/test_browser.py without Chromium, unless FEATVIZ_REQUIRE_BROWSER=1.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import lab_harness as H
from featviz_helpers import study
from test_browser import RUN_TIMEOUT, _require_browser

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NAME = "04_cam.ipynb"
EXERCISE = "cam"


def git_status(repo: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True,
                          text=True, check=True).stdout


def run_cell_with(page: H.NotebookPage, index: int, text: str) -> None:
    """Replace cell ``index``'s text in its editor, as a student types it, and run it."""
    cell = page.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell") \
        .nth(index)
    cell.scroll_into_view_if_needed()
    cell.locator(".cm-content").click()
    page.page.keyboard.press("Control+a")
    page.page.keyboard.insert_text(text)
    page.page.keyboard.press("Shift+Enter")
    page.wait_all_done(60)


def outputs_text(nb: dict, index: int) -> str:
    cell = nb["cells"][index]
    return "".join("".join(o.get("text", "")) + o.get("evalue", "")
                   for o in cell.get("outputs", []))


def test_self_study_flow(tmp_path):
    _require_browser()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    made = subprocess.run([sys.executable, "-m", "featviz_helpers.study", "--no-lab"], cwd=clone,
                          capture_output=True, text=True, check=True)
    assert f"{NAME}: written" in made.stdout, made.stdout
    work = clone / "work"
    blank = json.loads((work / NAME).read_text(encoding="utf-8"))
    stuck = next(i for i, c in enumerate(blank["cells"])
                 if study.STUCK_TAG in c["metadata"].get("tags", []))
    check = stuck - 1 - next(k for k, c in enumerate(reversed(blank["cells"][:stuck]))
                             if c["metadata"].get("nbgrader", {}).get("grade_id", "")
                             .endswith("-tests"))
    assert git_status(clone) == ""

    hook = "--FileContentsManager.pre_save_hook=featviz_helpers.study.pre_save"
    with H.LabServer(tmp_path / "lab", notebooks=[NAME], serve=work, extra_args=(hook,)) as server, \
            H.chromium() as browser:
        context = H.new_context(browser)
        page = H.NotebookPage(context, server, NAME)
        page.open()
        page.run_all(timeout=RUN_TIMEOUT)
        saved = page.save()
        said = outputs_text(saved, check)
        assert "is not written yet" in said and "run that cell, then this one again" in said, said

        run_cell_with(page, stuck, f"from featviz_helpers import study\nstudy.hint({EXERCISE!r})")
        assert outputs_text(page.save(), stuck).startswith(f"Hint ({EXERCISE}): ")
        run_cell_with(page, stuck, f"from featviz_helpers import study\nstudy.solution({EXERCISE!r})")
        assert "def cam_from_features" in outputs_text(page.save(), stuck)
        # The student writes the exercise (here: pastes the solution) and runs everything.
        solution_cell = next(i for i, c in enumerate(saved["cells"])
                             if c["metadata"].get("nbgrader", {}).get("grade_id") == f"{EXERCISE}-impl")
        run_cell_with(page, solution_cell, study.exercises()[EXERCISE]["solution"])
        page.run_all(timeout=RUN_TIMEOUT)
        done = page.save()
        assert not H.notebook_errors(done), H.notebook_errors(done)
        assert page.panels() and not page.widget_problems(), page.screenshot("study-panels")
        page.close()
        server.shutdown_kernels()                     # the kernel is gone, as after a restart

        again = H.NotebookPage(context, server, NAME)
        again.open()
        assert not again.widget_problems(), again.widget_problems()
        page_text = " ".join(c["text"] for c in again.cells())
        assert study.WIDGET_NOTE in page_text
        again.close()
        context.close()
    assert git_status(clone) == "", git_status(clone)
