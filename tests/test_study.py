"""The self-study edition (featviz_helpers.study): the blank working copy, its "Stuck?" cells,
hints and solutions on request, course updates that never overwrite a student's work, and the
pre-save hook that keeps reopened notebooks free of widget errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from featviz_helpers import study
from notebook_cells import cells, grading, source

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_exercise_has_a_hint_a_solution_and_checks():
    known = study.exercises()
    solution_cells = {grading(c)["grade_id"].removesuffix("-impl") for path in NOTEBOOKS
                      for c in cells(path) if grading(c).get("solution") and c["cell_type"] == "code"}
    assert set(known) == solution_cells and len(known) >= 16
    for name, ex in known.items():
        assert len(ex["hint"]) > 40, f"{name}: no real hint"
        assert "BEGIN SOLUTION" in ex["solution"] and ex["checks"], name


def test_hint_and_solution_print_and_name_unknown_exercises(capsys):
    study.hint("saliency")
    study.solution("saliency")
    out = capsys.readouterr().out
    assert out.startswith("Hint (saliency): ") and "def my_saliency" in out
    with pytest.raises(KeyError, match="did you mean 'saliency'"):
        study.hint("salency")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_student_version_is_blank_and_shows_no_hidden_test(path):
    blank = study.student_version(json.loads(path.read_text(encoding="utf-8")))
    text = "\n".join(source(c) for c in blank["cells"])
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text
    assert "hidden_check_" not in text
    assert all(not c.get("outputs") for c in blank["cells"] if c["cell_type"] == "code")
    solutions = [c for c in blank["cells"] if grading(c).get("solution")]
    assert solutions and all("raise NotImplementedError()" in source(c) or
                             source(c) == study.TEXT_STUB for c in solutions)
    # one "Stuck?" cell right after each exercise's last graded check
    stuck = [i for i, c in enumerate(blank["cells"]) if study.STUCK_TAG in c["metadata"].get("tags", [])]
    names = [n for n, ex in study.exercises().items() if ex["notebook"] == path.name]
    assert len(stuck) == len(names)
    for i, name in zip(stuck, names):
        assert grading(blank["cells"][i - 1]).get("grade_id") == study.exercises()[name]["checks"][-1]
        assert f"study.hint({name!r})" in source(blank["cells"][i])


def test_student_version_equals_nbgraders_release(tmp_path):
    """The same student version nbgrader's generate_assignment makes (cell by cell)."""
    pytest.importorskip("nbgrader")
    shutil.copy(ROOT / "classroom" / "nbgrader_config.py", tmp_path)
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "featviz").symlink_to(ROOT / "notebooks", target_is_directory=True)
    env_path = f"{Path(sys.executable).parent}:{__import__('os').environ['PATH']}"
    subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", "featviz"],
                   cwd=tmp_path, check=True, capture_output=True, env={**__import__('os').environ,
                                                                        "PATH": env_path})
    for path in NOTEBOOKS:
        released = [source(c) for c in cells(tmp_path / "release" / "featviz" / path.name)]
        mine = [source(c) for c in study.student_version(json.loads(path.read_text("utf-8")))["cells"]
                if study.STUCK_TAG not in c["metadata"].get("tags", [])]
        assert mine == released, path.name


def test_working_copy_is_made_once_and_never_overwritten(tmp_path, monkeypatch):
    work = tmp_path / "work"
    said = study.make_working_copy(work)
    assert len(said) == len(NOTEBOOKS) and all(line.endswith("written") for line in said)
    assert study.make_working_copy(work) == []                     # nothing new: nothing said
    mine = work / NOTEBOOKS[1].name
    nb = json.loads(mine.read_text("utf-8"))
    nb["cells"][3]["source"] = ["def my_saliency(model, x, target):\n", "    return 42\n"]
    mine.write_text(json.dumps(nb), "utf-8")
    # A course update: one section of notebook 02 changes.
    course = tmp_path / "course"
    shutil.copytree(ROOT / "notebooks", course)
    updated = json.loads((course / NOTEBOOKS[1].name).read_text("utf-8"))
    section = next(i for i, c in enumerate(updated["cells"]) if c["cell_type"] == "markdown"
                   and source(c).startswith("## 4."))
    updated["cells"][section + 1]["source"].append("\nprint('a course fix')")
    (course / NOTEBOOKS[1].name).write_text(json.dumps(updated), "utf-8")
    monkeypatch.setattr(study, "NOTEBOOKS", course)
    said = study.make_working_copy(work)
    assert len(said) == 1 and said[0].startswith(NOTEBOOKS[1].name)
    assert "4. Identity: finite differences" in said[0] and "untouched" in said[0]
    assert "return 42" in mine.read_text("utf-8")                   # the student's work stays
    assert "a course fix" in (work / "updates" / NOTEBOOKS[1].name).read_text("utf-8")


def test_the_working_copy_is_where_git_does_not_look():
    where = study.WORK.relative_to(ROOT) / NOTEBOOKS[0].name
    ignored = subprocess.run(["git", "check-ignore", "-q", str(where)], cwd=ROOT)
    assert ignored.returncode == 0, f"{where} is not ignored by git"


def test_pre_save_hook_turns_panels_into_a_note():
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2},
            "text/plain": "VBox(...)"}
    model = {"type": "notebook", "content": {"cells": [
        {"cell_type": "code", "outputs": [{"output_type": "display_data", "data": view,
                                           "metadata": {}},
                                          {"output_type": "stream", "name": "stdout", "text": "x"}]},
        {"cell_type": "markdown", "source": "text"}]}}
    study.pre_save(model=model, path="02_saliency.ipynb", contents_manager=None)
    outputs = model["content"]["cells"][0]["outputs"]
    assert outputs[0]["data"] == {"text/plain": study.WIDGET_NOTE}
    assert outputs[1]["text"] == "x"
    study.pre_save(model={"type": "file", "content": "abc"})        # not a notebook: untouched
