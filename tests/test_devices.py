"""The methods follow the model's device: nothing is created on a fixed one.

Without an accelerator two checks stand in for one:
* the default device set to ``meta`` (``with torch.device("meta")``) while model and batch are
  on the CPU: a tensor made without naming its device would land on meta and clash with the
  CPU ones, so the results must equal a plain run;
* model and batch on the meta device: every result is a meta tensor of the right shape (a CPU
  tensor built on the way would clash with them).
On CUDA and MPS, when present, every method runs there and matches the CPU answer.
"""
from __future__ import annotations

import pytest
import torch

from featviz_helpers import checks, images, methods, metrics, models

from state_helpers import unchanged

X = torch.rand(2, 3, 64, 64)
T = torch.tensor([1, 4])
MAPS = torch.rand(2, 8, 8)        # for the deletion and insertion metrics


def calls(cnn, vit, x):
    """Every method of the catalogue (and the metrics that run a model), on ``cnn``/``vit``
    and batch ``x``."""
    found = {method.name: (lambda m=method: m.example(cnn if m.architecture == "CNN" else vit,
                                                      x, T, "stage4"))
             for method in methods.CATALOGUE}
    found["deletion_auc"] = lambda: metrics.deletion_auc(cnn, x, MAPS, T, steps=3)
    found["insertion_auc"] = lambda: metrics.insertion_auc(cnn, x, MAPS, 3, steps=3)
    return found


@pytest.fixture(scope="module")
def trained():
    return models.load_model("shapes_cnn"), models.load_model("shapes_vit")


NAMES = list(calls(None, None, X))


@pytest.mark.parametrize("name", NAMES)
def test_nothing_is_made_on_the_default_device(trained, name):
    cnn, vit = trained
    call = calls(cnn, vit, X)[name]
    expected = call()
    with unchanged(cnn, vit):
        with torch.device("meta"):
            got = call()
    assert got.device.type == "cpu"
    # Equal up to round-off: under any torch-function mode (the device context is one),
    # nn.MultiheadAttention skips its fused fast path and sums in another order.
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_preprocess_makes_nothing_on_the_default_device(trained):
    cnn, _ = trained
    photo = images.load_image("coffee")
    expected = images.preprocess(photo, cnn)
    grey, zeros = torch.full((1, 3, 8, 8), 0.5), torch.zeros(1, 3, 8, 8)
    with torch.device("meta"):
        assert torch.equal(images.preprocess(photo, cnn), expected)
        assert torch.equal(images.preprocess(grey, cnn), zeros)


def _architectures(trained, device="cpu"):
    """Untrained shapes models on ``device``, with the input spec of the trained ones (the
    optimising methods read their pixel range and normalisation from it)."""
    built = []
    for name, net in zip(("shapes_cnn", "shapes_vit"), trained):
        model = models.build_architecture(name).eval().to(device)
        model.input_spec = net.input_spec
        built.append(model)
    return built


# A fooling image stops each image when its prediction flips: on meta tensors there are no
# predictions to read.
DATA_DEPENDENT = {m.name for m in methods.CATALOGUE if m.data_dependent}


@pytest.mark.parametrize("name", [n for n in NAMES if n not in DATA_DEPENDENT])
def test_on_the_meta_device_results_stay_there(trained, name):
    cnn, vit = _architectures(trained, "meta")
    expected_shape = calls(*_architectures(trained), X)[name]().shape
    got = calls(cnn, vit, X.to("meta"))[name]()
    assert got.device.type == "meta" and got.shape == expected_shape


def _accelerators():
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


@pytest.mark.parametrize("device", ["cuda", "mps"])
@pytest.mark.parametrize("name", NAMES)
def test_methods_on_an_accelerator_match_the_cpu(trained, device, name):
    if device not in _accelerators():
        pytest.skip(f"no {device} device here")
    cnn, vit = trained
    expected = calls(cnn, vit, X)[name]()
    cnn_d, vit_d = cnn.to(device), vit.to(device)
    try:
        with unchanged(cnn_d, vit_d):
            got = calls(cnn_d, vit_d, X.to(device))[name]()
        assert got.device.type == device
        # Accelerators may use TF32 and other summation orders: compare at the map's scale.
        assert checks.rel_error(got.cpu(), expected) < 1e-2
    finally:
        cnn.to("cpu"), vit.to("cpu")
