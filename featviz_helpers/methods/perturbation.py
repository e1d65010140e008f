"""Perturbation: what the model says when parts of the image are hidden. Occlusion here;
:mod:`featviz_helpers.metrics`'s deletion and insertion curves share
:func:`masked_probabilities`."""
from __future__ import annotations

import torch
from torch import nn

from ..hooks import preserved_state
from ..library_guard import library_copy, refuse_if_blocked
from ._inputs import as_targets, checked_input, images_per_pass, logits_of, positive_int


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top-left corners of occlusion windows along one side of ``size`` pixels: every
    ``stride`` pixels, plus one flush with the far edge, so that, with ``stride ≤ window``,
    every pixel is covered by at least one window (notebook 05 §9)."""
    refuse_if_blocked()
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def occlusion_masks(height: int, width: int, window: int, stride: int,
                    device="cpu") -> torch.Tensor:
    """One mask per occlusion window, True under the square: (P, height, width) bool, the
    windows in raster order of their corners (:func:`window_starts` on each side)."""
    refuse_if_blocked()
    corners = [(i, j) for i in window_starts(height, window, stride)
               for j in window_starts(width, window, stride)]
    masks = torch.zeros(len(corners), height, width, dtype=torch.bool, device=device)
    for n, (i, j) in enumerate(corners):
        masks[n, i:i + window, j:j + window] = True
    return masks


@torch.no_grad()
def masked_probabilities(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, target,
                         fill=0.0, batch_size: int | None = None) -> torch.Tensor:
    """p(target | x with the masked pixels set to ``fill``) for every mask and image: (P, B).

    ``x`` (B,C,H,W) is the preprocessed batch; ``masks`` (P,H,W) are the same for every
    image, (P,B,H,W) one per image: bool (True = replaced) or float in [0,1], the fraction
    of each pixel replaced (x·(1 − m) + fill·m); ``fill`` is a number or a tensor
    broadcastable to ``x`` (the fill of each image: a blurred copy, say). The P·B masked
    copies go through the model in eval mode about ``batch_size`` images at a time (default
    :func:`images_per_pass`), each
    image's softmax probability of its own target class read off. Notebook 05 §9
    (occlusion) and §11 (deletion and insertion) both use it.
    """
    refuse_if_blocked()
    return _masked_scores(model, x, masks, target, fill, batch_size, probabilities=True)


@torch.no_grad()
def masked_logits(model: nn.Module, x: torch.Tensor, masks: torch.Tensor, target,
                  fill=0.0, batch_size: int | None = None) -> torch.Tensor:
    """The target's logit for every mask and image, (P, B): :func:`masked_probabilities`
    before the softmax (Score-CAM's channel scores, notebook 05 §12)."""
    refuse_if_blocked()
    return _masked_scores(model, x, masks, target, fill, batch_size, probabilities=False)


def _masked_scores(model, x, masks, target, fill, batch_size, probabilities: bool):
    x = checked_input(model, x, for_gradient=False)
    batch_size = images_per_pass(batch_size, x)
    B = x.shape[0]
    if masks.dim() == 3:
        masks = masks[:, None]
    if masks.dim() != 4 or masks.shape[1] not in (1, B) or masks.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"masks must be (P,H,W) or (P,B,H,W) for images {tuple(x.shape)}; "
                         f"got {tuple(masks.shape)}.")
    if masks.dtype != torch.bool:
        if not masks.is_floating_point():
            raise ValueError(f"masks must be bool (True = replaced) or float fractions in "
                             f"[0,1]; got {masks.dtype} (for 0–255 masks divide by 255).")
        if not masks.is_meta and not ((masks >= 0) & (masks <= 1)).all():
            raise ValueError("float masks are the fraction of each pixel replaced, in [0,1]; "
                             "these have values outside it (or NaN).")
        masks = masks.to(x.dtype)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    with preserved_state(model):
        t = None
        chunks = []
        for chunk in masks.split(max(1, batch_size // B)):
            m = chunk[:, :, None].to(x.device)
            hidden = (torch.where(m, fill, x[None]) if m.dtype == torch.bool
                      else x[None] * (1 - m) + fill * m)                        # (p,B,C,H,W)
            # a large batch of images can fill a pass on its own: split it too
            q = torch.cat([logits_of(model, h) for h in hidden.flatten(0, 1).split(batch_size)])
            q = (q.softmax(1) if probabilities else q).view(len(chunk), B, -1)
            if t is None:
                t = as_targets(target, B, q.shape[2]).to(x.device)
            chunks.append(q.gather(2, t.view(1, B, 1).expand(len(chunk), B, 1))[..., 0])
    return torch.cat(chunks)


@library_copy
def occlusion(model: nn.Module, x: torch.Tensor, target, window: int = 32, stride: int = 16,
              fill: float = 0.0, batch_size: int | None = None) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014; notebook 05 §9): (B,3,H,W) → (B,H,W).

    A ``window``×``window`` square of value ``fill`` (0 = after normalisation, the colour the
    model's preprocessing subtracts, ``model.input_spec.mean``: mid-grey 127/255 for Lite0,
    ImageNet's mean colour for torchvision's models) slides over the image with ``stride``
    (:func:`occlusion_masks`); each position costs one forward pass. The drop of the target
    class's *probability*, p(x) − p(x with the square), is credited to every pixel under the
    square, and each pixel gets the mean over the windows that cover it. Positive: hiding the
    pixel hurts the class. No gradients at all. The occluded copies go through the model
    about ``batch_size`` images at a time (:func:`masked_probabilities`; default
    :func:`images_per_pass`).
    """
    refuse_if_blocked()
    window = positive_int(window, "window (the side of the square, in pixels)")
    stride = positive_int(stride, "stride (pixels between window positions)")
    x = checked_input(model, x, for_gradient=False)
    batch_size = images_per_pass(batch_size, x)
    B, _, H, W = x.shape
    if window > min(H, W):
        raise ValueError(f"window {window} is larger than the {H}×{W} image; use at most "
                         f"{min(H, W)}.")
    if stride > window:
        raise ValueError(f"stride {stride} is larger than the window {window}: the pixels between "
                         "windows would be covered by none, and their mean drop would be 0/0. "
                         f"Use a stride of at most the window (e.g. stride={max(1, window // 2)}).")
    masks = occlusion_masks(H, W, window, stride, device=x.device)
    with preserved_state(model), torch.no_grad():
        logits = logits_of(model, x)
        t = as_targets(target, B, logits.shape[1]).to(x.device)
        p = logits.softmax(1).gather(1, t[:, None])[:, 0]                 # (B,)
    drops = p[None] - masked_probabilities(model, x, masks, t, fill, batch_size)  # (P, B)
    credit = torch.einsum("pb,phw->bhw", drops, masks.to(x.dtype))
    return credit / masks.sum(0).to(x.dtype)
