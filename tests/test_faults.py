"""The fault matrix: every misuse ends in a clear error or a correct result.

A refusal must name the problem and the fix (two patterns per case), and every case that
involves a model asserts that the model is left exactly as it was: modes, ``requires_grad``
flags, ``.grad``s, hooks, replaced ``forward``s, weights and BatchNorm statistics. The models
here are handed over in train mode with a mixed set of flags, so a method that forgets to
restore something is caught.

Thread safety is tested in test_threads.py, devices in test_devices.py.
"""
from __future__ import annotations

import os
import re
import socket
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from featviz_helpers import checks, hooks, images, methods, metrics, models, relu_rules, viz

from state_helpers import assert_refused, small_net, unchanged


# ------------------------------------------------------------------------------- models

class FunctionalReLUNet(nn.Module):
    """small_net's layers, but the ReLUs are F.relu calls (as in GoogLeNet), not modules."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2, self.fc = net[0], net[1], net[3], net[4], net[8]

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)), inplace=True)
        h = torch.relu(self.bn2(self.conv2(h)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def activation_net(activation: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), activation, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


class ClampNet(nn.Module):
    """A home-made ReLU, (x + |x|) / 2, that no ReLU rule can recognise (x.clamp(min=0),
    x * (x > 0) and the like are recognised: tests/test_own_models.py)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 3)

    def forward(self, x):
        h = self.conv(x)
        return self.fc(((h + h.abs()) / 2).mean((2, 3)))


