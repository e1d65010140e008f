"""Scoring explanation maps: against ground-truth masks, against the model, against each other.

Every function takes raw maps (B,h,w) — as the methods return them — and gives one value per
image, shape (B,). Maps are bilinearly upsampled to the mask's (or image's) size inside.

* Localisation against a mask (B,H,W) bool: :func:`pointing_game`, :func:`energy_in_mask`,
  :func:`box_iou` (the CAM paper's box protocol; :func:`cam_boxes` gives the boxes).
* Faithfulness to the model: :func:`deletion_auc`, :func:`insertion_auc` (Petsiuk et al.,
  *RISE*, 2018): delete (or insert) pixels in the map's order and watch the class probability.
* Attributions that should add up: :func:`completeness_error` (Integrated Gradients'
  completeness axiom, Sundararajan et al. 2017).
* Agreement between two maps: :func:`spearman` rank correlation and :func:`ssim`, structural
  similarity (Adebayo et al. 2018 report both for their sanity checks).
* Comparing methods scored on the same images: :func:`paired_difference` (mean difference and
  its standard error), :func:`top_tier` (the best method and those it cannot be told apart
  from), and :func:`format_table`, which prints mean ± standard error and marks the top tier.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from scipy import ndimage
from scipy.special import stdtrit

from .methods import as_targets, baseline_like, logits_of, masked_probabilities
from .hooks import preserved_state
from .viz import upsample

__all__ = [
    "pointing_game",
    "energy_in_mask",
    "cam_boxes",
    "box_iou",
    "deletion_curve",
    "insertion_curve",
    "deletion_auc",
    "insertion_auc",
    "auc",
    "faithfulness_scores",
    "BASELINES",
    "completeness_error",
    "spearman",
    "ssim",
    "LOCALISATION_METRICS",
    "HIGHER_IS_BETTER",
    "localisation_scores",
    "localisation_table",
    "mean_and_se",
    "PairedDifference",
    "paired_difference",
    "top_tier",
    "format_table",
]


def _check_threshold(threshold) -> None:
    if not 0 < threshold < 1:   # written so that NaN fails too
        raise ValueError(f"threshold is a fraction of each map's maximum, strictly between 0 "
                         f"and 1 (the CAM paper uses 0.2); got {threshold!r}.")


def _maps_and_masks(maps, masks):
    masks = torch.as_tensor(masks, device="cpu").bool()     # scored on the host, like the maps
    if masks.dim() != 3:
        raise ValueError(f"masks must be (B,H,W); got {tuple(masks.shape)}.")
    maps = upsample(maps, masks.shape[-2:])
    if maps.shape[0] != masks.shape[0]:
        raise ValueError(f"{maps.shape[0]} maps but {masks.shape[0]} masks.")
    if not masks.flatten(1).any(1).all():
        raise ValueError("every mask needs at least one True pixel.")
    return maps, masks


def pointing_game(maps, masks) -> torch.Tensor:
    """1.0 where the map's maximum lies inside the mask, else 0.0: (B,).

    Ties are split fairly: with several maximal pixels the score is the fraction of them
    inside the mask, so a constant map scores the mask's area fraction (chance).
    """
    maps, masks = _maps_and_masks(maps, masks)
    flat, inside = maps.flatten(1), masks.flatten(1)
    top = flat == flat.max(1, keepdim=True).values
    return (top & inside).sum(1).float() / top.sum(1).float()


def energy_in_mask(maps, masks) -> torch.Tensor:
    """Fraction of the map's positive mass that falls inside the mask: (B,).

    Negative values count as zero. A map with no positive mass is treated as uniform, so
    it scores the mask's area fraction (chance), like a constant map.
    """
    maps, masks = _maps_and_masks(maps, masks)
    energy = maps.clamp_min(0).flatten(1)
    inside = masks.flatten(1).float()
    total = energy.sum(1)
    chance = inside.mean(1)
    frac = (energy * inside).sum(1) / total.clamp_min(1e-30)
    return torch.where(total > 0, frac, chance)


def _largest_component(fg: torch.Tensor) -> torch.Tensor:
    """The largest 8-connected component of each boolean image (B,H,W)."""
    out = torch.zeros_like(fg)
    eight = np.ones((3, 3), dtype=bool)
    for b, image in enumerate(fg.numpy()):
        labels, count = ndimage.label(image, structure=eight)
        if count:
            sizes = np.bincount(labels.ravel())[1:]
            out[b] = torch.from_numpy(labels == sizes.argmax() + 1)
    return out


def _box(mask: torch.Tensor) -> torch.Tensor:
    """Bounding box (x0, y0, x1, y1), inclusive pixel indices, of a non-empty (H,W) mask."""
    ys, xs = mask.nonzero(as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()])


def cam_boxes(maps, size: tuple[int, int], threshold: float = 0.2) -> torch.Tensor:
    """The CAM paper's weakly-supervised boxes (Zhou et al. 2016): (B,4) as (x0,y0,x1,y1).

    Upsample to ``size``, keep pixels ≥ ``threshold`` × the map's maximum, take the bounding
    box of the largest connected component. Coordinates are inclusive pixel indices.
    """
    _check_threshold(threshold)
    maps = upsample(maps, size)
    top = maps.flatten(1).max(1).values.view(-1, 1, 1)
    fg = torch.where(top > 0, maps >= threshold * top, maps >= top)
    component = _largest_component(fg)
    return torch.stack([_box(c) for c in component])


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of inclusive-pixel boxes (B,4)."""
    x0, y0 = torch.maximum(a[:, 0], b[:, 0]), torch.maximum(a[:, 1], b[:, 1])
    x1, y1 = torch.minimum(a[:, 2], b[:, 2]), torch.minimum(a[:, 3], b[:, 3])
    inter = (x1 - x0 + 1).clamp_min(0) * (y1 - y0 + 1).clamp_min(0)
    area = lambda r: (r[:, 2] - r[:, 0] + 1) * (r[:, 3] - r[:, 1] + 1)
    return inter.float() / (area(a) + area(b) - inter).float()


