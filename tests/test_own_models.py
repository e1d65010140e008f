"""Bring your own model: the models students meet after the course — other output types,
layers reached by a second name, wrapped and compiled models, ViTs with more tokens than
[CLS] and patches, hand-written rectifiers, float64 — get the right answer or one clear
refusal (problem and fix), and are left exactly as they were. And no call leaves memory
behind."""
from __future__ import annotations

import collections
import gc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from featviz_helpers import hooks, images, methods, metrics, models, viz

from state_helpers import assert_refused, small_net, unchanged

X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
T = torch.tensor([1, 3])


def _net():
    net = small_net().eval()
    net.input_spec = models.SHAPES_SPEC
    return net


# ------------------------------------------------------------ 1. outputs other than (B, K)

class Returns(nn.Module):
    """small_net with its logits handed back inside another container."""

    def __init__(self, pack):
        super().__init__()
        self.net = _net()
        self.pack = pack
        self.input_spec = models.SHAPES_SPEC

    def forward(self, x):
        return self.pack(self.net(x), x)


class ModelOutput(collections.OrderedDict):
    """The shape of transformers' ModelOutput: a dict whose values are also attributes."""

    def __getattr__(self, name):
        return self[name]


OUTPUTS = {
    "a tuple (logits, features)": (lambda logits, x: (logits, x.mean(1)), r"returned a tuple",
                                   r"ClassScores\(model, lambda out: out\[0\]\)"),
    "a dict": (lambda logits, x: {"logits": logits, "aux": x}, r"returned a dict",
               r'ClassScores\(model, lambda out: out\["logits"\]\)'),
    "a ModelOutput": (lambda logits, x: ModelOutput(logits=logits), r"returned a ModelOutput",
                      r"ClassScores"),
    "a list": (lambda logits, x: [logits], r"returned a list", r"ClassScores"),
    "one score per image (B,)": (lambda logits, x: logits[:, 0], r"tensor of shape \(\d,\)",
                                 r"out\[:, None\]\).*target=0"),
    "a map per image (B,K,h,w)": (lambda logits, x: x, r"tensor of shape \(\d, 3, 16, 16\)",
                                  r"one \(B, classes\) tensor"),
}
# Methods that never read the class scores (a neuron's or a channel's response, or no model),
# and CAM, which first looks for a GAP -> linear head it knows (tested below).
NO_SCORES = {"neuron guided backprop", "activation maximisation", "Fourier image",
             "CAM (from features)", "Grad-CAM weights", "CAM"}


@pytest.mark.parametrize("output", OUTPUTS)
@pytest.mark.parametrize("method", [m for m in methods.CATALOGUE
                                    if m.architecture == "CNN" and m.name not in NO_SCORES],
                         ids=lambda m: m.name)
def test_a_model_that_returns_no_logits_tensor_is_refused_with_the_fix(method, output):
    pack, problem, fix = OUTPUTS[output]
    net = Returns(pack)
    assert_refused(lambda: method.example(net, X, T, "net.3"), ValueError, problem, fix, [net])


def test_cam_says_which_heads_it_recognises_and_what_to_use_instead():
    net = Returns(OUTPUTS["a tuple (logits, features)"][0])
    assert_refused(lambda: methods.cam(net, X, T), ValueError,
                   r"Returns is none of them", r"Grad-CAM \(methods\.grad_cam\) at the last conv layer", [net])


@pytest.mark.parametrize("call", [
    lambda m: metrics.deletion_auc(m, X, torch.rand(2, 4, 4), T, steps=2),
    lambda m: metrics.insertion_auc(m, X, torch.rand(2, 4, 4), T, steps=2),
    lambda m: metrics.completeness_error(m, X, T, torch.zeros_like(X)),
], ids=["deletion", "insertion", "completeness"])
def test_metrics_refuse_such_a_model_too(call):
    net = Returns(OUTPUTS["a tuple (logits, features)"][0])
    assert_refused(lambda: call(net), ValueError, r"returned a tuple", r"ClassScores", [net])


