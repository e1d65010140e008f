"""The self-study edition: the six notebooks with every exercise blank, to write yourself; each
exercise's visible checks, then a hint and the solution on request.

    featviz-study                 # the working copy in work/ (made or updated), then JupyterLab on it
    featviz-study --no-lab        # only make or update the working copy

The working copy is the student version nbgrader's ``generate_assignment`` makes of the source
notebooks (``notebooks/``): each solution region replaced by ``raise NotImplementedError()``
(each answer by "YOUR ANSWER HERE"), the hidden tests taken out, no outputs. After each
exercise's visible checks comes one cell more::

    # Stuck? Uncomment one line and run this cell.
    # study.hint("saliency")        # a hint
    # study.solution("saliency")    # the solution

It lives in ``work/`` at the repository's root, which git ignores, so the course's own notebooks
stay as they are and ``git pull`` never conflicts. A course update never overwrites your copy:
this command writes the new version to ``work/updates/`` and says which sections changed.
JupyterLab started by this command saves each slider panel as a one-line note ("run the cells
above to bring the sliders back"), never as a widget that is gone when the notebook reopens.

The full-solution notebooks of ``notebooks/`` stay what the lecture, nbval and nbgrader use.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
WORK = ROOT / "work"
BASE = ".featviz-study"            # in the working copy: the blank versions it was made from
UPDATES = "updates"
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"      # nbgrader's, for Python
TEXT_STUB = "YOUR ANSWER HERE"
STUCK_TAG = "featviz-stuck"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = "(A slider panel: run the cells above to bring the sliders back.)"


# ------------------------------------------------------------------ the exercises

def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _nbgrader(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _source_notebooks() -> list[Path]:
    paths = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(
            f"the course's notebooks are not in {NOTEBOOKS}: the self-study edition is made from "
            "a clone of the course's repository (git clone ..., then pip install -e .)")
    return paths


def exercises() -> dict[str, dict]:
    """Exercise name (``saliency`` for the solution cell ``saliency-impl``) → its notebook, its
    solution cell's source, its hint and the grade ids of its visible checks."""
    out = {}
    for path in _source_notebooks():
        current = None
        for cell in _read(path)["cells"]:
            meta = _nbgrader(cell)
            if cell["cell_type"] == "code" and meta.get("solution"):
                current = meta["grade_id"].removesuffix("-impl")
                out[current] = {"notebook": path.name, "solution": _source(cell),
                                "hint": cell["metadata"].get("featviz", {}).get("hint", ""),
                                "checks": []}
            elif cell["cell_type"] == "code" and meta.get("grade") and current:
                out[current]["checks"].append(meta["grade_id"])
    return out


def _exercise(name: str) -> dict:
    known = exercises()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        raise KeyError(f"no exercise named {name!r}" + (f"; did you mean {close[0]!r}?" if close
                                                        else f"; the exercises: {', '.join(known)}"))
    return known[name]


def hint(name: str) -> None:
    """Print the hint for exercise ``name`` (e.g. ``"saliency"``)."""
    text = _exercise(name)["hint"]
    print(f"Hint ({name}): {text}" if text else f"No hint is written for {name} yet.")


def solution(name: str) -> None:
    """Print the solution of exercise ``name``: the source notebook's cell, to read or paste."""
    ex = _exercise(name)
    print(f"The solution of {name} ({ex['notebook']}); the lines between BEGIN and END SOLUTION "
          f"are what you write:\n")
    print(ex["solution"])


# ------------------------------------------------------------------ the student version

def _replace_regions(text: str, begin: str, end: str, stub: str = "") -> str:
    """Each ``begin``..``end`` region of a cell (marker lines included) → ``stub``, indented like
    its begin line (nothing, for an empty stub): nbgrader's ClearSolutions (BEGIN/END SOLUTION)
    and ClearHiddenTests (BEGIN/END HIDDEN TESTS) on one cell."""
    out, inside = [], False
    for line in text.split("\n"):
        if begin in line:
            indent = re.match(r"\s*", line).group(0)
            out.extend(indent + s for s in stub.split("\n") if stub)
            inside = True
        elif end in line:
            inside = False
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _stuck_cell(name: str) -> dict:
    text = ("# Stuck? Uncomment one line and run this cell.\n"
            "from featviz_helpers import study\n"
            f"# study.hint({name!r})        # a hint\n"
            f"# study.solution({name!r})    # the solution")
    return {"cell_type": "code", "execution_count": None, "id": f"stuck-{name}",
            "metadata": {"tags": [STUCK_TAG]}, "outputs": [], "source": text.splitlines(True)}


