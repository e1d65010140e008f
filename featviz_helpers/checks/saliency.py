"""Checks of notebook 02_saliency: saliency from scratch (§2) and, beyond the lecture,
SmoothGrad (§9), Integrated Gradients (§10), the class-visualisation ascent step (§11) and
the fooling image of the adversarial examples (§12)."""
from __future__ import annotations

import torch
from torch import nn

from .. import methods
from ..hooks import preserved_state
from ._harness import (CheckError, _hidden_case, _hidden_resnet_case, _hidden_targets, _passed,
                       _run, _score_gradient, _tensor, _verdict)


_SALIENCY_HINT = ("Check: eval mode, the logit of each image's own target (not the argmax, not "
                  "the first image's), the gradient w.r.t. the input x, then max_c |·|.")


def _saliency_mistakes(model, x, t):
    """The usual mistakes, from the gradients of the softmax probability, of each image's
    own target logit, and of the first image's target for every image."""
    g_prob = _score_gradient(model, x, lambda out: out.softmax(1).gather(1, t[:, None])[:, 0])
    g_logit = methods.input_gradient(model, x, t)
    g_first = methods.input_gradient(model, x, t[:1].expand_as(t))
    return [
        (g_prob.abs().amax(1), "you differentiated the softmax probability; use the raw class "
                               "score (logit) S_c, before the softmax."),
        (g_logit.abs().sum(1), "you summed |gradient| over colour channels; take the max."),
        (g_logit.abs().mean(1), "you averaged |gradient| over colour channels; take the max."),
        (g_logit.amax(1).abs(), "you took the max of the signed gradient, then |·|; take "
                                "|gradient| first, then the max over channels."),
        (g_first.abs().amax(1), "every image used the first image's class; backprop each "
                                "image's own target (gather one logit per row)."),
    ]


def check_saliency(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,H,W) saliency; compared with the library copy
    (notebook 02 §2, "Exercise: saliency from scratch").

    Also checks that the model's mode, ``requires_grad`` flags and weights are as they were
    and no hooks are left behind. Use a batch with different targets to test batching.
    """
    t = methods.model_targets(model, x, target)
    got = _tensor("your saliency", _run("your saliency", fn, [model, x, t]))
    B, _, H, W = x.shape
    if got.shape == (B, 3, H, W):
        raise CheckError("your map still has a colour dimension: take the max over the three "
                         "channels of |gradient|.")
    if got.shape != (B, H, W):
        raise CheckError(f"shape {tuple(got.shape)}; expected (B, H, W) = {(B, H, W)}.")
    if (got < 0).any():
        raise CheckError("your map has negative values: take the absolute value of the "
                         "gradient before the max over channels.")
    expected = methods.saliency(model, x, t)
    _verdict("saliency", got, expected, lambda: _saliency_mistakes(model, x, t), _SALIENCY_HINT)


def hidden_check_saliency(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §2: classes other than the top-1, mixed in one batch; one
    image with two targets; a model in train mode; ResNet-18; model and inputs left
    untouched."""
    x = x[:3]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than each image's top-1 class, mixed in one batch", fn,
                 [model, x, t], methods.saliency(model, x, t), hint=_SALIENCY_HINT)
    pair, t2 = x[:1].expand(2, -1, -1, -1), torch.stack([t[0], t[1]])
    _hidden_case("one image twice, with two different target classes", fn, [model, pair, t2],
                 methods.saliency(model, pair, t2), hint=_SALIENCY_HINT)
    _hidden_case("a model handed over in train mode", fn, [model, x[:2], t[:2]],
                 methods.saliency(model, x[:2], t[:2]), train=True,
                 hint="Switch to eval mode inside (BatchNorm must use its running statistics).")
    _hidden_resnet_case(fn, methods.saliency, 2, hint=_SALIENCY_HINT)
    _passed("hidden tests of saliency.")


_SMOOTHGRAD_HINT = ("σ = noise · (max − min of each image); ε = torch.randn((samples, *x.shape), "
                    "generator=torch.Generator().manual_seed(seed)); average the raw gradients "
                    "of each image's own target logit over the samples, in eval mode.")


def _smoothgrad_mistakes(model, x, t, samples, noise, seed):
    eps = torch.randn((samples, *x.shape), generator=torch.Generator().manual_seed(seed))
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    grads = torch.stack([methods.input_gradient(model, x + noise * span * e, t) for e in eps])
    unscaled = torch.stack([methods.input_gradient(model, x + noise * e, t) for e in eps])
    return [
        (grads.abs().mean(0), "you averaged |gradient|; SmoothGrad averages the raw gradients "
                              "(take |·| only to display)."),
        (grads.sum(0), "you summed over the samples; SmoothGrad is their mean."),
        (unscaled.mean(0), "your noise is not scaled by the image's range: σ = noise · (max − "
                           "min) of each image."),
    ]


