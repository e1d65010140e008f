"""The lecture's figures: one drawing function per figure, shared by the notebooks and
``python -m featviz_helpers.figures --out figures/``.

A drawing function takes data (pictures, maps, weights) and returns a matplotlib figure;
the notebooks call it on what they computed, and :data:`FIGURES` pairs each one with a
``make_*`` function that computes the same data with the library copies, for the command.
The command writes every figure as PNG and PDF and a ``manifest.json`` saying, per figure,
its caption, which figure of CS231n 2025 Lecture 9 ("Visualizing and Understanding") it
reproduces, the model, the notebook section and the drawing function that both use
(:attr:`Figure.draw`). Figures that need torchvision weights that are not cached are listed
as skipped, with the reason.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.patches import Rectangle

from . import images, methods, metrics, models, relu_rules, shapes, units, viz
from .hooks import capture

__all__ = ["draw_filter_grids", "draw_box", "draw_maps", "draw_relu_example", "draw_gradients",
           "draw_neuron", "draw_attention_heads", "draw_class_visualisations", "draw_fooling",
           "stretch_change", "draw_grad_cam_pair", "Figure", "FIGURES", "make_all", "main"]


# --------------------------------------------------------------------------- drawing

def draw_filter_grids(filters: dict[str, torch.Tensor], ncols: int = 8,
                      symmetric: bool = False, size: float = 4.0):
    """First-layer filters (C_out,3,k,k), one panel per entry of ``{title: weights}``."""
    fig, axes = viz.panels(len(filters), size=size)
    for ax, (title, weights) in zip(axes, filters.items()):
        viz.show_filters(weights, ax=ax, ncols=ncols, symmetric=symmetric,
                         title=f"{title} {tuple(weights.shape)}")
    return fig


def draw_box(ax, box, colour="white", linewidth: float = 2.0) -> None:
    """Outline a box (x0, y0, x1, y1) of pixel indices, inclusive, on an image drawn by
    ``imshow``. The line runs inside the box's edge, inset by half its width (converted from
    points to pixels of the image), so a box that coincides with the image's border is drawn
    inside the image instead of half outside the axes; a thin black rim keeps it visible on
    bright regions."""
    x0, y0, x1, y1 = [float(v) for v in box]
    fig = ax.figure
    x_lo, x_hi = ax.get_xlim()
    ax.apply_aspect()                                               # the box as drawn
    width_pt = ax.get_position().width * fig.get_figwidth() * 72
    half = (linewidth / 2 + 0.5) * abs(x_hi - x_lo) / width_pt     # half the stroke, in pixels
    left, top = x0 - 0.5 + half, y0 - 0.5 + half
    w, h = max(x1 - x0 + 1 - 2 * half, 0.0), max(y1 - y0 + 1 - 2 * half, 0.0)
    ax.add_patch(Rectangle((left, top), w, h, fill=False, edgecolor=colour, linewidth=linewidth,
                           path_effects=[patheffects.Stroke(linewidth=linewidth + 1,
                                                            foreground="black"),
                                         patheffects.Normal()]))


def draw_maps(pictures, maps, titles, ncols: int | None = None, clip_percentile: float = 100.0,
              boxes=None, true_boxes=None, size: float = 3.3):
    """Raw maps (B,h,w) over their pictures (B × (H,W,3) in [0,1]) by the course's convention;
    optional boxes (B,4) in white and true boxes (B,4) in green."""
    fig, axes = viz.panels(len(pictures), ncols=ncols, size=size)
    for i, ax in enumerate(axes):
        viz.show_map(ax, pictures[i], maps[i], title=titles[i], clip_percentile=clip_percentile)
        if boxes is not None:
            draw_box(ax, boxes[i])
        if true_boxes is not None:
            draw_box(ax, true_boxes[i], colour="lime")
    return fig


def draw_relu_example(x: torch.Tensor, g: torch.Tensor, backward: dict[str, torch.Tensor]):
    """The lecture's 3×3 example: forward input, ReLU output, upstream gradient, and what each
    backward rule passes back, as annotated matrices (red negative, blue positive)."""
    panels = {"forward input x": x, "ReLU output": x.clamp_min(0), "upstream gradient g": g}
    panels.update({f"{rule} backward": value for rule, value in backward.items()})
    fig, axes = viz.panels(len(panels), size=2.2)
    a = max(v.abs().max().item() for v in panels.values())
    for ax, (title, m) in zip(axes, panels.items()):
        ax.imshow(m.numpy(), cmap="RdBu", vmin=-a, vmax=a)
        for (r, c), v in np.ndenumerate(m.numpy()):
            ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=12)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    return fig


def draw_gradients(pictures, grads: dict[str, torch.Tensor], titles):
    """One row per picture: the picture, then each signed RGB gradient (B,3,H,W) of
    ``{name: gradients}`` by :func:`viz.show_gradient`'s convention."""
    cols = 1 + len(grads)
    fig, axes = viz.panels(len(pictures) * cols, ncols=cols, size=2.8)
    for i, picture in enumerate(pictures):
        axes[cols * i].imshow(picture)
        axes[cols * i].set_title(titles[i], fontsize=9)
        axes[cols * i].set_axis_off()
        for j, (name, g) in enumerate(grads.items()):
            viz.show_gradient(axes[cols * i + j + 1], g[i], title=name)
    return fig


