"""The catalogue of the library's methods: one entry per library copy, which the device,
thread and state tests and the benchmark iterate. A test fails when a library copy in
:mod:`featviz_helpers.methods` has no entry, so adding a method is its function, its entry
here and its own tests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .cam import (ablation_cam, cam, cam_from_features, eigen_cam, grad_cam,
                  grad_cam_plus_plus, grad_cam_weights, guided_grad_cam, hires_cam, layer_cam,
                  layer_activations_and_gradients, score_cam, xgrad_cam)
from .gradients import (guided_backprop, input_gradient, integrated_gradients,
                        neuron_guided_backprop, saliency, smoothgrad)
from .optimised import (activation_maximisation, ascent_step, class_visualisation,
                        fooling_image, fourier_image)
from .perturbation import occlusion
from .vit import attention_rollout, vit_attention, vit_grad_cam

__all__ = ["Method", "CATALOGUE", "FAMILIES", "OUTPUTS"]

FAMILIES = ("gradient", "CAM", "ViT", "perturbation", "optimised image")
OUTPUTS = {
    "map": "(B,h,w): one value per position",
    "gradient": "(B,3,H,W): one value per input element",
    "attention": "(L,B,heads,N,N) or (B,N,N): token-to-token weights",
    "picture": "(B,3,H,W) or (3,H,W): an image",
    "part": "a building block of the family's methods",
}


@dataclass(frozen=True)
class Method:
    """One library method: what it is, and a cheap call of it for tests.

    ``example(model, x, target, layer)`` calls ``function`` on a model of the kind
    ``architecture`` names ("CNN": conv features, ReLUs, a GAP → linear head; "ViT": a
    torchvision VisionTransformer), a batch ``x`` (B,3,H,W), one target class per image and,
    for a CNN, a layer with at least 3 channels; with arguments small enough (few samples,
    steps, windows) that a test runs in well under a second on a small model. It returns one
    tensor.
    """

    name: str                 # the paper's (and Captum's / pytorch-grad-cam's) name
    function: Callable
    family: str               # one of FAMILIES
    output: str               # one of OUTPUTS
    architecture: str         # "CNN" or "ViT"
    needs_layer: bool
    example: Callable         # (model, x, target, layer) -> tensor
    data_dependent: bool = False   # stops when the model's answer changes (no meta tensors)

    def __post_init__(self):
        if self.family not in FAMILIES or self.output not in OUTPUTS:
            raise ValueError(f"{self.name}: family {self.family!r} / output {self.output!r} "
                             f"not among {FAMILIES} / {tuple(OUTPUTS)}.")


def _features_and_weights(x: torch.Tensor):
    """Stand-in features (B,4,h,w) and weights (B,4) made from ``x``, on its device."""
    features = x[:, :3].repeat(1, 2, 1, 1)[:, :4, ::4, ::4]
    return features, x[:, 0, 0, :4]


def _activations_and_gradients(model, x, target, layer) -> torch.Tensor:
    activations, gradients = layer_activations_and_gradients(model, x, target, layer)
    return torch.cat((activations.flatten(1), gradients.flatten(1)), 1)


def _spectrum(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    return torch.complex(x[:, :, :, : w // 2 + 1], x.flip(-1)[:, :, :, : w // 2 + 1])


CATALOGUE: tuple[Method, ...] = (
    Method("input gradient", input_gradient, "gradient", "gradient", "CNN", False,
           lambda m, x, t, layer: input_gradient(m, x, t, rule="deconvnet")),
    Method("saliency", saliency, "gradient", "map", "CNN", False,
           lambda m, x, t, layer: saliency(m, x, t)),
    Method("guided backprop", guided_backprop, "gradient", "gradient", "CNN", False,
           lambda m, x, t, layer: guided_backprop(m, x, t)),
    Method("neuron guided backprop", neuron_guided_backprop, "gradient", "gradient", "CNN", True,
           lambda m, x, t, layer: neuron_guided_backprop(m, x, layer, 2)),
    Method("SmoothGrad", smoothgrad, "gradient", "gradient", "CNN", False,
           lambda m, x, t, layer: smoothgrad(m, x, t, samples=3, batch_size=4)),
    Method("Integrated Gradients", integrated_gradients, "gradient", "gradient", "CNN", False,
           lambda m, x, t, layer: integrated_gradients(m, x, t, steps=3, batch_size=4)),
    Method("CAM (from features)", cam_from_features, "CAM", "part", "CNN", False,
           lambda m, x, t, layer: cam_from_features(*_features_and_weights(x))),
    Method("CAM", cam, "CAM", "map", "CNN", False,
           lambda m, x, t, layer: cam(m, x, t)),
    Method("layer activations and gradients", layer_activations_and_gradients, "CAM", "part",
           "CNN", True, _activations_and_gradients),
    Method("Grad-CAM weights", grad_cam_weights, "CAM", "part", "CNN", False,
           lambda m, x, t, layer: grad_cam_weights(x)),
    Method("Grad-CAM", grad_cam, "CAM", "map", "CNN", True,
           lambda m, x, t, layer: grad_cam(m, x, t, layer)),
    Method("Guided Grad-CAM", guided_grad_cam, "CAM", "gradient", "CNN", True,
           lambda m, x, t, layer: guided_grad_cam(m, x, t, layer)),
    *(Method(name, fn, "CAM", "map", "CNN", True,
             lambda m, x, t, layer, fn=fn: fn(m, x, t, layer))
      for name, fn in [("Grad-CAM++", grad_cam_plus_plus), ("XGrad-CAM", xgrad_cam),
                       ("HiResCAM", hires_cam), ("LayerCAM", layer_cam), ("EigenCAM", eigen_cam)]),
    *(Method(name, fn, "CAM", "map", "CNN", True,
             lambda m, x, t, layer, fn=fn: fn(m, x, t, layer, batch_size=4))
      for name, fn in [("Score-CAM", score_cam), ("Ablation-CAM", ablation_cam)]),
    Method("attention", vit_attention, "ViT", "attention", "ViT", False,
           lambda m, x, t, layer: vit_attention(m, x)),
    Method("attention rollout", attention_rollout, "ViT", "attention", "ViT", False,
           lambda m, x, t, layer: attention_rollout(vit_attention(m, x))),
    Method("ViT Grad-CAM", vit_grad_cam, "ViT", "map", "ViT", False,
           lambda m, x, t, layer: vit_grad_cam(m, x, t)),
    Method("occlusion", occlusion, "perturbation", "map", "CNN", False,
           lambda m, x, t, layer: occlusion(m, x, t, window=x.shape[-1] // 2,
                                            stride=x.shape[-1] // 2)),
    Method("gradient ascent step", ascent_step, "optimised image", "picture", "CNN", False,
           lambda m, x, t, layer: ascent_step(m, x, t, 1.0, 0.01)),
    Method("class model visualisation", class_visualisation, "optimised image", "picture",
           "CNN", False,
           lambda m, x, t, layer: class_visualisation(m, t, size=x.shape[-1], steps=2)),
    Method("adversarial example", fooling_image, "optimised image", "picture", "CNN", False,
           lambda m, x, t, layer: fooling_image(m, x, t, lr=2.0, max_steps=200),
           data_dependent=True),
    Method("Fourier image", fourier_image, "optimised image", "part", "CNN", False,
           lambda m, x, t, layer: fourier_image(_spectrum(x), *x.shape[-2:])),
    Method("activation maximisation", activation_maximisation, "optimised image", "picture",
           "CNN", True,
           lambda m, x, t, layer: activation_maximisation(m, layer, 2, size=32, steps=2)),
)
