"""metrics on hand-built maps: oracles score 1, constants score chance, boxes are exact."""
import math

import pytest
import torch
from torch import nn

from featviz_helpers import metrics, shapes


@pytest.fixture(scope="module")
def world():
    _, labels, masks = shapes.generate(12, seed=4)
    return labels, masks


def test_oracle_map_scores_one(world):
    _, masks = world
    oracle = masks.float()
    assert torch.equal(metrics.pointing_game(oracle, masks), torch.ones(12))
    assert torch.allclose(metrics.energy_in_mask(oracle, masks), torch.ones(12))
    assert torch.allclose(metrics.box_iou(oracle, masks), torch.ones(12))


def test_constant_map_scores_chance(world):
    _, masks = world
    chance = masks.float().mean((1, 2))
    constant = torch.full((12, 8, 8), 3.0)          # low resolution: upsampled inside
    assert torch.allclose(metrics.pointing_game(constant, masks), chance)
    assert torch.allclose(metrics.energy_in_mask(constant, masks), chance)
    assert torch.allclose(metrics.energy_in_mask(torch.zeros(12, 8, 8), masks), chance)


def test_inverted_map_scores_zero(world):
    _, masks = world
    anti = (~masks).float()
    assert metrics.pointing_game(anti, masks).sum() == 0
    assert metrics.energy_in_mask(anti, masks).sum() == 0


def test_box_protocol_hand_built():
    mask = torch.zeros(1, 10, 10, dtype=torch.bool)
    mask[0, 2:5, 3:7] = True                         # box x 3..6, y 2..4
    heat = torch.zeros(1, 10, 10)
    heat[0, 2:5, 3:7] = 1.0                          # the right box ...
    heat[0, 8, 8] = 0.9                              # ... plus a stray, smaller blob
    assert metrics.cam_boxes(heat, (10, 10)).tolist() == [[3, 2, 6, 4]]
    assert metrics.box_iou(heat, mask).item() == pytest.approx(1.0)
    half = torch.zeros(1, 10, 10)
    half[0, 2:5, 3:5] = 1.0                          # half the box: IoU 6/12
    assert metrics.box_iou(half, mask).item() == pytest.approx(0.5)
    faint = heat.clone()
    faint[0, 2:5, 5:7] = 0.1                         # below 20% of the max: cut off
    assert metrics.cam_boxes(faint, (10, 10), threshold=0.2).tolist() == [[3, 2, 4, 4]]


def test_largest_component_uses_8_connectivity():
    heat = torch.zeros(1, 6, 6)
    for i in range(4):
        heat[0, i, i] = 1.0                          # a diagonal line: one component if 8-connected
    heat[0, 0, 5] = 1.0
    assert metrics.cam_boxes(heat, (6, 6)).tolist() == [[0, 0, 3, 3]]


def test_masks_must_match(world):
    _, masks = world
    with pytest.raises(ValueError, match="maps"):
        metrics.pointing_game(torch.rand(3, 8, 8), masks)
    empty = torch.zeros(1, 8, 8, dtype=torch.bool)
    with pytest.raises(ValueError, match="True pixel"):
        metrics.energy_in_mask(torch.rand(1, 8, 8), empty)


def test_spearman():
    a = torch.rand(3, 8, 8)
    assert torch.allclose(metrics.spearman(a, a), torch.ones(3))
    assert torch.allclose(metrics.spearman(a, -a), -torch.ones(3))
    assert torch.allclose(metrics.spearman(a, torch.exp(3 * a)), torch.ones(3))      # ranks only
    signed = torch.randn(2, 8, 8)
    assert torch.allclose(metrics.spearman(signed, -signed, absolute=True), torch.ones(2))
    ties = torch.tensor([[[1.0, 1.0], [2.0, 3.0]]])
    expected = torch.tensor([[[1.5, 1.5], [3.0, 4.0]]])                      # average ranks
    assert metrics.spearman(ties, expected).item() == pytest.approx(1.0)
    assert metrics.spearman(torch.rand(2, 4, 4), torch.rand(2, 16, 16)).shape == (2,)