def draw_neuron(pool_images, labels, best, boxes, gradients, suptitle: str, optimised=None):
    """A neuron's top patches (above) and guided backprop from it (below).

    ``pool_images`` (N,3,H,W) in [0,1] with class ``labels``; ``best`` the indices of the
    top images and ``boxes`` their crops (y0, y1, x0, x1) from :func:`units.top_patches`;
    ``gradients`` (k,3,H,W) guided backprop of those images from the neuron. ``optimised``
    (3,h,w) in [0,1], if given, is the picture made by activation maximisation, drawn first.
    """
    n = len(best)
    first = 0 if optimised is None else 1
    cols = n + first
    fig, axes = viz.panels(2 * cols, ncols=cols, size=1.6)
    if optimised is not None:
        axes[0].imshow(optimised.permute(1, 2, 0).numpy())
        axes[0].set_title("optimised", fontsize=8)
        axes[0].set_axis_off()
        axes[cols].set_axis_off()
    for k, (i, (y0, y1, x0, x1)) in enumerate(zip(best.tolist(), boxes)):
        axes[first + k].imshow(pool_images[i].permute(1, 2, 0)[y0:y1, x0:x1])
        axes[first + k].set_title(shapes.CLASSES[labels[i]], fontsize=8)
        axes[first + k].set_axis_off()
        viz.show_gradient(axes[cols + first + k], gradients[k][:, y0:y1, x0:x1])
    fig.suptitle(suptitle, fontsize=10)
    return fig


def draw_attention_heads(picture, cls_maps: torch.Tensor, title: str):
    """[CLS] attention over patches (L, heads, g, g): one row per layer, one column per head,
    and the picture in front of each row."""
    L, H = cls_maps.shape[:2]
    fig, axes = viz.panels(L * (H + 1), ncols=H + 1, size=1.7)
    for layer in range(L):
        axes[layer * (H + 1)].imshow(picture)
        axes[layer * (H + 1)].set_title(f"layer {layer}", fontsize=8)
        axes[layer * (H + 1)].set_axis_off()
        for head in range(H):
            viz.show_map(axes[layer * (H + 1) + head + 1], picture, cls_maps[layer, head],
                         title=f"head {head}" if layer == 0 else None)
    fig.suptitle(title, fontsize=10)
    return fig


def draw_class_visualisations(pictures, titles, size: float = 2.6):
    """Images made by gradient ascent (N × (H,W,3) in [0,1]), one panel each."""
    fig, axes = viz.panels(len(pictures), size=size)
    for ax, picture, title in zip(axes, pictures, titles):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return fig


def stretch_change(change: np.ndarray, percentile: float = 99.0) -> tuple[np.ndarray, float]:
    """A signed change (H,W,3) as a picture around mid-grey (0 is grey), stretched
    symmetrically so that the ``percentile``-th percentile of |change| reaches the full range
    (larger changes saturate): returns (picture in [0,1], the factor used)."""
    change = np.asarray(change, dtype=np.float64)
    top = float(np.percentile(np.abs(change), percentile))
    factor = 0.5 / top if top > 0 else 1.0
    return np.clip(0.5 + factor * change, 0, 1), factor


