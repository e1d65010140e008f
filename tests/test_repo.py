"""Repository rules: stripped notebooks, one dependency list, README and CI in agreement."""
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
TEST_COMMAND = "python -m pytest tests notebooks --nbval-lax --nbval-current-env"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def test_there_are_notebooks():
    assert [p.name[:3] for p in NOTEBOOKS][:2] == ["01_", "02_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name} cell {i} has stored outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {i} has a count"
        # An empty cell shows JupyterLab's placeholder ("Type Markdown and LaTeX") to students.
        assert "".join(cell["source"]).strip(), f"{path.name} cell {i} is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_solution_regions_and_imports(path):
    source = "\n".join("".join(c["source"]) for c in json.loads(path.read_text())["cells"])
    assert source.count("### BEGIN SOLUTION") == source.count("### END SOLUTION") >= 1
    assert not re.search(r"sys\.path\.(insert|append)", source), "install the helpers instead"


def requirement_names(reqs):
    return {re.split(r"[<>=!~ \[]", r, maxsplit=1)[0].lower(): r for r in reqs}


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    text = (ROOT / "environment.yml").read_text()
    pip_section = text.split("- pip:", 1)[1]
    listed = [line.strip()[2:].strip() for line in pip_section.splitlines()
              if line.strip().startswith("- ") and not line.strip().startswith("- -e")]
    assert sorted(listed) == sorted(declared), "environment.yml and pyproject.toml differ"


def test_readme_and_ci_run_the_same_test_command():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in readme and TEST_COMMAND in ci


def test_readme_maps_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert path.name in readme, f"README's notebook map lacks {path.name}"


def test_no_unsafe_torch_load():
    for path in [*ROOT.glob("featviz_helpers/**/*.py"), *ROOT.glob("benchmarks/*.py"),
                 *ROOT.glob("tests/*.py"), *NOTEBOOKS]:
        for call in re.findall(r"torch\.load\(([^)]*)\)", path.read_text(encoding="utf-8")):
            assert "weights_only=True" in call, f"{path.name}: torch.load without weights_only=True"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_says_how_to_install_the_helpers_when_missing(path, monkeypatch):
    first = next(c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code")
    source = "".join(first["source"])
    guard = source[:source.index(") from None") + len(") from None")]
    monkeypatch.setitem(sys.modules, "featviz_helpers", None)     # as if not installed
    with pytest.raises(ModuleNotFoundError) as caught:
        exec(compile(guard, path.name, "exec"), {})
    message = str(caught.value)
    assert "%pip install" in message and "git+" in message and "restart the kernel" in message
    assert "pip install -e ." in message


def test_readme_commands_work_as_root_and_fetch_every_zoo_model():
    from featviz_helpers import models
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert ".venv/bin/featviz-study\n" in readme          # adds --allow-root for root itself
    assert "--index-url https://download.pytorch.org/whl/cpu" in readme
    one_liner = next(line for line in readme.splitlines() if "models.load_model(n) for n in" in line)
    for name in models.TORCHVISION_MODELS:
        if name != "vgg16":               # only its architecture is used (notebook 04, no weights)
            assert f"'{name}'" in one_liner, f"the download one-liner lacks {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_metadata_is_what_the_kernel_reports(path):
    """JupyterLab overwrites kernelspec and language_info with what the kernel reports when a
    notebook opens, and a difference marks it modified (●) before any edit. The version is
    the one Python in CI reports (another Python rewrites only that field)."""
    from ipykernel.ipkernel import IPythonKernel
    meta = json.loads(path.read_text(encoding="utf-8"))["metadata"]
    assert meta["kernelspec"] == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                  "name": "python3"}
    expected = {k: v for k, v in IPythonKernel.language_info.items() if k != "version"}
    assert {k: v for k, v in meta["language_info"].items() if k != "version"} == expected
    assert re.fullmatch(r"3\.\d+\.\d+", meta["language_info"]["version"])