class SideBranchNet(nn.Module):
    """Computes a side branch whose output the classifier never uses."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.side, self.fc = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Linear(4, 3)

    def forward(self, x):
        h = F.relu(self.conv(x))
        self.side(h)
        return self.fc(h.mean((2, 3)))


class Zoo:
    """Models shared by the tests of this file, built on first use."""

    @property
    def net(self):
        if not hasattr(self, "_net"):
            self._net = small_net()
        return self._net

    @property
    def resnet(self):
        if not hasattr(self, "_resnet"):
            torch.manual_seed(0)
            self._resnet = models.load_model("resnet18", pretrained=False).train()
        return self._resnet

    @property
    def googlenet(self):
        if not hasattr(self, "_googlenet"):
            torch.manual_seed(0)
            self._googlenet = torchvision.models.googlenet(
                weights=None, aux_logits=True, init_weights=False).eval()
        return self._googlenet

    @property
    def vit(self):
        if not hasattr(self, "_vit"):
            self._vit = models.load_model("shapes_vit")    # trained: its head is not zero
        return self._vit


ZOO = Zoo()
SIDE = SideBranchNet()
CLAMP = ClampNet()
SILU, LEAKY, HARDSWISH = (activation_net(a) for a in (nn.SiLU(), nn.LeakyReLU(), nn.Hardswish()))
X = torch.rand(2, 3, 16, 16) * 2 - 1          # inputs for the small networks
X64 = torch.rand(2, 3, 64, 64) * 2 - 1        # for GoogLeNet, ResNet and the shapes ViT
T = torch.tensor([1, 3])


# ------------------------------------------------------------ the matrix of refusals

@dataclass
class Fault:
    id: str
    call: Callable[[], object]      # the misuse
    error: type
    problem: str                    # regex: the message names what is wrong …
    fix: str                        # … and what to do about it
    nets: Callable[[], tuple] = lambda: (ZOO.net,)   # left exactly as they were


def _attn(L=2):
    return torch.rand(L, 2, 3, 5, 5).softmax(-1)


MASKS = torch.zeros(2, 16, 16, dtype=torch.bool)
MASKS[:, 4:10, 4:10] = True
NAN_MAPS = torch.full((2, 4, 4), float("nan"))

FAULTS = [
    # ---- targets
    Fault("target is a string", lambda: methods.saliency(ZOO.net, X, "tabby"),
          TypeError, r"not the string 'tabby'", r"class_names\.index\('tabby'\)"),
    Fault("target is None", lambda: methods.grad_cam(ZOO.net, X, None, "3"),
          TypeError, r"target is None", r"argmax"),
    Fault("target is 2**70", lambda: methods.saliency(ZOO.net, X, 2 ** 70),
          ValueError, r"out of range", r"5 classes \(0\.\.4\)"),
    Fault("target list holds 2**70", lambda: methods.guided_backprop(ZOO.net, X, [1, 2 ** 70]),
          TypeError, r"could not read", r"list of ints or an integer tensor"),
    Fault("target is a float", lambda: methods.saliency(ZOO.net, X, torch.tensor([1.0, 2.0])),
          TypeError, r"dtype torch\.float32", r"integer class indices"),
    Fault("target is a bool", lambda: methods.cam(ZOO.net, X, True),
          TypeError, r"not a bool", r"class index \(int\)"),
    Fault("one target for two images of three", lambda: methods.saliency(ZOO.net, X, [1, 2, 3]),
          ValueError, r"got \(3,\)", r"one class index per image: shape \(2,\)"),
    Fault("target -1", lambda: methods.cam(ZOO.net, X, -1),
          ValueError, r"-1 is out of range", r"0\.\.4"),
    # ---- inputs
    Fault("a batch of zero images", lambda: methods.saliency(ZOO.net, X[:0], 1),
          ValueError, r"empty batch", r"at least one image"),
    Fault("a 0x0 image", lambda: methods.grad_cam(ZOO.net, torch.zeros(1, 3, 0, 0), 1, "3"),
          ValueError, r"empty batch", r"at least one pixel"),
    Fault("an integer (uint8) batch", lambda: methods.saliency(ZOO.net, (X * 100).byte(), 1),
          ValueError, r"dtype torch\.uint8", r"images\.preprocess"),
    Fault("NaN in the batch", lambda: methods.guided_backprop(ZOO.net, X.clone().fill_(float("nan")), 1),
          ValueError, r"NaN or infinite", r"images\.preprocess refuses"),
    Fault("inf in the batch", lambda: methods.cam(ZOO.net, X / 0, 1),
          ValueError, r"NaN or infinite", r"where the batch came from"),
    Fault("a 3-D tensor, not a batch", lambda: methods.saliency(ZOO.net, X[0], 1),
          ValueError, r"got \(3, 16, 16\)", r"\(B,C,H,W\)"),
    Fault("the batch on another device than the model",
          lambda: methods.saliency(ZOO.net, X.to("meta"), 1),
          ValueError, r"x is on meta but the model is on cpu", r"x\.to\('cpu'\)"),
    # ---- layers and channels
    Fault("a layer that never runs (GoogLeNet's aux head in eval mode)",
          lambda: methods.grad_cam(ZOO.googlenet, X64[:1], 3, "aux1.conv"),
          ValueError, r"did not run in GoogLeNet's forward pass", r"Pick a layer on the path",
          lambda: (ZOO.googlenet,)),
    Fault("a module that runs twice in one pass (ResNet's shared ReLU)",
          lambda: methods.grad_cam(ZOO.resnet, X64, T, "layer4.1.relu"),
          ValueError, r"runs 2 times in one forward pass", r"e\.g\. the enclosing 'layer4\.1'",
          lambda: (ZOO.resnet,)),
    Fault("a layer the class scores do not depend on",
          lambda: methods.grad_cam(SIDE, X, 1, "side"),
          ValueError, r"do not depend on its output", r"on the path to the classifier",
          lambda: (SIDE,)),
    Fault("an unknown layer name", lambda: methods.grad_cam(ZOO.net, X, 1, "layer4"),
          KeyError, r"No layer named 'layer4'", r"model\.named_modules\(\)"),
    Fault("neuron channel=True", lambda: methods.neuron_guided_backprop(ZOO.net, X, "3", True),
          TypeError, r"not the bool True", r"int channel index"),
    Fault("neuron channel=2.5", lambda: methods.neuron_guided_backprop(ZOO.net, X, "3", 2.5),
          TypeError, r"got 2\.5 \(float\)", r"int channel index"),
    Fault("neuron channel out of range", lambda: methods.neuron_guided_backprop(ZOO.net, X, "3", 8),
          ValueError, r"channel 8 out of range", r"output \(2, 8, 16, 16\)"),
    # ---- ViT Grad-CAM where only [CLS] reaches the head
    Fault("vit_grad_cam at the last block",
          lambda: methods.vit_grad_cam(ZOO.vit, X64, T, "encoder.layers.encoder_layer_3"),
          ValueError, r"only the \[CLS\] token.*all zero", r"the default.*encoder_layer_2",
          lambda: (ZOO.vit,)),
    Fault("vit_grad_cam at encoder.ln", lambda: methods.vit_grad_cam(ZOO.vit, X64, T, "encoder.ln"),
          ValueError, r"only the \[CLS\] token.*all zero", r"a layer before the last block",
          lambda: (ZOO.vit,)),
    Fault("Grad-CAM on ViT tokens", lambda: methods.grad_cam(ZOO.vit, X64, T, "encoder.layers.encoder_layer_2"),
          ValueError, r"gives \(2, 65, 96\)", r"use vit_grad_cam", lambda: (ZOO.vit,)),
    # ---- guided backprop and deconvnet where the rule cannot reach
    Fault("guided backprop on a ViT (GELU)", lambda: methods.guided_backprop(ZOO.vit, X64, T),
          ValueError, r"computes GELU.*defined only for ReLU", r"methods\.vit_grad_cam",
          lambda: (ZOO.vit,)),
    Fault("guided Grad-CAM on a ViT (GELU)",
          lambda: methods.guided_grad_cam(ZOO.vit, X64, T, "conv_proj"),
          ValueError, r"computes GELU", r"methods\.saliency", lambda: (ZOO.vit,)),
    Fault("neuron guided backprop on a ViT (GELU)",
          lambda: methods.neuron_guided_backprop(ZOO.vit, X64, "conv_proj", 0),
          ValueError, r"computes GELU", r"methods\.saliency", lambda: (ZOO.vit,)),
    Fault("guided backprop with SiLU", lambda: methods.guided_backprop(SILU, X, 1),
          ValueError, r"computes SiLU", r"Use a ReLU network", lambda: (SILU,)),
    Fault("guided backprop with LeakyReLU", lambda: methods.guided_backprop(LEAKY, X, 1),
          ValueError, r"computes LeakyReLU", r"Use a ReLU network", lambda: (LEAKY,)),
    Fault("deconvnet with Hardswish", lambda: _rule_gradient(HARDSWISH, "deconvnet", X),
          ValueError, r"computes Hardswish", r"Use a ReLU network", lambda: (HARDSWISH,)),
    Fault("guided backprop with no ReLU at all (a home-made (x + |x|) / 2)",
          lambda: methods.guided_backprop(CLAMP, X, 1),
          ValueError, r"No ReLU ran under the guided rule", r"use nn\.ReLU or F\.relu",
          lambda: (CLAMP,)),
    Fault("deconvnet rule on a ViT (GELU)", lambda: _rule_gradient(ZOO.vit, "deconvnet"),
          ValueError, r"deconvnet rule cannot be applied.*GELU", r"methods\.saliency",
          lambda: (ZOO.vit,)),
    # ---- attention rollout
    Fault("rollout of zero layers", lambda: methods.attention_rollout(_attn(L=0)),
          ValueError, r"is empty", r"at least one layer", lambda: ()),
    Fault("rollout of a list of layers", lambda: methods.attention_rollout(list(_attn())),
          TypeError, r"not a list", r"torch\.stack", lambda: ()),
    Fault("rollout of a 4-D tensor", lambda: methods.attention_rollout(_attn()[0]),
          ValueError, r"got \(2, 3, 5, 5\)", r"\(L,B,heads,N,N\)", lambda: ()),
    # ---- metrics
    *[Fault(f"box_iou threshold {t}", lambda t=t: metrics.box_iou(torch.rand(2, 4, 4), MASKS, t),
            ValueError, rf"got {re.escape(repr(t))}", r"strictly between 0 and 1.*0\.2", lambda: ())
      for t in (0, 1, 1.5, -0.2, float("nan"))],
    Fault("cam_boxes threshold 2", lambda: metrics.cam_boxes(torch.rand(2, 4, 4), (16, 16), 2),
          ValueError, r"got 2", r"strictly between 0 and 1", lambda: ()),
    Fault("deletion_auc with steps=0", lambda: metrics.deletion_auc(ZOO.net, X, torch.rand(2, 4, 4), T, steps=0),
          ValueError, r"got 0", r"a positive int \(default 20\)"),
    Fault("insertion_auc with steps=2.5",
          lambda: metrics.insertion_auc(ZOO.net, X, torch.rand(2, 4, 4), T, steps=2.5),
          ValueError, r"got 2\.5", r"a positive int"),
    Fault("deletion_auc with 3 maps for 2 images",
          lambda: metrics.deletion_auc(ZOO.net, X, torch.rand(3, 4, 4), T),
          ValueError, r"3 maps for 2 images", r"one map per image"),
    Fault("deletion_auc of NaN maps", lambda: metrics.deletion_auc(ZOO.net, X, NAN_MAPS, T),
          ValueError, r"NaN or infinite", r"Find where the NaN comes from"),
    Fault("pointing game of NaN maps", lambda: metrics.pointing_game(NAN_MAPS, MASKS),
          ValueError, r"NaN or infinite", r"torch\.isnan", lambda: ()),
    Fault("energy in mask of NaN maps", lambda: metrics.energy_in_mask(NAN_MAPS, MASKS),
          ValueError, r"NaN or infinite", r"torch\.isnan", lambda: ()),
    Fault("box IoU of NaN maps", lambda: metrics.box_iou(NAN_MAPS, MASKS),
          ValueError, r"NaN or infinite", r"torch\.isnan", lambda: ()),
    Fault("Spearman of NaN maps", lambda: metrics.spearman(NAN_MAPS, torch.rand(2, 4, 4)),
          ValueError, r"NaN or infinite", r"torch\.isnan", lambda: ()),
    # ---- display
    Fault("filter_grid with no tiles", lambda: viz.filter_grid(torch.zeros(0, 3, 5, 5)),
          ValueError, r"no tiles", r"nothing to draw", lambda: ()),
    Fault("filter_grid of a 3-D tensor", lambda: viz.filter_grid(torch.zeros(3, 5, 5)),
          ValueError, r"got \(3, 5, 5\)", r"\(N,C,k,k\) with C = 3", lambda: ()),
    Fault("a negative clip percentile", lambda: viz.normalize(torch.rand(2, 4, 4), -5),
          ValueError, r"got -5", r"percentile in \(0, 100\]", lambda: ()),
    Fault("clip percentile above 100", lambda: viz.display_maps(torch.rand(2, 4, 4), None, 150),
          ValueError, r"got 150", r"100 clips nothing", lambda: ()),
    Fault("gradient_image clipped at 0", lambda: viz.gradient_image(torch.rand(1, 3, 4, 4), 0),
          ValueError, r"got 0", r"percentile in \(0, 100\]", lambda: ()),
    # ---- preprocess
    Fault("preprocess a NaN tensor", lambda: images.preprocess(torch.full((1, 3, 8, 8), float("nan")), ZOO.vit),
          ValueError, r"holds NaN or infinite values", r"pass pixels in \[0,1\]", lambda: (ZOO.vit,)),
    Fault("preprocess an empty list", lambda: images.preprocess([], ZOO.vit),
          ValueError, r"empty list", r"at least one image", lambda: (ZOO.vit,)),
    Fault("preprocess a batch of zero images", lambda: images.preprocess(torch.zeros(0, 3, 8, 8), ZOO.vit),
          ValueError, r"is empty", r"at least one image", lambda: (ZOO.vit,)),
    Fault("preprocess a 0x0 image", lambda: images.preprocess(Image.new("RGB", (0, 0)), ZOO.vit),
          ValueError, r"0×0 pixels", r"at least one pixel per side", lambda: (ZOO.vit,)),
    Fault("preprocess a string", lambda: images.preprocess("chelsea", ZOO.vit),
          TypeError, r"takes a PIL image", r"list of PIL images", lambda: (ZOO.vit,)),
    # ---- loading
    Fault("load_model(None)", lambda: models.load_model(None),
          TypeError, r"got None", r"efficientnet_lite0", lambda: ()),
    Fault("load_model(pretrained='yes')", lambda: models.load_model("shapes_cnn", pretrained="yes"),
          TypeError, r"got 'yes'", r"True or False", lambda: ()),
    Fault("load_image(None)", lambda: images.load_image(None),
          TypeError, r"got None", r"photo name \(one of .*chelsea", lambda: ()),
]


def _rule_gradient(model, rule, x=X64):
    return methods.input_gradient(model, x, 1, rule=rule)


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_refused_clearly(fault):
    assert_refused(fault.call, fault.error, fault.problem, fault.fix, fault.nets())


def test_the_matrix_has_no_duplicate_ids():
    ids = [f.id for f in FAULTS]
    assert len(ids) == len(set(ids))


# ------------------------------------------------------------ correct results instead

def test_float64_batch_gives_the_float32_answer():
    net = ZOO.net
    with unchanged(net):
        for method in (methods.saliency, methods.guided_backprop, methods.cam):
            assert torch.allclose(method(net, X.double(), T), method(net, X, T), atol=1e-6)
        assert torch.allclose(methods.grad_cam(net, X.double(), T, "3"),
                              methods.grad_cam(net, X, T, "3"), atol=1e-6)


def test_gradient_methods_under_inference_mode():
    net = ZOO.net
    expected = {m.__name__: m(net, X, T) for m in (methods.saliency, methods.guided_backprop)}
    expected["grad_cam"] = methods.grad_cam(net, X, T, "3")
    with unchanged(net):
        with torch.inference_mode():
            inner = torch.rand(2, 3, 16, 16)          # an inference tensor
            got = {m.__name__: m(net, X, T) for m in (methods.saliency, methods.guided_backprop)}
            got["grad_cam"] = methods.grad_cam(net, X, T, "3")
            assert methods.saliency(net, inner, T).shape == (2, 16, 16)
        # An input made under inference_mode, used outside it.
        assert torch.equal(methods.saliency(net, inner, T), methods.saliency(net, inner.clone(), T))
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name


def test_model_made_under_inference_mode_is_refused():
    with torch.inference_mode():
        net = small_net()
    assert_refused(lambda: methods.saliency(net, X, 1), ValueError,
                   r"created under torch\.inference_mode\(\)", r"Load the model outside", [net])
    assert methods.cam(net, X, 1).shape == (2, 16, 16)   # no backward: fine


def test_numpy_and_tensor_channel_indices_work():
    net = ZOO.net
    with unchanged(net):
        expected = methods.neuron_guided_backprop(net, X, "3", 2)
        assert torch.equal(methods.neuron_guided_backprop(net, X, "3", np.int64(2)), expected)
        assert torch.equal(methods.neuron_guided_backprop(net, X, "3", torch.tensor(2)), expected)


def test_capture_outputs_survive_an_inplace_relu():
    # small_net's conv "3" is followed by BN and an in-place ReLU; BN "4" directly by it.
    net = ZOO.net
    with unchanged(net):
        with hooks.capture(net, "4", freeze=False) as cap:
            net(X)
        live = cap.outputs["4"]
        assert (live < 0).any(), "the live output was overwritten by the in-place ReLU"
        assert torch.equal(live.detach(), cap.activations["4"])


def test_neuron_guided_backprop_uses_the_pre_relu_neuron():
    # The peak is taken over the layer's own output, not the in-place ReLU's result.
    net = ZOO.net
    with unchanged(net):
        got = methods.neuron_guided_backprop(net, X, "4", 5)
        with hooks.preserved_state(net), relu_rules.relu_backward_rule(net, "guided"), \
                torch.enable_grad():
            x = X.clone().requires_grad_(True)
            bn = net[4](net[3](net[2](net[1](net[0](x)))))
            (expected,) = torch.autograd.grad(bn[:, 5].flatten(1).amax(1).sum(), x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_guided_backprop_follows_functional_relus():
    # The same weights with F.relu instead of nn.ReLU modules (GoogLeNet's style) must give
    # the same guided map, not the plain gradient.
    net = ZOO.net
    functional = FunctionalReLUNet(net)
    with unchanged(net):
        by_modules = methods.guided_backprop(net, X, T)
        by_functions = methods.guided_backprop(functional, X, T)
        plain = methods.saliency(functional, X, T)
    assert torch.allclose(by_functions, by_modules, atol=1e-6)
    assert checks.rel_error(by_functions.abs().amax(1), plain) > 0.1


def test_guided_backprop_on_densenet_guides_its_final_functional_relu():
    # DenseNet ends features → F.relu → pool → classifier; rebuilt with an nn.ReLU module in
    # that place, the network is the same and so must be its guided map.
    torch.manual_seed(0)
    dense = models.load_model("densenet121", pretrained=False)
    rebuilt = nn.Sequential(dense.features, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            dense.classifier).eval()
    x = torch.rand(1, 3, 32, 32)
    with unchanged(dense):
        got = methods.guided_backprop(dense, x, 7)
    assert torch.allclose(got, methods.guided_backprop(rebuilt, x, 7), atol=1e-6)


def test_guided_backprop_on_googlenet_leaves_no_relu_unguided():
    # GoogLeNet has no ReLU module at all: every ReLU is F.relu. Under the "standard" rule
    # the override must reproduce autograd; under "guided" the map must differ from it.
    g = ZOO.googlenet
    x = X64[:1]
    with unchanged(g):
        with hooks.preserved_state(g), torch.enable_grad():
            xr = x.clone().requires_grad_(True)
            (plain,) = torch.autograd.grad(g(xr)[0, 3], xr)
        with hooks.preserved_state(g), relu_rules.relu_backward_rule(g, "standard") as modules, \
                torch.enable_grad():
            xr = x.clone().requires_grad_(True)
            (standard,) = torch.autograd.grad(g(xr)[0, 3], xr)
        guided = methods.guided_backprop(g, x, 3)
    assert modules == 0
    assert torch.allclose(standard, plain, atol=1e-6)
    assert checks.rel_error(guided, plain) > 0.1


def test_standard_rule_accepts_any_activation():
    # The standard rule is the plain derivative: a GELU network is fine there.
    net = activation_net(nn.GELU())
    with unchanged(net):
        with hooks.preserved_state(net), relu_rules.relu_backward_rule(net, "standard"), \
                torch.enable_grad():
            x = X.clone().requires_grad_(True)
            (ruled,) = torch.autograd.grad(net(x)[:, 1].sum(), x)
    x = X.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(net(x)[:, 1].sum(), x)
    assert torch.allclose(ruled, plain)


def test_relu_rule_restores_everything_when_it_refuses():
    vit = ZOO.vit
    with unchanged(vit):
        with pytest.raises(ValueError, match="GELU"):
            methods.guided_backprop(vit, X64, T)
    # and the functional override is gone: F.gelu and F.relu behave as usual again
    assert torch.equal(F.relu(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert F.gelu(torch.tensor([1.0])).item() > 0


def test_vit_grad_cam_of_an_untrained_vit_is_zero_not_refused():
    # A freshly built torchvision ViT has an all-zero head: nothing depends on any layer,
    # so the all-zero map is the right answer (not the last-layer mistake).
    torch.manual_seed(0)
    vit = models.load_model("shapes_vit", pretrained=False)
    with unchanged(vit):
        assert methods.vit_grad_cam(vit, X64, T).abs().max() == 0


def test_one_pixel_over_255_does_not_rescale_a_16_bit_image(tmp_path):
    a = np.full((16, 16), 200, dtype=np.uint16)
    a[0, 0] = 255
    b = a.copy()
    b[0, 0] = 256
    rgb = []
    for n, arr in enumerate((a, b)):
        Image.fromarray(arr).save(tmp_path / f"{n}.png")
        rgb.append(np.asarray(images.load_image(tmp_path / f"{n}.png")))
    assert np.array_equal(rgb[0][1:], rgb[1][1:])          # every other pixel unchanged
    assert rgb[0][5, 5, 0] == round(200 / 65535 * 255)      # 16-bit: scaled by 65535


def test_32_bit_integer_image_within_16_bits_is_scaled_by_65535(tmp_path):
    a = np.full((16, 16), 65535, dtype=np.int32)
    a[:, :8] = 0
    Image.fromarray(a).save(tmp_path / "i.tif")
    rgb = np.asarray(images.load_image(tmp_path / "i.tif"))
    assert rgb[0, 15, 0] == 255 and rgb[0, 0, 0] == 0


def test_32_bit_integer_image_above_16_bits_is_refused(tmp_path):
    a = np.full((16, 16), 70000, dtype=np.int32)
    Image.fromarray(a).save(tmp_path / "big.tif")
    assert_refused(lambda: images.load_image(tmp_path / "big.tif"), ValueError,
                   r"values in \[70000, 70000\].*beyond the 16-bit range",
                   r"Convert it to 8 or 16 bits")


def test_float_image_outside_0_1_is_refused(tmp_path):
    Image.fromarray(np.full((16, 16), 3.5, dtype=np.float32)).save(tmp_path / "f.tif")
    assert_refused(lambda: images.load_image(tmp_path / "f.tif"), ValueError,
                   r"values in \[3\.5, 3\.5\]", r"Rescale it first")


def test_header_truncated_image_names_the_file(tmp_path):
    Image.new("RGB", (40, 40), (1, 2, 3)).save(tmp_path / "ok.png")
    path = tmp_path / "cut.png"
    path.write_bytes((tmp_path / "ok.png").read_bytes()[:20])
    message = assert_refused(lambda: images.load_image(path), ValueError,
                             r"header is truncated or corrupt", r"Re-save or re-download")
    assert str(path) in message


def test_preprocess_takes_float64_and_stays_on_the_batchs_device():
    vit = ZOO.vit
    x = torch.rand(1, 3, 64, 64, dtype=torch.float64)
    with unchanged(vit):
        expected = images.preprocess(x, vit)
        assert expected.dtype == torch.float32
        with torch.device("meta"):      # anything made on the default device would be meta
            assert torch.equal(images.preprocess(x, vit), expected)


# ------------------------------------------------------------ checkpoints and downloads

def plant_file(name: str, data: bytes | None = None, obj=None) -> str:
    path = models.weights_path(name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if obj is not None:
        torch.save(obj, path)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


class Planted:
    """Unpickling this runs code: it creates the file ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


