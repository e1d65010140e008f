"""The same work done by the libraries practitioners use, for ``bench_methods.py``'s anchor
columns: Captum (saliency, SmoothGrad, Integrated Gradients, guided backprop, occlusion),
pytorch-grad-cam (the Grad-CAM family) and torch-cam (CAM and the Grad-CAM family without
HiResCAM, EigenCAM and Ablation-CAM). Optional: ``pip install -e ".[bench]"``; a library that is
not installed gives no column.

Each anchor is a call with the library's own API and defaults, as its documentation shows it,
and a way to bring our output to the library's form (pytorch-grad-cam returns each map
min–max normalised and resized to the input; Captum returns per-channel attributions; torch-cam,
asked for unnormalised maps, returns them at the layer's size after a ReLU), so that
``bench_methods.py`` can check that the two agree before it times them. Where the two do not
do the same computation, :data:`KNOWN_DIFFERENCES` says why; such a row is still timed, and
marked.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from featviz_helpers import methods


@dataclass
class Anchor:
    library: str
    call: Callable[[], torch.Tensor]            # the library's computation, timed
    comparable: Callable[[], torch.Tensor]      # ours, in the library's output form
    tolerance: float                            # max |difference| that counts as agreement


# Captum's notes on what it did to the input and the ReLUs are not news here.
warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")

# Why an anchor's output cannot equal ours, by (row, library).
KNOWN_DIFFERENCES = {
    ("Grad-CAM++", "pytorch-grad-cam"): "adds 1e-6 to every α denominator",
    ("Score-CAM", "pytorch-grad-cam"): "upsamples the masks with align_corners=True",
    ("guided backprop", "Captum"): "overrides nn.ReLU only; Lite0's ReLU6 keeps its gradient",
    ("SmoothGrad", "Captum"): "draws other noise (agreement checked without noise)",
    ("Ablation-CAM", "pytorch-grad-cam"): "divides by y_c, ours by |y_c| (a negative logit "
                                          "flips every weight)",
    ("Grad-CAM++", "torch-cam"): "never divides α (it divides a copy made by boolean "
                                 "indexing), so α = (∂Y/∂A)²",
    ("Score-CAM", "torch-cam"): "min–max normalises the activations before upsampling them, "
                                "Wang et al.'s Algorithm 1 after",
}

LIBRARIES = (("Captum", "captum"), ("pytorch-grad-cam", "pytorch_grad_cam"),
             ("torch-cam", "torchcam"))


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def libraries() -> list[str]:
    """The anchor libraries this environment has."""
    return [name for name, module in LIBRARIES if installed(module)]


def _grad_cam_library(model, x, target, layer, score_layer) -> dict[str, Anchor]:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from featviz_helpers.models import get_layer

    targets = [ClassifierOutputTarget(int(c)) for c in target]
    size = (x.shape[-1], x.shape[-2])

    def theirs(cls, at):
        def call():
            with cls(model=model, target_layers=[get_layer(model, at)]) as cam:
                return torch.from_numpy(cam(input_tensor=x, targets=targets))
        return call

    def ours(fn, at):
        # the library's post-processing applied to our raw map: normalise and resize each,
        # then normalise the mean over (one) layer again
        return lambda: torch.from_numpy(scale_cam_image(
            scale_cam_image(fn(model, x, target, at).clamp_min(0).numpy(), size)))

    rows = {"Grad-CAM": (pgc.GradCAM, methods.grad_cam),
            "Grad-CAM++": (pgc.GradCAMPlusPlus, methods.grad_cam_plus_plus),
            "XGrad-CAM": (pgc.XGradCAM, methods.xgrad_cam),
            "HiResCAM": (pgc.HiResCAM, methods.hires_cam),
            "LayerCAM": (pgc.LayerCAM, methods.layer_cam),
            "EigenCAM": (pgc.EigenCAM, methods.eigen_cam),
            "Score-CAM": (pgc.ScoreCAM, methods.score_cam),
            "Ablation-CAM": (pgc.AblationCAM, methods.ablation_cam)}
    anchors = {}
    for row, (cls, fn) in rows.items():
        at = score_layer if row in ("Score-CAM", "Ablation-CAM") else layer
        anchors[row] = Anchor("pytorch-grad-cam", theirs(cls, at), ours(fn, at), 1e-4)
    return anchors


def _torch_cam(model, x, target, layer, score_layer) -> dict[str, Anchor]:
    import torchcam.methods as tc

    from featviz_helpers.models import gap_fc_head

    classes = [int(c) for c in target]

    def theirs(cls, at, **options):
        # torch-cam's documented use: the extractor hooks the layer, the caller runs the
        # model, the extractor turns its scores into maps (here unnormalised, one layer)
        def call():
            with cls(model, target_layer=at, **options) as extractor:
                scores = model(x)
                return extractor(class_idx=classes, scores=scores, normalized=False)[0]
        return call

    def ours(fn, at):
        return lambda: fn(model, x, target, at).clamp_min(0)

    fc = next(name for name, module in model.named_modules() if module is gap_fc_head(model).fc)
    rows = {"Grad-CAM": (tc.GradCAM, methods.grad_cam),
            "Grad-CAM++": (tc.GradCAMpp, methods.grad_cam_plus_plus),
            "XGrad-CAM": (tc.XGradCAM, methods.xgrad_cam),
            "LayerCAM": (tc.LayerCAM, methods.layer_cam),
            "Score-CAM": (tc.ScoreCAM, methods.score_cam)}
    anchors = {"CAM": Anchor("torch-cam", theirs(tc.CAM, gap_fc_head(model).layer, fc_layer=fc),
                             lambda: methods.cam(model, x, target), 1e-4)}    # no ReLU in CAM
    for row, (cls, fn) in rows.items():
        at = score_layer if row == "Score-CAM" else layer
        anchors[row] = Anchor("torch-cam", theirs(cls, at), ours(fn, at), 1e-4)
    return anchors


def _captum(model, x, target, n) -> dict[str, Anchor]:
    from captum.attr import GuidedBackprop, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    span = float(x[0].max() - x[0].min())       # SmoothGrad's σ is a fraction of the range
    probabilities = lambda inputs: model(inputs).softmax(1)    # noqa: E731

    def scale(t):                               # attributions relative to their largest
        return t / t.abs().amax().clamp_min(1e-30)

    return {
        "saliency": Anchor(
            "Captum", lambda: Saliency(model).attribute(x, target=target, abs=True).amax(1),
            lambda: methods.saliency(model, x, target), 1e-5),
        "Integrated Gradients": Anchor(
            "Captum", lambda: scale(IntegratedGradients(model).attribute(
                x, target=target, n_steps=n, method="riemann_right")),
            lambda: scale(methods.integrated_gradients(model, x, target, steps=n)), 1e-4),
        "SmoothGrad": Anchor(
            "Captum", lambda: NoiseTunnel(Saliency(model)).attribute(
                x, target=target, nt_type="smoothgrad", nt_samples=n, stdevs=0.15 * span,
                abs=False),
            lambda: methods.smoothgrad(model, x, target, samples=n), 1e-5),
        "guided backprop": Anchor(
            "Captum", lambda: scale(GuidedBackprop(model).attribute(x, target=target)),
            lambda: scale(methods.guided_backprop(model, x, target)), 1e-4),
        "occlusion": Anchor(
            "Captum", lambda: Occlusion(probabilities).attribute(
                x, target=target, sliding_window_shapes=(3, 56, 56), strides=(3, 28, 28),
                baselines=0.0)[:, 0],
            lambda: methods.occlusion(model, x, target, window=56, stride=28), 1e-5),
    }


def smoothgrad_without_noise_agrees(model, x, target, n) -> float:
    """SmoothGrad's two implementations draw different noise; with σ = 0 both are the
    gradient. Their largest difference then, relative to the gradient's largest value."""
    from captum.attr import NoiseTunnel, Saliency
    theirs = NoiseTunnel(Saliency(model)).attribute(x, target=target, nt_type="smoothgrad",
                                                     nt_samples=n, stdevs=0.0, abs=False)
    ours = methods.smoothgrad(model, x, target, samples=n, noise=0.0)
    return float((theirs - ours).abs().max() / ours.abs().max())


