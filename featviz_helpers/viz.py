"""Plotting, with one convention for every map in the course.

The convention: a method returns a raw map (B,h,w); for display it is upsampled
bilinearly to the image size, optionally clipped at a percentile (a few extreme pixels
would otherwise squash the rest to black), then min–max normalised per image to [0, 1]
with a small epsilon, and drawn with :data:`CMAP` — alone or blended over the photo.
"""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from .library_guard import library_copy, refuse_if_blocked

__all__ = [
    "CMAP",
    "EPS",
    "upsample",
    "normalize",
    "display_maps",
    "normalize_filters",
    "filter_grid",
    "show_filters",
    "overlay",
    "map_picture",
    "show_map",
    "enlarge",
    "outline",
    "panels",
    "gradient_image",
    "show_gradient",
    "channel_max",
    "bar_chart",
]

CMAP = "inferno"  # perceptually uniform: equal steps of importance look equally different
EPS = 1e-8


def _as_batch(maps) -> torch.Tensor:
    # Display works on the host: say so, rather than copy via the default device.
    t = torch.as_tensor(maps if isinstance(maps, torch.Tensor) else np.asarray(maps), device="cpu")
    t = t.detach().float()
    if t.dim() == 2:
        t = t[None]
    if t.dim() != 3:
        raise ValueError(f"maps must be (B,h,w) or (h,w); got {tuple(t.shape)}.")
    _check_finite(t, "maps")
    return t


def _check_finite(t: torch.Tensor, what: str) -> None:
    """Refuse NaN or inf: one NaN would make its whole image NaN after normalising (and a
    metric would quietly score chance)."""
    bad = ~torch.isfinite(t)
    if bad.any():
        images = bad.flatten(1).any(1).nonzero()[:, 0].tolist()
        raise ValueError(f"The {what} hold {int(bad.sum())} NaN or infinite value(s), in image(s) "
                         f"{images[:5]}, so they cannot be shown or scored (often from a NaN "
                         "input, or a 0/0 in a normalisation). Find where the NaN comes from: "
                         f"torch.isnan({what}).nonzero() shows where it is.")


def _check_percentile(clip_percentile) -> None:
    if not 0 < clip_percentile <= 100:   # written so that NaN fails too
        raise ValueError(f"clip_percentile is a percentile in (0, 100] (100 clips nothing, 99 "
                         f"clips the top 1% of values); got {clip_percentile!r}.")


def upsample(maps, size: tuple[int, int]) -> torch.Tensor:
    """Raw maps (B,h,w) → (B,H,W) by bilinear interpolation; values are not rescaled."""
    t = _as_batch(maps)
    if tuple(t.shape[-2:]) == tuple(size):
        return t
    return F.interpolate(t[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def normalize(maps, clip_percentile: float = 100.0, eps: float = EPS) -> torch.Tensor:
    """Per-image min–max to [0,1], after clipping values above ``clip_percentile``: (B,h,w)."""
    _check_percentile(clip_percentile)
    t = _as_batch(maps)
    flat = t.flatten(1)
    if clip_percentile < 100:
        top = torch.quantile(flat, clip_percentile / 100, dim=1, keepdim=True)
        flat = torch.minimum(flat, top)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo + eps)).view_as(t)


def display_maps(maps, size: tuple[int, int] | None = None,
                 clip_percentile: float = 100.0) -> np.ndarray:
    """The course's convention in one call: upsample to ``size``, clip, normalise → numpy."""
    t = _as_batch(maps)
    if size is not None:
        t = upsample(t, size)
    return normalize(t, clip_percentile).numpy()