ZOO_FIX = r"Delete the file and load the model again"


def test_random_bytes_checkpoint(torch_home):
    path = plant_file("resnet18", os.urandom(50_000))
    message = assert_refused(lambda: models.load_model("resnet18"),
                             models.WeightsUnavailableError,
                             r"not a readable PyTorch state dict", ZOO_FIX)
    assert path in message


def test_wrong_architectures_state_dict(torch_home):
    torch.manual_seed(0)
    plant_file("resnet18", obj=models.build_architecture("shapes_cnn").state_dict())
    assert_refused(lambda: models.load_model("resnet18"), models.WeightsUnavailableError,
                   r"do not fit the architecture \(\d+ missing keys \(first: 'conv1\.weight'\).*"
                   r"another model's checkpoint", ZOO_FIX)


def test_same_keys_wrong_shapes(torch_home):
    state = torchvision.models.resnet18(weights=None, num_classes=10).state_dict()
    plant_file("resnet18", obj=state)
    assert_refused(lambda: models.load_model("resnet18"), models.WeightsUnavailableError,
                   r"2 tensors of the wrong shape \(first: 'fc\.weight'\)", ZOO_FIX)


def test_a_tensor_instead_of_a_state_dict(torch_home):
    plant_file("resnet18", obj=torch.zeros(3))
    assert_refused(lambda: models.load_model("resnet18"), models.WeightsUnavailableError,
                   r"holds a Tensor, not a state dict", ZOO_FIX)


