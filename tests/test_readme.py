"""The README against what it describes, so that it cannot drift from the course.

* the teachers' table and point totals against the notebooks' nbgrader metadata, and each
  notebook's first cell against the same metadata;
* the number of wrong implementations against ``tests/classroom_corpus.py``;
* the lecture figures' table against ``featviz_helpers.figures.FIGURES``, and each figure's
  notebook section against the drawing function the figure names;
* the notebook map, the helpers' table, the models' table, the photos, the training options
  and the repository paths against the code and data.

Where the README holds a table that the code determines, the test writes that table itself and
compares: a failure prints the corrected text to paste into the README.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import json
import pkgutil
import re
from pathlib import Path

import pytest

import featviz_helpers
from classroom_corpus import WRONG
from notebook_cells import cells, exercise_of, grading, solution_cells, source
from featviz_helpers import figures, library_guard, methods, models

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
README = (ROOT / "README.md").read_text(encoding="utf-8")

# Each exercise (solution cell ``<stem>-impl``): its name in the teachers' table, and a phrase
# the notebook map's row for its notebook must contain (case-insensitive). A new exercise
# needs an entry here, and so a line in both tables.
EXERCISES = {
    "normalize-filters": ("normalise filters", "per-filter normalisation"),
    "filter-response": ("a filter's response", "a filter's response map"),
    "saliency": ("saliency", "saliency"),
    "smoothgrad": ("SmoothGrad", "SmoothGrad"),
    "integrated-gradients": ("Integrated Gradients", "Integrated Gradients"),
    "ascent-step": ("a gradient-ascent step", "gradient ascent"),
    "fooling-image": ("adversarial example", "adversarial example"),
    "relu-rules": ("the three ReLU rules", "three ReLU backward rules"),
    "guided-backprop": ("guided backprop", "guided backprop"),
    "fourier-image": ("a picture from its Fourier spectrum", "Fourier"),
    "cam": ("CAM", "CAM"),
    "grad-cam": ("Grad-CAM", "Grad-CAM"),
    "occlusion": ("occlusion", "occlusion"),
    "grad-cam-plus-plus": ("Grad-CAM++", "Grad-CAM++"),
    "vit-attention": ("attention extraction", "attention recomputed from the block's weights"),
    "rollout": ("rollout", "attention rollout"),
}


# --------------------------------------------------------------------------- reading

def readme_table(header_start: str) -> str:
    """The README's table whose header line starts with ``header_start``: its lines, as is."""
    lines = [line.strip() for line in README.splitlines()]     # some tables are indented
    start = next((i for i, line in enumerate(lines) if line.startswith(header_start)), None)
    assert start is not None, f"the README has no table starting {header_start!r}"
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def table_rows(header_start: str) -> list[list[str]]:
    """The body rows of a README table, each as its stripped cells."""
    return [[c.strip() for c in line.strip().strip("|").split("|")]
            for line in readme_table(header_start).splitlines()[2:]]


