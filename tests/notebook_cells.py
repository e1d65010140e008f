"""Reading the source notebooks' cells and their nbgrader metadata (shared by the tests)."""
from __future__ import annotations

import json
from pathlib import Path


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def grading(cell: dict) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def solution_cells(path: Path) -> dict[str, str]:
    """grade_id → source of each code solution cell (an exercise)."""
    return {grading(c)["grade_id"]: source(c) for c in cells(path)
            if c["cell_type"] == "code" and grading(c).get("solution")}


def exercise_of(grade_id: str, exercises) -> str | None:
    """The exercise (solution cell) whose graded cells share its name: saliency-impl → saliency-*."""
    owners = [e for e in exercises if grade_id.startswith(e.removesuffix("-impl") + "-")]
    return max(owners, key=len) if owners else None


def graded_test_cells(path: Path) -> list[str]:
    return [grading(c)["grade_id"] for c in cells(path)
            if c["cell_type"] == "code" and grading(c).get("grade")]
