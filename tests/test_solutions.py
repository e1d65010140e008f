"""Every exercise's own solution (the source notebook's solution cell) passes its visible and
its hidden check at 1 and at 2 threads, and so does the same solution batched another way
(SmoothGrad, Integrated Gradients, occlusion); known-wrong versions still fail, so the checks
do not accept everything."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from featviz_helpers import checks, hooks, images, methods, models, shapes
from notebook_cells import solution_cells

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"

# What the notebooks' first code cells import (the solutions use some of these names).
PRELUDE = """
import copy
import itertools
import time
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from featviz_helpers import models, images, methods, hooks, relu_rules, metrics, viz, checks, shapes
"""


def solutions(notebook: str, *grade_ids: str) -> dict:
    """The namespace the notebook's solution cells ``grade_ids`` define, run in order."""
    cells = solution_cells(NOTEBOOKS / notebook)
    namespace: dict = {}
    exec(PRELUDE, namespace)
    for grade_id in grade_ids:
        exec(compile(cells[grade_id], f"{notebook}:{grade_id}", "exec"), namespace)
    return namespace


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def photos(lite0):
    """Notebook 02's six photos shrunk to 112 px (its `small`), their top-5 classes."""
    names = ["chelsea", "coffee", "camera", "grace_hopper", "rocket", "cat_and_coffee"]
    batch = images.preprocess([images.load_image(n) for n in names], lite0)
    small = torch.nn.functional.interpolate(batch, size=(112, 112), mode="bilinear",
                                            align_corners=False)
    with torch.no_grad():
        top5 = lite0(small).topk(5, dim=1).indices
    return small, top5


@pytest.fixture(scope="module")
def shapes_data(cnn):
    sh_images, sh_labels, _ = shapes.generate(8, seed=77)
    return images.preprocess(sh_images, cnn), torch.as_tensor(sh_labels)


@pytest.fixture(scope="module")
def vit_data():
    vit = models.load_model("shapes_vit")
    sh_images, _, _ = shapes.generate(8, seed=99)
    return vit, images.preprocess(sh_images, vit)


def fails(check, *args, match: str = ""):
    with pytest.raises(checks.CheckError, match=match):
        check(*args)


# ------------------------------------------------------------------------------ notebook 01

def test_01_filters(threads):
    ns = solutions("01_first_layer_filters.ipynb", "normalize-filters-impl", "filter-response-impl")
    checks.check_normalize_filters(ns["normalize_filters"])
    checks.hidden_check_normalize_filters(ns["normalize_filters"])
    checks.check_filter_response(ns["filter_response"])
    checks.hidden_check_filter_response(ns["filter_response"])


# ------------------------------------------------------------------------------ notebook 02

def test_02_saliency(threads, lite0, photos):
    small, top5 = photos
    fn = solutions("02_saliency.ipynb", "saliency-impl")["my_saliency"]
    checks.check_saliency(fn, lite0, small[:3], top5[:3, 0])
    checks.hidden_check_saliency(fn, lite0, small)

    def one_at_a_time(model, x, target):
        return torch.cat([fn(model, x[i:i + 1], target[i:i + 1]) for i in range(len(x))])
    checks.check_saliency(one_at_a_time, lite0, small[:3], top5[:3, 0])


def mean_gradient_in_one_batch(model, points, target):
    """Exercise-style code (no library copy): ∂S_target/∂input at every point (K,B,C,H,W) in
    one eval-mode batch, averaged over the K points: (B,C,H,W)."""
    was_training = model.training
    model.eval()
    try:
        k = points.shape[0]
        flat = points.flatten(0, 1).detach().requires_grad_(True)
        scores = model(flat).gather(1, target.repeat(k).view(-1, 1))
        (grad,) = torch.autograd.grad(scores.sum(), flat)
        return grad.view(points.shape).mean(0)
    finally:
        model.train(was_training)


def smoothgrad_in_one_batch(model, x, target, samples, noise, seed):
    """The notebook's SmoothGrad with every noisy copy of every image in one batch."""
    eps = torch.randn((samples, *x.shape), generator=torch.Generator().manual_seed(seed))
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(1, -1, 1, 1, 1)
    return mean_gradient_in_one_batch(model, x[None] + noise * span * eps, target)