def test_spearman_equals_scipy_with_ties_in_every_row():
    """The batched ranks (one sort per row) against SciPy's spearmanr, row by row, on maps
    with many ties (ReLU zeros, rounded values) and on maps without."""
    from scipy import stats
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 12, 12, generator=g)
    cases = [(a, torch.randn(4, 12, 12, generator=g)),
             (a.relu(), (a + torch.randn(4, 12, 12, generator=g)).relu()),
             ((3 * a).round(), (3 * a + torch.randn(4, 12, 12, generator=g)).round())]
    for x, y in cases:
        ours = metrics.spearman(x, y)
        theirs = [stats.spearmanr(u.flatten().numpy(), v.flatten().numpy()).statistic
                  for u, v in zip(x, y)]
        assert torch.allclose(ours, torch.tensor(theirs, dtype=torch.float32), atol=1e-6)


class PixelCounter(nn.Module):
    """Logit of class 1 = sum of the left half's pixels; class 0 fixed at 0."""

    def forward(self, x):
        w = x.shape[-1]
        s = x[:, :, :, : w // 2].sum((1, 2, 3))
        return torch.stack([torch.zeros_like(s), s], 1)


def test_deletion_and_insertion_follow_the_map():
    x = torch.ones(2, 3, 8, 8)
    good = torch.zeros(2, 8, 8)
    good[:, :, :4] = 1.0                             # points at the left half, which matters
    bad = 1.0 - good
    model = PixelCounter()
    d_good = metrics.deletion_auc(model, x, good, 1, steps=8)
    d_bad = metrics.deletion_auc(model, x, bad, 1, steps=8)
    i_good = metrics.insertion_auc(model, x, good, 1, steps=8, baseline="zeros")
    i_bad = metrics.insertion_auc(model, x, bad, 1, steps=8, baseline="zeros")
    assert (d_good < d_bad).all() and (i_good > i_bad).all()
    curve = metrics.deletion_curve(model, x, good, 1, steps=8)
    assert curve.shape == (2, 9)
    assert curve[:, 0].allclose(torch.sigmoid(torch.tensor(96.0)).expand(2))
    assert curve[:, 4].allclose(torch.full((2,), 0.5))   # left half deleted: logits tie


def test_localisation_table_and_text(world):
    _, masks = world
    table = metrics.localisation_table({"oracle": masks.float()}, masks)
    assert list(table) == ["oracle", "chance (constant map)"]
    assert table["oracle"] == {"pointing game": 1.0, "energy in mask": 1.0, "box IoU": 1.0}
    chance = masks.float().mean((1, 2)).mean().item()
    assert table["chance (constant map)"]["pointing game"] == pytest.approx(chance)
    text = metrics.format_table(table)
    assert "oracle" in text and "1.000" in text and "box IoU" in text.splitlines()[0]


@pytest.mark.parametrize("steps", [1, 5])
def test_faithfulness_scores_are_the_single_curves_computed_together(steps):
    """All methods at once (the curve ends shared) gives exactly each method's own curves."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                          nn.Flatten(), nn.Linear(16, 5)).eval()
    x = torch.randn(3, 3, 12, 12)
    target = torch.tensor([0, 3, 1])
    maps = {"a": torch.rand(3, 6, 6), "b": torch.rand(3, 12, 12), "flat": torch.ones(3, 4, 4)}
    scores, curves = metrics.faithfulness_scores(model, x, maps, target, steps=steps)
    for name, m in maps.items():
        deletion = metrics.deletion_curve(model, x, m, target, steps)
        insertion = metrics.insertion_curve(model, x, m, target, steps)
        assert torch.equal(curves[name]["deletion"], deletion.mean(0)), name
        assert torch.equal(curves[name]["insertion"], insertion.mean(0)), name
        assert torch.equal(scores[name]["deletion AUC"], metrics.auc(deletion)), name
    with pytest.raises(ValueError, match=r"2 maps for 3 images \('short'\)"):
        metrics.faithfulness_scores(model, x, {"short": torch.rand(2, 6, 6)}, target)


def test_insertion_starts_from_a_blurred_copy_by_default():
    x = torch.zeros(1, 3, 16, 16)
    x[:, :, :, 8:] = 2.0                                # a sharp edge
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, img):
            seen.append(img.clone())
            return torch.zeros(img.shape[0], 2)
    m = torch.rand(1, 16, 16)
    metrics.insertion_curve(Recorder(), x, m, 1, steps=2)
    start = seen[1][:1]        # seen[0] is the class-count probe; then the curve, step 0 first
    assert 0 < start[0, 0, 0, 7] < 2 and 0 < start[0, 0, 0, 8] < 2    # the edge is blurred
    assert torch.allclose(start, metrics._baseline(x, "blur"))
    seen.clear()
    metrics.insertion_curve(Recorder(), x, m, 1, steps=2, baseline="zeros")
    assert seen[1][0].abs().max() == 0
    seen.clear()
    metrics.deletion_curve(Recorder(), x, m, 1, steps=2)
    steps_seen = torch.cat(seen[1:])                     # however the passes were split
    assert torch.equal(steps_seen[:1], x) and steps_seen[-1].abs().max() == 0  # ends all-zero
    with pytest.raises(ValueError, match="baseline must be one of"):
        metrics.insertion_curve(Recorder(), x, m, 1, baseline="black")


def test_ssim_identities():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 12, 12, generator=g)
    assert torch.allclose(metrics.ssim(a, a), torch.ones(3), atol=1e-6)
    assert torch.allclose(metrics.ssim(a, 5 * a + 2), torch.ones(3), atol=1e-6)  # normalised first
    noise = torch.rand(3, 12, 12, generator=g)
    assert (metrics.ssim(a, noise) < 0.3).all()
    assert (metrics.ssim(a, 1 - a) < 0).all()                       # inverted structure
    with pytest.raises(ValueError, match="ssim needs"):
        metrics.ssim(a, a[0])


def test_ssim_equals_the_formula_with_a_direct_2d_window():
    """Wang et al.'s SSIM written out term by term, one 7×7 Gaussian window per statistic
    (replicate padding), on maps of two sizes: the library's separable version must agree."""
    g = torch.Generator().manual_seed(1)
    for shape in [(2, 12, 12), (3, 31, 20)]:
        a, b = torch.rand(shape, generator=g), torch.rand(shape, generator=g) ** 3
        x = torch.arange(7, dtype=torch.float64) - 3
        w = torch.exp(-x ** 2 / (2 * 1.5 ** 2))
        window = (w[:, None] * w[None, :] / w.sum() ** 2)[None, None]
        local = lambda m: torch.nn.functional.conv2d(
            torch.nn.functional.pad(m[:, None], [3] * 4, mode="replicate"), window)[:, 0]
        unit = lambda m: (m - m.amin((1, 2), keepdim=True)) / (
            m.amax((1, 2), keepdim=True) - m.amin((1, 2), keepdim=True))
        p, q = unit(a.double()), unit(b.double())
        mp, mq = local(p), local(q)
        vp, vq, cpq = local(p * p) - mp ** 2, local(q * q) - mq ** 2, local(p * q) - mp * mq
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        ref = (((2 * mp * mq + c1) * (2 * cpq + c2)) /
               ((mp ** 2 + mq ** 2 + c1) * (vp + vq + c2))).mean((1, 2))
        assert torch.allclose(metrics.ssim(a, b).double(), ref, atol=1e-6)


# ---------------------------------------------------------------------- paired comparisons

def test_mean_and_se_by_hand():
    mean, se = metrics.mean_and_se(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    # mean 3; deviations -2,-1,0,3 -> sum of squares 14, sample variance 14/3, se = sqrt(14/3)/2
    assert mean == pytest.approx(3.0)
    assert se == pytest.approx((14 / 3) ** 0.5 / 2)
    assert math.isnan(metrics.mean_and_se(torch.tensor([0.5]))[1])


def test_paired_difference_by_hand():
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([0.0, 2.0, 1.0, 1.0])
    # differences 1, 0, 2, 3: mean 1.5, deviations -.5,-1.5,.5,1.5 -> variance 5/3, se sqrt(5/3)/2
    d = metrics.paired_difference(a, b)
    assert d.difference == pytest.approx(1.5) and d.n == 4
    assert d.se == pytest.approx((5 / 3) ** 0.5 / 2)
    # Student's t for 3 degrees of freedom: 3.182 at 95 %, 0.765 at 50 % (from tables).
    assert d.critical == pytest.approx(3.182, abs=1e-3)
    assert d.interval == pytest.approx((1.5 - 3.182 * d.se, 1.5 + 3.182 * d.se), abs=1e-3)
    assert d.tied                                   # 1.5 <= 3.182 * 0.645 = 2.05
    half = metrics.paired_difference(a, b, confidence=0.5)
    assert half.critical == pytest.approx(0.765, abs=1e-3) and not half.tied
    # Two images barely show anything: the 95 % interval is 12.7 standard errors wide each way.
    assert metrics.paired_difference(torch.tensor([1.0, 0.9]), torch.tensor([0.1, 0.2])).critical \
        == pytest.approx(12.706, abs=1e-3)
    with pytest.raises(ValueError, match="confidence"):
        metrics.paired_difference(a, b, confidence=95)
    # Pairing matters: a constant offset on varied images is no tie, though the two means'
    # own standard errors overlap widely.
    base = torch.tensor([0.1, 0.9, 0.4, 0.7, 0.2])
    assert not metrics.paired_difference(base + 0.01, base + torch.tensor([0.0, 0.001, 0.0, 0.0, 0.001])).tied
    assert metrics.paired_difference(base, base).tied          # identical scores: a tie
    with pytest.raises(ValueError, match="same images"):
        metrics.paired_difference(a, b[:3])
    with pytest.raises(ValueError, match="one value per image"):
        metrics.paired_difference(torch.ones(2, 2), torch.ones(2, 2))


def test_top_tier_reports_ties_not_a_first_place():
    scores = {"a": torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]),
              "b": torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0]),          # identical to a: tied
              "c": torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 0.0])}
    assert metrics.top_tier(scores) == ["a", "b"]
    assert metrics.top_tier({"b": scores["b"], "a": scores["a"]}) == ["b", "a"]  # order-free
    assert metrics.top_tier(scores, higher_is_better=False) == ["c"]