def student_version(nb: dict, solved: bool = False) -> dict:
    """The blank notebook a student writes: nbgrader's student version of ``nb`` (solutions
    cleared, hidden tests removed, no outputs), plus a "Stuck?" cell after each exercise's
    visible checks. ``solved=True`` keeps the solutions: the working copy of a student who
    has written every exercise (what ``benchmarks/bench_grading.py`` times as self-study)."""
    nb = copy.deepcopy(nb)
    cells, current, last_check = [], None, None
    for cell in nb["cells"]:
        meta, text = _nbgrader(cell), _source(cell)
        if not solved and (meta.get("solution") or "BEGIN SOLUTION" in text):
            stub = CODE_STUB if cell["cell_type"] == "code" else TEXT_STUB
            text = _replace_regions(text, "BEGIN SOLUTION", "END SOLUTION", stub) \
                if "BEGIN SOLUTION" in text else stub
        if "BEGIN HIDDEN TESTS" in text:
            text = _replace_regions(text, "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
        cell["source"] = text.splitlines(True)
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if meta.get("solution"):
                if current and last_check is not None:
                    cells.insert(last_check + 1, _stuck_cell(current))
                current, last_check = meta["grade_id"].removesuffix("-impl"), None
            elif meta.get("grade") and current:
                last_check = len(cells)
        cells.append(cell)
    if current and last_check is not None:
        cells.insert(last_check + 1, _stuck_cell(current))
    nb["cells"] = cells
    return nb


# ------------------------------------------------------------------ the working copy

def _write(path: Path, nb: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _sections(nb: dict) -> list[tuple[str, list[str]]]:
    """(heading, the sources of its cells) for each section of a notebook."""
    out = [("the top", [])]
    for cell in nb["cells"]:
        text = _source(cell)
        if cell["cell_type"] == "markdown" and text.startswith("#"):
            out.append((text.splitlines()[0].lstrip("# ").strip(), []))
        out[-1][1].append(text)
    return out


def changed_sections(old: dict, new: dict) -> list[str]:
    """The headings of the sections whose cells differ between two versions of a notebook."""
    before = dict(_sections(old))
    return [heading for heading, texts in _sections(new) if before.get(heading) != texts] + \
        [heading for heading in before if heading not in dict(_sections(new))]


def make_working_copy(folder: Path = WORK) -> list[str]:
    """Write the blank notebooks into ``folder`` (never over a student's own); the lines to tell
    the student."""
    said = []
    for path in _source_notebooks():
        fresh = student_version(_read(path))
        mine, base = folder / path.name, folder / BASE / path.name
        if not mine.exists():
            _write(mine, fresh)
            _write(base, fresh)
            said.append(f"{path.name}: written")
            continue
        if base.exists() and _read(base)["cells"] == fresh["cells"]:
            continue
        _write(folder / UPDATES / path.name, fresh)
        sections = changed_sections(_read(base), fresh) if base.exists() else ["(unknown)"]
        said.append(
            f"{path.name}: the course changed since your copy was made (sections: "
            f"{'; '.join(sections)}). Your copy is untouched; the new version is "
            f"{folder / UPDATES / path.name}. Copy your work across, or delete your copy and run "
            f"featviz-study again to start from the new one.")
    return said


def pre_save(model: dict, **kwargs) -> None:
    """JupyterLab's pre-save hook (``FileContentsManager.pre_save_hook``): each slider panel is
    saved as a one-line note, so the reopened notebook says to rerun instead of showing a
    widget error (the widget's kernel is gone by then)."""
    if model.get("type") != "notebook" or not isinstance(model.get("content"), dict):
        return
    for cell in model["content"].get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data", {})
            if WIDGET_VIEW in data:
                output["data"] = {"text/plain": WIDGET_NOTE}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="featviz-study", description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=WORK,
                        help=f"where the working copy lives (default: {WORK})")
    parser.add_argument("--no-lab", action="store_true", help="don't start JupyterLab")
    parser.add_argument("lab_args", nargs="*", help="more arguments for jupyter lab, after --")
    args = parser.parse_args(argv)
    for line in make_working_copy(args.folder):
        print(line)
    print(f"Your working copy: {args.folder}")
    if args.no_lab:
        return 0
    return subprocess.call(lab_command(args.folder, args.lab_args))


def lab_command(folder: Path, extra: list[str] = ()) -> list[str]:
    """``jupyter lab`` on the working copy, with the pre-save hook; ``--allow-root`` where the
    student is root (most containers), which changes nothing for a normal user."""
    command = [sys.executable, "-m", "jupyter", "lab", str(folder),
               "--FileContentsManager.pre_save_hook=featviz_helpers.study.pre_save", *extra]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")
    return command


if __name__ == "__main__":
    sys.exit(main())