def test_02_smoothgrad(threads, lite0, photos):
    small, top5 = photos
    fn = solutions("02_saliency.ipynb", "smoothgrad-impl")["my_smoothgrad"]
    checks.check_smoothgrad(fn, lite0, small[:2], top5[:2, 0])
    checks.hidden_check_smoothgrad(fn, lite0, small)
    checks.check_smoothgrad(smoothgrad_in_one_batch, lite0, small[:2], top5[:2, 0])
    if threads == 1:            # the hidden cases of the other batching once (they are slow)
        checks.hidden_check_smoothgrad(smoothgrad_in_one_batch, lite0, small)
    fails(checks.check_smoothgrad, lambda *a: fn(*a) * a[3], lite0, small[:2], top5[:2, 0],
          match="summed over the samples")


def ig_in_one_batch(model, x, target, baseline, steps):
    """The notebook's Integrated Gradients with every point of the path in one batch."""
    alphas = torch.arange(1, steps + 1, dtype=x.dtype).view(-1, 1, 1, 1, 1) / steps
    path = baseline[None] + alphas * (x - baseline)[None]
    return (x - baseline) * mean_gradient_in_one_batch(model, path, target)


def test_02_integrated_gradients(threads, lite0, photos):
    small, top5 = photos
    fn = solutions("02_saliency.ipynb", "integrated-gradients-impl")["my_integrated_gradients"]
    checks.check_integrated_gradients(fn, lite0, small[:2], top5[:2, 0])
    checks.hidden_check_integrated_gradients(fn, lite0, small)
    checks.check_integrated_gradients(ig_in_one_batch, lite0, small[:2], top5[:2, 0])
    if threads == 1:
        checks.hidden_check_integrated_gradients(ig_in_one_batch, lite0, small)
    fails(checks.check_integrated_gradients, lambda m, x, t, b, s: fn(m, x, t, b, s) * s,
          lite0, small[:2], top5[:2, 0], match="summed the gradients")


def test_02_ascent_step(threads, lite0, photos):
    small, _ = photos
    fn = solutions("02_saliency.ipynb", "ascent-step-impl")["my_ascent_step"]
    classes = torch.tensor([lite0.class_names.index(n) for n in ("goldfish", "flamingo")])
    checks.check_ascent_step(fn, lite0, small[:2], classes)
    checks.hidden_check_ascent_step(fn, lite0, small)


def fooling(model, x, target, lr, max_steps, eval_mode=True, late=False, early=False,
            limit=0):
    """The notebook's fooling image, or a version that never sets eval mode, takes one step
    too many or stops one step early, or gets the limit wrong by ``limit`` steps."""
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        x = x.detach().clone()
        previous = x
        for _ in range(max_steps + 1 + limit):
            with torch.no_grad():
                if model(x).argmax(1).item() == target.item():
                    if late and _ > 0:
                        late = False
                    else:
                        return previous if early else x
            x.requires_grad_(True)
            (grad,) = torch.autograd.grad(model(x)[0, target.item()], x)
            previous = x.detach()
            x = (x + lr * grad / grad.norm()).detach()
        raise RuntimeError(f"not fooled after {max_steps} steps")
    finally:
        model.train(was_training)


def test_02_fooling_image(threads, lite0, photos):
    small, _ = photos
    fn = solutions("02_saliency.ipynb", "fooling-image-impl")["my_fooling_image"]
    goldfish = torch.tensor([lite0.class_names.index("goldfish")])
    checks.check_fooling_image(fn, lite0, small[:1], goldfish, lr=0.25)
    checks.hidden_check_fooling_image(fn, lite0, small)
    checks.check_fooling_image(fooling, lite0, small[:1], goldfish, lr=0.25)


@pytest.mark.parametrize("wrong, visible, message", [
    (dict(eval_mode=False), False, "train mode|mode|buffers"),
    (dict(late=True), True, "one step too many"),
    (dict(early=True), True, "stopped after"),
    (dict(limit=-1), False, "raised"),
    (dict(limit=1), False, "should have raised"),
])
def test_02_fooling_image_refuses_the_wrong_stopping_rules(one_thread, lite0, photos, wrong,
                                                           visible, message):
    small, _ = photos
    version = lambda *args: fooling(*args, **wrong)   # noqa: E731
    goldfish = torch.tensor([lite0.class_names.index("goldfish")])
    if visible:
        fails(checks.check_fooling_image, version, lite0, small[:1], goldfish, 0.25,
              match=message)
    fails(checks.hidden_check_fooling_image, version, lite0, small, match=message)