def draw_fooling(original: np.ndarray, fooled: np.ndarray, labels, percentile: float = 99.0):
    """A photo, the adversarial example made from it (the lecture's "fooling image") and the
    change between them (H,W,3 in [0,1]); the change is drawn around grey (0 is grey), stretched
    by :func:`stretch_change` so that its ``percentile``-th percentile of |change| reaches black
    or white, and titled with the factor used."""
    picture, factor = stretch_change(np.asarray(fooled) - np.asarray(original), percentile)
    fig, axes = viz.panels(3, size=3.2)
    panels = [(original, f"original: {labels[0]}"), (fooled, f"changed: {labels[1]}"),
              (picture, f"change × {factor:.0f} (p{percentile:g} of |change| → full range)")]
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return fig


def draw_grad_cam_pair(picture, class_names, grad_cams, guided, guided_grad_cams):
    """Rows: one class each; columns: Grad-CAM over the picture, guided backprop, their product."""
    fig, axes = viz.panels(3 * len(class_names), ncols=3, size=3)
    for row, name in enumerate(class_names):
        viz.show_map(axes[3 * row], picture, grad_cams[row], title=f"Grad-CAM: {name}")
        viz.show_gradient(axes[3 * row + 1], guided[row], title=f"guided backprop: {name}")
        viz.show_gradient(axes[3 * row + 2], guided_grad_cams[row], title=f"Guided Grad-CAM: {name}")
    return fig


# --------------------------------------------------------------------------- the figures

@dataclass(frozen=True)
class Figure:
    """One lecture figure: how to make it, and what the manifest says about it."""

    name: str
    caption: str
    lecture: str          # which figure of CS231n 2025 Lecture 9 it reproduces
    model: str
    notebook: str         # notebook and section where the same drawing function is used
    make: Callable        # (context) -> figure, or (figure, note); raises Skipped to skip
    draw: Callable        # the draw_* function that ``make`` and the notebook section both call


class Skipped(Exception):
    """A figure cannot be made here (e.g. its weights are not cached); the message says why."""


class _Context:
    """Models and photos loaded once and shared by the figures (lazily)."""

    def __init__(self):
        self._cache = {}

    def get(self, key, build):
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def lite0(self):
        return self.get("lite0", lambda: models.load_model("efficientnet_lite0"))

    def photos(self, names):
        x = images.preprocess([images.load_image(n) for n in names], self.lite0)
        return x, [images.deprocess(b, self.lite0) for b in x]

    def top1(self, x):
        with torch.no_grad():
            return self.lite0(x).argmax(1)


def _cached_or_skip(name: str):
    if not models.weights_cached(name):
        raise Skipped(f"{name}'s ImageNet weights are not cached (expected at "
                      f"{models.weights_path(name)}); download them once with "
                      f"models.load_model({name!r}) on a machine with internet.")
    return models.load_model(name)


def make_first_layer(ctx):
    cnn = models.load_model("shapes_cnn")
    with torch.random.fork_rng():
        torch.manual_seed(0)   # shapes_cnn's training seed: its initialisation
        initial = models.first_conv(models.build_architecture("shapes_cnn")).weight.detach()
    return draw_filter_grids({"Lite0 stem": ctx.lite0._conv_stem.weight.detach(),
                              "shapes_cnn, trained": models.first_conv(cnn).weight.detach(),
                              "shapes_cnn, at initialisation": initial})


ZOO_FIRST_LAYERS = ("alexnet", "resnet18", "resnet101", "densenet121")


def make_zoo_first_layers(ctx):
    cached = [name for name in ZOO_FIRST_LAYERS if models.weights_cached(name)]
    if not cached:
        _cached_or_skip(ZOO_FIRST_LAYERS[0])
    fig = draw_filter_grids({name: models.first_conv(models.load_model(name)).weight.detach()
                             for name in cached})
    missing = [name for name in ZOO_FIRST_LAYERS if name not in cached]
    return fig, (f"not cached, so not drawn: {', '.join(missing)}" if missing else None)


def make_saliency(ctx):
    names = ["chelsea", "coffee", "camera", "grace_hopper", "rocket", "cat_and_coffee"]
    x, pictures = ctx.photos(names)
    t = ctx.top1(x)
    maps = methods.saliency(ctx.lite0, x, t)
    titles = [f"{n}: {ctx.lite0.class_names[c]}" for n, c in zip(names, t.tolist())]
    return draw_maps(pictures, maps, titles, ncols=3, clip_percentile=99)


