"""Checks for the notebooks' from-scratch exercises.

Each ``check_*`` runs the student's function on cases with known answers and either
prints one line saying what passed or raises :class:`CheckError` saying precisely what is
wrong — and, where a common mistake can be recognised, which one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import methods, models, viz
from .hooks import capture, count_hooks, preserved_state

__all__ = [
    "CheckError",
    "rel_error",
    "assert_close",
    "check_normalize_filters",
    "check_filter_response",
    "check_saliency",
    "check_relu_rules",
    "check_guided_backprop",
    "check_cam",
    "check_grad_cam",
    "check_vit_attention",
    "check_rollout",
]


class CheckError(AssertionError):
    """An exercise check failed; the message says what is wrong."""


def rel_error(a, b) -> float:
    """max |a − b| / max(max |a|, max |b|): the error relative to the larger array's scale.

    Scale-relative rather than element-wise, so entries that are (nearly) zero in both
    arrays do not blow the ratio up. About 1e-6 is float32 round-off; 1e-2 is a bug.
    """
    a = torch.as_tensor(a).detach().double().cpu()
    b = torch.as_tensor(b).detach().double().cpu()
    if a.shape != b.shape:
        raise CheckError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    scale = max(a.abs().max().item() if a.numel() else 0.0,
                b.abs().max().item() if b.numel() else 0.0, 1e-30)
    return (a - b).abs().max().item() / scale if a.numel() else 0.0


def assert_close(actual, expected, tol: float, what: str, hint: str = "") -> float:
    """Raise :class:`CheckError` unless ``rel_error(actual, expected) <= tol``; return it."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise CheckError(
            f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}. {hint}"
        )
    err = rel_error(actual, expected)
    if not err <= tol:  # also catches NaN
        raise CheckError(f"{what}: relative error {err:.2e} > tolerance {tol:.0e}. {hint}")
    return err


def _passed(message: str) -> None:
    print(f"passed: {message}")


def _grad_of(model, x, scores_fn):
    """d(sum of scores_fn(model(x)))/dx, (B,C,H,W)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(scores_fn(model(x)).sum(), x)
    return g


def _state(model):
    return (model.training, [p.requires_grad for p in model.parameters()], count_hooks(model),
            sum("forward" in m.__dict__ for m in model.modules()))


def _check_leaves_model_alone(fn_name, model, before):
    after = _state(model)
    if after[0] != before[0]:
        raise CheckError(f"{fn_name} changed the model's train/eval mode; restore it.")
    if after[1] != before[1]:
        raise CheckError(f"{fn_name} changed parameters' requires_grad flags; restore them.")
    if after[2] != before[2]:
        raise CheckError(f"{fn_name} left hooks on the model; remove them in a finally block.")
    if after[3] != before[3]:
        raise CheckError(f"{fn_name} left a replaced forward on some ReLU; restore every one, "
                         "also when an exception is raised.")


# -------------------------------------------------------------------- notebook 01

def check_normalize_filters(fn) -> None:
    """``fn(w)``: filters (C_out,C,k,k) → the same shape, each filter min–max scaled to [0,1]."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 5, 5, generator=g) * torch.logspace(-3, 1, 6).view(6, 1, 1, 1)
    got = torch.as_tensor(fn(w.clone()))
    if got.shape != w.shape:
        raise CheckError(f"normalize_filters returned shape {tuple(got.shape)}; it must keep "
                         f"the filters' shape {tuple(w.shape)}.")
    expected = viz.normalize_filters(w)
    whole = (w - w.min()) / (w.max() - w.min())
    if rel_error(got, whole) < 1e-4:
        raise CheckError("You normalised all filters together. Scale each filter by its own "
                         "min and max: filters differ in scale by orders of magnitude, and the "
                         "small ones would all be flat grey.")
    if got.min() < -1e-6 or got.max() > 1 + 1e-6:
        raise CheckError(f"values range over [{got.min():.3g}, {got.max():.3g}]; each filter "
                         "must map its own minimum to 0 and maximum to 1.")
    assert_close(got, expected, 1e-4, "normalised filters",
                 "Per filter: (w − min) / (max − min), min and max over that filter's "
                 "C·k·k numbers (all colour channels together, so colours keep their balance).")
    _passed("each filter scaled to [0,1] by its own min and max.")