# ------------------------------------------------------------------------------ notebook 03

def test_03_relu_rules_and_guided_backprop(threads, lite0, photos):
    small, top5 = photos
    ns = solutions("03_guided_backprop.ipynb", "relu-rules-impl", "guided-backprop-impl")
    checks.check_relu_rules(ns["relu_backward"])
    checks.hidden_check_relu_rules(ns["relu_backward"])
    fn = ns["my_guided_backprop"]
    checks.check_guided_backprop(fn, lite0, small[:2], top5[:2, 0])
    resnet = models.load_model("resnet18", pretrained=False)
    checks.check_guided_backprop(fn, resnet, torch.randn(2, 3, 64, 64), torch.tensor([3, 7]))
    checks.hidden_check_guided_backprop(fn, lite0, small[:4])


def fourier_even_only(spectrum, h, w):
    """Right for an even height only: the row frequencies built as if h were even."""
    k = torch.arange(h)
    fy = torch.where(k < h // 2, k, k - h).float()[:, None] / h   # odd h: 0..h//2-1, then negative
    fx = torch.fft.rfftfreq(w)[None, :]
    scale = 1.0 / (fy ** 2 + fx ** 2).sqrt().clamp_min(1.0 / max(h, w))
    decorrelated = torch.fft.irfft2(spectrum * scale, s=(h, w), norm="ortho") / 4
    c = methods.COLOR_CORRELATION_SQRT
    c = c / c.norm(dim=0).max()
    return torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, decorrelated))


def test_03_fourier_image(threads):
    fn = solutions("03_guided_backprop.ipynb", "fourier-image-impl")["my_fourier_image"]
    checks.check_fourier_image(fn)
    checks.hidden_check_fourier_image(fn)
    checks.check_fourier_image(fourier_even_only)          # the visible check has h = 16
    fails(checks.hidden_check_fourier_image, fourier_even_only, match="odd height")


# ------------------------------------------------------------------------------ notebook 04

def test_04_cam(threads, lite0, photos):
    small, top5 = photos
    ns = solutions("04_cam.ipynb", "cam-impl")
    checks.check_cam_from_features(ns["cam_from_features"])
    checks.check_cam(ns["my_cam"], lite0, small, top5[:, 0])
    checks.hidden_check_cam(ns["my_cam"], ns["cam_from_features"], lite0, small)


# ------------------------------------------------------------------------------ notebook 05

def test_05_grad_cam(threads, lite0, photos):
    small, top5 = photos
    fn = solutions("05_grad_cam.ipynb", "grad-cam-impl")["my_grad_cam"]
    head = models.gap_fc_head(lite0)
    checks.check_grad_cam(fn, lite0, small[:4], top5[:4, 0], "_blocks.12")
    checks.check_grad_cam(fn, lite0, small[:4], top5[:4, 1], head.layer)
    checks.hidden_check_grad_cam(fn, lite0, small[:4])


def occlusion_in_one_batch(model, x, target, window, stride, square=False):
    """Occlusion with every window of every image in one batch (``square``: wrongly using
    the height's window positions for the columns too)."""
    was_training = model.training
    model.eval()
    try:
        B, _, H, W = x.shape
        def starts(n):
            s = list(range(0, n - window + 1, stride))
            return s if s[-1] == n - window else s + [n - window]
        corners = [(i, j) for i in starts(H) for j in starts(H if square else W)]
        masks = torch.zeros(len(corners), 1, 1, H, W, dtype=torch.bool)
        for n, (i, j) in enumerate(corners):
            masks[n, ..., i:i + window, j:j + window] = True
        with torch.no_grad():
            p = model(x).softmax(1).gather(1, target.view(-1, 1))[:, 0]
            hidden = x[None].masked_fill(masks, 0).flatten(0, 1)
            q = model(hidden).softmax(1).gather(1, target.repeat(len(corners)).view(-1, 1))
            drops = (p[None] - q.view(len(corners), B))[:, :, None, None] * masks[:, :, 0]
        return drops.sum(0) / masks[:, :, 0].sum(0).clamp_min(1)
    finally:
        model.train(was_training)