def check_smoothgrad(fn, model: nn.Module, x: torch.Tensor, target, samples: int = 8,
                     noise: float = 0.15, seed: int = 0) -> None:
    """``fn(model, x, target, samples, noise, seed)`` → (B,3,H,W), against
    ``methods.smoothgrad`` (notebook 02 §9, "Taming the noise: SmoothGrad")."""
    t = methods.model_targets(model, x, target)
    got = _tensor("your SmoothGrad", _run("your SmoothGrad", fn,
                                           [model, x, t, samples, noise, seed]))
    expected = methods.smoothgrad(model, x, t, samples=samples, noise=noise, seed=seed)
    _verdict("SmoothGrad", got, expected,
             lambda: _smoothgrad_mistakes(model, x, t, samples, noise, seed), _SMOOTHGRAD_HINT)


def hidden_check_smoothgrad(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §9: mixed non-top-1 targets; another seed and noise;
    train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than the top-1, mixed, seed 3, noise 0.2", fn,
                 [model, x, t, 4, 0.2, 3], methods.smoothgrad(model, x, t, 4, 0.2, 3),
                 hint=_SMOOTHGRAD_HINT)
    _hidden_resnet_case(fn, methods.smoothgrad, 21, 5, 0.1, 1, hint=_SMOOTHGRAD_HINT)
    _passed("hidden tests of SmoothGrad.")


_IG_HINT = ("IG = (x − x') · mean over k = 1..m of ∂S_c/∂x at x' + (k/m)(x − x'): the "
            "paper's right Riemann sum, each image's own target logit, eval mode.")


def _ig_mistakes(model, x, t, baseline, steps):
    d = x - baseline
    grads = lambda alphas: torch.stack([methods.input_gradient(model, baseline + a * d, t)
                                        for a in alphas])
    right = grads([k / steps for k in range(1, steps + 1)])
    left = grads([k / steps for k in range(steps)])
    return [
        (right.mean(0), "you left out the factor (x − x'): IG multiplies the averaged gradient "
                        "by the difference from the baseline."),
        (d * right.sum(0), "you summed the gradients; the integral is their *mean* (Δα = 1/m)."),
        (d * left.mean(0), "your points are α = 0, 1/m, …, (m−1)/m (a left sum); the paper's "
                           "sum uses α = 1/m, 2/m, …, 1."),
    ]


def check_integrated_gradients(fn, model: nn.Module, x: torch.Tensor, target,
                               steps: int = 8) -> None:
    """``fn(model, x, target, baseline, steps)`` → (B,3,H,W) against
    ``methods.integrated_gradients``, with the all-zeros baseline (notebook 02 §10, "Making
    it add up: Integrated Gradients")."""
    t = methods.model_targets(model, x, target)
    baseline = torch.zeros_like(x)
    got = _tensor("your Integrated Gradients",
                  _run("your Integrated Gradients", fn, [model, x, t, baseline, steps]))
    expected = methods.integrated_gradients(model, x, t, baseline, steps)
    _verdict("Integrated Gradients", got, expected,
             lambda: _ig_mistakes(model, x, t, baseline, steps), _IG_HINT)


