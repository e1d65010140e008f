"""Checks for the notebooks' from-scratch exercises.

Each ``check_*`` runs the student's function on cases with known answers and either
prints one line saying what passed or raises :class:`CheckError` saying precisely what is
wrong — and, where a common mistake can be recognised, which one. The ``hidden_check_*``
functions are the classroom's hidden tests: targets other than the top-1 class, a model
handed over in train mode, a second architecture, inputs that must stay untouched.

Student code always runs on private copies of the model and the inputs (so nothing it does
can reach the notebook's own objects) and with the library copies of the methods blocked
(:mod:`featviz_helpers.library_guard`): calling ``methods.saliency`` is not an answer to
"write saliency". Every public name is re-exported here (``checks.check_saliency``), so the
notebooks never need the module a check lives in:

- :mod:`._harness` — what every check shares: :class:`CheckError`, :func:`rel_error`,
  :func:`assert_close`, running student code (:func:`run_exercise`, :func:`try_exercise`),
  the one way a check compares and diagnoses, hidden cases and seeded random models;
- :mod:`.filters` — notebook 01_first_layer_filters: normalize_filters, filter_response;
- :mod:`.saliency` — notebook 02_saliency: saliency, SmoothGrad, Integrated Gradients, the
  ascent step, the fooling image;
- :mod:`.guided_backprop` — notebook 03_guided_backprop: the ReLU rules, guided backprop,
  fourier_image;
- :mod:`.cam` — notebook 04_cam: cam_from_features, CAM;
- :mod:`.grad_cam` — notebook 05_grad_cam: Grad-CAM, occlusion, Grad-CAM++;
- :mod:`.vit_attention` — notebook 06_vit_attention: attention extraction, rollout.
"""
from ._harness import CheckError, assert_close, rel_error, run_exercise, try_exercise
from .filters import (check_filter_response, check_normalize_filters, hidden_check_filter_response,
                      hidden_check_normalize_filters)
from .saliency import (check_ascent_step, check_fooling_image, check_integrated_gradients,
                       check_saliency, check_smoothgrad, hidden_check_ascent_step,
                       hidden_check_fooling_image, hidden_check_integrated_gradients,
                       hidden_check_saliency, hidden_check_smoothgrad)
from .guided_backprop import (check_fourier_image, check_guided_backprop, check_relu_rules,
                              hidden_check_fourier_image, hidden_check_guided_backprop,
                              hidden_check_relu_rules)
from .cam import check_cam, check_cam_from_features, hidden_check_cam
from .grad_cam import (check_grad_cam, check_grad_cam_plus_plus, check_occlusion,
                       hidden_check_grad_cam, hidden_check_grad_cam_plus_plus,
                       hidden_check_occlusion)
from .vit_attention import (check_rollout, check_vit_attention, hidden_check_rollout,
                            hidden_check_vit_attention)

__all__ = [
    "CheckError",
    "rel_error",
    "assert_close",
    "run_exercise",
    "try_exercise",
    "check_normalize_filters",
    "hidden_check_normalize_filters",
    "check_filter_response",
    "hidden_check_filter_response",
    "check_saliency",
    "hidden_check_saliency",
    "check_relu_rules",
    "hidden_check_relu_rules",
    "check_guided_backprop",
    "hidden_check_guided_backprop",
    "check_cam_from_features",
    "check_cam",
    "hidden_check_cam",
    "check_grad_cam",
    "hidden_check_grad_cam",
    "check_vit_attention",
    "hidden_check_vit_attention",
    "check_rollout",
    "hidden_check_rollout",
    "check_smoothgrad",
    "hidden_check_smoothgrad",
    "check_integrated_gradients",
    "hidden_check_integrated_gradients",
    "check_ascent_step",
    "hidden_check_ascent_step",
    "check_fooling_image",
    "hidden_check_fooling_image",
    "check_fourier_image",
    "hidden_check_fourier_image",
    "check_occlusion",
    "hidden_check_occlusion",
    "check_grad_cam_plus_plus",
    "hidden_check_grad_cam_plus_plus",
]
