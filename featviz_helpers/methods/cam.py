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

from ..hooks import capture, preserved_state
from ..library_guard import library_copy, refuse_if_blocked
from ..models import gap_fc_head, get_layer, layer_name
from ._inputs import (as_targets, autograd_on, check_gradient_reaches, check_ran,
                      checked_input, class_scores, images_per_pass, logits_of,
                      positive_int)
from .gradients import guided_backprop
from .perturbation import masked_logits


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


def _feature_maps(model: nn.Module, x: torch.Tensor, target, layer,
                  method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv layer's activations A and gradients ∂S_c/∂A, both (B,K,h,w), or a ValueError
    naming ``method`` for a layer that is not a (B,C,h,w) feature map."""
    name = layer_name(model, layer)
    activations, gradients = layer_activations_and_gradients(model, x, target, name)
    if activations.dim() != 4:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}; {method} needs a "
                         "(B,C,h,w) feature map (for a ViT use vit_grad_cam).")
    return activations, gradients


@library_copy
def grad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017; notebook 05 §1–§2) at ``layer``: (B,3,H,W) → (B,h,w),
    after the ReLU.

    α_k = mean over positions of ∂S_c/∂A_k; L = ReLU(Σ_k α_k A_k): the weights of
    :func:`grad_cam_weights` on :func:`layer_activations_and_gradients`, mapped by
    :func:`cam_from_features`. One forward, and a backward that stops at ``layer``.
    """
    refuse_if_blocked()
    activations, gradients = _feature_maps(model, x, target, layer, "Grad-CAM")
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


# ------------------------------------------------------------ beyond the lecture: CAM variants
# Each variant keeps Grad-CAM's signature (model, x, target, layer) and returns (B,h,w) after a
# ReLU, as pytorch-grad-cam's do. The gradient-based ones differ from Grad-CAM only in how A and
# ∂S_c/∂A become a map; Score-CAM and Ablation-CAM weigh each channel by what the model says
# when the input is masked by it or the channel is removed; EigenCAM uses no class at all.

@library_copy
def grad_cam_plus_plus(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay, Sarkar, Howlader & Balasubramanian 2018, eq. 19; notebook 05
    §12): (B,3,H,W) → (B,h,w), after the ReLU.

    w_k = Σ_ij α_kij ReLU(g_kij) with g = ∂S_c/∂A and α_kij = g² / (2g² + Σ_ab A_kab · g³)
    (the paper's closed form for an exponential of the score, in first-order gradients);
    α = 0 where the denominator is 0 (pytorch-grad-cam instead adds 10⁻⁶ to every
    denominator, which moves α wherever g² is that small). L = ReLU(Σ_k w_k A_k). Where the
    gradient is the same c > 0 at every position, α is too, and w_k = Z·c/(2 + c·Σ A_k):
    Grad-CAM's weight c rescaled per channel by how much it fires. The closed form assumes
    non-negative activations (the paper's layer follows a ReLU): where A can be negative (a
    BatchNorm output, a residual sum), 2 + g·ΣA can vanish for g > 0 and α explodes there,
    so prefer a layer after a ReLU.
    """
    refuse_if_blocked()
    activations, gradients = _feature_maps(model, x, target, layer, "Grad-CAM++")
    g2 = gradients.pow(2)
    denominator = 2 * g2 + activations.sum((2, 3), keepdim=True) * g2 * gradients
    alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    weights = (alpha * gradients.clamp_min(0)).sum((2, 3))
    return cam_from_features(activations, weights).clamp_min(0)


@library_copy
def xgrad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """XGrad-CAM (Fu, Hu, Dong, Guo, Gao & Li 2020, eq. 10; notebook 05 §12): (B,3,H,W) →
    (B,h,w), after the ReLU.

    w_k = Σ_ij (A_kij / Σ_ab A_kab) · ∂S_c/∂A_kij: the gradient averaged with the channel's
    own activation as weights instead of uniformly (a channel that never fires gets 0).
    Where a channel's activation is the same at every position, w_k is Grad-CAM's weight.
    """
    refuse_if_blocked()
    activations, gradients = _feature_maps(model, x, target, layer, "XGrad-CAM")
    total = activations.sum((2, 3))
    weights = (activations * gradients).sum((2, 3))
    weights = torch.where(total != 0, weights / torch.where(total != 0, total, 1), 0)
    return cam_from_features(activations, weights).clamp_min(0)


@library_copy
def hires_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020; notebook 05 §12): (B,3,H,W) → (B,h,w), after the ReLU.

    L_ij = ReLU(Σ_k ∂S_c/∂A_kij · A_kij): the gradient multiplies the activations position
    by position instead of being averaged first, so the map is the part of the score each
    position accounts for when the rest of the network is linear in A. At a GAP → linear
    head the gradient is w_k^c/Z at every position and HiResCAM is ReLU(CAM)/Z exactly.
    """
    refuse_if_blocked()
    activations, gradients = _feature_maps(model, x, target, layer, "HiResCAM")
    return (gradients * activations).sum(1).clamp_min(0)


@library_copy
def layer_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """LayerCAM (Jiang, Zhang, Hou, Cheng & Wei 2021, eq. 5; notebook 05 §12): (B,3,H,W) →
    (B,h,w), after the ReLU.

    L_ij = ReLU(Σ_k ReLU(∂S_c/∂A_kij) · A_kij): a weight per position and channel, only the
    positive gradients, so that shallow layers (where Grad-CAM's averaged weights cancel)
    still give a class map.
    """
    refuse_if_blocked()
    activations, gradients = _feature_maps(model, x, target, layer, "LayerCAM")
    return (gradients.clamp_min(0) * activations).sum(1).clamp_min(0)


def _layer_activations(model: nn.Module, x: torch.Tensor, target, layer, method: str
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass without gradients: the checked input, the layer's activations
    (B,K,h,w), the logits (B,classes) and the targets (B,), or a ValueError naming
    ``method``."""
    name = layer_name(model, layer)
    x = checked_input(model, x, for_gradient=False)
    with capture(model, name) as cap, torch.no_grad():
        logits = logits_of(model, x)
    check_ran(cap, name, model)
    activations = cap.activations[name]
    if activations.dim() != 4:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}; {method} needs a "
                         "(B,C,h,w) feature map.")
    t = as_targets(target, x.shape[0], logits.shape[1]).to(x.device)
    return x, activations, logits, t


@library_copy
def score_cam(model: nn.Module, x: torch.Tensor, target, layer,
              batch_size: int | None = None) -> torch.Tensor:
    """Score-CAM (Wang, Wang, Du, Yang, Zhang, Ding, Mardziel & Hu 2020, Algorithm 1;
    notebook 05 §12): (B,3,H,W) → (B,h,w), after the ReLU. No gradients.

    Each channel's activation map, bilinearly upsampled to the input and min–max normalised
    to [0,1] (a constant map gives 0), masks the input: x ⊙ H_k, with 0 after normalisation
    where the mask is 0. The channel's score is the target's logit on x ⊙ H_k (the paper
    subtracts the logit of a baseline input, the same for every channel, which the softmax
    cancels); w = softmax over the channels of the scores; L = ReLU(Σ_k w_k A_k). Costs one
    forward pass per channel and image, ``batch_size`` masked images at a time
    (:func:`masked_logits`; default :func:`images_per_pass`).
    """
    refuse_if_blocked()
    x, activations, _, t = _layer_activations(model, x, target, layer, "Score-CAM")
    up = F.interpolate(activations, size=x.shape[-2:], mode="bilinear", align_corners=False)
    low = up.flatten(2).amin(2)[..., None, None]
    span = up.flatten(2).amax(2)[..., None, None] - low
    keep = torch.where(span > 0, (up - low) / torch.where(span > 0, span, 1), 0)  # (B,K,H,W)
    scores = masked_logits(model, x, 1 - keep.transpose(0, 1), t, 0.0, batch_size)  # (K,B)
    return cam_from_features(activations, scores.T.softmax(1)).clamp_min(0)


@library_copy
def ablation_cam(model: nn.Module, x: torch.Tensor, target, layer,
                 batch_size: int | None = None) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy 2020, eq. 2; notebook 05 §12): (B,3,H,W) → (B,h,w),
    after the ReLU. No gradients.

    w_k = (y_c − y_c^k) / |y_c|, with y_c the target's logit and y_c^k the logit when channel
    k of ``layer`` is set to 0: the drop the channel accounts for, as a fraction of the score.
    The paper divides by y_c, which for a negative logit (a class the model rejects) flips
    every weight and draws the evidence *against* the class; |y_c| only rescales each image's
    map. L = ReLU(Σ_k w_k A_k). Costs one forward pass per channel and image, ``batch_size``
    ablated copies at a time (default :func:`images_per_pass`). A logit too close to 0 for
    the fraction to be finite is refused.
    """
    refuse_if_blocked()
    if batch_size is not None:          # refused before the forward pass
        positive_int(batch_size, "batch_size (images per forward pass)")
    x, activations, logits, t = _layer_activations(model, x, target, layer, "Ablation-CAM")
    batch_size = images_per_pass(batch_size, x)
    B, K = activations.shape[:2]
    score = logits.gather(1, t[:, None])[:, 0]                                  # (B,)
    module = get_layer(model, layer)
    ablated = torch.empty(K, B, dtype=logits.dtype, device=x.device)              # (K,B)
    with preserved_state(model), torch.no_grad():
        # a pass holds several channels' copies of a few images, or one channel's copies of
        # part of a large batch
        for images in torch.arange(B, device=x.device).split(batch_size):
            for channels in torch.arange(K, device=x.device).split(max(1, batch_size // len(images))):
                index = channels.repeat_interleave(len(images))     # copy j·b + i: channel j
                rows = torch.arange(len(index), device=x.device)

                def ablate(module, inputs, output, index=index, rows=rows):
                    output = output.clone()
                    output[rows, index] = 0
                    return output

                handle = module.register_forward_hook(ablate)
                try:
                    out = logits_of(model, x[images].repeat(len(channels), 1, 1, 1))
                finally:
                    handle.remove()
                scores = out.gather(1, t[images].repeat(len(channels))[:, None])[:, 0]
                ablated[channels[:, None], images[None]] = scores.view(len(channels), len(images))
    weights = ((score[None] - ablated) / score[None].abs()).T
    if not weights.is_meta and not torch.isfinite(weights).all():   # (meta tensors: no values)
        raise ValueError("Ablation-CAM divides by the target's logit, which is 0 or too close "
                         "to 0 for some image; pick another target class (or use Grad-CAM, "
                         "which does not divide).")
    return cam_from_features(activations, weights).clamp_min(0)


@library_copy
def eigen_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """EigenCAM (Muhammad & Yeasin 2020; notebook 05 §12): (B,3,H,W) → (B,h,w), after the
    ReLU. ``target`` is ignored: the map is the same for every class (the method is not class
    discriminative); the argument is kept so that every CAM variant is called alike.

    The activations of each image as a matrix O (h·w positions × K channels), centred over
    positions as pytorch-grad-cam does, projected on their first right singular vector v₁:
    L = ReLU(O v₁). An SVD leaves v₁'s sign free; it is chosen so that Σ_k v₁k ≥ 0 (the
    direction in which the channels fire more), where pytorch-grad-cam leaves it to the SVD.
    """
    refuse_if_blocked()
    _, activations, _, _ = _layer_activations(model, x, 0, layer, "EigenCAM")
    if not activations.is_meta and not torch.isfinite(activations).all():
        raise ValueError(f"EigenCAM: the activations of layer {layer_name(model, layer)!r} contain "
                         "NaN or infinite values, which have no principal component; check the "
                         "input and the model's weights.")
    B, K, h, w = activations.shape
    o = activations.flatten(2).transpose(1, 2).double()                         # (B,hw,K)
    o = o - o.mean(1, keepdim=True)
    # v₁ is the top eigenvector of the K×K matrix OᵀO. With fewer positions than channels the
    # hw×hw matrix O Oᵀ is smaller and gives the projection directly: its top eigenvector u₁
    # has O Oᵀ u₁ = σ₁² u₁, and O v₁ = σ₁ u₁. Either is far cheaper than an SVD of O on a CPU
    # (64 images of 256 positions × 64 channels: 0.07 s against 1.1 s).
    if h * w >= K:
        v = torch.linalg.eigh(o.transpose(1, 2) @ o).eigenvectors[..., -1]      # (B,K)
        projection, direction = (o @ v[..., None])[..., 0], v.sum(1)
    else:
        values, vectors = torch.linalg.eigh(o @ o.transpose(1, 2))
        u = vectors[..., -1]                                                    # (B,hw)
        projection = values[..., -1:].clamp_min(0).sqrt() * u
        direction = (o.sum(2) * u).sum(1)                   # Σ_k v₁k, times σ₁ ≥ 0
    projection = torch.where(direction[:, None] < 0, -projection, projection)
    return projection.to(activations.dtype).view(B, h, w).clamp_min(0)
