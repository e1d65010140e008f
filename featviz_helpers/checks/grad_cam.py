"""Checks of notebook 05_grad_cam: Grad-CAM from scratch (§2), the perturbation
baseline, occlusion (§9), and Grad-CAM++ (§12, the CAM family)."""
from __future__ import annotations

import torch
from torch import nn

from .. import methods
from ..hooks import preserved_state
from ._harness import (CheckError, _hidden_case, _hidden_resnet_case, _hidden_targets, _passed,
                       _random_resnet18, _references, _restores_after_error, _run,
                       _small_resnet_case, _tensor, _verdict)


_GRAD_CAM_HINT = ("α_k = mean of ∂S_c/∂A_k over positions (per image, per channel); "
                  "L = ReLU(Σ_k α_k A_k), at the layer you were given, each image's own target.")


def _grad_cam_mistakes(model, x, target, layer):
    """The usual mistakes, from the layer's activations A and gradients ∂S_c/∂A."""
    a, g = methods.layer_activations_and_gradients(model, x, target, layer)
    return [
        ((g * a).sum(1).clamp_min(0), "you multiplied gradients and activations position by "
                                      "position; first average the gradients over positions to "
                                      "get one weight α_k per channel."),
        ((g.sum((2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "you summed the gradients over positions; α_k is their mean (divide by Z = h·w)."),
        ((g.mean((0, 2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "you averaged the gradients over the batch too; α_k is per image: mean over (h, w) only."),
        ((-g.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "your map is the counterfactual one: the gradient's sign is flipped."),
    ]


def check_grad_cam(fn, model: nn.Module, x: torch.Tensor, target, layer) -> None:
    """``fn(model, x, target, layer)`` → (B,h,w), compared with ``methods.grad_cam``
    (notebook 05 §2, "Exercise: Grad-CAM")."""
    got = _tensor("your Grad-CAM", _run("your Grad-CAM", fn, [model, x, target, layer]))
    t = methods.model_targets(model, x, target)
    expected, tol = _references(methods.grad_cam, model, x, t, layer)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,h,w) = {tuple(expected.shape)} "
                         "at the layer's resolution.")
    _verdict(f"Grad-CAM at {layer!r}", got, expected,
             lambda: _grad_cam_mistakes(model, x, target, layer), _GRAD_CAM_HINT, tol=tol,
             refusals=[((got < 0).any(), "your map has negative values: Grad-CAM ends with a "
                                         "ReLU, keeping only evidence *for* the class.")])


def hidden_check_grad_cam(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 05 §2: mixed non-top-1 targets, train mode, ResNet-18 at two
    layers, hooks removed even when the forward pass raises."""
    x = x[:3]
    t = _hidden_targets(model, x)
    expected, tol = _references(methods.grad_cam, model, x, t, "_blocks.15")
    _hidden_case("targets other than each image's top-1 class, mixed in one batch, at "
                 "'_blocks.15'", fn, [model, x, t, "_blocks.15"], expected, tol=tol,
                 hint=_GRAD_CAM_HINT)
    expected, tol = _references(methods.grad_cam, model, x[:2], t[:2], "_head_act")
    _hidden_case("a model handed over in train mode", fn, [model, x[:2], t[:2], "_head_act"],
                 expected, tol=tol, train=True,
                 hint="Eval mode inside (BatchNorm's running statistics), restored after.")
    resnet = _random_resnet18()
    xr = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    tr = torch.tensor([4, 6])
    for layer in ("layer3", "layer4"):
        expected, tol = _references(methods.grad_cam, resnet, xr, tr, layer)
        _hidden_case(f"ResNet-18 (random weights) in train mode at {layer!r}", fn,
                     [resnet, xr, tr, layer], expected, tol=tol, train=True, hint=_GRAD_CAM_HINT)
    _restores_after_error("a forward pass that raises (a 2-channel input)", fn, resnet,
                          [xr[:, :2], tr, "layer3"])
    _passed("hidden tests of Grad-CAM.")


_OCCLUSION_HINT = ("For each window position (every `stride` pixels, plus one flush with the far "
                   "edge): set the window to 0, drop = p(target | x) − p(target | occluded x) "
                   "(softmax probabilities); each pixel gets the mean drop of the windows "
                   "covering it.")


def check_occlusion(fn, model: nn.Module, x: torch.Tensor, target, window: int,
                    stride: int) -> None:
    """``fn(model, x, target, window, stride)`` → (B,H,W), against ``methods.occlusion``
    (notebook 05 §9, "The perturbation baseline: occlusion")."""
    t = methods.model_targets(model, x, target)
    got = _tensor("your occlusion map",
                  _run("your occlusion map", fn, [model, x, t, window, stride]))
    expected, tol = _occlusion_references(model, x, t, window, stride)
    _verdict("occlusion", got, expected,
             lambda: _occlusion_mistakes(model, x, t, window, stride, expected), _OCCLUSION_HINT,
             tol=tol)


def _occlusion_references(model, x, t, window, stride):
    """methods.occlusion and the tolerance from its spread over batch splits (a map of small
    probability drops is a difference of nearly equal numbers, so its round-off depends on
    how the windows were batched)."""
    windows = methods.occlusion_masks(*x.shape[-2:], window, stride).shape[0]
    return _references(methods.occlusion, model, x, t, window, stride, chunked=True,
                       count=windows)


def _occlusion_mistakes(model, x, t, window, stride, expected):
    """The usual mistakes, built from the same window drops (one forward pass per window)."""
    H, W = x.shape[-2:]
    masks = methods.occlusion_masks(H, W, window, stride, device=x.device)
    with preserved_state(model), torch.no_grad():
        logits = model(x)
        p, s = logits.softmax(1).gather(1, t[:, None]), logits.gather(1, t[:, None])
        total_p = torch.zeros(x.shape[0], H, W, device=x.device)
        total_s = torch.zeros(x.shape[0], H, W, device=x.device)
        for mask in masks:
            out = model(x.masked_fill(mask, 0))
            total_p += (p - out.softmax(1).gather(1, t[:, None]))[:, :, None] * mask
            total_s += (s - out.gather(1, t[:, None]))[:, :, None] * mask
    return [
        (-expected, "the sign is flipped: the map is p(x) − p(occluded x), positive where hiding "
                    "the pixels hurts the class."),
        (total_p, "you summed the drops of the windows covering a pixel; take their mean."),
        (total_s / masks.sum(0), "you used the logit; Zeiler & Fergus's map is the class "
                                 "probability."),
    ]


def hidden_check_occlusion(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 05 §9: mixed non-top-1 targets with a stride that does not
    tile the image; a non-square image; train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    expected, tol = _occlusion_references(model, x, t, 20, 12)
    _hidden_case("targets other than the top-1, window 20, stride 12 (needs the edge window)",
                 fn, [model, x, t, 20, 12], expected, tol=tol, hint=_OCCLUSION_HINT)
    # Not square, and the two sides need different edge windows: height and width kept apart.
    wide = x[:1, :, 8:48, :]
    expected, tol = _occlusion_references(model, wide, t[:1], 12, 10)
    _hidden_case(f"a {wide.shape[-2]}×{wide.shape[-1]} image (not square), window 12, stride 10",
                 fn, [model, wide, t[:1], 12, 10], expected, tol=tol,
                 hint=_OCCLUSION_HINT + " Rows and columns have their own window positions.")
    windows = methods.occlusion_masks(64, 64, 16, 16).shape[0]
    _hidden_resnet_case(fn, methods.occlusion, 24, 16, 16, hint=_OCCLUSION_HINT, chunked=True,
                        count=windows)
    _passed("hidden tests of occlusion.")



_GRAD_CAM_PP_HINT = ("With A and g = ∂S_c/∂A at the layer (each image's own target): "
                     "α_kij = g² / (2g² + (Σ_ab A_kab)·g³), and α = 0 where that denominator is 0; "
                     "w_k = Σ_ij α_kij · ReLU(g_kij); L = ReLU(Σ_k w_k A_k).")


# Where the gradient is the same at every position (a GAP head), the activation at each
# position and the mean over positions give the same map to first order: one message for both.
_WHOLE_CHANNEL = ("your denominator multiplies g³ by the activation at each position or by its "
                  "mean; it is the channel's whole activation, the sum Σ_ab A_kab over positions.")


def _grad_cam_pp_mistakes(model, x, target, layer):
    """The usual mistakes, from the layer's activations A and gradients g."""
    a, g = methods.layer_activations_and_gradients(model, x, target, layer)
    total = a.sum((2, 3), keepdim=True)

    def alpha(denominator):
        return g.pow(2) / torch.where(denominator != 0, denominator, 1)

    def cam(weights):
        return (weights * a).sum(1).clamp_min(0)

    right = alpha(2 * g.pow(2) + total * g.pow(3))
    return [
        (cam(g.mean((2, 3), keepdim=True)),
         "these are Grad-CAM's weights (the mean gradient); Grad-CAM++ weighs each position's "
         "positive gradient by α_kij."),
        (cam((alpha(g.pow(2) + total * g.pow(3)) * g.clamp_min(0)).sum((2, 3), keepdim=True)),
         "your α's denominator has g² where the paper has 2g²."),
        (cam((alpha(2 * g.pow(2) + a * g.pow(3)) * g.clamp_min(0)).sum((2, 3), keepdim=True)),
         _WHOLE_CHANNEL),
        (cam((alpha(2 * g.pow(2) + a.mean((2, 3), keepdim=True) * g.pow(3))
              * g.clamp_min(0)).sum((2, 3), keepdim=True)), _WHOLE_CHANNEL),
        (cam((right * g).sum((2, 3), keepdim=True)),
         "your weights sum α·g over positions; Grad-CAM++ keeps only the positive gradients: "
         "w_k = Σ_ij α_kij · ReLU(g_kij)."),
        (cam(right.sum((2, 3), keepdim=True)),
         "your weights sum α alone; each α_kij multiplies ReLU(g_kij)."),
        (cam((right * g.clamp_min(0)).mean((2, 3), keepdim=True)),
         "your weights average α·ReLU(g) over positions; the paper sums them."),
    ]


def _grad_cam_pp_refusals(got):
    return [(~torch.isfinite(got).all(),
             "your map has NaN or infinite values: where the denominator 2g² + (Σ A)·g³ is 0 "
             "(a zero gradient), α is 0/0; count it as 0 (torch.where)."),
            ((got < 0).any(), "your map has negative values: Grad-CAM++ ends with a ReLU, as "
                              "Grad-CAM does.")]


def check_grad_cam_plus_plus(fn, model: nn.Module, x: torch.Tensor, target, layer) -> None:
    """``fn(model, x, target, layer)`` → (B,h,w), compared with ``methods.grad_cam_plus_plus``
    (notebook 05 §12, "Exercise: Grad-CAM++")."""
    got = _tensor("your Grad-CAM++", _run("your Grad-CAM++", fn, [model, x, target, layer]))
    t = methods.model_targets(model, x, target)
    expected, tol = _references(methods.grad_cam_plus_plus, model, x, t, layer)
    _verdict(f"Grad-CAM++ at {layer!r}", got, expected,
             lambda: _grad_cam_pp_mistakes(model, x, t, layer), _GRAD_CAM_PP_HINT, tol=tol,
             refusals=_grad_cam_pp_refusals(got))


def hidden_check_grad_cam_plus_plus(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 05 §12, on shapes_cnn and at least 6 of its images ``x``:
    mixed non-top-1 targets; other images at the same layer; a layer before a ReLU, where
    activations can be negative and most gradients are exactly 0; a model handed over in
    train mode; ResNet-18; hooks removed even when the forward pass raises."""
    x, x_more = x[:3], x[3:]
    t = _hidden_targets(model, x)
    expected, tol = _references(methods.grad_cam_plus_plus, model, x, t, "stage4")
    _hidden_case("targets other than each image's top-1 class, mixed in one batch, at 'stage4'",
                 fn, [model, x, t, "stage4"], expected, tol=tol, hint=_GRAD_CAM_PP_HINT)
    others, t_others = x_more[:3], _hidden_targets(model, x_more[:3])
    expected, tol = _references(methods.grad_cam_plus_plus, model, others, t_others, "stage4")
    _hidden_case("other images at the same layer", fn, [model, others, t_others, "stage4"],
                 expected, tol=tol, hint=_GRAD_CAM_PP_HINT)
    expected, tol = _references(methods.grad_cam_plus_plus, model, x, t, "stage5.1")
    _hidden_case("at 'stage5.1', BatchNorm's output before the ReLU: activations can be "
                 "negative there (the final ReLU matters), and most gradients are exactly 0 "
                 "(α = 0/0, which counts as 0)", fn, [model, x, t, "stage5.1"],
                 expected, tol=tol, hint=_GRAD_CAM_PP_HINT)
    expected, tol = _references(methods.grad_cam_plus_plus, model, x[:2], t[:2], "stage5")
    _hidden_case("a model handed over in train mode", fn, [model, x[:2], t[:2], "stage5"],
                 expected, tol=tol, train=True,
                 hint="Eval mode inside (BatchNorm's running statistics), restored after.")
    _hidden_resnet_case(fn, methods.grad_cam_plus_plus, 31, "layer3", hint=_GRAD_CAM_PP_HINT)
    resnet, xr, tr = _small_resnet_case(31)
    _restores_after_error("a forward pass that raises (a 2-channel input)", fn, resnet,
                          [xr[:, :2], tr, "layer3"])
    _passed("hidden tests of Grad-CAM++.")
