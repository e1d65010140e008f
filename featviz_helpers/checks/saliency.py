"""Checks of notebook 02_saliency: saliency from scratch (§2) and, beyond the lecture,
SmoothGrad (§9), Integrated Gradients (§10), the class-visualisation ascent step (§11) and
the fooling image of the adversarial examples (§12)."""
from __future__ import annotations

import torch
from torch import nn

from .. import methods
from ..hooks import preserved_state
from ._harness import (CheckError, _attempt, _hidden_case, _hidden_raises, _hidden_resnet_case,
                       _hidden_targets, _passed, _references, _run, _score_gradient,
                       _spread_tolerance, _tensor, _verdict, rel_error)


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
    expected, tol = _references(methods.saliency, model, x, t)
    _verdict("saliency", got, expected, lambda: _saliency_mistakes(model, x, t), _SALIENCY_HINT,
             tol=tol)


def hidden_check_saliency(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §2: classes other than the top-1, mixed in one batch; one
    image with two targets; a model in train mode; ResNet-18; model and inputs left
    untouched."""
    x = x[:3]
    t = _hidden_targets(model, x)
    expected, tol = _references(methods.saliency, model, x, t)
    _hidden_case("targets other than each image's top-1 class, mixed in one batch", fn,
                 [model, x, t], expected, tol=tol, hint=_SALIENCY_HINT)
    pair, t2 = x[:1].expand(2, -1, -1, -1), torch.stack([t[0], t[1]])
    expected, tol = _references(methods.saliency, model, pair, t2)
    _hidden_case("one image twice, with two different target classes", fn, [model, pair, t2],
                 expected, tol=tol, hint=_SALIENCY_HINT)
    expected, tol = _references(methods.saliency, model, x[:2], t[:2])
    _hidden_case("a model handed over in train mode", fn, [model, x[:2], t[:2]], expected,
                 tol=tol, train=True,
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
    expected, tol = _references(methods.smoothgrad, model, x, t, samples, noise, seed,
                                chunked=True, count=samples, per_image=False)
    _verdict("SmoothGrad", got, expected,
             lambda: _smoothgrad_mistakes(model, x, t, samples, noise, seed), _SMOOTHGRAD_HINT,
             tol=tol)


def hidden_check_smoothgrad(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §9: mixed non-top-1 targets; another seed and noise;
    train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    expected, tol = _references(methods.smoothgrad, model, x, t, 4, 0.2, 3, chunked=True,
                                count=4, per_image=False)
    _hidden_case("targets other than the top-1, mixed, seed 3, noise 0.2", fn,
                 [model, x, t, 4, 0.2, 3], expected, tol=tol, hint=_SMOOTHGRAD_HINT)
    _hidden_resnet_case(fn, methods.smoothgrad, 21, 5, 0.1, 1, hint=_SMOOTHGRAD_HINT,
                        chunked=True, count=5, per_image=False)
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
    expected, tol = _references(methods.integrated_gradients, model, x, t, baseline, steps,
                                chunked=True, count=steps)
    _verdict("Integrated Gradients", got, expected,
             lambda: _ig_mistakes(model, x, t, baseline, steps), _IG_HINT, tol=tol)


def hidden_check_integrated_gradients(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §10: mixed non-top-1 targets with a non-zero baseline;
    train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    blurred = x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()     # each image's mean colour
    expected, tol = _references(methods.integrated_gradients, model, x, t, blurred, 5,
                                chunked=True, count=5)
    _hidden_case("targets other than the top-1, a baseline of each image's mean colour", fn,
                 [model, x, t, blurred, 5], expected, tol=tol, hint=_IG_HINT)
    _hidden_resnet_case(fn, methods.integrated_gradients, 22, torch.zeros(2, 3, 64, 64), 6,
                        hint=_IG_HINT, chunked=True, count=6)
    _passed("hidden tests of Integrated Gradients.")


_ASCENT_HINT = ("I + lr · (∂S_c/∂I − 2λ I): the gradient of each image's own target logit "
                "(not the softmax), plus the gradient of −λ‖I‖², in eval mode.")


def check_ascent_step(fn, model: nn.Module, img: torch.Tensor, target, lr: float = 1.0,
                      l2: float = 1e-2) -> None:
    """``fn(model, img, target, lr, l2)`` → the next image (B,3,H,W), against
    ``methods.ascent_step`` (notebook 02 §11, class visualisation: one ascent step)."""
    t = methods.model_targets(model, img, target)
    got = _tensor("your ascent step", _run("your ascent step", fn, [model, img, t, lr, l2]))
    expected, tol = _references(methods.ascent_step, model, img, t, lr, l2)
    _verdict("one ascent step", got, expected, lambda: _ascent_mistakes(model, img, t, lr, l2),
             _ASCENT_HINT, tol=tol)


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
    expected, tol = _references(methods.ascent_step, model, start, t, 2.0, 0.05)
    _hidden_case("two classes in one batch, from a noisy start, lr 2, λ 0.05", fn,
                 [model, start, t, 2.0, 0.05], expected, tol=tol, hint=_ASCENT_HINT)
    _hidden_resnet_case(fn, methods.ascent_step, 23, 0.5, 0.1, hint=_ASCENT_HINT)
    _passed("hidden tests of the ascent step.")


_FOOLING_HINT = ("Check the top-1 *before* every step and stop as soon as it is the target: "
                 "g = ∂S_target/∂x, x ← x + lr · g/‖g‖₂ (the whole image's L2 norm), in eval "
                 "mode; raise an error if max_steps steps are not enough.")


def _fooling_path(model: nn.Module, x: torch.Tensor, t: torch.Tensor, lr: float,
                  max_steps: int, copies: int = 1):
    """Each image's own path of normalised steps, x_0 = x, x_1, …, never stopping early, until
    every image is fooled and one step more (or max_steps + 1 steps): a list of (B,3,H,W),
    the margins S_target − max of the other logits at every x_k, (K,B), and each image's
    first fooled step (−1: not within max_steps). ``copies`` > 1 sends every image that many
    times through the model (another batch split, for the round-off's spread)."""
    B = x.shape[0]
    cur, path, margins = x.detach().clone(), [], []
    first = torch.full((B,), -1, dtype=torch.long)
    for k in range(max_steps + 2):
        with preserved_state(model), torch.no_grad():
            logits = model(cur.repeat(copies, 1, 1, 1))[:B].double()
        own = logits.gather(1, t[:, None])[:, 0]
        others = logits.scatter(1, t[:, None], float("-inf")).amax(1)
        path.append(cur)
        margins.append(own - others)
        newly = (first < 0) & (logits.argmax(1) == t) & (k <= max_steps)
        first[newly] = k
        if k == max_steps + 1 or ((first >= 0).all() and k > first.max()):
            break
        g = methods.input_gradient(model, cur.repeat(copies, 1, 1, 1), t.repeat(copies))[:B]
        cur = cur + lr * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return path, torch.stack(margins), first


def _fooling_verdict(what: str, got: torch.Tensor, model: nn.Module, x: torch.Tensor,
                     t: torch.Tensor, lr: float, max_steps: int, paths) -> None:
    """Pass if each image of ``got`` is that image's path after its first fooled step
    (compared as changes from x, so that one step more or less is a large error); else say
    whether it is one step late, one step early, or not fooled. Where the decision at the
    boundary is within round-off (the two paths disagree, or the margin is tiny), the
    neighbouring step is accepted too."""
    (path, margins, first), (path2, margins2, first2) = paths
    for b in range(x.shape[0]):
        K, n = int(first[b]), len(path)
        change = lambda k: path[k][b] - x[b]
        err = lambda k: rel_error(got[b] - x[b], change(k))
        accepted = {K} | ({int(first2[b])} if first2[b] >= 0 else set())
        m, m2 = margins[:, b], margins2[: len(margins), b]
        scale = max(float(m.abs().max()), 1e-30)
        for k in sorted(accepted):
            common = min(len(m), len(m2))
            eps = 1e-4 * scale + 5 * float((m[:common] - m2[:common]).abs().max())
            if k >= 1 and abs(float(m[k - 1])) < eps:
                accepted.add(k - 1)
            if k + 1 < n and abs(float(m[k])) < eps:
                accepted.add(k + 1)
        # The round-off of this image's path, and never so loose that a neighbour passes.
        k2 = min(K, len(path2) - 1)
        tol = _spread_tolerance([path[K][b], path2[k2][b]], relative_to=x[b])
        apart = [err_between for k in (K - 1, K + 1) if 0 <= k < n and k not in accepted
                 for err_between in [rel_error(change(k), change(K))]]
        if apart:
            tol = min(tol, 0.5 * min(apart))
        if any(err(k) <= tol for k in accepted if 0 <= k < n):
            continue
        image = f" (image {b})" if x.shape[0] > 1 else ""
        if K + 1 < n and err(K + 1) <= tol:
            raise CheckError(f"{what}{image} took one step too many: the model already said the "
                             f"target after {K} step(s), and you stepped once more. Check the "
                             f"top-1 before every step (an image already classified as the "
                             f"target is returned unchanged). {_FOOLING_HINT}")
        early = [k for k in range(K) if err(k) <= tol]
        if early:
            raise CheckError(f"{what}{image} stopped after {early[-1]} step(s), before the "
                             f"model says the target (it takes {K}): stop only once the top-1 "
                             f"*is* the target. {_FOOLING_HINT}")
        with preserved_state(model), torch.no_grad():
            said = int(model(got[b:b + 1]).argmax(1))
        length = float((got[b] - x[b]).norm()) / lr
        if said != int(t[b]):
            raise CheckError(f"{what}{image}: the model says class {said} for your image, not "
                             f"the target {int(t[b])}. {_FOOLING_HINT}")
        raise CheckError(f"{what}{image} differs from the library copy: relative error "
                         f"{err(K):.2e} in the change from x. {_FOOLING_HINT} (Your change "
                         f"is {length:.1f} step lengths long, the library's "
                         f"{float(change(K).norm()) / lr:.1f} after {K} step(s): longer means "
                         "more steps than needed or unnormalised steps.)")


def _fooling_case(case, fn, model: nn.Module, x: torch.Tensor, t: torch.Tensor, lr: float,
                  max_steps: int, train: bool = False) -> None:
    """``fn(model, x, t, lr, max_steps)`` on private copies against the library's stopping
    rule: the image after its first fooled step, or an error if some image is not fooled
    within ``max_steps``. ``case`` says what a hidden test tests (``None``: the visible
    check, whose errors reach the student as they are)."""
    what = "your fooling image" if case is None else f"[{case}] your function"
    paths = [_fooling_path(model, x, t, lr, max_steps),
             _fooling_path(model, x, t, lr, max_steps, copies=2)]
    args = [model, x, t, lr, max_steps]
    if (paths[0][2] < 0).any() and (paths[1][2] < 0).any():
        _hidden_raises(case or "an image that needs more than max_steps steps", fn, args,
                       train=train, hint=f"This image needs more than max_steps = {max_steps} "
                                         f"steps. {_FOOLING_HINT}")
        return
    if case is not None:
        got = _attempt(what, fn, args, train=train, hint=_FOOLING_HINT)
    else:
        got = _tensor(what, _run(what, fn, args, train=train))
    if got.shape != x.shape:
        raise CheckError(f"{what} has shape {tuple(got.shape)}; expected the input's "
                         f"{tuple(x.shape)}.")
    if (paths[0][2] < 0).any():
        paths = paths[::-1]
    _fooling_verdict(what, got, model, x, t, lr, max_steps, paths)


def check_fooling_image(fn, model: nn.Module, x: torch.Tensor, target, lr: float = 0.5,
                        max_steps: int = 100) -> None:
    """``fn(model, x, target, lr, max_steps)`` → fooled (B,3,H,W), against the library's
    path (``methods.fooling_image``: the image after the first step at which the top-1 is
    the target; notebook 02 §12, "Adversarial examples")."""
    t = methods.model_targets(model, x, target)
    _fooling_case(None, fn, model, x, t, lr, max_steps)
    _passed("the fooling image matches the library copy's (the same number of normalised "
            "steps).")


def hidden_check_fooling_image(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 02 §12: another target class and step size; an image that is
    already its target; a model handed over in train mode; the max_steps limit (a case that
    needs exactly max_steps steps succeeds, one that needs more raises)."""
    x1 = x[:1]
    with preserved_state(model), torch.no_grad():
        top1 = model(x).argmax(1)
    t = _hidden_targets(model, x)
    _fooling_case("the 2nd-ranked class as target, lr 0.25", fn, model, x1,
                  t[:1], 0.25, 100)
    _fooling_case("the target is already the top-1 class (nothing to change)",
                  fn, model, x1, top1[:1], 0.5, 100)
    _fooling_case("a model handed over in train mode (BatchNorm)", fn, model, x[1:2],
                  t[1:2], 0.5, 100, train=True)
    # The limit: exactly as many steps as this image needs must do; one fewer must raise.
    x3, t3 = x[2:3], t[2:3]
    _, margins, first = _fooling_path(model, x3, t3, 0.25, 100)
    need = int(first[0])
    if need >= 1:           # fooled within 100 steps, and not already (it is not the top-1)
        _fooling_case(f"max_steps = {need}, exactly the steps this image needs",
                      fn, model, x3, t3, 0.25, need)
        if abs(float(margins[need - 1, 0])) > 1e-3 * float(margins[:, 0].abs().max()):
            _hidden_raises(f"max_steps = {need - 1}, one fewer than this image needs", fn,
                           [model, x3, t3, 0.25, need - 1],
                           hint="Raise an error when max_steps steps are not enough to fool "
                                "the model (do not return an image it does not classify as "
                                "the target).")
    _passed("hidden tests of the fooling image.")