def make_relu_example(ctx):
    return draw_relu_example(relu_rules.RELU_EXAMPLE_X, relu_rules.RELU_EXAMPLE_G,
                             relu_rules.RELU_EXAMPLE_EXPECTED)


def make_relu_rules(ctx):
    x, pictures = ctx.photos(["chelsea", "coffee", "camera"])
    t = ctx.top1(x)
    grads = {rule: methods.input_gradient(ctx.lite0, x, t, rule=rule)
             for rule in ("standard", "deconvnet", "guided")}
    return draw_gradients(pictures, grads, [ctx.lite0.class_names[c] for c in t.tolist()])


def make_neurons(ctx):
    cnn = models.load_model("shapes_cnn")
    pool_images, pool_labels, _ = shapes.generate(384, seed=2024)
    pool = images.preprocess(pool_images, cnn)
    layer, channel = "stage4", 0
    with capture(cnn, layer) as cap, torch.no_grad():
        cnn(pool)
    best, boxes = units.top_patches(cap.activations[layer], channel,
                                    units.receptive_field(cnn, layer), 64)
    gradients = methods.neuron_guided_backprop(cnn, pool[best], layer, channel)
    optimised = methods.activation_maximisation(cnn, layer, channel)
    return draw_neuron(pool_images, pool_labels, best, boxes, gradients,
                       f"shapes_cnn {layer}, channel {channel}: optimised picture, top "
                       "patches (above), guided backprop (below)", optimised=optimised)


def make_cam(ctx):
    names = ["chelsea", "coffee", "camera", "grace_hopper", "rocket", "cat_and_coffee"]
    x, pictures = ctx.photos(names)
    t = ctx.top1(x)
    maps = methods.cam(ctx.lite0, x, t)
    return draw_maps(pictures, maps, [ctx.lite0.class_names[c] for c in t.tolist()], ncols=3,
                     boxes=metrics.cam_boxes(maps, (224, 224)))


def _grad_cam_pair(model, x, classes, layer):
    """Grad-CAM, guided backprop and Guided Grad-CAM of one image (1,3,H,W) for two classes."""
    pair = x.expand(len(classes), -1, -1, -1)
    t = torch.tensor(classes)
    return (methods.grad_cam(model, pair, t, layer), methods.guided_backprop(model, pair, t),
            methods.guided_grad_cam(model, pair, t, layer))


def make_grad_cam(ctx):
    x, pictures = ctx.photos(["cat_and_coffee"])
    cat = ctx.top1(x)[0].item()
    espresso = ctx.lite0.class_names.index("espresso")
    layer = models.gap_fc_head(ctx.lite0).layer
    maps = _grad_cam_pair(ctx.lite0, x, [cat, espresso], layer)
    return draw_grad_cam_pair(pictures[0], [ctx.lite0.class_names[cat], "espresso"], *maps)


CAM_FAMILY = {"Grad-CAM": methods.grad_cam, "Grad-CAM++": methods.grad_cam_plus_plus,
              "XGrad-CAM": methods.xgrad_cam, "HiResCAM": methods.hires_cam,
              "LayerCAM": methods.layer_cam, "Score-CAM": methods.score_cam,
              "Ablation-CAM": methods.ablation_cam, "EigenCAM": methods.eigen_cam}


def cam_family_maps(model, x, target, layer) -> tuple[list[torch.Tensor], list[str]]:
    """Every CAM variant of :data:`CAM_FAMILY` for each image (B,3,H,W) at ``layer``: the maps
    in rows of images, a column per variant, as :func:`draw_maps` takes them, and their
    titles (notebook 05 §12 and the ``cam_family`` figure)."""
    per_method = {name: fn(model, x, target, layer) for name, fn in CAM_FAMILY.items()}
    maps = [per_method[name][b] for b in range(x.shape[0]) for name in CAM_FAMILY]
    return maps, [name for _ in range(x.shape[0]) for name in CAM_FAMILY]


def make_cam_family(ctx):
    x, pictures = ctx.photos(["chelsea", "cat_and_coffee"])
    maps, titles = cam_family_maps(ctx.lite0, x, ctx.top1(x), "_blocks.10")
    return draw_maps([p for p in pictures for _ in CAM_FAMILY], maps, titles,
                     ncols=len(CAM_FAMILY), size=2.2)