def test_05_occlusion(threads, cnn, shapes_data):
    sh_x, sh_labels = shapes_data
    fn = solutions("05_grad_cam.ipynb", "occlusion-impl")["my_occlusion"]
    for version in (fn, occlusion_in_one_batch):
        checks.check_occlusion(version, cnn, sh_x[:4], sh_labels[:4], window=16, stride=8)
        checks.hidden_check_occlusion(version, cnn, sh_x[:4])
    square = lambda *args: occlusion_in_one_batch(*args, square=True)   # noqa: E731
    checks.check_occlusion(square, cnn, sh_x[:4], sh_labels[:4], window=16, stride=8)
    fails(checks.hidden_check_occlusion, square, cnn, sh_x[:4], match="not square")


def grad_cam_plus_plus_per_image(model, x, target, layer, final_relu=True, guard_zero=True):
    """Grad-CAM++ one image at a time, with its own hook (``final_relu``/``guard_zero`` off:
    two mistakes the visible checks at post-ReLU layers cannot see)."""
    maps = []
    for b in range(x.shape[0]):
        with hooks.capture(model, layer) as cap, torch.enable_grad():
            model(x[b:b + 1].requires_grad_())[0, int(target[b])].backward()
        a, g = cap.activations[layer][0], cap.gradients[layer][0]           # (K, h, w)
        denominator = 2 * g * g + torch.einsum("khw->k", a)[:, None, None] * g ** 3
        alpha = (g * g / denominator).nan_to_num(0.0) if guard_zero else g * g / denominator
        m = torch.einsum("k,khw->hw", (alpha * g.clamp_min(0)).sum((1, 2)), a)
        maps.append(m.clamp_min(0) if final_relu else m)
    return torch.stack(maps)


def test_05_grad_cam_plus_plus(threads, cnn, shapes_data):
    sh_x, sh_labels = shapes_data
    fn = solutions("05_grad_cam.ipynb", "grad-cam-plus-plus-impl")["my_grad_cam_plus_plus"]
    for version in (fn, grad_cam_plus_plus_per_image):
        for layer in ("stage5", "stage3"):
            checks.check_grad_cam_plus_plus(version, cnn, sh_x, sh_labels, layer)
        checks.hidden_check_grad_cam_plus_plus(version, cnn, sh_x)
    for mistake in ({"final_relu": False}, {"guard_zero": False}):
        wrong = functools.partial(grad_cam_plus_plus_per_image, **mistake)
        checks.check_grad_cam_plus_plus(wrong, cnn, sh_x, sh_labels, "stage5")  # ReLU'd layer
        fails(checks.hidden_check_grad_cam_plus_plus, wrong, cnn, sh_x, match="stage5.1")
    fails(checks.check_grad_cam_plus_plus, functools.partial(grad_cam_plus_plus_per_image,
                                                              guard_zero=False),
          cnn, sh_x, sh_labels, "stage5.1", match="NaN")


# ------------------------------------------------------------------------------ notebook 06

def test_06_vit_attention_and_rollout(threads, vit_data):
    vit, sh_x = vit_data
    ns = solutions("06_vit_attention.ipynb", "vit-attention-impl", "rollout-impl")
    checks.check_vit_attention(ns["my_vit_attention"], vit, sh_x[:6])
    checks.hidden_check_vit_attention(ns["my_vit_attention"], vit, sh_x)
    checks.check_rollout(ns["my_rollout"])
    checks.hidden_check_rollout(ns["my_rollout"])


def test_every_exercise_is_run_here():
    # A new exercise needs its solution run through its checks above.
    source = Path(__file__).read_text(encoding="utf-8")
    exercises = [gid for path in sorted(NOTEBOOKS.glob("0*.ipynb")) for gid in solution_cells(path)]
    assert exercises
    missing = [gid for gid in exercises if f'"{gid}"' not in source]
    assert not missing, f"exercises whose solution no test here runs: {missing}"
