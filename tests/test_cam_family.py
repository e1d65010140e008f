"""The CAM variants (Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM, Ablation-CAM,
EigenCAM), each against an identity or a hand-computed case from its paper.

Most identities use a GAP → linear head at its last conv layer (shapes_cnn's ``stage5``):
there S_c = b_c + Σ_k w_k^c mean(A_k), so ∂S_c/∂A_kij = w_k^c / Z at every position, and
each variant's weights have a closed form in w, Z and the activations. The others build a
case by hand: Score-CAM's masked inputs one by one, EigenCAM on rank-one activations.
"""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from featviz_helpers import images, methods, shapes

VARIANTS = {
    "Grad-CAM++": methods.grad_cam_plus_plus,
    "XGrad-CAM": methods.xgrad_cam,
    "HiResCAM": methods.hires_cam,
    "LayerCAM": methods.layer_cam,
    "Score-CAM": methods.score_cam,
    "Ablation-CAM": methods.ablation_cam,
    "EigenCAM": methods.eigen_cam,
}


@pytest.fixture(scope="module")
def shapes_batch(cnn):
    pictures, labels, _ = shapes.generate(6, seed=11)[:3]
    return images.preprocess(pictures, cnn), labels


@pytest.fixture(scope="module")
def head_terms(cnn, shapes_batch):
    """At stage5: activations A (B,K,h,w), each image's target weights w (B,K), Z, and the
    target logits y (B,), all from one forward pass."""
    x, t = shapes_batch
    A, _ = methods.layer_activations_and_gradients(cnn, x, t, "stage5")
    with torch.no_grad():
        y = cnn(x).gather(1, t[:, None])[:, 0]
    return A, cnn.fc.weight[t].detach(), A.shape[2] * A.shape[3], y


def close(a, b, tol=1e-5):
    return torch.allclose(a, b, rtol=tol, atol=tol * b.abs().max().item())


def test_hires_cam_is_relu_cam_over_z_at_a_gap_linear_head(cnn, shapes_batch, head_terms):
    x, t = shapes_batch
    A, w, Z, _ = head_terms
    expected = methods.cam(cnn, x, t).clamp_min(0) / Z
    assert close(methods.hires_cam(cnn, x, t, "stage5"), expected)


def test_xgrad_cam_weights_equal_grad_cams_when_the_gradient_is_constant(cnn, shapes_batch):
    """With ∂S_c/∂A_k = w_k/Z at every position, Σ_ij (A_kij/Σ A_k) w_k/Z = w_k/Z: Grad-CAM's
    weight, so the two maps are the same."""
    x, t = shapes_batch
    assert close(methods.xgrad_cam(cnn, x, t, "stage5"), methods.grad_cam(cnn, x, t, "stage5"))


def test_xgrad_cam_gives_a_silent_channel_weight_zero():
    """A channel that is 0 everywhere has Σ A = 0: its weight is 0, not 0/0."""
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 3))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.copy_(torch.tensor([-1.0, 0.5]))        # channel 0 never fires
    out = methods.xgrad_cam(net.eval(), torch.randn(2, 3, 4, 4), torch.tensor([0, 2]), "1")
    assert torch.isfinite(out).all()


def test_grad_cam_plus_plus_with_a_constant_gradient_is_its_closed_form(cnn, shapes_batch,
                                                                        head_terms):
    """g = c_k = w_k/Z everywhere: α = c²/(2c² + S_k c³) = 1/(2 + S_k c) with S_k = Σ_ij A_kij,
    so w_k = Z · ReLU(c_k) / (2 + S_k c_k) (Chattopadhyay et al. 2018, eq. 19)."""
    x, t = shapes_batch
    A, w, Z, _ = head_terms
    c, S = w / Z, A.sum((2, 3))
    weights = torch.where(c > 0, Z * c / (2 + S * c), 0)
    expected = torch.einsum("bk,bkhw->bhw", weights, A).clamp_min(0)
    assert close(methods.grad_cam_plus_plus(cnn, x, t, "stage5"), expected)