def hidden_check_integrated_gradients(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §10: mixed non-top-1 targets with a non-zero baseline;
    train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    blurred = x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()     # each image's mean colour
    _hidden_case("targets other than the top-1, a baseline of each image's mean colour", fn,
                 [model, x, t, blurred, 5], methods.integrated_gradients(model, x, t, blurred, 5),
                 hint=_IG_HINT)
    _hidden_resnet_case(fn, methods.integrated_gradients, 22, torch.zeros(2, 3, 64, 64), 6,
                        hint=_IG_HINT)
    _passed("hidden tests of Integrated Gradients.")


_ASCENT_HINT = ("I + lr · (∂S_c/∂I − 2λ I): the gradient of each image's own target logit "
                "(not the softmax), plus the gradient of −λ‖I‖², in eval mode.")


def check_ascent_step(fn, model: nn.Module, img: torch.Tensor, target, lr: float = 1.0,
                      l2: float = 1e-2) -> None:
    """``fn(model, img, target, lr, l2)`` → the next image (B,3,H,W), against
    ``methods.ascent_step`` (notebook 02 §11, class visualisation: one ascent step)."""
    t = methods.model_targets(model, img, target)
    got = _tensor("your ascent step", _run("your ascent step", fn, [model, img, t, lr, l2]))
    expected = methods.ascent_step(model, img, t, lr, l2)
    _verdict("one ascent step", got, expected, lambda: _ascent_mistakes(model, img, t, lr, l2),
             _ASCENT_HINT)


def _ascent_mistakes(model, img, t, lr, l2):
    g = methods.input_gradient(model, img, t)
    g_prob = _score_gradient(model, img, lambda out: out.softmax(1).gather(1, t[:, None])[:, 0])
    return [
        (img - lr * (g - 2 * l2 * img), "you stepped *down* the gradient; ascent adds it."),
        (img + lr * (g + 2 * l2 * img), "the decay has the wrong sign: the gradient of −λ‖I‖² "
                                        "is −2λI, which shrinks the image."),
        (img + lr * (g - l2 * img), "the gradient of −λ‖I‖² is −2λI (you used −λI)."),
        (img + lr * g, "you left out the L2 decay −2λI."),
        (img + lr * (g_prob - 2 * l2 * img), "you ascended the softmax probability; use the logit "
                                             "S_c (Simonyan et al. explain why, §2)."),
    ]


def hidden_check_ascent_step(fn, model: nn.Module, img: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §11: two different classes in one batch from a non-blank
    image; train-mode ResNet-18."""
    g = torch.Generator().manual_seed(31)
    start = 0.3 * torch.randn(2, 3, *img.shape[-2:], generator=g)
    t = torch.tensor([130, 1])
    _hidden_case("two classes in one batch, from a noisy start, lr 2, λ 0.05", fn,
                 [model, start, t, 2.0, 0.05], methods.ascent_step(model, start, t, 2.0, 0.05),
                 hint=_ASCENT_HINT)
    _hidden_resnet_case(fn, methods.ascent_step, 23, 0.5, 0.1, hint=_ASCENT_HINT)
    _passed("hidden tests of the ascent step.")


_FOOLING_HINT = ("Repeat until the top-1 class is the target: g = ∂S_target/∂x, x ← x + lr · "
                 "g/‖g‖₂ (the whole image's L2 norm); stop as soon as the model is fooled.")


def check_fooling_image(fn, model: nn.Module, x: torch.Tensor, target, lr: float = 0.5,
                        max_steps: int = 100) -> None:
    """``fn(model, x, target, lr, max_steps)`` → fooled (B,3,H,W), against
    ``methods.fooling_image`` (notebook 02 §12, "Adversarial examples")."""
    t = methods.model_targets(model, x, target)
    got = _tensor("your fooling image",
                  _run("your fooling image", fn, [model, x, t, lr, max_steps]))
    if got.shape != x.shape:
        raise CheckError(f"your fooling image has shape {tuple(got.shape)}; expected the input's "
                         f"{tuple(x.shape)}.")
    with preserved_state(model), torch.no_grad():
        said = model(got).argmax(1)
    if not torch.equal(said, t):
        raise CheckError(f"the model still says {said.tolist()} for your image, not the target "
                         f"{t.tolist()}. {_FOOLING_HINT}")
    expected = methods.fooling_image(model, x, t, lr, max_steps)
    steps_got = ((got - x).flatten(1).norm(dim=1) / lr).tolist()
    steps_expected = ((expected - x).flatten(1).norm(dim=1) / lr).tolist()
    _verdict("the fooling image", got, expected, [], f"{_FOOLING_HINT} (Your change is "
             f"{steps_got[0]:.1f} step lengths long, the library's {steps_expected[0]:.1f}: "
             "longer means more steps than needed or unnormalised steps.)")


def hidden_check_fooling_image(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §12: another target class and step size; an image that is
    already its target."""
    x = x[:1]
    with preserved_state(model), torch.no_grad():
        top1 = model(x).argmax(1)
    t = _hidden_targets(model, x)
    _hidden_case("the 2nd-ranked class as target, lr 0.25", fn, [model, x, t, 0.25, 100],
                 methods.fooling_image(model, x, t, 0.25, 100), hint=_FOOLING_HINT)
    _hidden_case("the target is already the top-1 class (nothing to change)", fn,
                 [model, x, top1, 0.5, 100], x.detach().clone(), hint=_FOOLING_HINT)
    _passed("hidden tests of the fooling image.")