def test_malicious_pickle_never_runs_and_its_advice_is_not_passed_on(torch_home, tmp_path):
    marker = tmp_path / "code-ran"
    plant_file("resnet18", obj={"fc.weight": Planted(str(marker))})
    assert_refused(lambda: models.load_model("resnet18"), models.WeightsUnavailableError,
                   r"not a readable PyTorch state dict", ZOO_FIX)
    assert not marker.exists()


@pytest.fixture()
def data_dir(tmp_path, monkeypatch):
    """A FEATVIZ_DATA-like folder for the shapes models, empty."""
    (tmp_path / "models").mkdir()
    monkeypatch.setattr(models, "DATA_DIR", tmp_path)
    return tmp_path


SHAPES_FIX = r"python -m featviz_helpers\.train shapes_cnn"


def test_corrupt_shapes_checkpoint(data_dir):
    (data_dir / "models" / "shapes_cnn.pt").write_bytes(b"\x80\x02garbage" * 100)
    message = assert_refused(lambda: models.load_model("shapes_cnn"),
                             models.WeightsUnavailableError,
                             r"not a readable PyTorch state dict", SHAPES_FIX)
    assert "weights_only" not in message


def test_shapes_checkpoint_of_another_model(data_dir):
    torch.save(models.build_architecture("shapes_vit").state_dict(),
               data_dir / "models" / "shapes_cnn.pt")
    assert_refused(lambda: models.load_model("shapes_cnn"), models.WeightsUnavailableError,
                   r"do not fit the architecture", SHAPES_FIX)


