"""Library copies of guided backprop, CAM, Grad-CAM and Guided Grad-CAM.

Identities on the real Lite0 and on random-init torchvision architectures, hooks never left
behind, batches of mixed targets equal to one image at a time, in-place ReLU and ReLU6.
"""
import pytest
import torch
from torch import nn

from featviz_helpers import hooks, methods, models, relu_rules


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return models.load_model("resnet18", pretrained=False)


@pytest.fixture(scope="module")
def densenet121():
    torch.manual_seed(0)
    return models.load_model("densenet121", pretrained=False)


def logits_of(model, x, t):
    with torch.no_grad():
        return model(x).gather(1, t[:, None])[:, 0]


# ---- the three ReLU backward rules: the syllabus's worked example ----------------------

X = torch.tensor([[1.0, -1, 5], [2, -5, -7], [-3, 2, 4]])
G = torch.tensor([[-2.0, 3, -1], [6, -3, 1], [2, -1, 3]])


@pytest.mark.parametrize("rule, expected", [
    ("standard", [[-2, 0, -1], [6, 0, 0], [0, -1, 3]]),
    ("deconvnet", [[0, 3, 0], [6, 0, 1], [2, 0, 3]]),
    ("guided", [[0, 0, 0], [6, 0, 0], [0, 0, 3]]),
])
@pytest.mark.parametrize("relu", [nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU6()])
def test_relu_rules_worked_example(rule, expected, relu):
    net = nn.Sequential(relu)
    x = X.clone().requires_grad_(True)
    with relu_rules.relu_backward_rule(net, rule) as changed:
        y = net(x)
    y.backward(G)
    assert changed == 1 and "forward" not in relu.__dict__
    assert torch.equal(x.grad, torch.tensor(expected, dtype=torch.float32))


def test_relu6_top_passes_no_gradient():
    x = torch.tensor([-1.0, 3.0, 7.0], requires_grad=True)
    net = nn.Sequential(nn.ReLU6())
    with relu_rules.relu_backward_rule(net, "guided"):
        net(x).backward(torch.ones(3))
    assert x.grad.tolist() == [0.0, 1.0, 0.0]


def test_relu_rule_restored_after_exception(resnet18):
    with pytest.raises(RuntimeError, match="boom"):
        with relu_rules.relu_backward_rule(resnet18, "guided"):
            raise RuntimeError("boom")
    assert not any("forward" in m.__dict__ for m in resnet18.modules())
    with pytest.raises(ValueError, match="rule"):
        with relu_rules.relu_backward_rule(resnet18, "sideways"):
            pass


# ---- guided backprop -------------------------------------------------------------------

def test_standard_rule_reproduces_plain_gradient(resnet18):
    # Sanity of the override itself: the "standard" rule must give autograd's own gradient.
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    (plain,) = torch.autograd.grad(resnet18(x)[:, 5].sum(), x)
    with relu_rules.relu_backward_rule(resnet18, "standard") as changed:
        (ruled,) = torch.autograd.grad(resnet18(x)[:, 5].sum(), x)
    assert changed == 9  # torchvision's ResNet-18: one ReLU per block (used twice) + the stem's
    assert torch.allclose(plain, ruled, atol=1e-6)


@pytest.mark.parametrize("model_name", ["lite0", "resnet18"])
def test_guided_backprop_batch_equals_single_and_restores(model_name, lite0, resnet18):
    model = lite0 if model_name == "lite0" else resnet18
    size = 224 if model_name == "lite0" else 64
    torch.manual_seed(1)
    x = torch.randn(3, 3, size, size)
    t = torch.tensor([1, 500, 999])
    model.train()
    batched = methods.guided_backprop(model, x, t)
    assert model.training
    model.eval()
    assert batched.shape == x.shape
    for i in range(3):
        single = methods.guided_backprop(model, x[i:i + 1], t[i:i + 1])
        assert torch.allclose(batched[i], single[0], rtol=1e-4, atol=1e-6)
    assert hooks.count_hooks(model) == 0
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())


def test_guided_backprop_differs_from_plain_gradient(lite0, photo_batch):
    x = photo_batch[:1]
    guided = methods.guided_backprop(lite0, x, 282)
    xr = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(lite0(xr)[0, 282], xr)
    assert not torch.allclose(guided, plain)


