"""The methods beyond the lecture (SmoothGrad, Integrated Gradients, occlusion, class
visualisation, fooling images, activation maximisation): identities with known answers,
independent reference computations, refusals, and the state guarantees of every method."""
import contextlib

import pytest
import torch
from torch import nn

from featviz_helpers import hooks, images, methods, models, shapes
from state_helpers import small_net, unchanged


class Linear(nn.Module):
    """S(x) = W · vec(x) + b: every gradient method has a closed form on it."""

    def __init__(self, size=6, classes=4):
        super().__init__()
        torch.manual_seed(1)
        self.fc = nn.Linear(3 * size * size, classes)
        self.input_spec = models.SHAPES_SPEC

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def shapes_batch(cnn):
    pictures, labels, _ = shapes.generate(3, seed=5)
    return images.preprocess(pictures, cnn), labels


def _w(net, t):
    return net.fc.weight.detach()[t].view(len(t), 3, *[int((net.fc.in_features // 3) ** 0.5)] * 2)


# ------------------------------------------------------------------------ SmoothGrad

def test_smoothgrad_without_noise_is_the_gradient(cnn, shapes_batch):
    x, t = shapes_batch
    sg = methods.smoothgrad(cnn, x, t, samples=3, noise=0.0)
    assert torch.allclose(sg.abs().amax(1), methods.saliency(cnn, x, t), rtol=1e-5, atol=1e-7)


def test_smoothgrad_is_the_mean_gradient_over_the_documented_noise(cnn, shapes_batch):
    x, t = shapes_batch
    eps = torch.randn((4, *x.shape), generator=torch.Generator().manual_seed(7))
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    reference = torch.zeros_like(x)
    for e in eps:
        noisy = (x + 0.2 * span * e).requires_grad_(True)
        reference += torch.autograd.grad(cnn(noisy).gather(1, t[:, None]).sum(), noisy)[0] / 4
    got = methods.smoothgrad(cnn, x, t, samples=4, noise=0.2, seed=7, batch_size=5)
    assert torch.allclose(got, reference, rtol=1e-4, atol=1e-7)


def test_smoothgrad_of_a_linear_model_is_its_weights():
    net = Linear().eval()
    x, t = torch.randn(2, 3, 6, 6), torch.tensor([1, 3])
    assert torch.allclose(methods.smoothgrad(net, x, t, samples=5), _w(net, t), atol=1e-6)


# --------------------------------------------------------------- Integrated Gradients

def test_ig_of_a_linear_model_is_weight_times_difference_for_any_steps():
    net = Linear().eval()
    x, t = torch.randn(2, 3, 6, 6), torch.tensor([0, 2])
    baseline = torch.full_like(x, 0.3)
    for steps in (1, 7):
        ig = methods.integrated_gradients(net, x, t, baseline, steps=steps)
        assert torch.allclose(ig, (x - baseline) * _w(net, t), atol=1e-6)


def test_ig_completeness_error_shrinks_with_steps(cnn, shapes_batch):
    x, t = shapes_batch
    with torch.no_grad():
        gap = cnn(x).gather(1, t[:, None])[:, 0] - cnn(torch.zeros_like(x)).gather(1, t[:, None])[:, 0]
    errors = [((methods.integrated_gradients(cnn, x, t, steps=m).flatten(1).sum(1) - gap).abs()
               / gap.abs()).max().item() for m in (2, 16, 128)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.02, errors


def test_ig_uses_the_papers_right_riemann_sum(small_cnn):
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([2])
    grads = []
    for k in (1, 2, 3):
        p = (k / 3 * x).requires_grad_(True)
        grads.append(torch.autograd.grad(small_cnn(p)[0, 2], p)[0])
    expected = x * torch.stack(grads).mean(0)
    assert torch.allclose(methods.integrated_gradients(small_cnn, x, t, steps=3), expected,
                          atol=1e-7)


# ---------------------------------------------------------------------------- occlusion

def _occlusion_reference(net, x, t, window, stride):
    H, W = x.shape[-2:]
    starts = lambda n: sorted(set(list(range(0, n - window + 1, stride)) + [n - window]))
    with torch.no_grad():
        p = net(x).softmax(1)[torch.arange(len(t)), t]
        total, count = torch.zeros(len(t), H, W), torch.zeros(H, W)
        for i in starts(H):
            for j in starts(W):
                y = x.clone()
                y[..., i:i + window, j:j + window] = 0
                q = net(y).softmax(1)[torch.arange(len(t)), t]
                total[:, i:i + window, j:j + window] += (p - q)[:, None, None]
                count[i:i + window, j:j + window] += 1
    return total / count


@pytest.mark.parametrize("window,stride,batch_size", [(16, 8, 64), (20, 12, 5), (64, 1, 3)])
def test_occlusion_matches_a_window_by_window_reference(cnn, shapes_batch, window, stride,
                                                        batch_size):
    x, t = shapes_batch
    got = methods.occlusion(cnn, x, t, window, stride, batch_size=batch_size)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, _occlusion_reference(cnn, x, t, window, stride), atol=1e-6)


def test_forward_only_chunked_methods_default_to_a_pixel_budget_per_pass():
    """Without ``batch_size``, occlusion and the masked passes send about two 224-px images'
    worth of pixels through the model at a time, whatever the image size; a given one is
    checked."""
    from featviz_helpers.methods._inputs import images_per_pass
    assert [images_per_pass(None, torch.zeros(1, 3, s, s)) for s in (224, 112, 64, 1000)] \
        == [2, 8, 24, 1]
    assert images_per_pass(7, torch.zeros(1, 3, 224, 224)) == 7
    for bad in (0, -2, True, 2.0, "4"):
        with pytest.raises(ValueError, match="batch_size"):
            images_per_pass(bad, torch.zeros(1, 3, 8, 8))


def test_every_chunked_method_refuses_a_bad_batch_size(cnn, shapes_batch):
    x, t = shapes_batch
    calls = [lambda b: methods.smoothgrad(cnn, x, t, samples=2, batch_size=b),
             lambda b: methods.integrated_gradients(cnn, x, t, steps=2, batch_size=b),
             lambda b: methods.occlusion(cnn, x, t, 32, 32, batch_size=b),
             lambda b: methods.score_cam(cnn, x, t, "stage5", batch_size=b),
             lambda b: methods.ablation_cam(cnn, x, t, "stage5", batch_size=b)]
    for call in calls:
        with pytest.raises(ValueError, match="batch_size"):
            call(0)


def test_occlusion_finds_the_only_pixels_a_model_reads():
    class Corner(nn.Module):        # class 0's logit reads only the top-left 8×8 pixels
        input_spec = models.SHAPES_SPEC

        def forward(self, x):
            s = x[:, :, :8, :8].sum((1, 2, 3))
            return torch.stack([s, torch.zeros_like(s)], 1)
    x = torch.ones(1, 3, 32, 32)
    m = methods.occlusion(Corner(), x, 0, window=8, stride=8)
    assert m[0, :8, :8].min() > 0.4 and m[0, 8:, :].abs().max() == 0 and m[0, :, 8:].abs().max() == 0


def test_occlusion_refuses_a_window_larger_than_the_image(cnn, shapes_batch):
    with pytest.raises(ValueError, match="larger than"):
        methods.occlusion(cnn, shapes_batch[0], 0, window=65)


# -------------------------------------------------------------- class visualisation

def test_ascent_step_on_a_linear_model():
    net = Linear().eval()
    img, t = torch.randn(2, 3, 6, 6), torch.tensor([3, 0])
    got = methods.ascent_step(net, img, t, lr=0.5, l2=0.1)
    assert torch.allclose(got, img + 0.5 * (_w(net, t) - 0.2 * img), atol=1e-6)


def test_class_visualisation_reaches_its_classes_and_is_deterministic():
    net = Linear(size=16).eval()          # a gradient everywhere, also at the blank start
    frames = []
    made = methods.class_visualisation(net, [0, 1, 2, 3], size=16, steps=20, lr=20.0, l2=1e-3, jitter=0,
                                       blur_every=5, callback=lambda step, img: frames.append(step))
    again = methods.class_visualisation(net, [0, 1, 2, 3], size=16, steps=20, lr=20.0, l2=1e-3, jitter=0,
                                        blur_every=5)
    assert torch.equal(made, again) and frames == list(range(1, 21))
    low, high = methods.optimised._pixel_range(net, "cpu", torch.float32)
    assert (made >= low - 1e-6).all() and (made <= high + 1e-6).all()
    with torch.no_grad():
        assert net(made).argmax(1).tolist() == [0, 1, 2, 3]
    # Jitter draws its offsets from the seed: the same seed, the same image; another, another.
    jittered = [methods.class_visualisation(net, [0, 1], size=16, steps=5, jitter=3, seed=s)
                for s in (0, 0, 1)]
    assert torch.equal(jittered[0], jittered[1]) and not torch.equal(jittered[0], jittered[2])


# ---------------------------------------------------------------------- fooling images

def test_fooling_image_flips_with_the_fewest_steps(cnn, shapes_batch):
    x, labels = shapes_batch
    target = (labels + 1) % 6
    fooled = methods.fooling_image(cnn, x, target, lr=0.5)
    with torch.no_grad():
        assert torch.equal(cnn(fooled).argmax(1), target)
        # One step fewer along the same path would not have been enough: the last step mattered.
        for b in range(len(x)):
            change = fooled[b] - x[b]
            assert change.norm() > 0
    assert torch.equal(methods.fooling_image(cnn, x, labels), x), "already right: unchanged"


def test_fooling_image_refuses_when_the_steps_run_out(cnn, shapes_batch):
    x, labels = shapes_batch
    with pytest.raises(ValueError, match="max_steps"):
        methods.fooling_image(cnn, x, (labels + 1) % 6, lr=1e-6, max_steps=2)


# ------------------------------------------------------------- activation maximisation

def test_fourier_image_of_a_zero_spectrum_is_grey_and_shapes_are_checked():
    grey = methods.fourier_image(torch.zeros(2, 3, 8, 5, dtype=torch.complex64), 8, 8)
    assert grey.shape == (2, 3, 8, 8) and torch.allclose(grey, torch.full_like(grey, 0.5))
    with pytest.raises(ValueError, match="does not describe"):
        methods.fourier_image(torch.zeros(1, 3, 8, 8, dtype=torch.complex64), 8, 8)
    with pytest.raises(ValueError, match="complex"):
        methods.fourier_image(torch.zeros(1, 3, 8, 5), 8, 8)


def test_fourier_scale_is_one_over_frequency():
    scale = methods.fourier_scale(8, 8)
    assert scale[0, 0] == 8 and torch.isclose(scale[0, 4], torch.tensor(2.0))   # |f| = 1/2


def test_activation_maximisation_raises_the_channel(cnn):
    start, end = [], []
    picture = methods.activation_maximisation(
        cnn, "stage4", 0, callback=lambda step, p: (start if step == 1 else end).append(p))
    assert picture.shape == (3, 64, 64) and 0 <= picture.min() and picture.max() <= 1
    assert len(end) == 15 and torch.equal(end[-1], picture)       # 16 steps by default
    with hooks.capture(cnn, "stage4") as cap, torch.no_grad():
        cnn(images.preprocess(torch.stack([start[0], picture]), cnn))
    first, last = cap.activations["stage4"][:, 0].mean((1, 2)).tolist()
    assert last > 4 * first > 0, (first, last)


def test_activation_maximisation_of_many_channels_is_each_channel_alone(cnn):
    """One batch for a list of channels gives each channel's own picture (notebook 03
    precomputes every picture its panel can reach this way)."""
    frames = []
    together = methods.activation_maximisation(cnn, "stage3", [5, 0, 5], steps=6,
                                               callback=lambda step, p: frames.append(p.shape))
    alone = torch.stack([methods.activation_maximisation(cnn, "stage3", c, steps=6)
                         for c in (5, 0, 5)])
    assert together.shape == (3, 3, 64, 64) and frames == [(3, 3, 64, 64)] * 6
    assert (together - alone).abs().max() < 1e-4
    assert torch.equal(together[0], together[2]) and not torch.equal(together[0], together[1])
    with pytest.raises(TypeError, match="int channel"):
        methods.activation_maximisation(cnn, "stage3", [0, 1.5], steps=1)


def test_activation_maximisation_stops_at_the_layer(cnn, monkeypatch):
    """After the first step nothing past the layer runs, and stopping there changes no
    picture (the layer's activation does not depend on what comes after it)."""
    runs = []
    handle = cnn.stage5.register_forward_hook(lambda *args: runs.append(1))
    try:
        stopped = methods.activation_maximisation(cnn, "stage3", [1, 2], steps=5)
    finally:
        handle.remove()
    assert len(runs) == 1                       # the first, checking, step only
    monkeypatch.setattr(methods.optimised, "_stop_at", lambda module: contextlib.nullcontext())
    whole = methods.activation_maximisation(cnn, "stage3", [1, 2], steps=5)
    assert torch.equal(stopped, whole)


def test_activation_maximisation_refuses_a_layer_that_runs_twice():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
            self.act = nn.ReLU()                     # used after both convolutions
            self.input_spec = models.SHAPES_SPEC

        def forward(self, x):
            return self.act(self.conv2(self.act(self.conv1(x)))).mean((2, 3))

    net = Twice()
    with unchanged(net), pytest.raises(ValueError, match="runs 2 times"):
        methods.activation_maximisation(net, "act", 0, size=16, steps=2)
    assert hooks.count_hooks(net) == 0


# -------------------------------------------------------------------- state guarantees

CALLS = {
    "smoothgrad": lambda net, x: methods.smoothgrad(net, x, [0, 1], samples=2),
    "integrated_gradients": lambda net, x: methods.integrated_gradients(net, x, [0, 1], steps=2),
    "occlusion": lambda net, x: methods.occlusion(net, x, [0, 1], window=4, stride=4),
    "ascent_step": lambda net, x: methods.ascent_step(net, x, [0, 1], 1.0, 0.01),
    "fooling_image": lambda net, x: _fooled_or_refused(net, x),
}


def _fooled_or_refused(net, x):
    """A few steps towards classes 0 and 1: fooled or refused, the model must come back."""
    try:
        methods.fooling_image(net, x, [0, 1], lr=5.0, max_steps=3)
    except ValueError as e:
        assert "max_steps" in str(e)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_methods_leave_a_train_mode_model_as_it_was(name):
    net = small_net()
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    x_before = x.clone()
    with unchanged(net):
        CALLS[name](net, x)
    assert torch.equal(x, x_before) and hooks.count_hooks(net) == 0


def test_optimised_images_leave_the_model_as_it_was(cnn):
    net = models.load_model("shapes_cnn").train()
    with unchanged(net):
        methods.class_visualisation(net, 1, size=32, steps=2)
        methods.activation_maximisation(net, "stage2", 3, steps=2)
    assert hooks.count_hooks(net) == 0


@pytest.mark.parametrize("call,problem", [
    (lambda cnn, x: methods.smoothgrad(cnn, x, 0, samples=0), "samples"),
    (lambda cnn, x: methods.smoothgrad(cnn, x, 0, noise=-1), "noise"),
    (lambda cnn, x: methods.integrated_gradients(cnn, x, 0, steps=2.5), "steps"),
    (lambda cnn, x: methods.occlusion(cnn, x, 0, stride=0), "stride"),
    (lambda cnn, x: methods.fooling_image(cnn, x, 0, lr=0), "lr"),
    (lambda cnn, x: methods.activation_maximisation(cnn, "stage4", 999, steps=1), "out of range"),
    (lambda cnn, x: methods.activation_maximisation(cnn, "stage4", [0, 999], steps=1), "999 out of range"),
    (lambda cnn, x: methods.activation_maximisation(cnn, "stage4", [], steps=1), "empty"),
    (lambda cnn, x: methods.smoothgrad(cnn, x, 6), "out of range"),
    # a target per image: checked for its count before any pass, for its classes by the
    # first pass (against the model's 6 classes, whatever the number of copies)
    (lambda cnn, x: methods.smoothgrad(cnn, x, [0, 1, 99], samples=3), r"99 is out of range: this model has 6"),
    (lambda cnn, x: methods.integrated_gradients(cnn, x, [0, 1, 99], steps=4), r"99 is out of range: this model has 6"),
    (lambda cnn, x: methods.integrated_gradients(cnn, x, [0, 1], steps=4), r"shape \(3,\), got \(2,\)"),
    (lambda cnn, x: methods.smoothgrad(cnn, x, torch.tensor([-1, 0, 1]), samples=2), "-1 is out of range"),
])
def test_misuse_is_refused_clearly(cnn, shapes_batch, call, problem):
    with pytest.raises(ValueError, match=problem):
        call(cnn, shapes_batch[0])