def box_iou(maps, masks, threshold: float = 0.2) -> torch.Tensor:
    """IoU between the map's :func:`cam_boxes` box and the mask's bounding box: (B,)."""
    _check_threshold(threshold)
    maps, masks = _maps_and_masks(maps, masks)
    predicted = cam_boxes(maps, masks.shape[-2:], threshold)
    truth = torch.stack([_box(m) for m in masks])
    return _iou(predicted, truth)


# ---------------------------------------------------------------------- faithfulness

BASELINES = ("zeros", "blur")


def _baseline(x: torch.Tensor, baseline) -> torch.Tensor:
    """The image a deleted pixel takes, or an inserted one starts from: (B,C,H,W).

    ``"zeros"``: 0 in the normalised input, i.e. the colour the model's preprocessing
    subtracts (``model.input_spec.mean``: mid-grey 127/255 for Lite0, 0.5 grey for the shapes
    models, ImageNet's mean colour for torchvision's models). ``"blur"``: the
    image under a Gaussian blur (11×11 kernel, σ = 5 pixels), RISE's insertion start.
    A tensor broadcastable to ``x`` is used as given.
    """
    if isinstance(baseline, str):
        if baseline == "zeros":
            return torch.zeros_like(x)
        if baseline == "blur":
            return TF.gaussian_blur(x, kernel_size=[11, 11], sigma=[5.0, 5.0])
        raise ValueError(f"baseline must be one of {BASELINES} or a tensor, got {baseline!r}.")
    return baseline_like(x, baseline)


def _check_batch_and_steps(x, steps) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a preprocessed batch (B,C,H,W) of at least one image; got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps is the number of equal slices of pixels to delete or insert, "
                         f"a positive int (default 20); got {steps!r}.")


def _most_important_first(maps, x, steps: int, ks, name: str = "") -> torch.Tensor:
    """(len(ks), B, H, W) masks: for each k of ``ks``, the top k/steps of each map's pixels."""
    B, _, H, W = x.shape
    maps = upsample(maps, (H, W))
    if maps.shape[0] != B:
        raise ValueError(f"{maps.shape[0]} maps for {B} images{f' ({name!r})' if name else ''}: "
                         "pass one map per image of x.")
    # A stable sort takes pixels the map ties (an occlusion map is flat over each window) in
    # raster order, so the curve does not depend on the sort kernel.
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    chosen = torch.zeros(len(ks), B, H * W, dtype=torch.bool, device=order.device)
    for i, k in enumerate(ks):
        chosen[i].scatter_(1, order[:, :round(k * H * W / steps)], True)
    return chosen.view(len(ks), B, H, W)


