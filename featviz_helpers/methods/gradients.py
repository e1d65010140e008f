"""Input-gradient methods: one input gradient, optionally under a ReLU backward rule, and the
methods built on it — saliency, guided backprop, SmoothGrad, Integrated Gradients — plus
guided backprop from a single neuron."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..hooks import capture, preserved_state
from ..library_guard import library_copy, refuse_if_blocked
from ..models import layer_name
from ..relu_rules import RULES, relu_backward_rule
from ._inputs import (as_targets, autograd_on, baseline_like, channel_index, check_ran,
                      checked_input, logits_of, positive_int, stacked_targets,
                      unit_responses)


@library_copy
def input_gradient(model: nn.Module, x: torch.Tensor, target, rule: str = "standard",
                   batch_size: int | None = None) -> torch.Tensor:
    """∂S_c/∂x: the gradient of each image's target logit w.r.t. the input, (B,C,H,W) → same.

    ``rule`` is how the gradient passes back through every ReLU/ReLU6 (Springenberg et al.
    2015; notebook 03 §1–§3): ``"standard"`` (plain backprop: any activation works),
    ``"deconvnet"`` or ``"guided"`` (see :func:`featviz_helpers.relu_rules.relu_backward_rule`,
    which refuses a model with activations the rule does not cover). Images are independent
    in eval mode, so one backward pass of the summed scores gives every image its own
    gradient; ``batch_size`` images go through the model at a time (default: all at once).
    S_c is the logit, not the softmax probability (notebook 02 §5 says why). Raises
    ``ValueError`` for an unknown rule and as :func:`as_targets` does for bad targets.
    """
    refuse_if_blocked()
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    if batch_size is not None:
        batch_size = positive_int(batch_size, "batch_size")
    rule_block = (contextlib.nullcontext() if rule == "standard"
                  else relu_backward_rule(model, rule))
    with preserved_state(model), rule_block, autograd_on():
        x = checked_input(model, x)
        size = x.shape[0] if batch_size is None else batch_size
        grads, t = [], None
        for start in range(0, x.shape[0], size):
            rows = x[start:start + size].detach().requires_grad_(True)
            logits = logits_of(model, rows)
            if t is None:
                t = as_targets(target, x.shape[0], logits.shape[1]).to(x.device)
            scores = logits.gather(1, t[start:start + size, None])[:, 0]
            grads.append(torch.autograd.grad(scores.sum(), rows)[0])
    return torch.cat(grads)


@library_copy
def saliency(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Gradient saliency (Simonyan, Vedaldi & Zisserman 2014; notebook 02 §1–§2):
    (B,3,H,W) → (B,H,W).

    M_ij = max over colour channels of |∂S_c/∂x_ij|, with S_c the logit (not the softmax
    probability) of image b's target class: :func:`input_gradient`, one forward and one
    input-only backward for the whole batch.
    """
    refuse_if_blocked()
    return input_gradient(model, x, target).abs().amax(dim=1)