@pytest.mark.parametrize("select, pack", [
    (lambda out: out[0], lambda logits, x: (logits, x)),
    (lambda out: out["logits"], lambda logits, x: {"logits": logits}),
    (lambda out: out.logits, lambda logits, x: ModelOutput(logits=logits)),
])
def test_wrapped_in_class_scores_the_answer_is_the_plain_models(select, pack):
    wrapped = models.ClassScores(Returns(pack), select)
    plain = wrapped.model.net
    assert wrapped.input_spec == models.SHAPES_SPEC
    assert torch.equal(methods.grad_cam(wrapped, X, T, "model.net.3"),
                       methods.grad_cam(plain, X, T, "3"))
    assert torch.equal(methods.guided_backprop(wrapped, X, T), methods.guided_backprop(plain, X, T))
    assert torch.equal(methods.occlusion(wrapped, X, T, 8, 4), methods.occlusion(plain, X, T, 8, 4))


def test_a_single_logit_model_works_once_wrapped():
    net = Returns(OUTPUTS["one score per image (B,)"][0])
    wrapped = models.ClassScores(net, lambda out: out[:, None])
    assert torch.equal(methods.saliency(wrapped, X, 0), methods.saliency(net.net, X, 0))


# ------------------------------------------------------------ 2. a layer by a second name

@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    net.input_spec = models.SHAPES_SPEC
    return net


def test_a_layer_reached_by_a_second_name(resnet):
    resnet.target = resnet.layer4
    try:
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        with unchanged(resnet):
            assert torch.equal(methods.grad_cam(resnet, x, T, "target"),
                               methods.grad_cam(resnet, x, T, "layer4"))
            assert torch.equal(methods.neuron_guided_backprop(resnet, x, "target", 5),
                               methods.neuron_guided_backprop(resnet, x, "layer4", 5))
            with hooks.capture(resnet, "target") as cap:
                resnet(x)
        assert models.layer_name(resnet, "target") == "layer4"          # the canonical name
        assert torch.equal(cap.activations["target"], hooks_activation(resnet, x, "layer4"))
    finally:
        del resnet.target


def hooks_activation(model, x, layer):
    with hooks.capture(model, layer) as cap:
        model(x)
    return cap.activations[layer]


def test_an_unknown_layer_is_refused_with_the_names():
    net = _net()
    assert_refused(lambda: methods.grad_cam(net, X, T, "stage9"), KeyError,
                   r"No layer named 'stage9'", r"named_modules", [net])
    assert_refused(lambda: methods.grad_cam(net, X, T, 3), TypeError,
                   r"not int", r"layer's name \(str\) or the module", [net])


# ------------------------------------------------------------ 3. memory kept after a call

def _live_tensors() -> int:
    gc.collect()
    with warnings.catch_warnings():      # isinstance wakes deprecated torch.distributed names
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def _capture(net, x, layer):
    with hooks.capture(net, layer) as cap:
        net(x)
    return cap


@pytest.mark.parametrize("name", ["capture"] + [m.name for m in methods.CATALOGUE])
def test_a_hundred_calls_leave_no_tensor_behind(name):
    net = _net()
    x = X.clone().requires_grad_(True)     # a graph below the captured layer, as in the issue
    method = next((m for m in methods.CATALOGUE if m.name == name), None)
    if name == "capture":
        call = lambda: _capture(net, x, "3")
    elif method.architecture == "ViT":
        torch.manual_seed(0)
        vit = RegisterViT(1).eval()
        call = lambda: method.example(vit, XV, T, None)
    else:
        call = lambda: method.example(net, X, T, "3")
    for _ in range(3):                     # caches and lazy state settle first
        call()
    before = _live_tensors()
    for _ in range(100):
        call()
    assert _live_tensors() - before <= 0, f"{name} leaves tensors alive"


# ------------------------------------------------------- 4. ViTs with other tokens

