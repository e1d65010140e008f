"""Library copies of the course's visualisation methods, by family.

Each notebook derives a method and writes it from scratch; the copy here is the one later
notebooks, the benchmarks and the checks reuse. Same maths, batched (one target class per
image), and careful with state: the model's mode and ``requires_grad`` flags are restored
and no hook outlives a call. Maps are returned raw; :mod:`featviz_helpers.viz` normalises
them for display. Every public name is re-exported here (``methods.grad_cam``), so
notebooks never need the module a method lives in:

- :mod:`.gradients` — one input gradient (optionally under a ReLU rule) and what is built
  on it: saliency, guided backprop, SmoothGrad, Integrated Gradients (notebooks 02, 03);
- :mod:`.cam` — CAM, Grad-CAM and Guided Grad-CAM on two seams: a layer's activations and
  gradients, and the map from features and weights (notebooks 04, 05); and the variants
  practitioners use: Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM, Ablation-CAM and
  EigenCAM;
- :mod:`.vit` — attention, rollout and Grad-CAM for vision transformers (notebook 06);
- :mod:`.perturbation` — occlusion and the masked copies the deletion metrics share (05);
- :mod:`.optimised` — images made by gradient ascent (notebooks 02, 03);
- :mod:`.catalogue` — one entry per method, iterated by the tests and the benchmark.
"""
from ._inputs import as_targets, baseline_like, class_scores, logits_of, model_targets
from .cam import (ablation_cam, cam, cam_from_features, eigen_cam, grad_cam,
                  grad_cam_plus_plus, grad_cam_weights, guided_grad_cam, hires_cam, layer_cam,
                  layer_activations_and_gradients, score_cam, xgrad_cam)
from .catalogue import CATALOGUE, Method
from .gradients import (guided_backprop, input_gradient, integrated_gradients,
                        neuron_guided_backprop, saliency, smoothgrad)
from .optimised import (COLOR_CORRELATION_SQRT, activation_maximisation, ascent_step,
                        class_visualisation, fooling_image, fourier_image, fourier_scale)
from .perturbation import (masked_logits, masked_probabilities, occlusion, occlusion_masks,
                           window_starts)
from .vit import (attention_rollout, cls_maps, patch_grid, tokens_to_grid, vit_attention,
                  vit_grad_cam)

__all__ = [
    # targets
    "as_targets", "model_targets", "class_scores", "logits_of", "baseline_like",
    # gradients
    "input_gradient", "saliency", "guided_backprop", "neuron_guided_backprop", "smoothgrad",
    "integrated_gradients",
    # CAM family
    "cam_from_features", "cam", "layer_activations_and_gradients", "grad_cam_weights",
    "grad_cam", "guided_grad_cam", "grad_cam_plus_plus", "xgrad_cam", "hires_cam", "layer_cam",
    "score_cam", "ablation_cam", "eigen_cam",
    # vision transformers
    "vit_attention", "attention_rollout", "patch_grid", "tokens_to_grid", "cls_maps",
    "vit_grad_cam",
    # perturbation
    "window_starts", "occlusion_masks", "masked_probabilities", "masked_logits", "occlusion",
    # optimised images
    "ascent_step", "class_visualisation", "fooling_image", "COLOR_CORRELATION_SQRT",
    "fourier_scale", "fourier_image", "activation_maximisation",
    # the catalogue
    "Method", "CATALOGUE",
]