# ---- CAM -------------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", ["lite0", "resnet18", "densenet121"])
def test_cam_mean_plus_bias_is_the_logit(model_name, lite0, resnet18, densenet121, photo_batch):
    model = {"lite0": lite0, "resnet18": resnet18, "densenet121": densenet121}[model_name]
    x = photo_batch if model_name == "lite0" else torch.randn(3, 3, 64, 64)
    t = torch.tensor([281, 967, 872])
    maps = methods.cam(model, x, t)
    fc = models.gap_fc_head(model).fc
    assert torch.allclose(maps.mean((1, 2)) + fc.bias[t].detach(), logits_of(model, x, t),
                          atol=1e-5)
    assert hooks.count_hooks(model) == 0


def test_cam_refuses_models_without_gap_fc_head():
    with torch.device("meta"):
        vgg = models.load_model("vgg16", pretrained=False)
    with pytest.raises(ValueError, match="Grad-CAM"):
        methods.cam(vgg, torch.randn(1, 3, 32, 32, device="meta"), 0)


# ---- Grad-CAM --------------------------------------------------------------------------

@pytest.mark.parametrize("model_name", ["lite0", "resnet18"])
def test_grad_cam_is_relu_cam_over_z_at_the_last_conv(model_name, lite0, resnet18, photo_batch):
    model = lite0 if model_name == "lite0" else resnet18
    x = photo_batch if model_name == "lite0" else torch.randn(3, 3, 64, 64)
    t = torch.tensor([281, 967, 872])
    layer = models.gap_fc_head(model).layer
    cam = methods.cam(model, x, t)
    z = cam.shape[-1] * cam.shape[-2]
    gc = methods.grad_cam(model, x, t, layer)
    assert torch.allclose(gc, cam.clamp_min(0) / z, atol=1e-5 * cam.abs().max().item())


def test_grad_cam_batch_of_mixed_targets_and_layers(lite0, photo_batch):
    t = torch.tensor([281, 967, 872])
    for layer in ("_blocks.5", "_blocks.12", lite0._blocks[15]):
        batched = methods.grad_cam(lite0, photo_batch, t, layer)
        for i in range(3):
            single = methods.grad_cam(lite0, photo_batch[i:i + 1], t[i:i + 1], layer)
            assert torch.allclose(batched[i], single[0], rtol=1e-4, atol=1e-6)
        assert (batched >= 0).all()
    assert hooks.count_hooks(lite0) == 0


def test_grad_cam_with_inplace_relu_after_layer(resnet18):
    # layer4.1.bn2 feeds an in-place ReLU (reused within the block); the stored activation
    # must be the pre-ReLU output and the gradient must still arrive.
    x = torch.randn(2, 3, 64, 64)
    maps = methods.grad_cam(resnet18, x, torch.tensor([3, 7]), "layer4.1.bn2")
    assert maps.shape == (2, 2, 2) and torch.isfinite(maps).all()


def test_hooks_removed_when_a_call_raises(lite0, photo_batch):
    with pytest.raises(ValueError, match="out of range"):
        methods.grad_cam(lite0, photo_batch, 5000, "_blocks.15")
    with pytest.raises(ValueError, match="out of range"):
        methods.cam(lite0, photo_batch, -3)
    with pytest.raises(KeyError):
        methods.grad_cam(lite0, photo_batch, 1, "_blocks.99")
    assert hooks.count_hooks(lite0) == 0
    assert all(p.requires_grad for p in lite0.parameters()) and not lite0.training


def test_guided_grad_cam_is_the_product(lite0, photo_batch):
    x, t = photo_batch[:2], torch.tensor([281, 967])
    product = methods.guided_grad_cam(lite0, x, t, "_blocks.15")
    coarse = methods.grad_cam(lite0, x, t, "_blocks.15")
    up = torch.nn.functional.interpolate(coarse[:, None], size=(224, 224), mode="bilinear",
                                         align_corners=False)
    assert torch.allclose(product, methods.guided_backprop(lite0, x, t) * up, atol=1e-7)


def test_cam_batch_of_mixed_targets_equals_single(lite0, photo_batch):
    t = torch.tensor([281, 967, 872])
    batched = methods.cam(lite0, photo_batch, t)
    for i in range(3):
        assert torch.allclose(batched[i], methods.cam(lite0, photo_batch[i:i + 1], t[i:i + 1])[0],
                              rtol=1e-4, atol=1e-5)