@torch.no_grad()
def _probability_curve(model, x, maps, target, steps, baseline, insert):
    _check_batch_and_steps(x, steps)
    B = x.shape[0]
    chosen = _most_important_first(maps, x, steps, range(steps + 1))
    t = as_targets(target, B, logits_of(model, x[:1]).shape[1]).to(x.device)    # refused before any work
    start = _baseline(x, baseline)
    # Deletion: the chosen pixels become baseline. Insertion: only they come from x, so the
    # others are replaced by the baseline.
    replaced = ~chosen if insert else chosen
    return masked_probabilities(model, x, replaced, t, start).T


def deletion_curve(model, x, maps, target, steps: int = 20, baseline="zeros") -> torch.Tensor:
    """P(target) as the map's most important pixels are replaced by ``baseline``: (B, steps+1).

    ``x`` is the preprocessed batch. As in RISE, deleted pixels become a constant: by default
    0 after normalisation, the colour the preprocessing subtracts (mid-grey for Lite0; see
    :func:`_baseline` and :data:`BASELINES`; a tensor works too). Column k has the top
    k/steps of the pixels deleted.
    """
    with preserved_state(model):
        return _probability_curve(model, x, maps, target, steps, baseline, insert=False)


def insertion_curve(model, x, maps, target, steps: int = 20, baseline="blur") -> torch.Tensor:
    """P(target) as pixels are restored onto ``baseline`` in the map's order: (B, steps+1).

    The default start is RISE's: a blurred copy of the image (``"blur"``), so that inserting
    pixels adds detail rather than sharp edges against a flat canvas; ``"zeros"`` starts from
    0 after normalisation (the colour the preprocessing subtracts) instead. Column k has the top k/steps of the pixels restored.
    """
    with preserved_state(model):
        return _probability_curve(model, x, maps, target, steps, baseline, insert=True)


def auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under a curve sampled evenly on [0,1] (trapezoid rule)."""
    return ((curve[:, 1:] + curve[:, :-1]) / 2).mean(1)


def deletion_auc(model, x, maps, target, steps: int = 20, baseline="zeros") -> torch.Tensor:
    """Area under :func:`deletion_curve` (lower is better: the map found what matters): (B,)."""
    return auc(deletion_curve(model, x, maps, target, steps, baseline))


def insertion_auc(model, x, maps, target, steps: int = 20, baseline="blur") -> torch.Tensor:
    """Area under :func:`insertion_curve` (higher is better): (B,)."""
    return auc(insertion_curve(model, x, maps, target, steps, baseline))


def faithfulness_scores(model, x, maps_by_name: dict, target, steps: int = 20,
                        batch_size: int | None = None):
    """Deletion and insertion (default baselines) for each named set of maps of the same images.

    Returns ``(scores, curves)``: ``scores`` is {name: {"deletion AUC": (B,), "insertion AUC":
    (B,)}}, per image, ready for :func:`format_table` and :func:`top_tier`; ``curves`` is
    {name: {"deletion": (steps+1,), "insertion": (steps+1,)}}, the mean curves, for plotting.
    Notebook 05 §11.

    The same curves as :func:`deletion_curve` and :func:`insertion_curve` per method, computed
    together: the two ends of each curve (nothing and everything replaced) do not depend on
    the map, so they go through the model once for all methods, and the masked copies of all
    methods go through the model about ``batch_size`` images at a time (default: as
    :func:`masked_probabilities`).
    """
    if not maps_by_name:
        return {}, {}
    _check_batch_and_steps(x, steps)
    B, _, H, W = x.shape
    with preserved_state(model), torch.no_grad():
        t = as_targets(target, B, logits_of(model, x[:1]).shape[1]).to(x.device)
        # per method: (steps-1, B, H, W), the pixels chosen between the two ends
        inner = torch.cat([_most_important_first(maps, x, steps, range(1, steps), name)
                           for name, maps in maps_by_name.items()])    # (M·(steps-1), B, H, W)
        ends = torch.tensor([False, True], device=x.device).view(2, 1, 1, 1).expand(2, B, H, W)
        curves_of = {}
        for curve, fill in (("deletion", _baseline(x, "zeros")), ("insertion", _baseline(x, "blur"))):
            replaced = ~inner if curve == "insertion" else inner
            p_inner = (masked_probabilities(model, x, replaced, t, fill, batch_size=batch_size)
                       if steps > 1 else torch.zeros(0, B, device=x.device))
            p_x, p_fill = masked_probabilities(model, x, ends, t, fill, batch_size=batch_size)
            first, last = (p_fill, p_x) if curve == "insertion" else (p_x, p_fill)
            curves_of[curve] = [torch.cat([first[None], block, last[None]]).T    # (B, steps+1)
                                for block in (p_inner.split(steps - 1) if steps > 1
                                              else [p_inner] * len(maps_by_name))]
    scores, curves = {}, {}
    for n, name in enumerate(maps_by_name):
        deletion, insertion = curves_of["deletion"][n], curves_of["insertion"][n]
        scores[name] = {"deletion AUC": auc(deletion), "insertion AUC": auc(insertion)}
        curves[name] = {"deletion": deletion.mean(0), "insertion": insertion.mean(0)}
    return scores, curves


# ---------------------------------------------------------------------- completeness

@torch.no_grad()
def completeness_error(model, x, target, attributions, baseline=None) -> torch.Tensor:
    """How far attributions (B,C,H,W) are from adding up to S_c(x) − S_c(x'): (B,).

    Integrated Gradients' completeness axiom (Sundararajan, Taly & Yan 2017, notebook 02 §10)
    says Σ_i IG_i = S_c(x) − S_c(x'), S_c the target logit and x' the baseline (default 0
    after normalisation, as in :func:`methods.integrated_gradients`). The Riemann sum meets
    it only approximately; this returns |Σ_i attr_i − (S_c(x) − S_c(x'))| / |S_c(x) − S_c(x')|
    per image, the relative error the paper uses to choose the number of steps (it suggests
    within 5 %). Captum returns the unscaled difference as its "convergence delta".
    """
    with preserved_state(model):
        model.eval()
        start = baseline_like(x, baseline)
        logits = logits_of(model, x)
        t = as_targets(target, x.shape[0], logits.shape[1]).to(x.device)[:, None]
        gap = logits.gather(1, t)[:, 0] - logits_of(model, start).gather(1, t)[:, 0]
    attributions = torch.as_tensor(attributions)
    if attributions.shape != x.shape:
        raise ValueError(f"attributions must have the input's shape {tuple(x.shape)} (one value "
                         f"per input element, as Integrated Gradients gives); got "
                         f"{tuple(attributions.shape)}.")
    total = attributions.flatten(1).sum(1).to(gap.dtype)
    return ((total - gap).abs() / gap.abs().clamp_min(1e-12)).cpu()


# ---------------------------------------------------------------------- agreement

def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n along each row of (B,n), ties sharing their average rank: (B,n) float64.

    One sort per row: the sorted values are split into runs of equal values, and each run's
    members get the mean of the positions it spans."""
    ordered, order = v.sort(dim=1)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = starts.cumsum(1) - 1                                   # each sorted value's run
    ones = torch.ones(v.shape, dtype=torch.float64)
    counts = torch.zeros(v.shape, dtype=torch.float64).scatter_add_(1, run, ones)
    average = counts.cumsum(1) - (counts - 1) / 2                # mean position of each run
    return torch.empty(v.shape, dtype=torch.float64).scatter_(1, order, average.gather(1, run))


def spearman(a, b, absolute: bool = False) -> torch.Tensor:
    """Spearman rank correlation between two maps of each image: (B,), in [-1, 1].

    Maps of different resolution are upsampled to the larger one. ``absolute=True`` ranks
    |values| (sign ignored), as Adebayo et al. do for gradient maps.
    """
    size_a, size_b = tuple(torch.as_tensor(a).shape[-2:]), tuple(torch.as_tensor(b).shape[-2:])
    size = max(size_a, size_b, key=lambda s: s[0] * s[1])
    a, b = upsample(a, size), upsample(b, size)
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"{a.shape[0]} maps vs {b.shape[0]} maps.")
    if absolute:
        a, b = a.abs(), b.abs()
    rx, ry = _ranks(a.flatten(1).cpu()), _ranks(b.flatten(1).cpu())
    rx, ry = rx - rx.mean(1, keepdim=True), ry - ry.mean(1, keepdim=True)
    denom = (rx.norm(dim=1) * ry.norm(dim=1)).clamp_min(1e-30)
    return ((rx * ry).sum(1) / denom).float()


# ---------------------------------------------------------------------- tables

LOCALISATION_METRICS = {"pointing game": pointing_game, "energy in mask": energy_in_mask,
                        "box IoU": box_iou}

#: Which way each score points; :func:`format_table` reads it to find each column's best row.
HIGHER_IS_BETTER = {"pointing game": True, "energy in mask": True, "box IoU": True,
                    "deletion AUC": False, "insertion AUC": True}


def localisation_scores(maps_by_name: dict, masks) -> dict[str, dict[str, torch.Tensor]]:
    """Per-image pointing game, energy in mask and box IoU for each named set of maps (B,h,w).

    Returns {name: {metric: (B,) tensor}}, the rows in the order given, then a last row,
    "chance (constant map)", that scores a constant map on the same masks. Keeping the
    per-image scores lets :func:`format_table` give each mean its standard error and
    compare methods image by image (:func:`paired_difference`).
    """
    masks = torch.as_tensor(masks)
    rows = dict(maps_by_name)
    rows["chance (constant map)"] = torch.ones(masks.shape[0], 8, 8, device="cpu")
    return {name: {metric: fn(maps, masks) for metric, fn in LOCALISATION_METRICS.items()}
            for name, maps in rows.items()}


def localisation_table(maps_by_name: dict, masks) -> dict[str, dict[str, float]]:
    """The means of :func:`localisation_scores`: {name: {metric: float}}."""
    return {name: {metric: values.mean().item() for metric, values in row.items()}
            for name, row in localisation_scores(maps_by_name, masks).items()}


def _per_image(values) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=torch.float64, device="cpu").detach()
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"scores must be one value per image, a non-empty 1-D tensor; got shape "
                         f"{tuple(values.shape)}.")
    return values


