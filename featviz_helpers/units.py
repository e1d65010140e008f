"""What one unit of a CNN sees (notebook 03 §4): its receptive field in the input, and the
patches of a pool of images that excite it most."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["receptive_field", "top_patches"]


def receptive_field(model: nn.Module, layer: str) -> tuple[int, int, int]:
    """(size r, jump j, centre offset) of a unit at ``layer`` of a ShapesCNN: the unit at
    grid position y sees input rows centred at ``y*j + offset``.

    With kernel k, stride s and padding p per conv: r ← r + (k−1)·j, offset ← offset +
    ((k−1)/2 − p)·j, j ← j·s (the recursion of Araujo, Norris & Sim, *Computing Receptive
    Fields of Convolutional Neural Networks*, Distill 2019).
    """
    r, j, offset = 1, 1, 0.0
    for name, module in model.named_children():
        if isinstance(module, torch.nn.Sequential):
            conv = module[0]
            k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
            r, offset, j = r + (k - 1) * j, offset + ((k - 1) / 2 - p) * j, j * s
        if name == layer:
            return r, j, int(round(offset))
    raise ValueError(f"{layer!r} is not a stage of {type(model).__name__}.")


def top_patches(activations: torch.Tensor, channel: int, field, size: int, k: int = 6):
    """The k images where ``channel`` of ``activations`` (N,C,h,w) peaks highest, and a crop
    (y0, y1, x0, x1) of each, the neuron's receptive field ``field`` = (r, j, offset) from
    :func:`receptive_field` around the peak, clipped to the ``size``×``size`` image."""
    values, positions = activations[:, channel].flatten(1).max(1)
    best = values.topk(k).indices
    r, j, offset = field
    boxes = []
    for i in best.tolist():
        y, x = divmod(positions[i].item(), activations.shape[-1])
        cy, cx = y * j + offset, x * j + offset               # the window's centre pixel
        boxes.append((max(cy - r // 2, 0), min(cy + r // 2 + 1, size),
                      max(cx - r // 2, 0), min(cx + r // 2 + 1, size)))
    return best, boxes