@library_copy
def normalize_filters(weights, symmetric: bool = False) -> torch.Tensor:
    """Conv filters (C_out,C,k,k) → [0,1] per filter, for drawing as tiny images.

    Min–max per filter by default. ``symmetric=True`` maps [-a, a] to [0,1] with
    a = max |w| of the filter, so zero is mid-grey and sign stays visible.
    """
    refuse_if_blocked()
    w = torch.as_tensor(weights, device="cpu").detach().float()
    if w.dim() != 4:
        raise ValueError(f"filters must be (C_out, C_in, k, k); got {tuple(w.shape)}.")
    flat = w.flatten(1)
    if symmetric:
        a = flat.abs().max(1, keepdim=True).values
        out = flat / (2 * a + EPS) + 0.5
    else:
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        out = (flat - lo) / (hi - lo + EPS)
    return out.view_as(w)


def filter_grid(tiles, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles (N,C,k,k) already in [0,1] (C = 3 or 1) → one (H,W,C) mosaic on white."""
    t = torch.as_tensor(tiles, device="cpu").detach().float()
    if t.dim() != 4 or t.shape[1] not in (1, 3):
        raise ValueError(f"tiles must be (N,C,k,k) with C = 3 (colour) or 1 (grey); got "
                         f"{tuple(t.shape)}.")
    n, c, kh, kw = t.shape
    if n == 0:
        raise ValueError("filter_grid got no tiles (N = 0): there is nothing to draw.")
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.ones((nrows * (kh + pad) + pad, ncols * (kw + pad) + pad, c), dtype=np.float32)
    for i in range(n):
        r, col = divmod(i, ncols)
        y, x = pad + r * (kh + pad), pad + col * (kw + pad)
        grid[y:y + kh, x:x + kw] = t[i].permute(1, 2, 0).numpy()
    return grid


def show_filters(weights, ax=None, title: str | None = None, ncols: int | None = None,
                 symmetric: bool = False):
    """Draw first-layer filters (C_out,3,k,k) as a grid of RGB tiles, one normalised each."""
    ax = ax or plt.gca()
    grid = filter_grid(normalize_filters(weights, symmetric), ncols=ncols)
    ax.imshow(grid if grid.shape[-1] == 3 else grid[..., 0], cmap="gray",
              interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a normalised map (H,W) in [0,1] over an image (H,W,3) in [0,1]."""
    colours = plt.get_cmap(CMAP)(np.asarray(heat))[..., :3]
    return (1 - alpha) * np.asarray(image) + alpha * colours


def map_picture(raw_map, image: np.ndarray | None = None, clip_percentile: float = 100.0,
                alpha: float = 0.5) -> np.ndarray:
    """One raw map (h,w) drawn by the convention, as an RGB picture in [0,1]: (h,w,3) in
    :data:`CMAP` alone, or (H,W,3) blended over ``image`` (H,W,3) after upsampling to it."""
    size = image.shape[:2] if image is not None else None
    heat = display_maps(raw_map, size, clip_percentile)[0]
    if image is None:
        return plt.get_cmap(CMAP)(heat)[..., :3]
    return overlay(image, heat, alpha)


def show_map(ax, image: np.ndarray | None, raw_map, title: str | None = None,
             clip_percentile: float = 100.0, alpha: float = 0.5):
    """Draw one raw map (h,w) by the convention, over ``image`` (H,W,3) when given."""
    ax.imshow(map_picture(raw_map, image, clip_percentile, alpha), interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def enlarge(picture: np.ndarray, size: int) -> np.ndarray:
    """(h,w,C) → (k·h, k·w, C) by repeating pixels, k the smallest integer with k·max(h,w) ≥
    ``size``: a 7×7 map stays seven crisp squares instead of a browser's blur."""
    picture = np.asarray(picture)
    k = max(1, -(-size // max(picture.shape[:2])))
    return picture.repeat(k, axis=0).repeat(k, axis=1) if k > 1 else picture


def outline(picture: np.ndarray, box, colour=(1.0, 1.0, 1.0), width: int = 2) -> np.ndarray:
    """A copy of ``picture`` (H,W,3) in [0,1] with the box (x0, y0, x1, y1) of pixel indices,
    inclusive, outlined ``width`` pixels wide: just outside the box, inside it where the box
    touches the picture's edge."""
    out = np.array(picture, dtype=np.float32, copy=True)
    h, w = out.shape[:2]
    x0, y0, x1, y1 = [int(round(float(v))) for v in box]
    # The ring along the inner border of the box grown by `width`, clipped to the picture.
    x0, y0 = max(x0 - width, 0), max(y0 - width, 0)
    x1, y1 = min(x1 + width, w - 1), min(y1 + width, h - 1)
    out[y0:y0 + width, x0:x1 + 1] = colour
    out[y1 - width + 1:y1 + 1, x0:x1 + 1] = colour
    out[y0:y1 + 1, x0:x0 + width] = colour
    out[y0:y1 + 1, x1 - width + 1:x1 + 1] = colour
    return out


def channel_max(maps) -> torch.Tensor:
    """RGB maps (B,3,H,W) → (B,H,W) by max over channels of |value| (as saliency does)."""
    return torch.as_tensor(maps).detach().float().abs().amax(1)


def gradient_image(grads, clip_percentile: float = 99.5) -> np.ndarray:
    """Signed RGB gradients (B,3,H,W) → images (B,H,W,3) in [0,1], zero at mid-grey.

    The convention for maps that keep their colour channels (guided backprop, deconvnet):
    divide each image by its ``clip_percentile`` of |value| (clipping beyond), then map
    [-1, 1] to [0, 1]. Colour then shows which channel pushes the score which way.
    """
    _check_percentile(clip_percentile)
    g = torch.as_tensor(grads, device="cpu").detach().float()
    if g.dim() == 3:
        g = g[None]
    if g.dim() != 4 or g.shape[1] != 3:
        fix = ("For one channel (a grayscale model), show |gradient| as a map: "
               "viz.show_map(ax, None, viz.channel_max(grads)), or repeat it in colour: "
               "grads.expand(-1, 3, -1, -1)." if g.dim() == 4 and g.shape[1] == 1 else
               "Pass the gradient w.r.t. the model's input, one (3,H,W) image each; a "
               "channels-last (B,H,W,3) array needs .permute(0, 3, 1, 2).")
        raise ValueError(f"gradients must be (B,3,H,W) or (3,H,W); got {tuple(g.shape)}. {fix}")
    _check_finite(g, "gradients")
    scale = torch.quantile(g.abs().flatten(1), clip_percentile / 100, dim=1).view(-1, 1, 1, 1)
    out = (g / (scale + EPS)).clamp(-1, 1) * 0.5 + 0.5
    return out.permute(0, 2, 3, 1).numpy()


def show_gradient(ax, grads, title: str | None = None, clip_percentile: float = 99.5):
    """Draw one signed RGB gradient (3,H,W) by :func:`gradient_image`'s convention."""
    ax.imshow(gradient_image(grads, clip_percentile)[0])
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def panels(n: int, ncols: int | None = None, size: float = 3.0):
    """A figure with ``n`` square panels side by side (wrapping after ``ncols``)."""
    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return fig, axes[:n]


def bar_chart(table: dict, ax=None, ylim=(0, 1)):
    """Grouped bars for a {row: {column: value}} table: one group per column, one bar per row.

    Values are numbers, or per-image scores (1-D tensors, as from
    :func:`metrics.localisation_scores`): then each bar is the mean with ± one standard error.
    """
    from .metrics import mean_and_se      # metrics imports viz: import here, not at the top

    ax = ax or plt.subplots(figsize=(9, 3.5))[1]
    columns = list(next(iter(table.values())))
    width = 0.8 / len(table)
    for n, (name, row) in enumerate(table.items()):
        values = [row[c] for c in columns]
        per_image = all(isinstance(v, torch.Tensor) and v.dim() == 1 for v in values)
        means, errors = (zip(*[mean_and_se(v) for v in values]) if per_image
                         else (values, None))
        ax.bar([j + n * width for j in range(len(columns))], list(means), width, label=name,
               yerr=list(errors) if errors else None, capsize=2 if errors else 0)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(columns))], columns)
    ax.set_ylim(*ylim)
    ax.legend(fontsize=8, ncol=2)
    return ax