def mean_and_se(values) -> tuple[float, float]:
    """Mean of per-image scores (n,) and its standard error, std(ddof=1)/√n.

    The standard error is NaN for a single image: one value says nothing about the spread.
    """
    values = _per_image(values)
    n = values.numel()
    se = (values.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")
    return values.mean().item(), se


@dataclass(frozen=True)
class PairedDifference:
    """Two methods scored on the same n images: the mean of the per-image differences a − b,
    its standard error, and its ``confidence`` interval (Student's t with n − 1 degrees of
    freedom); the two are tied when that interval contains 0."""
    difference: float
    se: float
    n: int
    confidence: float = 0.95

    @property
    def critical(self) -> float:
        """The interval's half-width in standard errors: Student's t quantile for n − 1 degrees
        of freedom (at 95 %: 2.04 for 32 images, 2.00 for 64, 12.7 for 2). Infinite for one
        image, which cannot show a difference."""
        if self.n < 2:
            return math.inf
        # scipy.special's inverse of Student's t CDF, the same number as scipy.stats.t.ppf:
        # importing scipy.stats would cost every notebook half a second
        return float(stdtrit(self.n - 1, 0.5 + self.confidence / 2))

    @property
    def interval(self) -> tuple[float, float]:
        """difference ± critical · standard error."""
        half = self.critical * self.se
        return self.difference - half, self.difference + half

    @property
    def tied(self) -> bool:
        """True when the data cannot tell the two apart: the interval contains 0. Identical
        scores on every image are a tie; with one image (no standard error) every pair is."""
        if self.difference == 0 or math.isnan(self.se) or self.n < 2:
            return True
        return abs(self.difference) <= self.critical * self.se


def paired_difference(a, b, confidence: float = 0.95) -> PairedDifference:
    """Compare two methods' per-image scores a, b (n,) on the same images.

    Pairing removes what the images share (a hard image is hard for every method), so it is
    far more sensitive than comparing the two means with their separate standard errors. The
    standard error of the mean difference is std(a − b, ddof=1)/√n; the interval uses Student's
    t, which matters for few images (two photos need 12.7 standard errors at 95 %).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a probability strictly between 0 and 1 (e.g. 0.95); "
                         f"got {confidence!r}.")
    a, b = _per_image(a), _per_image(b)
    if a.shape != b.shape:
        raise ValueError(f"a paired comparison needs both methods scored on the same images; got "
                         f"{a.numel()} and {b.numel()} scores.")
    mean, se = mean_and_se(a - b)
    return PairedDifference(mean, se, a.numel(), confidence)


def top_tier(scores: dict, higher_is_better: bool = True, confidence: float = 0.95) -> list[str]:
    """The best method by mean score and every method tied with it (:func:`paired_difference`).

    ``scores`` is {name: (n,) per-image scores on the same images}. Returns the names in the
    order given. Report a ranking as this tier, not as a first place: inside it the order is
    noise.
    """
    means = {name: _per_image(v).mean().item() for name, v in scores.items()}
    best = (max if higher_is_better else min)(means, key=means.get)
    return [name for name, v in scores.items()
            if name == best or paired_difference(v, scores[best], confidence).tied]


def format_table(table: dict, higher_is_better: dict | None = None,
                 confidence: float = 0.95) -> str:
    """A {name: {column: scores}} table as aligned text.

    With per-image scores (1-D tensors, e.g. from :func:`localisation_scores`) each cell is
    mean ± standard error, and a * marks each column's top tier (:func:`top_tier`): the best
    row and the rows whose paired difference to it has a ``confidence`` interval containing 0
    (:class:`PairedDifference`). Which way is
    better comes from ``higher_is_better`` ({column: bool}), then :data:`HIGHER_IS_BETTER`
    (a column named like "deletion AUC ↓" counts as "deletion AUC"), else higher. A row whose
    name starts with "chance" or "random" is a reference and is never marked. Plain numbers
    are printed as they are.
    """
    columns = list(next(iter(table.values())))
    width = max(len(name) for name in table) + 2
    per_image = all(isinstance(v, torch.Tensor) and v.dim() == 1
                    for row in table.values() for v in row.values())
    if not per_image:
        lines = [" " * width + "".join(f"{c:>16s}" for c in columns)]
        lines += [f"{name:{width}s}" + "".join(f"{row[c]:16.3f}" for c in columns)
                  for name, row in table.items()]
        return "\n".join(lines)

    direction = {**HIGHER_IS_BETTER, **(higher_is_better or {})}
    compared = [n for n in table if not n.lower().startswith(("chance", "random"))]
    marked = {c: set() for c in columns}
    if len(compared) > 1:                  # one method alone has nothing to be tied with
        for c in columns:
            marked[c] = set(top_tier({n: table[n][c] for n in compared},
                                     direction.get(c.rstrip(" ↑↓"), True), confidence))
    cell = 20
    lines = [" " * width + "".join(f"{c:>{cell}s}" for c in columns)]
    for name, row in table.items():
        text = ""
        for c in columns:
            mean, se = mean_and_se(row[c])
            text += f"{mean:.3f} ± {se:.3f} {'*' if name in marked[c] else ' '}".rjust(cell)
        lines.append(f"{name:{width}s}" + text)
    n = len(next(iter(table.values()))[columns[0]])
    lines.append(f"mean ± standard error over {n} images"
                 + (f"; * = the column's best and every row tied with it (the {confidence:.0%} "
                    f"interval of the paired difference, Student's t, contains 0)"
                    if len(compared) > 1 else ""))
    return "\n".join(lines)


def ssim(a, b, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) of two batches of maps (B,h,w): (B,).

    Each map is first min–max normalised to [0,1] (as for display), then SSIM is the mean over
    positions of ((2μ_aμ_b + C1)(2σ_ab + C2)) / ((μ_a² + μ_b² + C1)(σ_a² + σ_b² + C2)), with
    local statistics under a Gaussian window and C1 = 0.01², C2 = 0.03². 1 means identical.
    """
    a, b = torch.as_tensor(a).detach().double().cpu(), torch.as_tensor(b).detach().double().cpu()
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim needs two batches of maps (B,h,w) of one shape; got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}.")

    def unit(m):
        flat = m.flatten(1)
        lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
        return ((flat - lo) / (hi - lo + 1e-12)).view_as(m)[:, None]

    a, b = unit(a), unit(b)
    x = torch.arange(window, dtype=torch.float64) - (window - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    # The five local statistics in one pass, with the Gaussian applied as two 1-D passes
    # (it is separable): the same numbers as one 2-D window, several times faster.
    B = a.shape[0]
    stack = F.pad(torch.cat([a, b, a * a, b * b, a * b]), [window // 2] * 4, mode="replicate")
    stack = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))
    mu_a, mu_b, aa, bb, ab = stack.split(B)
    var_a, var_b, cov = aa - mu_a ** 2, bb - mu_b ** 2, ab - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean((1, 2, 3)).float()