class RegisterViT(torchvision.models.VisionTransformer):
    """A torchvision ViT with ``extra`` tokens ([DIST], or registers) between [CLS] and the
    patches, as DeiT and the register ViTs have them; ``class_token=False`` drops [CLS]."""

    def __init__(self, extra: int, class_token: bool = True):
        super().__init__(image_size=12, patch_size=4, num_layers=3, num_heads=2, hidden_dim=16,
                         mlp_dim=32, num_classes=5)
        self.extra = nn.Parameter(torch.randn(1, extra, 16) * 0.5)
        self.use_class_token = class_token
        n = self.seq_length - (0 if class_token else 1) + extra
        self.encoder.pos_embedding = nn.Parameter(torch.randn(1, n, 16) * 0.02)
        nn.init.normal_(self.heads.head.weight)      # torchvision starts the head at zero
        self.input_spec = models.SHAPES_SPEC

    def forward(self, x):
        x = self._process_input(x)
        n = x.shape[0]
        first = [self.class_token.expand(n, -1, -1)] if self.use_class_token else []
        x = self.encoder(torch.cat(first + [self.extra.expand(n, -1, -1), x], dim=1))
        return self.heads(x[:, 0] if self.use_class_token else x.mean(1))


XV = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("extra", [1, 16], ids=["distillation token", "16 registers"])
def test_vit_grad_cam_lays_out_only_the_patches(extra):
    torch.manual_seed(0)
    vit = RegisterViT(extra).eval()
    with unchanged(vit):
        got = methods.vit_grad_cam(vit, XV, T)
    assert got.shape == (2, 3, 3)
    assert methods.patch_grid(vit, XV) == (3, 3)
    a, g = methods.layer_activations_and_gradients(vit, XV, T, "encoder.layers.encoder_layer_1")
    patches = lambda t: t[:, 1 + extra:].transpose(1, 2).reshape(2, 16, 3, 3)
    expected = (g[:, 1 + extra:].mean(1)[:, :, None, None] * patches(a)).sum(1).clamp_min(0)
    assert torch.allclose(got, expected, atol=1e-6)


def test_attention_maps_of_a_vit_with_registers_take_the_grid_from_the_model():
    torch.manual_seed(0)
    vit = RegisterViT(16).eval()
    attn = methods.vit_attention(vit, XV)
    assert attn.shape[-1] == 1 + 16 + 9
    maps = methods.cls_maps(attn, methods.patch_grid(vit, XV))
    assert maps.shape == (3, 2, 2, 3, 3)
    assert torch.equal(maps[..., 0, 0], attn[..., 0, 17])


def test_a_vit_without_a_class_token_is_told_what_it_is():
    torch.manual_seed(0)
    vit = RegisterViT(0, class_token=False).eval()
    grid = methods.patch_grid(vit, XV)
    attn = methods.vit_attention(vit, XV)
    with pytest.raises(ValueError, match=r"no class token"):
        methods.cls_maps(attn, grid)
    with pytest.raises(ValueError, match=r"no class token.*grid=methods\.patch_grid"):
        methods.tokens_to_grid(torch.zeros(2, 9, 16))
    assert methods.tokens_to_grid(torch.zeros(2, 9, 16), grid).shape == (2, 16, 3, 3)


# ------------------------------------------------------------ 5. wrapped and compiled

def test_data_parallel_models_work_like_the_model_inside(resnet):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    wrapped = nn.DataParallel(resnet)
    with unchanged(resnet):
        assert torch.equal(methods.cam(wrapped, x, T), methods.cam(resnet, x, T))
        assert torch.equal(methods.grad_cam(wrapped, x, T, "layer4"),
                           methods.grad_cam(resnet, x, T, "layer4"))
        assert models.gap_fc_head(wrapped).layer == "module.layer4"


def test_a_wrapped_vit_works_like_the_vit_inside():
    torch.manual_seed(0)
    vit = RegisterViT(1).eval()
    wrapped = nn.DataParallel(vit)
    assert torch.equal(methods.vit_grad_cam(wrapped, XV, T), methods.vit_grad_cam(vit, XV, T))
    assert torch.equal(methods.vit_attention(wrapped, XV), methods.vit_attention(vit, XV))


def test_compiled_models_work_like_the_model_inside(resnet):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    compiled = torch.compile(resnet, backend="eager")     # no C compiler needed
    assert models.unwrap(compiled) == (resnet, "_orig_mod.")
    assert torch.allclose(methods.cam(compiled, x, T), methods.cam(resnet, x, T), atol=1e-6)
    assert torch.allclose(methods.grad_cam(compiled, x, T, "layer4"),
                          methods.grad_cam(resnet, x, T, "layer4"), atol=1e-6)