def readme_section(title: str) -> str:
    """The README's text from the ``## title`` heading to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"the README has no section {title!r}"
    return match.group(1)


def fail_with(expected: str, what: str) -> str:
    return f"{what} differs from the code; the corrected text is:\n\n{expected}\n"


# --------------------------------------------------------------------------- grading

def exercises_of(path: Path) -> dict[str, list[int]]:
    """Exercise stem (``saliency`` for ``saliency-impl``) → points of its autograded test cells,
    in notebook order, each test cell assigned as the classroom tests assign it."""
    exercises = solution_cells(path)
    points: dict[str, list[int]] = {gid.removesuffix("-impl"): [] for gid in exercises}
    for cell in cells(path):
        meta = grading(cell)
        if cell["cell_type"] == "code" and meta.get("grade") and not meta.get("solution"):
            owner = exercise_of(meta["grade_id"], exercises)
            assert owner, f"{path.name}: graded cell {meta['grade_id']} belongs to no exercise"
            points[owner.removesuffix("-impl")].append(meta.get("points", 0))
    return points


def manual_points(path: Path) -> list[int]:
    """Points of the manually graded cells: answer cells (solution and grade) and tasks."""
    return [grading(c).get("points", 0) for c in cells(path)
            if (grading(c).get("grade") and grading(c).get("solution")) or grading(c).get("task")]


def autograded_points(path: Path) -> int:
    return sum(sum(p) for p in exercises_of(path).values())


def count_times_points(points: list[int]) -> str:
    if not points:
        return "none"
    if len(set(points)) == 1:
        return f"{len(points)} × {points[0]}"
    return " + ".join(map(str, points))


def teachers_table() -> str:
    lines = ["| notebook | exercises (autograded points) | autograded | questions (manual points) "
             "| manual | total |",
             "| --- | --- | ---: | --- | ---: | ---: |"]
    n_exercises = n_questions = auto_all = manual_all = 0
    for path in NOTEBOOKS:
        exercises = exercises_of(path)
        questions = manual_points(path)
        auto, manual = autograded_points(path), sum(questions)
        named = ", ".join(f"{EXERCISES.get(stem, (stem,))[0]} ({sum(p)})"
                          for stem, p in exercises.items())
        lines.append(f"| {path.name[:2]} | {named} | {auto} | {count_times_points(questions)} "
                     f"| {manual} | {auto + manual} |")
        n_exercises += len(exercises)
        n_questions += len(questions)
        auto_all += auto
        manual_all += manual
    lines.append(f"| all | {n_exercises} exercises | {auto_all} | {n_questions} questions "
                 f"| {manual_all} | {auto_all + manual_all} |")
    return "\n".join(lines)


def test_every_exercise_has_a_name():
    stems = [stem for path in NOTEBOOKS for stem in exercises_of(path)]
    missing = [stem for stem in stems if stem not in EXERCISES]
    assert not missing, (f"exercises {missing} have no entry in tests/test_readme.py's "
                         "EXERCISES (their name in the teachers' table and the notebook map)")
    assert sorted(set(EXERCISES) - set(stems)) == [], "EXERCISES names exercises no notebook has"


def test_teachers_table_matches_the_notebooks():
    expected = teachers_table()
    assert readme_table("| notebook | exercises") == expected, \
        fail_with(expected, "The teachers' table")


def test_readme_point_totals_match_the_notebooks():
    auto = sum(autograded_points(p) for p in NOTEBOOKS)
    manual = sum(sum(manual_points(p)) for p in NOTEBOOKS)
    stated = re.search(r"in all,\s+(\d+):\s+(\d+)\s+autograded,\s+(\d+)\s+for\s+the\s+questions",
                       README)
    assert stated, "the README's classroom section states no point total"
    assert tuple(map(int, stated.groups())) == (auto + manual, auto, manual), \
        f"the README should say: in all, {auto + manual}: {auto} autograded, {manual} for the " \
        "questions"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_states_the_notebooks_points(path):
    first = next(c for c in cells(path) if c["cell_type"] == "markdown")
    auto, manual = autograded_points(path), sum(manual_points(path))
    expected = (f"**Graded version (nbgrader):** {auto + manual} points — {auto} autograded for "
                f"the exercises, {manual} for the questions.")
    stated = re.search(r"Graded version \(nbgrader\):\**\s*(\d+) points?\s*[—–-]+\s*(\d+) "
                       r"autograded\b[^,]*,\s*(\d+) for the questions", source(first))
    assert stated, f"{path.name}'s first cell states no points; it should say:\n{expected}"
    assert tuple(map(int, stated.groups())) == (auto + manual, auto, manual), \
        f"{path.name}'s first cell should say:\n{expected}"


def test_corpus_count():
    """Counted as tests/test_classroom.py grades them: one graded student per entry."""
    corpus = [(gid, k) for gid, entries in WRONG.items() for k, _ in enumerate(entries)]
    exercises = {f"{stem}-impl" for path in NOTEBOOKS for stem in exercises_of(path)}
    assert set(WRONG) <= exercises, f"corpus entries for no exercise: {set(WRONG) - exercises}"
    stated = re.findall(r"each of the (\d+) wrong implementations in `tests/classroom_corpus.py`",
                        README)
    assert stated == [str(len(corpus))], \
        f"the README should say: each of the {len(corpus)} wrong implementations in " \
        "`tests/classroom_corpus.py`"


# --------------------------------------------------------------------------- figures

SECTION_REF = re.compile(r"^(\d\d) §(\d+)\b")


def model_text(model: str) -> str:
    return "—" if model == "none" else ", ".join(f"`{m}`" for m in model.split(", "))


def figure_table() -> str:
    lines = ["| figure | lecture figure | model | notebook section | drawn by |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| `{f.name}` | {f.lecture} | {model_text(f.model)} | {f.notebook} "
              f"| `{f.draw.__name__}` |" for f in figures.FIGURES]
    return "\n".join(lines)


def test_figure_table_is_the_manifests():
    expected = figure_table()
    assert readme_table("| figure | lecture figure") == expected, \
        fail_with(expected, "The lecture figures' table")


@pytest.mark.parametrize("figure", figures.FIGURES, ids=lambda f: f.name)
def test_figure_is_made_with_its_draw_function(figure):
    name = figure.draw.__name__
    assert name.startswith("draw_") and getattr(figures, name) is figure.draw
    assert name in figures.__all__
    assert re.search(rf"\b{name}\(", inspect.getsource(figure.make)), \
        f"{figure.make.__name__} does not call {name}, the function its Figure names"


def notebook_sections(path: Path) -> dict[int, tuple[str, list[str]]]:
    """Section number → (its ``## N.`` heading, the sources of its code cells): from the
    heading up to the next ``## `` heading, wherever in a markdown cell the headings are."""
    sections: dict[int, tuple[str, list[str]]] = {}
    current = None
    for cell in cells(path):
        if cell["cell_type"] == "markdown":
            for line in source(cell).splitlines():
                if line.startswith("## "):
                    number = re.match(r"## (\d+)\.", line)
                    current = int(number.group(1)) if number else None
                    if current is not None:
                        sections[current] = (line, [])
        elif cell["cell_type"] == "code" and current is not None:
            sections[current][1].append(source(cell))
    return sections


def notebook_numbered(prefix: str) -> Path:
    found = [p for p in NOTEBOOKS if p.name.startswith(prefix + "_")]
    assert len(found) == 1, f"no single notebook {prefix}_…"
    return found[0]


SECTION_FIGURES = [f for f in figures.FIGURES if SECTION_REF.match(f.notebook)]


def test_every_figure_names_a_notebook_section():
    assert [f.name for f in SECTION_FIGURES] == [f.name for f in figures.FIGURES]


@pytest.mark.parametrize("figure", SECTION_FIGURES, ids=lambda f: f.name)
def test_notebook_section_calls_the_figures_draw_function(figure):
    """The notebook section that the manifest names draws its picture with the same function
    as the figures command: one of its code cells calls ``figures.<draw function>(``."""
    number, section = SECTION_REF.match(figure.notebook).groups()
    path = notebook_numbered(number)
    sections = notebook_sections(path)
    assert int(section) in sections, \
        f"{path.name} has no heading '## {int(section)}.' (figure {figure.name}: {figure.notebook})"
    heading, code = sections[int(section)]
    call = f"figures.{figure.draw.__name__}("
    assert any(call in cell for cell in code), \
        f"{path.name} §{section} ({heading!r}) never calls {call}…) as figure {figure.name} says"


# --------------------------------------------------------------------------- notebook map

def map_rows() -> dict[str, str]:
    rows = table_rows("| notebook | tier |")
    return {row[0].strip("`"): " | ".join(row[1:]) for row in rows}


def test_notebook_map_lists_the_notebooks_in_order():
    assert list(map_rows()) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_map_names_every_exercise(path):
    row = map_rows()[path.name].lower()
    for stem in exercises_of(path):
        phrase = EXERCISES.get(stem, (stem, stem))[1]
        assert phrase.lower() in row, f"the notebook map's row for {path.name} lacks {phrase!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_map_citations_are_in_the_notebook(path):
    """Each 'Author et al. YEAR' / 'A & B YEAR' in the map's row: the notebook cites it too
    (the surname, then the year within a few lines)."""
    row = map_rows()[path.name]
    text = "\n".join(source(c) for c in cells(path))
    for surname, year in re.findall(r"([A-Z][\w'-]+)(?: et al\.| & [A-Z][\w'-]+),? (\d{4})", row):
        assert re.search(rf"{surname}[\s\S]{{0,400}}?{year}", text), \
            f"the map says {path.name} cites {surname} {year}; the notebook does not"


# --------------------------------------------------------------------------- helpers

def helper_rows() -> dict[str, str]:
    return {row[0].strip("`"): row[1] for row in table_rows("| module | holds |")}


def test_helpers_table_lists_the_packages_modules():
    modules = {m.name for m in pkgutil.iter_modules(featviz_helpers.__path__)
               if not m.name.startswith("_")}
    assert set(helper_rows()) == modules


def resolve(module, dotted: str):
    """``dotted`` as an attribute of ``module``, else of one of the package's modules (`viz`),
    else of an installed package (`ipywidgets.Output`)."""
    head, *rest = dotted.split(".")
    if hasattr(module, head):
        obj = getattr(module, head)
    elif importlib.util.find_spec(f"featviz_helpers.{head}"):
        obj = importlib.import_module(f"featviz_helpers.{head}")
    else:
        obj = importlib.import_module(head)
    for part in rest:
        obj = getattr(obj, part)
    return obj


@pytest.mark.parametrize("name", sorted(helper_rows()))
def test_helpers_table_names_exist(name):
    module = importlib.import_module(f"featviz_helpers.{name}")
    for dotted in re.findall(r"`([A-Za-z_][\w.]*)`", helper_rows()[name]):
        try:
            resolve(module, dotted)
        except (AttributeError, ImportError):
            pytest.fail(f"the helpers' table says {name} holds `{dotted}`; it does not")


def is_library_copy(fn) -> bool:
    """Marked by library_guard.library_copy."""
    return library_guard.is_library_copy(fn)


def test_helpers_table_lists_every_library_copy():
    listed = set(re.findall(r"`(\w+)`", helper_rows()["methods"]))
    assert listed <= set(methods.__all__), \
        f"the helpers' table lists names not in methods.__all__: {listed - set(methods.__all__)}"
    copies = {n for n in methods.__all__ if is_library_copy(getattr(methods, n))}
    assert copies, "no library copy found in methods (has library_guard changed?)"
    assert copies <= listed, f"library copies missing from the helpers' table: {copies - listed}"


def test_module_references_resolve():
    """Every ``module.name`` of the package that the README mentions exists."""
    modules = "|".join(helper_rows())
    for module, attr in set(re.findall(
            rf"(?<![\w/.-])(?:featviz_helpers\.)?({modules})\.([A-Za-z_]\w*)", README)):
        if attr in {"py", "json", "ipynb"}:
            continue
        assert hasattr(importlib.import_module(f"featviz_helpers.{module}"), attr), \
            f"the README mentions {module}.{attr}, which does not exist"


# --------------------------------------------------------------------------- models, photos, paths

def shapes_record(name: str) -> dict:
    return json.loads((ROOT / "data" / "models" / f"{name}.json").read_text(encoding="utf-8"))


def test_shapes_models_table_matches_their_records():
    header = readme_table("| model | architecture |").splitlines()[0]
    rows = table_rows("| model | architecture |")
    assert [r[0].strip("`") for r in rows] == ["shapes_cnn", "shapes_cnn_biased", "shapes_vit"]
    for name, architecture, trained_on, accuracy, training in rows:
        record = shapes_record(name.strip("`"))
        assert f"({record['heldout_size']:,} images)" in header
        if "parameters" in architecture:
            k = int(re.search(r"(\d+)k parameters", architecture).group(1))
            assert k == round(record["parameters"] / 1000), \
                f"{name}: {record['parameters']} parameters"
        assert trained_on.split(":")[0].split()[0] == record["training_variant"], name
        assert f"{record['steps']:,} steps of {record['batch']}" in training, name
        for value, variant in re.findall(r"(\d+(?:\.\d+)?)%\s*(\w*)", accuracy):
            if variant not in record["heldout_accuracy"]:
                variant = record["training_variant"]
            half_unit = 0.5 * 10 ** -len(value.partition(".")[2]) + 1e-9
            true = 100 * record["heldout_accuracy"][variant]
            assert abs(float(value) - true) <= half_unit, f"{name} {variant}: {true:.2f}%"


def test_shapes_vit_learning_curve_claim():
    curve = shapes_record("shapes_vit")["curve"]
    claims = re.findall(r"passed\s+(\d+)%\s+at\s+step\s+([\d,]+\d)", README)
    assert claims
    for percent, step in claims:
        first = next(s for s, _, acc in curve if acc > int(percent) / 100)
        assert first == int(step.replace(",", "")), f"passed {percent}% at step {first:,}"


def test_zoo_list_matches_the_loader():
    bullet = re.search(r"\*\*Online: torchvision's pretrained zoo\*\*(.*?)loaded with", README,
                       re.S)
    assert bullet, "the README's models section has no online zoo list"
    assert set(re.findall(r"`(\w+)`", bullet.group(1))) == set(models.TORCHVISION_MODELS)


def test_photos_section_lists_the_photos():
    from featviz_helpers import images
    names = set(re.findall(r"`([a-z_]+)`", readme_section("Photos")))
    assert names == set(images.PHOTOS)


def test_training_options_exist():
    from featviz_helpers import train
    section = readme_section("Training the shapes models")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        train.parse_args(["--help"])
    for option in set(re.findall(r"(--[a-z][\w-]*)", section)):
        assert option in out.getvalue(), f"the training command has no {option}"
    names = re.findall(r"(shapes_\w+)", section.split("```")[1])
    assert set(names) == set(train.RECIPES)


def test_repository_paths_exist():
    for path in set(re.findall(r"(?<![\w/.<-])((?:tests|benchmarks|data|classroom|featviz_helpers"
                               r"|notebooks|\.ci)/[\w./-]*)", README)):
        if "NAME" not in path:
            assert (ROOT / path).exists(), f"the README names {path}, which does not exist"
    layout = readme_section("Layout").split("```")[1].strip("\n").splitlines()
    for name in layout[0].split():                        # README.md  environment.yml  …
        assert (ROOT / name).exists(), f"the README's layout names {name}, which does not exist"
    for line in layout[1:]:                               # folder/   what it holds, files
        folder = line.split()[0]
        assert (ROOT / folder).is_dir(), f"the README's layout names {folder}"
        for name in re.findall(r"[\w-]+\.(?:py|md|json)\b", line):
            assert (ROOT / folder / name).exists(), f"the README's layout names {folder}{name}"