def test_missing_shapes_checkpoint(data_dir):
    assert_refused(lambda: models.load_model("shapes_cnn_biased"),
                   models.WeightsUnavailableError, r"No weights for 'shapes_cnn_biased'",
                   r"Reinstall the package")


def test_download_from_a_server_that_never_answers_times_out(torch_home, monkeypatch):
    # A local socket that accepts connections (the kernel completes the handshake for the
    # listen backlog) and never says a word: the proxy every download has to go through.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    monkeypatch.setattr(models, "DOWNLOAD_TIMEOUT", 0.5)
    outcome = {}

    def load():
        try:
            models.load_model("resnet18")
        except Exception as e:  # noqa: BLE001 - examined below
            outcome["error"] = e

    worker = threading.Thread(target=load, daemon=True)
    try:
        worker.start()
        worker.join(120)   # a guard against the hang itself, not a speed requirement
        assert not worker.is_alive(), "load_model hung on a server that never answers"
    finally:
        server.close()
    error = outcome.get("error")
    assert isinstance(error, models.WeightsUnavailableError), repr(error)
    assert re.search(r"did not answer within 0\.5 s", str(error))
    assert re.search(r"on a machine with internet", str(error))
    assert not models.weights_cached("resnet18")       # no partial file left as the cache
    assert not [f for f in os.listdir(os.path.dirname(models.weights_path("resnet18")))
                if f.endswith(".partial")]