def anchors(model, x, target, layer, n, score_layer) -> dict[str, list[Anchor]]:
    """{catalogue row: [anchor, …]} for the libraries installed here."""
    found: dict[str, list[Anchor]] = {}
    if installed("pytorch_grad_cam"):
        for row, anchor in _grad_cam_library(model, x, target, layer, score_layer).items():
            found.setdefault(row, []).append(anchor)
    if installed("captum"):
        for row, anchor in _captum(model, x, target, n).items():
            found.setdefault(row, []).append(anchor)
    if installed("torchcam"):
        for row, anchor in _torch_cam(model, x, target, layer, score_layer).items():
            found.setdefault(row, []).append(anchor)
    return found


def agreement(row: str, anchor: Anchor, model, x, target, n) -> tuple[float, bool]:
    """(largest |difference| between the library's output and ours in its form, whether
    that counts as the same output)."""
    if (row, anchor.library) == ("SmoothGrad", "Captum"):
        gap = smoothgrad_without_noise_agrees(model, x, target, n)
        return gap, gap <= anchor.tolerance
    theirs, ours = anchor.call().detach().float(), anchor.comparable().detach().float()
    if theirs.shape != ours.shape:
        return float("inf"), False
    gap = float((theirs - ours).abs().max())
    return gap, gap <= anchor.tolerance