def _shapes_vit_data(ctx):
    def build():
        vit = models.load_model("shapes_vit")
        pictures, labels, _ = shapes.generate(6, seed=99)
        x = images.preprocess(pictures, vit)
        return vit, pictures, labels, methods.vit_attention(vit, x), methods.patch_grid(vit, x)
    return ctx.get("shapes_vit", build)


def make_vit_heads(ctx):
    vit, pictures, labels, attn, grid = _shapes_vit_data(ctx)
    return draw_attention_heads(pictures[0].permute(1, 2, 0).numpy(),
                                methods.cls_maps(attn[:, 0], grid),
                                f"shapes_vit, [CLS] attention per layer and head: "
                                f"{shapes.CLASSES[labels[0]]}")


def make_vit_rollout(ctx):
    vit, pictures, labels, attn, grid = _shapes_vit_data(ctx)
    rollout = methods.cls_maps(methods.attention_rollout(attn), grid)
    return draw_maps([p.permute(1, 2, 0).numpy() for p in pictures], rollout,
                     [shapes.CLASSES[c] for c in labels], ncols=6, size=2.2)


def make_vit_b16(ctx):
    big = _cached_or_skip("vit_b_16")
    names = ["chelsea", "coffee", "cat_and_coffee"]
    x = images.preprocess([images.load_image(n) for n in names], big)
    with torch.no_grad():
        top = big(x).argmax(1)
    rollout = methods.cls_maps(methods.attention_rollout(methods.vit_attention(big, x)),
                               methods.patch_grid(big, x))
    return draw_maps([images.deprocess(b, big) for b in x], rollout,
                     [f"rollout: {big.class_names[c]}" for c in top.tolist()])


CLASS_VISUALISATION_CLASSES = ("goldfish", "flamingo", "pizza")


def make_class_visualisations(ctx):
    model = ctx.lite0
    classes = [model.class_names.index(name) for name in CLASS_VISUALISATION_CLASSES]
    dreams = methods.class_visualisation(model, classes, size=128, steps=60)
    # 3.3 in per panel: the width of the other three-column figures (saliency_maps, cam)
    return draw_class_visualisations(images.deprocess(dreams, model),
                                     list(CLASS_VISUALISATION_CLASSES), size=3.3)


def make_fooling(ctx):
    x, pictures = ctx.photos(["chelsea"])
    goldfish = torch.tensor([ctx.lite0.class_names.index("goldfish")])
    fooled = methods.fooling_image(ctx.lite0, x, goldfish, lr=0.25)
    labels = [ctx.lite0.class_names[int(c)] for c in (ctx.top1(x)[0], ctx.top1(fooled)[0])]
    return draw_fooling(pictures[0], images.deprocess(fooled[0], ctx.lite0), labels)


