"""The CAM family: class activation maps from a layer's features and per-channel weights.

Two seams serve every member: :func:`layer_activations_and_gradients` (a layer's
activations A and the gradients ∂S_c/∂A, in one call) and :func:`cam_from_features` (the
map Σ_k w_k A_k from features and weights). A Grad-CAM variant is its weights: Grad-CAM's
are the gradients' positional means; a variant such as Grad-CAM++ is a few lines beside
:func:`grad_cam` that compute other weights from the same A and ∂S_c/∂A.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import capture
from ..library_guard import library_copy, refuse_if_blocked
from ..models import gap_fc_head, layer_name
from ._inputs import (as_targets, autograd_on, check_gradient_reaches, check_ran,
                      checked_input, class_scores, logits_of)
from .gradients import guided_backprop


@library_copy
def cam_from_features(features: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """M(x,y) = Σ_k w_k f_k(x,y) (Zhou et al. 2016; notebook 04 §1–§2): features (B,K,h,w),
    class weights (B,K) → maps (B,h,w). No bias, no ReLU: the signs of the evidence stay."""
    refuse_if_blocked()
    return torch.einsum("bk,bkhw->bhw", class_weights, features)


@library_copy
def cam(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Class Activation Map (Zhou et al. 2016; notebook 04 §2): (B,3,H,W) → (B,h,w), one
    forward, no backward.

    M_c(x,y) = Σ_k w_k^c f_k(x,y) over the last conv features f and the linear layer's
    weights w. Only for conv → global average pooling → linear networks
    (:func:`featviz_helpers.models.gap_fc_head` says which); mean(M_c) + b_c = S_c.
    """
    refuse_if_blocked()
    x = checked_input(model, x, for_gradient=False)
    head = gap_fc_head(model)
    with capture(model, head.layer) as cap, torch.no_grad():
        logits = logits_of(model, x)
    check_ran(cap, head.layer, model)
    weights = head.fc.weight.detach()
    t = as_targets(target, x.shape[0], logits.shape[1]).to(weights.device)
    features = cap.activations[head.layer]
    if head.activation is not None:
        features = head.activation(features)
    return cam_from_features(features, weights[t])


@library_copy
def layer_activations_and_gradients(model: nn.Module, x: torch.Tensor, target,
                                    layer) -> tuple[torch.Tensor, torch.Tensor]:
    """A layer's activations A and the gradients ∂S_c/∂A of each image's target logit
    (notebook 05 §1–§2): both (B,…) as the layer outputs them, e.g. (B,K,h,w) for a conv
    layer, (B,N,D) for a ViT block.

    One forward pass, and a backward pass that stops at ``layer`` (nothing below it is
    differentiated). Raises ``ValueError`` if the layer does not run exactly once or the
    scores do not depend on it. The seam of the Grad-CAM family.
    """
    refuse_if_blocked()
    name = layer_name(model, layer)
    with capture(model, name, stop_gradient=True) as cap, autograd_on():
        logits = logits_of(model, checked_input(model, x))
        check_ran(cap, name, model)
        scores = class_scores(logits, target)
        check_gradient_reaches(scores, name)
        scores.sum().backward()
    return cap.activations[name], cap.gradients[name]


@library_copy
def grad_cam_weights(gradients: torch.Tensor) -> torch.Tensor:
    """Grad-CAM's channel weights α_k = mean over positions of ∂S_c/∂A_k (notebook 05 §1):
    (B,K,h,w) → (B,K)."""
    refuse_if_blocked()
    return gradients.mean(dim=(2, 3))


@library_copy
def grad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017; notebook 05 §1–§2) at ``layer``: (B,3,H,W) → (B,h,w),
    after the ReLU.

    α_k = mean over positions of ∂S_c/∂A_k; L = ReLU(Σ_k α_k A_k): the weights of
    :func:`grad_cam_weights` on :func:`layer_activations_and_gradients`, mapped by
    :func:`cam_from_features`. One forward, and a backward that stops at ``layer``.
    """
    refuse_if_blocked()
    name = layer_name(model, layer)
    activations, gradients = layer_activations_and_gradients(model, x, target, name)
    if activations.dim() != 4:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}; Grad-CAM needs a "
                         "(B,C,h,w) feature map (for a ViT use vit_grad_cam).")
    return cam_from_features(activations, grad_cam_weights(gradients)).clamp_min(0)


@library_copy
def guided_grad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Guided Grad-CAM (Selvaraju et al. 2017; notebook 05 §7): bilinearly upsampled Grad-CAM
    ⊙ guided backprop, (B,3,H,W)."""
    refuse_if_blocked()
    coarse = grad_cam(model, x, target, layer)
    fine = guided_backprop(model, x, target)
    upsampled = F.interpolate(coarse[:, None], size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
    return fine * upsampled