def test_grad_cam_plus_plus_on_a_hand_computed_map():
    """One channel, a 1×2 map A = (1, 3) and S = A_0·2 + A_1·1 (a linear layer over the two
    positions): g = (2, 1), Σ A = 4; α = g²/(2g² + 4g³) = (4/40, 1/6); w = α·g summed =
    0.2 + 1/6; the map is w·A = (11/30, 33/30)."""

    class TwoPositions(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Identity()

        def forward(self, x):
            a = self.features(x[:, :1, :1, :2] * 0 + torch.tensor([1.0, 3.0]))   # (B,1,1,2)
            score = 2 * a[..., 0] + a[..., 1]                                      # (B,1,1)
            return torch.cat([score.flatten(1), -score.flatten(1)], 1)

    out = methods.grad_cam_plus_plus(TwoPositions(), torch.zeros(1, 3, 2, 2), 0, "features")
    assert torch.allclose(out, torch.tensor([[[11 / 30, 33 / 30]]]))


def test_layer_cam_keeps_only_positive_weights_at_a_gap_linear_head(cnn, shapes_batch,
                                                                   head_terms):
    x, t = shapes_batch
    A, w, Z, _ = head_terms
    expected = torch.einsum("bk,bkhw->bhw", (w / Z).clamp_min(0), A).clamp_min(0)
    assert close(methods.layer_cam(cnn, x, t, "stage5"), expected)


def test_ablation_cam_weights_at_a_gap_linear_head(cnn, shapes_batch, head_terms):
    """Zeroing channel k lowers the logit by w_k · mean(A_k), so (y − y^k)/y =
    w_k mean(A_k)/y (Desai & Ramaswamy 2020, eq. 2)."""
    x, t = shapes_batch
    A, w, Z, y = head_terms
    weights = w * A.mean((2, 3)) / y[:, None]
    expected = torch.einsum("bk,bkhw->bhw", weights, A).clamp_min(0)
    assert close(methods.ablation_cam(cnn, x, t, "stage5"), expected, tol=1e-4)


def test_ablation_cam_divides_by_the_size_of_a_negative_logit(cnn, shapes_batch, head_terms):
    """For a class the model rejects (a negative logit) the paper's (y − y^k)/y would flip
    every weight; dividing by |y| keeps 'the drop this channel accounts for'."""
    x, _ = shapes_batch
    with torch.no_grad():
        logits = cnn(x)
    rejected = logits.argmin(1)                                        # a negative logit each
    assert (logits.gather(1, rejected[:, None]) < 0).all()
    A, _ = methods.layer_activations_and_gradients(cnn, x, rejected, "stage5")
    y = logits.gather(1, rejected[:, None])[:, 0]
    weights = cnn.fc.weight[rejected].detach() * A.mean((2, 3)) / y.abs()[:, None]
    expected = torch.einsum("bk,bkhw->bhw", weights, A).clamp_min(0)
    assert close(methods.ablation_cam(cnn, x, rejected, "stage5"), expected, tol=1e-4)


def test_ablation_cam_refuses_a_logit_too_close_to_zero():
    net = nn.Sequential(nn.Conv2d(3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 2))
    with torch.no_grad():
        net[4].weight.copy_(torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
        net[4].bias.copy_(torch.tensor([1e-40, 0.0]))
        net[0].weight.zero_()                   # two equal channels, 1 everywhere: the logit of
        net[0].bias.fill_(1.0)                  # class 0 is 1e-40, either ablation moves it by 1
    with pytest.raises(ValueError, match="too close"):
        methods.ablation_cam(net.eval(), torch.randn(2, 3, 8, 8), 0, "1")


def test_float_masks_are_fractions_in_zero_one(cnn, shapes_batch):
    x, t = shapes_batch
    soft = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(methods.masked_logits(cnn, x[:2], soft.double(), t[:2]),
                       methods.masked_logits(cnn, x[:2], soft, t[:2]))       # cast to x's dtype
    for bad, match in [(soft * 255, "outside"), ((soft * 255).to(torch.uint8), "divide by 255")]:
        with pytest.raises(ValueError, match=match):
            methods.masked_logits(cnn, x[:2], bad, t[:2])


def test_score_cam_weighs_each_channel_by_its_masked_input(cnn, shapes_batch):
    """The masks are the upsampled, min–max normalised activations; each channel's weight is
    the softmax over channels of the target's logit on x ⊙ H_k (Wang et al. 2020, Algorithm
    1); here each masked input goes through the model alone, one at a time."""
    x, t = shapes_batch
    x, t = x[:2], t[:2]
    A, _ = methods.layer_activations_and_gradients(cnn, x, t, "stage5")
    expected = []
    with torch.no_grad():
        for b in range(2):
            logits = []
            for k in range(A.shape[1]):
                up = F.interpolate(A[b:b + 1, k:k + 1], size=x.shape[-2:], mode="bilinear",
                                   align_corners=False)[0, 0]
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
                logits.append(cnn(x[b:b + 1] * mask)[0, t[b]])
            weights = torch.stack(logits).softmax(0)
            expected.append((weights[:, None, None] * A[b]).sum(0).clamp_min(0))
    assert close(methods.score_cam(cnn, x, t, "stage5"), torch.stack(expected), tol=1e-4)


class FixedFeatures(nn.Module):
    """A 'layer' whose activations are a given tensor (K,h,w) for every image, then GAP → FC."""

    def __init__(self, activations):
        super().__init__()
        self.register_buffer("value", activations)
        self.features = nn.Identity()
        self.fc = nn.Linear(activations.shape[0], 4)

    def forward(self, x):
        a = self.features(self.value.expand(x.shape[0], -1, -1, -1) + 0 * x.mean())
        return self.fc(a.mean((2, 3)))


def test_eigen_cam_of_rank_one_activations_is_the_centred_spatial_pattern():
    """A_kij = u_k s_ij: centred over positions, O = (s − s̄) uᵀ, whose first right singular
    vector is u/|u| (sign chosen so Σ_k v_k ≥ 0): the map is ReLU((s − s̄)·|u|)."""
    u = torch.tensor([1.0, 2.0, 0.5])
    s = torch.tensor([[0.0, 1.0, 4.0], [2.0, 0.0, 1.0]])
    net = FixedFeatures(u[:, None, None] * s).eval()
    x = torch.zeros(2, 3, 2, 3)
    expected = ((s - s.mean()) * u.norm()).clamp_min(0)
    out = methods.eigen_cam(net, x, torch.tensor([0, 3]), "features")
    assert torch.allclose(out, expected.expand(2, -1, -1), atol=1e-5)


@pytest.mark.parametrize("channels,side", [(3, 4), (8, 2)])   # more positions; more channels
def test_eigen_cam_is_the_projection_on_the_first_right_singular_vector(channels, side):
    """Both of its routes (the K×K and the positions × positions eigenproblem) give the
    projection of the centred activations on their first right singular vector, signed so
    that Σ_k v_k ≥ 0."""
    activations = torch.randn(channels, side, side, generator=torch.Generator().manual_seed(4))
    net = FixedFeatures(activations).eval()
    o = activations.flatten(1).T.double()
    o = o - o.mean(0)
    v = torch.linalg.svd(o, full_matrices=False).Vh[0]
    v = -v if v.sum() < 0 else v
    expected = (o @ v).view(side, side).clamp_min(0).float()
    out = methods.eigen_cam(net, torch.zeros(1, 3, 4, 4), 0, "features")
    assert torch.allclose(out[0], expected, atol=1e-5)


def test_eigen_cam_refuses_activations_that_are_not_finite():
    activations = torch.ones(3, 2, 2)
    activations[1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN or infinite"):
        methods.eigen_cam(FixedFeatures(activations).eval(), torch.zeros(1, 3, 2, 2), 0, "features")


def test_eigen_cam_ignores_the_target(cnn, shapes_batch):
    x, t = shapes_batch
    assert torch.equal(methods.eigen_cam(cnn, x, t, "stage4"),
                       methods.eigen_cam(cnn, x, (t + 1) % 6, "stage4"))


@pytest.mark.parametrize("name", VARIANTS)
def test_a_batch_with_mixed_targets_equals_one_image_at_a_time(cnn, shapes_batch, name):
    x, t = shapes_batch
    x, t = x[:3], torch.tensor([0, 5, 2])
    fn = VARIANTS[name]
    together = fn(cnn, x, t, "stage4")
    alone = torch.cat([fn(cnn, x[i:i + 1], t[i:i + 1], "stage4") for i in range(3)])
    assert together.shape == (3, 16, 16)
    assert close(together, alone, tol=1e-4)


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_refuses_a_layer_without_a_feature_map(small_cnn, name):
    with pytest.raises(ValueError, match="feature map"):
        VARIANTS[name](small_cnn, torch.randn(1, 3, 8, 8), 1, "6")     # the Linear layer


@pytest.mark.parametrize("name", ["Score-CAM", "Ablation-CAM"])
def test_the_batched_perturbation_variants_do_not_depend_on_batch_size(cnn, shapes_batch, name):
    """Passes smaller than the batch split the images too (2 of 3 images, then 1)."""
    x, t = shapes_batch
    fn = VARIANTS[name]
    whole = fn(cnn, x[:3], t[:3], "stage5", batch_size=64)
    for batch_size in (1, 2):
        assert close(fn(cnn, x[:3], t[:3], "stage5", batch_size=batch_size), whole, tol=1e-4)