FIGURES = [
    Figure("first_layer_filters", "First-layer filters of EfficientNet-Lite0 (3×3) and of "
           "shapes_cnn (7×7), trained and at initialisation, each filter min–max normalised.",
           "First layer: visualize filters (AlexNet, ResNet-18/101, DenseNet-121 filter grids)",
           "efficientnet_lite0, shapes_cnn", "01 §2 (shapes_cnn)", make_first_layer,
           draw_filter_grids),
    Figure("zoo_first_layers", "First-layer filters of AlexNet, ResNet-18, ResNet-101 and "
           "DenseNet-121 (torchvision's ImageNet weights; those in the local cache).",
           "First layer: visualize filters (AlexNet, ResNet-18/101, DenseNet-121 filter grids)",
           "alexnet, resnet18, resnet101, densenet121", "01 §5", make_zoo_first_layers,
           draw_filter_grids),
    Figure("saliency_maps", "Gradient saliency max_c |∂S_c/∂x| of each photo's top-1 class, "
           "clipped at the 99th percentile.",
           "Saliency maps via backprop (Simonyan et al. 2014)", "efficientnet_lite0",
           "02 §6", make_saliency, draw_maps),
    Figure("class_visualisations", "Class model visualisation (Simonyan et al. 2014): 60 steps "
           "of gradient ascent on the logit from a blank 128 px image, with L2 decay and a "
           "periodic Gaussian blur (two of the regularisers of Yosinski et al. 2015, who also "
           "clip pixels of small norm or small contribution) and random jitter (from "
           "Mordvintsev, Olah & Tyka's DeepDream, 2015).",
           "Visualizing CNN features: gradient ascent (Simonyan et al. 2014), with the "
           "regularisers of Yosinski et al. 2015",
           "efficientnet_lite0", "02 §11", make_class_visualisations, draw_class_visualisations),
    Figure("fooling_image", "An adversarial example (Szegedy et al. 2014, who searched with "
           "box-constrained L-BFGS; here, the lecture's recipe of repeated gradient steps): "
           "chelsea after normalised gradient steps on the goldfish logit (L2 length 0.25 "
           "each), stopped as soon as the network says goldfish, and the change, stretched "
           "symmetrically around grey so that the 99th percentile of |change| reaches black or "
           "white (the factor is in its title). The "
           "file keeps the lecture's title; Nguyen, Yosinski & Clune (2015) use \"fooling "
           "images\" for unrecognisable images that a network classifies confidently.",
           "Fooling images / adversarial examples: a photo changed slightly until the network "
           "misreads it (Szegedy et al. 2014)", "efficientnet_lite0",
           "02 §12", make_fooling, draw_fooling),
    Figure("relu_backward_example", "The three ReLU backward rules on the lecture's 3×3 "
           "example: standard g·1[x>0], deconvnet g·1[g>0], guided g·1[x>0]·1[g>0].",
           "Intermediate features via (guided) backprop: ReLU forward and backward tables",
           "none", "03 §1", make_relu_example, draw_relu_example),
    Figure("relu_rules", "Input gradients of the top-1 class by the standard, deconvnet and "
           "guided rules (signed RGB, grey = 0). The deconvnet column looks the same for every "
           "photo: this network has no max-pooling, and deconvnet's ReLU rule g·1[g>0] looks "
           "only at the sign of the upstream gradient, so its backward pass never reads the "
           "forward input. Its map depends on the class alone (for one class it is the same "
           "for any image, up to float round-off), and these three classes' maps are nearly "
           "alike (correlation 0.999).",
           "Intermediate features via guided backprop (Springenberg et al. 2015)",
           "efficientnet_lite0", "03 §3", make_relu_rules, draw_gradients),
    Figure("neuron_patches", "What one intermediate neuron looks for: a picture optimised "
           "to excite it (Olah et al. 2017's Fourier parametrisation and decorrelated colour, "
           "with transformation robustness), its six strongest patches over 384 shapes images, "
           "cropped to its receptive field, and guided backprop from its peak.",
           "Intermediate features via (guided) backprop: maximally activating patches",
           "shapes_cnn", "03 §4", make_neurons, draw_neuron),
    Figure("cam", "Class activation maps of each photo's top-1 class with the CAM paper's "
           "box (20% of the maximum, largest component).",
           "Class Activation Mapping (Zhou et al. 2016)", "efficientnet_lite0", "04 §4",
           make_cam, draw_maps),
    Figure("grad_cam_two_classes", "Grad-CAM, guided backprop and Guided Grad-CAM at the last "
           "conv layer for the cat class and for espresso on the same photo.",
           "Grad-CAM: class-discriminative maps (cat vs dog), Guided Grad-CAM",
           "efficientnet_lite0", "05 §7", make_grad_cam, draw_grad_cam_pair),
    Figure("cam_family", "The CAM family at Lite0's _blocks.10 (112 channels, 14×14) for each "
           "photo's top-1 class: Grad-CAM, Grad-CAM++ (Chattopadhyay et al. 2018), XGrad-CAM "
           "(Fu et al. 2020), HiResCAM (Draelos & Carin 2020), LayerCAM (Jiang et al. 2021), "
           "Score-CAM (Wang et al. 2020), Ablation-CAM (Desai & Ramaswamy 2020) and EigenCAM "
           "(Muhammad & Yeasin 2020, the same map for every class).",
           "Grad-CAM and its variants (beyond the lecture)", "efficientnet_lite0", "05 §12",
           make_cam_family, draw_maps),
    Figure("vit_attention_heads", "[CLS] attention to the patches, for every layer and head "
           "of the shapes ViT.", "ViT: attention maps of the [CLS] token", "shapes_vit",
           "06 §2", make_vit_heads, draw_attention_heads),
    Figure("vit_rollout", "Attention rollout (Abnar & Zuidema 2020) of the shapes ViT: "
           "[CLS]'s row over the patches.", "ViT: attention rollout", "shapes_vit", "06 §3",
           make_vit_rollout, draw_maps),
    Figure("vit_b16_rollout", "Attention rollout of torchvision's ViT-B/16 on photos.",
           "ViT: attention maps on ImageNet photos", "vit_b_16", "06 §6", make_vit_b16,
           draw_maps),
]


