"""Library copies of the course's visualisation methods.

Each notebook derives a method and writes it from scratch; the copy here is the one later
notebooks, the benchmarks and the checks reuse. Same maths, batched (one target class per
image), and careful with state: the model's mode and ``requires_grad`` flags are restored
and no hook outlives a call. Maps are returned raw; :mod:`featviz_helpers.viz` normalises
them for display.
"""
from __future__ import annotations

import torch
from torch import nn

from .hooks import preserved_state

__all__ = ["as_targets", "class_scores", "saliency"]


def as_targets(target, batch_size: int, num_classes: int) -> torch.Tensor:
    """``target`` as a LongTensor (B,) of class indices, checked against the model.

    ``target`` is an int (the same class for every image), a sequence, or an integer tensor
    of shape (B,) — one class per image.
    """
    if isinstance(target, bool):
        raise TypeError("target must be a class index (int), not a bool.")
    if isinstance(target, int):
        t = torch.full((batch_size,), target, dtype=torch.long)
    else:
        t = torch.as_tensor(target)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}.")
        t = t.long().reshape(-1) if t.dim() == 0 else t.long()
        if t.numel() == 1 and batch_size != 1:
            t = t.expand(batch_size)
        if t.dim() != 1 or t.shape[0] != batch_size:
            raise ValueError(
                f"target must be one class index per image: shape ({batch_size},), "
                f"got {tuple(t.shape)}."
            )
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"class index {t[bad][0].item()} is out of range: this model has {num_classes} "
            f"classes (0..{num_classes - 1})."
        )
    return t.clone()


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a preprocessed batch (B,C,H,W); got {shape}.")


def class_scores(logits: torch.Tensor, target) -> torch.Tensor:
    """The logit of each image's own target class: (B,K), target → (B,)."""
    t = as_targets(target, logits.shape[0], logits.shape[1]).to(logits.device)
    return logits.gather(1, t[:, None])[:, 0]


def saliency(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Gradient saliency (Simonyan, Vedaldi & Zisserman 2014): (B,3,H,W) → (B,H,W).

    M_ij = max over colour channels of |∂S_c/∂x_ij|, with S_c the logit (not the softmax
    probability) of image b's target class. One forward and one input-only backward for
    the whole batch: images are independent in eval mode, so the gradient of the summed
    scores w.r.t. image b is the gradient of image b's own score.
    """
    _check_batch(x)
    with preserved_state(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        scores = class_scores(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad.abs().amax(dim=1)