def test_the_input_spec_is_read_through_a_wrapper():
    net = _net()
    assert images.input_spec(nn.DataParallel(net)) == models.SHAPES_SPEC
    methods.class_visualisation(nn.DataParallel(net), 1, size=16, steps=1)


# ------------------------------------------------------------ 6. occlusion covers every pixel

def test_occlusion_with_a_stride_larger_than_the_window_is_refused():
    net = _net()
    assert_refused(lambda: methods.occlusion(net, X, T, window=1, stride=2), ValueError,
                   r"stride 2 is larger than the window 1.*covered by none",
                   r"stride of at most the window", [net])


@pytest.mark.parametrize("window, stride", [(1, 1), (3, 3), (5, 2), (16, 16), (7, 7), (6, 5)])
def test_occlusion_covers_every_pixel(window, stride):
    maps = methods.occlusion(_net(), X, T, window=window, stride=stride)
    assert torch.isfinite(maps).all()


# ------------------------------------------------------------ 7. refusals that say the truth

def test_neuron_guided_backprop_at_a_linear_layer_is_the_units_gradient():
    net = _net()
    got = methods.neuron_guided_backprop(net, X, "8", 2)        # the final Linear
    with hooks.preserved_state(net), torch.enable_grad():
        x = X.clone().requires_grad_(True)
        from featviz_helpers import relu_rules
        with relu_rules.relu_backward_rule(net, "guided"):
            (expected,) = torch.autograd.grad(net(x)[:, 2].sum(), x)
    assert torch.equal(got, expected)


def test_a_channel_of_a_token_sequence_is_refused_for_what_it_is():
    torch.manual_seed(0)
    tokens = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(2),
                           nn.AdaptiveAvgPool1d(1), nn.Flatten())      # "2" gives (B, 4, H·W)
    assert_refused(lambda: methods.neuron_guided_backprop(tokens, X, "2", 1), ValueError,
                   r"\(2, 4, 256\), neither a feature map", r"convolutional or linear", [tokens])
    vit = RegisterViT(1).eval()
    assert_refused(lambda: methods.activation_maximisation(vit, "encoder.layers.encoder_layer_0",
                                                           1, size=12, steps=1),
                   ValueError, r"takes only 12×12 images", r"a model that takes any size", [vit])


@pytest.mark.parametrize("call", [
    lambda net, x: methods.saliency(net, x, 1),
    lambda net, x: methods.grad_cam(net, x, 1, "3"),
    lambda net, x: methods.occlusion(net, x, 1, 8, 4),
], ids=["saliency", "grad_cam", "occlusion"])
def test_a_channels_last_batch_is_refused_with_the_permute(call):
    net = _net()
    assert_refused(lambda: call(net, X.permute(0, 2, 3, 1)), ValueError,
                   r"looks channels-last", r"permute\(0, 3, 1, 2\)", [net])


def test_preprocess_tells_how_to_fix_a_channels_last_or_numpy_image():
    net = _net()
    with pytest.raises(ValueError, match=r"channels-last.*permute\(0, 3, 1, 2\)"):
        images.preprocess(torch.rand(1, 16, 16, 3), net)
    with pytest.raises(ValueError, match=r"add the batch dimension"):
        images.preprocess(torch.rand(3, 16, 16), net)
    with pytest.raises(TypeError, match=r"got ndarray.*Image\.fromarray"):
        images.preprocess(np.zeros((16, 16, 3), dtype=np.uint8), net)


@pytest.mark.parametrize("call", [
    lambda net: metrics.deletion_auc(net, X, torch.rand(2, 4, 4), T, baseline=torch.zeros(5, 5)),
    lambda net: methods.integrated_gradients(net, X, T, baseline=torch.zeros(3, 5, 5)),
    lambda net: metrics.completeness_error(net, X, T, torch.zeros_like(X),
                                           baseline=torch.zeros(2, 1, 4, 4)),
], ids=["deletion", "integrated_gradients", "completeness"])
def test_a_baseline_of_the_wrong_shape_is_refused(call):
    net = _net()
    assert_refused(lambda: call(net), ValueError, r"baseline of shape .* does not fit",
                   r"broadcasts to the batch", [net])