def check_filter_response(fn) -> None:
    """``fn(image, filt)``: (3,H,W) and (3,k,k) → (H,W), cross-correlation, zero 'same' padding."""
    # A single bright pixel: the response of a cross-correlation to an impulse is the
    # filter rotated by 180 degrees.
    filt = torch.arange(27, dtype=torch.float32).view(3, 3, 3) - 13
    impulse = torch.zeros(3, 5, 5)
    impulse[1, 2, 2] = 1.0
    got = torch.as_tensor(fn(impulse, filt)).detach().float()
    if got.shape != (5, 5):
        raise CheckError(f"response to a 3×5×5 image has shape {tuple(got.shape)}; expected "
                         "(5, 5): pad by k//2 so the map is as large as the image.")
    centre = got[1:4, 1:4]
    if torch.allclose(centre, filt[1]):
        raise CheckError("For a single bright pixel your response shows the filter upright; "
                         "it should be rotated 180°. You flipped the kernel (true convolution); "
                         "conv layers compute cross-correlation: sum over c,u,v of "
                         "image[c, i+u−p, j+v−p] · filt[c,u,v].")
    assert_close(centre, filt[1].flip(0, 1), 1e-6, "response to a single bright pixel",
                 "It should be the green slice of the filter rotated by 180°.")
    g = torch.Generator().manual_seed(1)
    image, filt = torch.rand(3, 12, 9, generator=g), torch.randn(3, 5, 5, generator=g)
    expected = F.conv2d(image[None], filt[None], padding=2)[0, 0]
    assert_close(torch.as_tensor(fn(image, filt)).detach().float(), expected, 1e-5,
                 "response of a 5×5 filter on a random image",
                 "Sum over all three colour channels; zero-pad by k//2 on every side.")
    _passed("cross-correlation with zero padding; impulse response is the filter rotated 180°.")


# -------------------------------------------------------------------- notebook 02

def check_saliency(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,H,W) saliency; compared with the library copy.

    Also checks that the model's mode and ``requires_grad`` flags are as they were and no
    hooks are left behind. Use a batch with different targets to test batching.
    """
    with preserved_state(model), torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    t = methods.as_targets(target, x.shape[0], num_classes)
    before = _state(model)
    got = fn(model, x, t.clone())
    if not isinstance(got, torch.Tensor):
        raise CheckError(f"return a torch.Tensor, not {type(got).__name__}.")
    _check_leaves_model_alone("your saliency", model, before)
    B, _, H, W = x.shape
    if got.shape == (B, 3, H, W):
        raise CheckError("your map still has a colour dimension: take the max over the three "
                         "channels of |gradient|.")
    if got.shape != (B, H, W):
        raise CheckError(f"shape {tuple(got.shape)}; expected (B, H, W) = {(B, H, W)}.")
    got = got.detach()
    if (got < 0).any():
        raise CheckError("your map has negative values: take the absolute value of the "
                         "gradient before the max over channels.")
    expected = methods.saliency(model, x, t)
    if rel_error(got, expected) <= 1e-4:
        _passed(f"saliency matches the library copy on {B} image(s) "
                f"(relative error {rel_error(got, expected):.1e}).")
        return
    # Diagnose the usual mistakes.
    with preserved_state(model), torch.enable_grad():
        logit = lambda out: out.gather(1, t[:, None])[:, 0]
        g_prob = _grad_of(model, x, lambda out: out.softmax(1).gather(1, t[:, None])[:, 0])
        g_logit = _grad_of(model, x, logit)
        g_first = _grad_of(model, x, lambda out: out[:, t[0]])
    diagnoses = [
        (g_prob.abs().amax(1), "you differentiated the softmax probability; use the raw class "
                               "score (logit) S_c, before the softmax."),
        (g_logit.abs().sum(1), "you summed |gradient| over colour channels; take the max."),
        (g_logit.amax(1).abs(), "you took the max of the signed gradient, then |·|; take "
                                "|gradient| first, then the max over channels."),
        (g_first.abs().amax(1), "every image used the first image's class; backprop each "
                                "image's own target (gather one logit per row)."),
    ]
    for candidate, message in diagnoses:
        if rel_error(got, candidate) <= 1e-4:
            raise CheckError(message)
    raise CheckError(f"saliency differs from the library copy: relative error "
                     f"{rel_error(got, expected):.2e}. Check: eval mode, the logit of each "
                     "image's target, the gradient w.r.t. the input x, then max_c |·|.")


# -------------------------------------------------------------------- notebook 03

# The lecture's worked example: forward input x, upstream gradient g.
RELU_EXAMPLE_X = torch.tensor([[1.0, -1, 5], [2, -5, -7], [-3, 2, 4]])
RELU_EXAMPLE_G = torch.tensor([[-2.0, 3, -1], [6, -3, 1], [2, -1, 3]])
RELU_EXAMPLE_EXPECTED = {
    "standard": torch.tensor([[-2.0, 0, -1], [6, 0, 0], [0, -1, 3]]),
    "deconvnet": torch.tensor([[0.0, 3, 0], [6, 0, 1], [2, 0, 3]]),
    "guided": torch.tensor([[0.0, 0, 0], [6, 0, 0], [0, 0, 3]]),
}
_RELU_HINTS = {
    "standard": "standard backprop passes g where the forward input was positive: g·1[x>0].",
    "deconvnet": "the deconvnet passes g where g itself is positive, ignoring x: g·1[g>0].",
    "guided": "guided backprop needs both: g·1[x>0]·1[g>0].",
}


def check_relu_rules(fn) -> None:
    """``fn(x, g, rule)`` → the gradient a ReLU passes back, for rule in standard/deconvnet/guided."""
    for rule, expected in RELU_EXAMPLE_EXPECTED.items():
        got = torch.as_tensor(fn(RELU_EXAMPLE_X.clone(), RELU_EXAMPLE_G.clone(), rule)).float()
        if got.shape != expected.shape:
            raise CheckError(f"{rule}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
        if not torch.equal(got, expected):
            wrong = [r for r, e in RELU_EXAMPLE_EXPECTED.items() if torch.equal(got, e)]
            also = f" You computed the {wrong[0]} rule instead." if wrong else ""
            raise CheckError(f"{rule} rule on the lecture's example gives\n{got.tolist()}\n"
                             f"expected\n{expected.tolist()}.{also} Recall: {_RELU_HINTS[rule]}")
    _passed("all three ReLU backward rules reproduce the lecture's worked example.")


def check_guided_backprop(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,3,H,W), compared with ``methods.guided_backprop``."""
    before = _state(model)
    got = fn(model, x, target)
    _check_leaves_model_alone("your guided backprop", model, before)
    expected = methods.guided_backprop(model, x, target)
    got = torch.as_tensor(got).detach()
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,3,H,W) = {tuple(expected.shape)}.")
    if rel_error(got, expected) <= 1e-4:
        _passed(f"guided backprop matches the library copy on {type(model).__name__} "
                f"(relative error {rel_error(got, expected):.1e}).")
        return
    with preserved_state(model), torch.enable_grad():
        plain = _grad_of(model, x, lambda out: methods.class_scores(out, target))
    if rel_error(got, plain) <= 1e-4:
        raise CheckError("you returned the plain gradient: the ReLUs did not use the guided rule. "
                         "Is your replacement applied to every nn.ReLU / nn.ReLU6 module, "
                         "during the forward pass?")
    raise CheckError(f"guided backprop differs from the library copy (relative error "
                     f"{rel_error(got, expected):.2e}). Are ReLU6 modules handled, and a ReLU "
                     "module that is called twice in one forward pass?")


