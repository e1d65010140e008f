"""A synthetic world with ground truth: coloured shapes on cluttered backgrounds, with masks.

Real photos have no answer to "where is the object?", so nobody can say which saliency map
is right. Here every image comes with the exact pixel mask of its object, so every method
can be scored. ``generate`` is seeded and vectorised (thousands of images per second on one
core), fast enough to train from: a training run draws fresh images every step.

Variants
--------
``plain``
    every background type appears with every class, uniformly.
``biased``
    class k is drawn on background type k with probability :data:`BIAS` (the "wolf on
    snow" shortcut: a model can get most answers right from the background alone).
``swapped``
    class k is never drawn on background type k: a model that learned the shortcut fails.
"""
from __future__ import annotations

import math

import torch

__all__ = ["CLASSES", "BACKGROUNDS", "VARIANTS", "BIAS", "SIZE", "generate"]

CLASSES = ("disk", "square", "triangle", "plus", "ring", "bar")
# One background type per class, so the biased variant can tie each class to its own.
BACKGROUNDS = ("noise", "stripes", "gradient", "checker", "blobs", "grid")
VARIANTS = ("plain", "biased", "swapped")
BIAS = 0.95   # biased variant: P(background type k | class k)
SIZE = 64     # default image side, pixels


def _shape_masks(labels, u, v):
    """Masks (n,S,S) of each image's shape in its own rotated, scaled coordinates (u, v)."""
    r = torch.sqrt(u * u + v * v)
    masks = torch.zeros_like(u, dtype=torch.bool)
    rules = {
        "disk": lambda i: r[i] <= 1.0,
        "square": lambda i: torch.maximum(u[i].abs(), v[i].abs()) <= 0.8,
        # Equilateral triangle with circumradius 1: inside all three edges.
        "triangle": lambda i: torch.stack([
            u[i] * math.cos(a) + v[i] * math.sin(a) <= 0.5
            for a in (math.pi / 2, math.pi * 7 / 6, math.pi * 11 / 6)]).all(0),
        "plus": lambda i: ((u[i].abs() <= 0.3) & (v[i].abs() <= 1.0))
                          | ((v[i].abs() <= 0.3) & (u[i].abs() <= 1.0)),
        "ring": lambda i: (r[i] <= 1.0) & (r[i] >= 0.55),
        "bar": lambda i: (u[i].abs() <= 1.0) & (v[i].abs() <= 0.28),
    }
    for k, name in enumerate(CLASSES):
        idx = (labels == k).nonzero()[:, 0]
        if len(idx):
            masks[idx] = rules[name](idx)
    return masks


def _rand(g, *shape):
    return torch.rand(*shape, generator=g)


def _backgrounds(kinds, size, g):
    """Backgrounds (n,3,S,S) in [0,1] and their mean colours (n,3,1,1).

    ``kinds`` (n,) indexes :data:`BACKGROUNDS`. Each image mixes two random colours with a
    weight map t (n,S,S) whose pattern is the background type.
    """
    n = len(kinds)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    c1, c2 = _rand(g, n, 3, 1, 1), _rand(g, n, 3, 1, 1)
    angle = _rand(g, n, 1, 1) * math.pi
    freq = 3 + 5 * _rand(g, n, 1, 1)
    t = torch.empty(n, size, size)
    for k, name in enumerate(BACKGROUNDS):
        idx = (kinds == k).nonzero()[:, 0]
        m = len(idx)
        if not m:
            continue
        f = freq[idx]
        if name in ("stripes", "gradient"):     # along a random direction
            a = angle[idx]
            along = xs * torch.cos(a) + ys * torch.sin(a)
        if name == "noise":
            t[idx] = _rand(g, m, size, size)
        elif name == "stripes":
            t[idx] = 0.5 + 0.5 * torch.sin(2 * math.pi * f * along)
        elif name == "gradient":
            lo, hi = along.amin((1, 2), keepdim=True), along.amax((1, 2), keepdim=True)
            t[idx] = (along - lo) / (hi - lo)
        elif name == "checker":
            cells = (f * 0.8).floor()
            t[idx] = ((xs * cells).floor() + (ys * cells).floor()).remainder(2)
        elif name == "blobs":
            coarse = _rand(g, m, 1, 6, 6)
            t[idx] = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic",
                                                     align_corners=False)[:, 0].clamp(0, 1)
        elif name == "grid":
            on_line = lambda a: (a * f).remainder(1) < 0.15
            t[idx] = (on_line(xs) | on_line(ys)).float()
    # Muted contrast: the background is clutter, the object should still stand out.
    contrast = 0.35 + 0.25 * _rand(g, n, 1, 1, 1)
    c2 = c1 + contrast * (c2 - c1)
    return torch.lerp(c1, c2, t[:, None]), (c1 + c2) / 2


def _background_kinds(labels, variant, g):
    n, k = len(labels), len(BACKGROUNDS)
    if variant == "plain":
        return torch.randint(0, k, (n,), generator=g)
    others = (labels + 1 + torch.randint(0, k - 1, (n,), generator=g)) % k  # never its own
    if variant == "swapped":
        return others
    own = _rand(g, n) < BIAS
    return torch.where(own, labels, others)


def generate(n: int, seed: int, variant: str = "plain", size: int = SIZE,
             return_backgrounds: bool = False):
    """``n`` images of one shape each, with labels and object masks.

    Returns ``(images, labels, masks)``: images (n,3,S,S) float32 in [0,1], labels (n,) long
    indexing :data:`CLASSES`, masks (n,S,S) bool, True exactly on the object's pixels. The
    same (n, seed, variant, size) always gives the same images. With
    ``return_backgrounds=True`` a fourth tensor (n,) gives each image's background type,
    indexing :data:`BACKGROUNDS`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16; got n={n}, size={size}.")
    g = torch.Generator().manual_seed(int(seed))
    labels = torch.randint(0, len(CLASSES), (n,), generator=g)
    kinds = _background_kinds(labels, variant, g)
    images, bg_mean = _backgrounds(kinds, size, g)

    # Pose: radius 18–30% of the side, anywhere the shape fits, any rotation.
    radius = (0.18 + 0.12 * _rand(g, n)) * size
    cx = radius + _rand(g, n) * (size - 2 * radius)
    cy = radius + _rand(g, n) * (size - 2 * radius)
    theta = _rand(g, n) * 2 * math.pi
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    dy = grid.view(1, size, 1) - cy.view(n, 1, 1)
    dx = grid.view(1, 1, size) - cx.view(n, 1, 1)
    cos, sin = torch.cos(theta).view(n, 1, 1), torch.sin(theta).view(n, 1, 1)
    r = radius.view(n, 1, 1)
    u, v = (cos * dx + sin * dy) / r, (-sin * dx + cos * dy) / r
    masks = _shape_masks(labels, u, v)

    # Object colour: pushed away from the background's mean in every channel, so the shape
    # is visible on any background.
    push = 0.35 + 0.3 * _rand(g, n, 3, 1, 1)
    colour = torch.where(bg_mean < 0.5, bg_mean + push, bg_mean - push).clamp(0, 1)
    images = torch.where(masks[:, None], colour.expand(n, 3, size, size), images)
    if return_backgrounds:
        return images.float(), labels, masks, kinds
    return images.float(), labels, masks
