"""The catalogue of methods is complete, and every method in it leaves a model and its input
as they were; every library copy says which notebook section derives it."""
from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
import torch
import torchvision

from featviz_helpers import hooks, library_guard, methods, models, relu_rules

from state_helpers import small_net, unchanged

ROOT = Path(__file__).resolve().parent.parent
LIBRARY_COPIES = {name: getattr(methods, name) for name in methods.__all__
                  if library_guard.is_library_copy(getattr(methods, name))}


def test_every_library_copy_has_one_entry():
    listed = [method.function for method in methods.CATALOGUE]
    missing = [name for name, fn in LIBRARY_COPIES.items() if fn not in listed]
    assert not missing, f"library methods missing from methods.CATALOGUE: {missing}"
    assert len(set(map(id, listed))) == len(listed), "a method is catalogued twice"
    names = [method.name for method in methods.CATALOGUE]
    assert len(set(names)) == len(names)
    strays = [m.name for m in methods.CATALOGUE if m.function not in LIBRARY_COPIES.values()]
    assert not strays, f"catalogued but not a public library copy of methods: {strays}"


def test_a_forgotten_method_is_noticed():
    # What the test above relies on: marking a function makes it a library copy.
    @library_guard.library_copy
    def grad_cam_plus_plus(model, x, target, layer):
        library_guard.refuse_if_blocked()
        raise NotImplementedError

    assert library_guard.is_library_copy(grad_cam_plus_plus)
    assert grad_cam_plus_plus not in [m.function for m in methods.CATALOGUE]
    assert grad_cam_plus_plus.library_copy_name == "test_catalogue.grad_cam_plus_plus"


def test_guard_messages_keep_the_public_names():
    assert methods.grad_cam.library_copy_name == "methods.grad_cam"
    assert methods.input_gradient.library_copy_name == "methods.input_gradient"
    assert relu_rules.relu_backward_rule.library_copy_name == "relu_rules.relu_backward_rule"


def _small_vit():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        vit = torchvision.models.VisionTransformer(image_size=16, patch_size=4, num_layers=2,
                                                   num_heads=2, hidden_dim=16, mlp_dim=32,
                                                   num_classes=5)
    return vit.train()


@pytest.mark.parametrize("method", methods.CATALOGUE, ids=lambda m: m.name)
def test_each_method_leaves_a_train_mode_model_and_its_input_as_they_were(method):
    net = small_net() if method.architecture == "CNN" else _small_vit()
    net.input_spec = models.SHAPES_SPEC
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    x_before = x.clone()
    with unchanged(net):
        out = method.example(net, x, torch.tensor([1, 3]), "3")
    assert isinstance(out, torch.Tensor) and torch.isfinite(out).all()
    assert torch.equal(x, x_before) and hooks.count_hooks(net) == 0


def _sections() -> dict[str, set[str]]:
    """Notebook number ('02') → the numbers of its '## N. Title' sections."""
    found = {}
    for path in sorted((ROOT / "notebooks").glob("0*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        found[path.name[:2]] = set(re.findall(r"^## (\d+)\.", text, re.M))
    return found


@pytest.mark.parametrize("name, fn", sorted({**LIBRARY_COPIES,
                                             "relu_backward_rule": relu_rules.relu_backward_rule
                                             }.items()))
def test_each_library_copy_names_the_section_that_derives_it(name, fn):
    doc = inspect.getdoc(fn) or ""
    cited = re.findall(r"notebook (0\d) §(\d+)", " ".join(doc.split()))
    assert cited, f"{name}'s docstring names no notebook section (\"notebook 0N §K\")"
    sections = _sections()
    for notebook, section in cited:
        assert section in sections[notebook], f"{name} cites notebook {notebook} §{section}"
