"""viz (one normalisation convention) and widgets (panels whose callbacks are plain functions)."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from featviz_helpers import viz, widgets  # noqa: E402


def test_normalize_is_per_image_min_max():
    maps = torch.stack([torch.linspace(-2, 2, 16).view(4, 4), torch.linspace(0, 100, 16).view(4, 4)])
    out = viz.normalize(maps)
    assert out.shape == (2, 4, 4)
    assert torch.allclose(out.amin((1, 2)), torch.zeros(2)) and torch.allclose(out.amax((1, 2)), torch.ones(2), atol=1e-6)


def test_normalize_constant_map_has_no_nan():
    out = viz.normalize(torch.full((1, 3, 3), 5.0))
    assert torch.isfinite(out).all() and (out == 0).all()


def test_clip_percentile_lifts_the_bulk():
    m = torch.ones(1, 10, 10)
    m[0, 0, 0] = 1000.0        # one extreme pixel
    m[0, 5:] = 2.0
    plain, clipped = viz.normalize(m), viz.normalize(m, clip_percentile=95)
    assert plain[0, 9, 9] < 0.01 and clipped[0, 9, 9] == pytest.approx(1.0, abs=1e-6)


def test_upsample_is_bilinear_and_keeps_values():
    m = torch.tensor([[[0.0, 1.0], [2.0, 3.0]]])
    up = viz.upsample(m, (8, 8))
    assert up.shape == (1, 8, 8) and up.min() >= 0 and up.max() <= 3
    assert viz.display_maps(m, (8, 8)).shape == (1, 8, 8)


def test_normalize_filters_per_filter_and_symmetric():
    w = torch.stack([torch.full((3, 2, 2), 0.001), torch.randn(3, 2, 2) * 100])
    w[0, 0, 0, 0] = -0.001
    out = viz.normalize_filters(w)
    assert torch.allclose(out.flatten(1).amin(1), torch.zeros(2))
    assert torch.allclose(out.flatten(1).amax(1), torch.ones(2), atol=1e-5)
    sym = viz.normalize_filters(torch.tensor([[[[-1.0, 0.0], [0.5, 1.0]]]]), symmetric=True)
    assert torch.allclose(sym.flatten(), torch.tensor([0.0, 0.5, 0.75, 1.0]), atol=1e-6)


def test_filter_grid_and_plots_draw():
    grid = viz.filter_grid(torch.rand(10, 3, 5, 5), ncols=4)
    assert grid.shape == (3 * 6 + 1, 4 * 6 + 1, 3)
    fig, axes = viz.panels(3)
    viz.show_filters(torch.randn(8, 3, 3, 3), ax=axes[0], title="filters")
    viz.show_map(axes[1], np.zeros((16, 16, 3)), torch.rand(4, 4), title="overlay")
    viz.show_map(axes[2], None, torch.rand(4, 4))
    assert viz.overlay(np.zeros((4, 4, 3)), np.ones((4, 4))).shape == (4, 4, 3)
    plt.close(fig)


def test_panel_runs_callback_now_and_on_change():
    calls = []
    s = widgets.slider(0, 5, "n")
    d = widgets.dropdown([("one", 1), ("two", 2)], "d")
    box = widgets.panel(lambda n, d: calls.append((n, d)), n=s, d=d)
    assert calls == [(0, 1)]
    s.value = 3
    d.value = 2
    assert calls[-2:] == [(3, 1), (3, 2)]
    assert len(box.children) == 2


def test_panel_and_dropdown_refuse_empty():
    with pytest.raises(ValueError):
        widgets.panel(lambda: None)
    with pytest.raises(ValueError):
        widgets.dropdown([], "empty")


def test_bar_chart_and_gradient_image():
    ax = viz.bar_chart({"a": {"x": 0.5, "y": 0.2}, "b": {"x": 0.1, "y": 0.9}})
    assert len(ax.patches) == 4
    plt.close(ax.figure)
    g = torch.randn(2, 3, 5, 5)
    img = viz.gradient_image(g)
    assert img.shape == (2, 5, 5, 3) and img.min() >= 0 and img.max() <= 1
    assert viz.gradient_image(torch.zeros(1, 3, 4, 4))[0, 0, 0].tolist() == [0.5, 0.5, 0.5]
    assert viz.channel_max(-g).shape == (2, 5, 5)