@library_copy
def guided_backprop(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015; notebook 03 §2): (B,3,H,W) →
    (B,3,H,W).

    The gradient of each image's target logit w.r.t. the input, with every ReLU/ReLU6
    (modules and functional calls) passing back only positive gradient where its input was
    positive: :func:`input_gradient` with ``rule="guided"``. A model with another activation
    (GELU, SiLU, …) is refused: see :func:`featviz_helpers.relu_rules.relu_backward_rule`.
    """
    refuse_if_blocked()
    return input_gradient(model, x, target, rule="guided")


@library_copy
def neuron_guided_backprop(model: nn.Module, x: torch.Tensor, layer,
                           channel: int) -> torch.Tensor:
    """Guided backprop from one neuron (Springenberg et al. 2015; notebook 03 §4):
    (B,3,H,W) → (B,3,H,W).

    For each image, the neuron is ``channel`` of ``layer`` (B,C,h,w) at the position where it
    responds most, or unit ``channel`` of a layer with one value per unit (B,C), such as a
    ``Linear``; the result shows which input pixels make that response larger.
    """
    refuse_if_blocked()
    channel = channel_index(channel)
    name = layer_name(model, layer)
    with capture(model, name) as cap, relu_backward_rule(model, "guided"), autograd_on():
        x = checked_input(model, x).requires_grad_(True)
        model(x)
        check_ran(cap, name, model)
        out = unit_responses(cap.outputs[name], name, [channel])[:, 0]   # (B,) or (B,h,w)
        peak = out.flatten(1).amax(1) if out.dim() > 1 else out          # (B,)
        (grad,) = torch.autograd.grad(peak.sum(), x)
    return grad


@library_copy
def smoothgrad(model: nn.Module, x: torch.Tensor, target, samples: int = 25,
               noise: float = 0.15, seed: int = 0, batch_size: int = 16) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017; notebook 02 §9): (B,3,H,W) → (B,3,H,W), the mean
    gradient of each image's target logit over ``samples`` noisy copies of the image.

    The noise is Gaussian with σ = ``noise`` × (max − min of that image), drawn as
    ``torch.randn((samples, B, C, H, W), generator=torch.Generator().manual_seed(seed))``
    on the CPU, so a seed gives the same maps on every device. Display it like guided
    backprop, or as a saliency map with :func:`viz.channel_max`. Costs ``samples``
    forwards and input-only backwards (:func:`input_gradient`, ``batch_size`` noisy copies
    at a time).
    """
    refuse_if_blocked()
    samples = positive_int(samples, "samples (the number of noisy copies)")
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise is σ as a fraction of each image's range, a number ≥ 0 "
                         f"(Smilkov et al. use 0.1–0.2); got {noise!r}.")
    with autograd_on():      # an input made under inference_mode becomes an ordinary one
        x = checked_input(model, x)
        t = stacked_targets(target, x.shape[0], samples)
        B = x.shape[0]
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(1, B, 1, 1, 1)
        rng = torch.Generator(device="cpu").manual_seed(seed)
        eps = torch.randn((samples, *x.shape), generator=rng, device="cpu")
        noisy = x[None] + noise * span * eps.to(device=x.device, dtype=x.dtype)
        grads = input_gradient(model, noisy.flatten(0, 1), t, batch_size=batch_size)
    return grads.view(samples, *x.shape).mean(0)


@library_copy
def integrated_gradients(model: nn.Module, x: torch.Tensor, target, baseline=None,
                         steps: int = 32, batch_size: int = 16) -> torch.Tensor:
    """Integrated Gradients (Sundararajan, Taly & Yan 2017; notebook 02 §10): (B,3,H,W) →
    (B,3,H,W).

    IG_i = (x_i − x'_i) · (1/m) Σ_{k=1..m} ∂S_c/∂x_i at x' + (k/m)(x − x'): the paper's
    (right) Riemann sum with m = ``steps``, the gradients from :func:`input_gradient`
    (``batch_size`` points of the path at a time). The baseline x' defaults to
    zeros, which after normalisation is the colour the model's preprocessing subtracts
    (``model.input_spec.mean``): a flat mid-grey 127/255 for EfficientNet-Lite0, 0.5 grey for
    the shapes models, ImageNet's mean colour for torchvision's models. A tensor broadcastable
    to ``x`` is used as given. Completeness: Σ_i IG_i → S_c(x) − S_c(x') as m grows (error
    O(1/m), not monotone in m on a piecewise-linear network); Sundararajan et al. ask for it
    within 5 % before a map is used, so check it with :func:`metrics.completeness_error`:
    32 steps are not enough for Lite0 on notebook 02's photos (112 px, §10).
    """
    refuse_if_blocked()
    steps = positive_int(steps, "steps (the number of points on the path)")
    batch_size = positive_int(batch_size, "batch_size")
    with autograd_on():      # an input made under inference_mode becomes an ordinary one
        x = checked_input(model, x)
        t = stacked_targets(target, x.shape[0], steps)
        start = baseline_like(x, baseline)
        alphas = torch.arange(1, steps + 1, dtype=x.dtype, device=x.device) / steps
        path = start[None] + alphas.view(-1, 1, 1, 1, 1) * (x - start)[None]  # (m,B,C,H,W)
        grads = input_gradient(model, path.flatten(0, 1), t, batch_size=batch_size)
    return (x - start) * grads.view(steps, *x.shape).mean(0)