def test_gradient_image_of_one_channel_says_what_to_do():
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8\).*channel_max"):
        viz.gradient_image(torch.rand(2, 1, 8, 8))


# ------------------------------------------------------------ 8. no silently different answer

@pytest.mark.parametrize("method", [m for m in methods.CATALOGUE if m.architecture == "CNN"],
                         ids=lambda m: m.name)
def test_a_float64_model_gets_float64_answers_equal_to_float32(method):
    net = _net()
    expected = method.example(net, X, T, "3")
    net64 = _net().double()
    got = method.example(net64, X.double(), T, "3")
    assert got.dtype == torch.float64, f"{method.name} returned {got.dtype}"
    assert torch.allclose(got.float(), expected, rtol=1e-3, atol=1e-5)


def test_a_map_with_a_nan_is_refused_not_shown_as_all_nan():
    maps = torch.rand(2, 4, 4)
    maps[1, 2, 2] = float("nan")
    for call in (lambda: viz.normalize(maps), lambda: viz.map_picture(maps[1])):
        with pytest.raises(ValueError, match=r"1 NaN or infinite value\(s\), in image\(s\) \[\d\]"):
            call()


# ------------------------------------------------- relatives: rectifiers written by hand

class Rectified(nn.Module):
    def __init__(self, act):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.fc, self.relu, self.act = nn.Linear(8, 4), nn.ReLU(), act

    def forward(self, x):
        return self.fc(self.act(self.c2(self.relu(self.c1(x)))).mean((2, 3)))


def _in_place(op):
    def act(h):
        op(h)
        return h                      # the returned value is ignored, as in such code
    return act


RECTIFIERS = {
    "x.clamp(min=0)": lambda h: h.clamp(min=0),
    "torch.clamp_min(x, 0)": lambda h: torch.clamp_min(h, 0),
    "torch.maximum(x, zeros)": lambda h: torch.maximum(h, torch.zeros_like(h)),
    "x.relu_() (result ignored)": _in_place(lambda h: h.relu_()),
    "x.clamp_(min=0) (result ignored)": _in_place(lambda h: h.clamp_(min=0)),
    "F.relu(x, inplace=True)": lambda h: F.relu(h, inplace=True),
    "x * (x > 0)": lambda h: h * (h > 0),
    "(x > 0).float() * x": lambda h: (h > 0).float() * h,
    "torch.where(x > 0, x, 0)": lambda h: torch.where(h > 0, h, 0.0),
}


@pytest.mark.parametrize("rule", ["guided", "deconvnet"])
@pytest.mark.parametrize("name", RECTIFIERS)
def test_hand_written_rectifiers_are_guided_like_relus(name, rule):
    expected = methods.input_gradient(Rectified(F.relu), X, T, rule=rule)
    net = Rectified(RECTIFIERS[name])
    with unchanged(net):
        got = methods.input_gradient(net, X, T, rule=rule)
    assert torch.equal(got, expected)
    assert torch.allclose(methods.input_gradient(net, X, T),
                          methods.input_gradient(Rectified(F.relu), X, T))


def test_a_hand_written_swish_beside_real_relus_is_refused():
    net = Rectified(lambda h: h * torch.sigmoid(h))
    assert_refused(lambda: methods.guided_backprop(net, X, T), ValueError,
                   r"x · sigmoid\(x\)", r"methods\.saliency", [net])


def test_a_sigmoid_gate_is_not_a_swish():
    # Squeeze-and-excitation: a gate computed from other values passes the plain gradient.
    net = Rectified(lambda h: h * torch.sigmoid(h.mean((2, 3), keepdim=True)))
    assert torch.isfinite(methods.guided_backprop(net, X, T)).all()


def test_max_over_a_dimension_is_not_a_rectifier():
    # torch.max(x, 1) reduces over dimension 1; it must not be taken for max(x, 0).
    net = Rectified(lambda h: h + 0 * torch.max(h, 1, keepdim=True).values)
    got = methods.input_gradient(net, X, T, rule="guided")
    assert torch.allclose(got, methods.input_gradient(Rectified(lambda h: h), X, T, rule="guided"))
