"""Checks of notebook 01_first_layer_filters: normalising filters for display (§2) and a
filter's response map (§3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import viz
from ._harness import CheckError, _hidden_case, _passed, _run, _tensor, assert_close, rel_error


_NORMALIZE_HINT = ("Per filter: (w − min) / (max − min), min and max over that filter's C·k·k "
                   "numbers (all colour channels together, so colours keep their balance).")


def check_normalize_filters(fn) -> None:
    """``fn(w)``: filters (C_out,C,k,k) → the same shape, each filter min–max scaled to [0,1]
    (notebook 01 §2, "Exercise: normalise each filter for display")."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 5, 5, generator=g) * torch.logspace(-3, 1, 6).view(6, 1, 1, 1)
    got = _tensor("normalize_filters", _run("your normalize_filters", fn, [w]))
    if got.shape != w.shape:
        raise CheckError(f"normalize_filters returned shape {tuple(got.shape)}; it must keep "
                         f"the filters' shape {tuple(w.shape)}.")
    expected = viz.normalize_filters(w)
    whole = (w - w.min()) / (w.max() - w.min())
    if rel_error(got, whole) < 1e-4:
        raise CheckError("You normalised all filters together. Scale each filter by its own "
                         "min and max: filters differ in scale by orders of magnitude, and the "
                         "small ones would all be flat grey.")
    flat = w.flatten(2)
    lo, hi = flat.min(2, keepdim=True).values, flat.max(2, keepdim=True).values
    per_channel = ((flat - lo) / (hi - lo)).view_as(w)
    if rel_error(got, per_channel) < 1e-4:
        raise CheckError("You normalised each colour channel of a filter on its own. Take min "
                         "and max over the whole filter (all three channels together): "
                         "per channel, a filter that wants 'red minus green' turns grey.")
    if got.min() < -1e-6 or got.max() > 1 + 1e-6:
        raise CheckError(f"values range over [{got.min():.3g}, {got.max():.3g}]; each filter "
                         "must map its own minimum to 0 and maximum to 1.")
    assert_close(got, expected, 1e-4, "normalised filters", _NORMALIZE_HINT)
    _passed("each filter scaled to [0,1] by its own min and max.")


def hidden_check_normalize_filters(fn) -> None:
    """Hidden tests of notebook 01 §2: other shapes, float64, a dead (all-zero) filter, and
    the input left untouched."""
    g = torch.Generator().manual_seed(10)
    for shape in [(5, 1, 7, 7), (4, 16, 1, 1), (2, 3, 11, 11)]:
        w = torch.randn(shape, generator=g) * 3 - 1
        _hidden_case(f"filters of shape {shape}", fn, [w], viz.normalize_filters(w),
                     hint=_NORMALIZE_HINT)
    w = torch.randn(3, 3, 3, 3, generator=g, dtype=torch.float64)
    _hidden_case("float64 filters", fn, [w], viz.normalize_filters(w).double(),
                 hint=_NORMALIZE_HINT)
    w = torch.randn(4, 3, 3, 3, generator=g)
    w[2] = 0.0
    got = _tensor("normalize_filters", _run("[a dead filter] your function", fn, [w]))
    if not torch.isfinite(got).all():
        raise CheckError("[a dead filter, all zeros] your result has NaN or inf: max − min is 0 "
                         "there. Add a small epsilon to the denominator.")
    keep = [0, 1, 3]
    assert_close(got[keep], viz.normalize_filters(w)[keep], 1e-4,
                 "[a dead filter] the other filters", _NORMALIZE_HINT)
    _passed("hidden tests of normalize_filters.")


def check_filter_response(fn) -> None:
    """``fn(image, filt)``: (3,H,W) and (3,k,k) → (H,W), cross-correlation, zero 'same'
    padding (notebook 01 §3, "Exercise: a filter's response map")."""
    # A single bright pixel: the response of a cross-correlation to an impulse is the
    # filter rotated by 180 degrees.
    filt = torch.arange(27, dtype=torch.float32).view(3, 3, 3) - 13
    impulse = torch.zeros(3, 5, 5)
    impulse[1, 2, 2] = 1.0
    got = _tensor("filter_response", _run("your filter_response", fn, [impulse, filt])).float()
    if got.shape == (3, 5, 5):
        raise CheckError("your response has a colour dimension: sum the products over the three "
                         "colour channels (and over u, v) — one number per pixel.")
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
    got = _tensor("filter_response", _run("your filter_response", fn, [image, filt])).float()
    assert_close(got, expected, 1e-5, "response of a 5×5 filter on a random image",
                 "Sum over all three colour channels; zero-pad by k//2 on every side.")
    _passed("cross-correlation with zero padding; impulse response is the filter rotated 180°.")


def hidden_check_filter_response(fn) -> None:
    """Hidden tests of notebook 01 §3: non-square images, 7×7 and 1×1 filters, zero padding
    at the corners, inputs untouched."""
    g = torch.Generator().manual_seed(11)
    hint = "Cross-correlation summed over colour channels, zero padding k//2 on every side."
    for (h, w), k in [((10, 17), 7), ((6, 6), 1), ((9, 4), 3)]:
        image, filt = torch.rand(3, h, w, generator=g), torch.randn(3, k, k, generator=g)
        expected = F.conv2d(image[None], filt[None], padding=k // 2)[0, 0]
        _hidden_case(f"a {h}×{w} image and a {k}×{k} filter", fn, [image, filt], expected,
                     tol=1e-5, hint=hint)
    corner = torch.zeros(3, 6, 6)
    corner[:, 0, 0] = 1.0
    filt = torch.randn(3, 5, 5, generator=g)
    _hidden_case("a bright pixel in the corner (zero padding)", fn, [corner, filt],
                 F.conv2d(corner[None], filt[None], padding=2)[0, 0], tol=1e-5,
                 hint="Pad with zeros (not by repeating or mirroring the border).")
    _passed("hidden tests of filter_response.")