# -------------------------------------------------------------------- notebook 04

def check_cam(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,h,w) class activation maps, compared with ``methods.cam``."""
    before = _state(model)
    got = torch.as_tensor(fn(model, x, target)).detach()
    _check_leaves_model_alone("your CAM", model, before)
    expected = methods.cam(model, x, target)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,h,w) = {tuple(expected.shape)} "
                         "at the last conv layer's resolution (no upsampling here).")
    if rel_error(got, expected) <= 1e-4:
        _passed(f"CAM matches the library copy (relative error {rel_error(got, expected):.1e}).")
        return
    z = expected.shape[-1] * expected.shape[-2]
    head = models.gap_fc_head(model)
    t = methods.as_targets(target, x.shape[0], head.fc.out_features)
    bias = head.fc.bias.detach()[t].view(-1, 1, 1)
    for candidate, message in [
        (expected + bias, "you added the bias b_c to every position; CAM is Σ_k w_k f_k only "
                          "(the bias is a constant that belongs to the score, not to a place)."),
        (expected / z, "you divided by Z = h·w; CAM is the sum Σ_k w_k f_k (its *mean* is the "
                       "score minus the bias)."),
        (expected.clamp_min(0), "you applied a ReLU; CAM keeps negative evidence."),
    ]:
        if rel_error(got, candidate) <= 1e-4:
            raise CheckError(message)
    raise CheckError(f"CAM differs from the library copy (relative error "
                     f"{rel_error(got, expected):.2e}). Use the last conv features (after their "
                     "activation) and the weights of each image's own target class.")


# -------------------------------------------------------------------- notebook 05

def check_grad_cam(fn, model: nn.Module, x: torch.Tensor, target, layer) -> None:
    """``fn(model, x, target, layer)`` → (B,h,w), compared with ``methods.grad_cam``."""
    before = _state(model)
    got = torch.as_tensor(fn(model, x, target, layer)).detach()
    _check_leaves_model_alone("your Grad-CAM", model, before)
    expected = methods.grad_cam(model, x, target, layer)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,h,w) = {tuple(expected.shape)} "
                         "at the layer's resolution.")
    if rel_error(got, expected) <= 1e-4:
        _passed(f"Grad-CAM matches the library copy at {layer!r} "
                f"(relative error {rel_error(got, expected):.1e}).")
        return
    if (got < 0).any():
        raise CheckError("your map has negative values: Grad-CAM ends with a ReLU, keeping only "
                         "evidence *for* the class.")
    with capture(model, layer, stop_gradient=True) as cap, torch.enable_grad():
        methods.class_scores(model(x), target).sum().backward()
    name = models.layer_name(model, layer)
    a, g = cap.activations[name], cap.gradients[name]
    for candidate, message in [
        ((g * a).sum(1).clamp_min(0), "you multiplied gradients and activations position by "
                                      "position; first average the gradients over positions to "
                                      "get one weight α_k per channel."),
        ((-g.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "your map is the counterfactual one: the gradient's sign is flipped."),
    ]:
        if rel_error(got, candidate) <= 1e-4:
            raise CheckError(message)
    raise CheckError(f"Grad-CAM differs from the library copy (relative error "
                     f"{rel_error(got, expected):.2e}). α_k = mean of ∂S_c/∂A_k over positions; "
                     "L = ReLU(Σ_k α_k A_k), at the layer you were given.")


# -------------------------------------------------------------------- notebook 06

def check_vit_attention(fn, model: nn.Module, x: torch.Tensor) -> None:
    """``fn(model, x)`` → (L,B,heads,N,N); compared with PyTorch's own attention weights.

    For every block, ``nn.MultiheadAttention(..., need_weights=True,
    average_attn_weights=False)`` is run on the same LayerNorm-ed input.
    """
    before = _state(model)
    got = torch.as_tensor(fn(model, x)).detach()
    _check_leaves_model_alone("your attention extraction", model, before)
    blocks = list(model.encoder.layers)
    names = [f"encoder.layers.{n}.ln_1" for n, _ in model.encoder.layers.named_children()]
    with capture(model, names) as cap, torch.no_grad():
        model(x)
        reference = []
        for block, name in zip(blocks, names):
            t = cap.activations[name]
            _, w = block.self_attention(t, t, t, need_weights=True, average_attn_weights=False)
            reference.append(w)
    reference = torch.stack(reference)
    if got.shape != reference.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (L,B,heads,N,N) = "
                         f"{tuple(reference.shape)}.")
    rows = got.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        raise CheckError("rows of your attention do not sum to 1: softmax over the *key* axis "
                         "(the last one), after scaling QKᵀ by 1/√d_head.")
    err = rel_error(got, reference)
    if err > 1e-5:
        bad_layers = [l for l in range(len(blocks)) if rel_error(got[l], reference[l]) > 1e-5]
        raise CheckError(f"attention differs from nn.MultiheadAttention's (relative error "
                         f"{err:.1e}, first at layer {bad_layers[0]}). Use the block's LayerNorm-ed "
                         "input (ln_1), in_proj_weight/in_proj_bias split into Q, K, V, heads of "
                         "size d = D/heads, and the 1/√d scale.")
    _passed(f"attention of all {len(blocks)} layers matches nn.MultiheadAttention "
            f"(relative error {err:.1e}).")


def check_rollout(fn) -> None:
    """``fn(attn, head_fusion)`` → (B,N,N) attention rollout, compared with the library copy."""
    g = torch.Generator().manual_seed(3)
    # One image: then a missing keepdim broadcasts silently instead of raising.
    attn = torch.rand(3, 1, 4, 5, 5, generator=g).softmax(-1)
    for fusion in ("mean", "max", "min"):
        got = torch.as_tensor(fn(attn.clone(), fusion)).detach().float()
        expected = methods.attention_rollout(attn, fusion)
        if got.shape != expected.shape:
            raise CheckError(f"{fusion}: shape {tuple(got.shape)}; expected (B,N,N) = "
                             f"{tuple(expected.shape)}.")
        rows = got.sum(-1)
        if not torch.allclose(rows, torch.ones_like(rows), atol=1e-5):
            raise CheckError(f"{fusion}: rows sum to {rows.flatten()[:3].tolist()}…, not 1. "
                             "Renormalise each row of (A + I) by its own sum — "
                             "a.sum(-1, keepdim=True); without keepdim the division broadcasts "
                             "along the wrong axis.")
        if rel_error(got, expected) > 1e-5:
            raise CheckError(f"{fusion}: differs from the library copy (relative error "
                             f"{rel_error(got, expected):.1e}). Fuse heads, add I, renormalise "
                             "rows, then multiply layers with the *later* layer on the left.")
    eye = torch.eye(5).expand(3, 2, 4, 5, 5)
    one_hot = torch.as_tensor(fn(eye.clone(), "mean")).float()[:, 0]
    if not torch.allclose(one_hot, torch.eye(5)[0].expand(2, 5)):
        raise CheckError("identity attention must roll out to the identity: [CLS]'s row one-hot "
                         "on itself.")
    _passed("attention rollout: rows sum to 1, identity stays identity, all fusions match.")