def test_format_table_with_per_image_scores_marks_the_top_tier(world):
    _, masks = world
    scores = metrics.localisation_scores({"oracle": masks.float(), "inverse": (~masks).float()}, masks)
    assert list(scores) == ["oracle", "inverse", "chance (constant map)"]
    assert scores["oracle"]["pointing game"].shape == (masks.shape[0],)
    means = metrics.localisation_table({"oracle": masks.float(), "inverse": (~masks).float()}, masks)
    assert means["oracle"]["box IoU"] == pytest.approx(scores["oracle"]["box IoU"].mean().item())
    text = metrics.format_table(scores)
    oracle = next(line for line in text.splitlines() if line.startswith("oracle"))
    inverse = next(line for line in text.splitlines() if line.startswith("inverse"))
    assert "1.000 ± 0.000 *" in oracle and "*" not in inverse and "±" in inverse
    assert "standard error" in text.splitlines()[-1]
    # Lower is better for a deletion AUC column, read from its name.
    faith = {"m": {"deletion AUC ↓": torch.tensor([0.1, 0.2, 0.1])},
             "n": {"deletion AUC ↓": torch.tensor([0.5, 0.6, 0.7])}}
    lines = metrics.format_table(faith).splitlines()
    assert lines[1].rstrip().endswith("*") and not lines[2].rstrip().endswith("*")


def test_completeness_error_by_hand():
    # A linear model: S_c(x) = w_c · x. IG is exact at any step count, and an attribution of
    # w·x split any way over the pixels adds up; one off by 0.5 is 0.5/|gap| off.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x = torch.randn(2, 3, 2, 2)
    w = model[1].weight.detach()
    target = torch.tensor([0, 2])
    exact = x * w[target].view(2, 3, 2, 2)
    gap = (exact.flatten(1).sum(1))
    assert metrics.completeness_error(model, x, target, exact).abs().max() < 1e-5
    off = exact.clone()
    off[:, 0, 0, 0] += 0.5
    assert metrics.completeness_error(model, x, target, off) == pytest.approx((0.5 / gap.abs()).tolist(), rel=1e-4)
    from featviz_helpers import methods
    ig = methods.integrated_gradients(model, x, target, steps=3)
    assert metrics.completeness_error(model, x, target, ig).max() < 1e-5
    assert model.training is False
    with pytest.raises(ValueError, match="input's shape"):
        metrics.completeness_error(model, x, target, exact[:, 0])
