"""Checks for the notebooks' from-scratch exercises.

Each ``check_*`` runs the student's function on cases with known answers and either
prints one line saying what passed or raises :class:`CheckError` saying precisely what is
wrong — and, where a common mistake can be recognised, which one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import methods, viz
from .hooks import count_hooks, preserved_state

__all__ = [
    "CheckError",
    "rel_error",
    "assert_close",
    "check_normalize_filters",
    "check_filter_response",
    "check_saliency",
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

def _grad_of(model, x, scores_fn):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(scores_fn(model(x)).sum(), x)
    return g


def check_saliency(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,H,W) saliency; compared with the library copy.

    Also checks that the model's mode and ``requires_grad`` flags are as they were and no
    hooks are left behind. Use a batch with different targets to test batching.
    """
    with preserved_state(model), torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    t = methods.as_targets(target, x.shape[0], num_classes)
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    hooks = count_hooks(model)
    got = fn(model, x, t.clone())
    if not isinstance(got, torch.Tensor):
        raise CheckError(f"return a torch.Tensor, not {type(got).__name__}.")
    if model.training != was_training:
        raise CheckError("your function changed the model's train/eval mode; restore it.")
    if [p.requires_grad for p in model.parameters()] != flags:
        raise CheckError("your function changed parameters' requires_grad flags; restore them.")
    if count_hooks(model) != hooks:
        raise CheckError("your function left hooks on the model; remove them (use try/finally).")
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