def _save(fig, out: Path, name: str) -> list[str]:
    """PNG and PDF with no time stamps, so the same figure gives the same bytes."""
    files = []
    for ext, meta in (("png", {"Software": None}), ("pdf", {"CreationDate": None})):
        path = out / f"{name}.{ext}"
        fig.savefig(path, dpi=150, bbox_inches="tight", metadata=meta)
        files.append(path.name)
    plt.close(fig)
    return files


def make_all(out: Path, only: list[str] | None = None, progress: bool = True) -> dict:
    """Make the figures (all, or those named in ``only``) into ``out``; return the manifest."""
    from tqdm.auto import tqdm

    names = [f.name for f in FIGURES]
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise ValueError(f"unknown figure(s) {unknown}; choose from {names}.")
    chosen = [f for f in FIGURES if not only or f.name in only]
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    ctx = _Context()
    manifest = {"lecture": "CS231n 2025, Lecture 9: Visualizing and Understanding",
                "figures": [], "skipped": []}
    with plt.style.context("default"):
        for figure in tqdm(chosen, desc="figures", unit="figure", disable=not progress):
            entry = {"name": figure.name, "caption": figure.caption,
                     "lecture_figure": figure.lecture, "model": figure.model,
                     "notebook_section": figure.notebook,
                     "drawing_function": f"featviz_helpers.figures.{figure.draw.__name__}"}
            try:
                made = figure.make(ctx)
            except Skipped as why:
                manifest["skipped"].append({**entry, "reason": str(why)})
                continue
            fig, note = made if isinstance(made, tuple) else (made, None)
            if note:
                entry["note"] = note
            manifest["figures"].append({**entry, "files": _save(fig, out, figure.name)})
    manifest = _merge_manifest(out, manifest, {f.name for f in chosen})
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                       encoding="utf-8")
    return manifest


def _merge_manifest(out: Path, manifest: dict, remade: set[str]) -> dict:
    """``manifest`` (the figures just made) plus the entries of ``out``'s existing manifest for
    figures not remade now: those made before whose files are all still there, and those
    skipped before. Entries are in :data:`FIGURES`' order."""
    path = out / "manifest.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return manifest
    if not isinstance(old, dict):
        return manifest
    kept = {"figures": [e for e in old.get("figures", []) if isinstance(e, dict)
                        and e.get("name") not in remade
                        and all((out / name).is_file() for name in e.get("files", []))],
            "skipped": [e for e in old.get("skipped", []) if isinstance(e, dict)
                        and e.get("name") not in remade]}
    order = {f.name: i for i, f in enumerate(FIGURES)}
    for key in ("figures", "skipped"):
        merged = kept[key] + manifest[key]
        manifest[key] = sorted(merged, key=lambda e: order.get(e.get("name"), len(order)))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m featviz_helpers.figures",
        description="Regenerate the lecture's figures (PNG and PDF) with a manifest.")
    parser.add_argument("--out", type=Path, default=Path("figures"),
                        help="output folder (default: figures/)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="make only these figures; "
                        f"names: {', '.join(f.name for f in FIGURES)}")
    args = parser.parse_args(argv)
    matplotlib.use("Agg")
    try:
        manifest = make_all(args.out, args.only)
    except ValueError as e:
        parser.error(str(e))
    asked = set(args.only or [f.name for f in FIGURES])
    made = [e for e in manifest["figures"] if e["name"] in asked]
    skipped = [e for e in manifest["skipped"] if e["name"] in asked]
    print(f"{len(made)} figures written to {args.out}/ "
          f"(manifest.json lists them); {len(skipped)} skipped:")
    for entry in skipped:
        print(f"  {entry['name']}: {entry['reason']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
