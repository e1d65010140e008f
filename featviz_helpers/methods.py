"""Library copies of the course's visualisation methods.

Each notebook derives a method and writes it from scratch; the copy here is the one later
notebooks, the benchmarks and the checks reuse. Same maths, batched (one target class per
image), and careful with state: the model's mode and ``requires_grad`` flags are restored
and no hook outlives a call. Maps are returned raw; :mod:`featviz_helpers.viz` normalises
them for display.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import capture, preserved_state, relu_backward_rule
from .library_guard import library_copy
from .models import gap_fc_head, layer_name

__all__ = ["as_targets", "class_scores", "saliency", "guided_backprop", "neuron_guided_backprop",
           "cam", "cam_from_features", "grad_cam", "guided_grad_cam", "vit_attention", "attention_rollout",
           "tokens_to_grid", "vit_grad_cam"]


def as_targets(target, batch_size: int, num_classes: int) -> torch.Tensor:
    """``target`` as a LongTensor (B,) of class indices, checked against the model.

    ``target`` is an int (the same class for every image), a sequence, or an integer tensor
    of shape (B,) — one class per image.
    """
    if isinstance(target, bool):
        raise TypeError("target must be a class index (int), not a bool.")
    if isinstance(target, int):
        t = torch.full((batch_size,), target, dtype=torch.long)
    else:
        t = torch.as_tensor(target)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"target must hold integer class indices, got dtype {t.dtype}.")
        t = t.long().reshape(-1) if t.dim() == 0 else t.long()
        if t.numel() == 1 and batch_size != 1:
            t = t.expand(batch_size)
        if t.dim() != 1 or t.shape[0] != batch_size:
            raise ValueError(
                f"target must be one class index per image: shape ({batch_size},), "
                f"got {tuple(t.shape)}."
            )
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"class index {t[bad][0].item()} is out of range: this model has {num_classes} "
            f"classes (0..{num_classes - 1})."
        )
    return t.clone()


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a preprocessed batch (B,C,H,W); got {shape}.")


def class_scores(logits: torch.Tensor, target) -> torch.Tensor:
    """The logit of each image's own target class: (B,K), target → (B,)."""
    t = as_targets(target, logits.shape[0], logits.shape[1]).to(logits.device)
    return logits.gather(1, t[:, None])[:, 0]


@library_copy
def saliency(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Gradient saliency (Simonyan, Vedaldi & Zisserman 2014): (B,3,H,W) → (B,H,W).

    M_ij = max over colour channels of |∂S_c/∂x_ij|, with S_c the logit (not the softmax
    probability) of image b's target class. One forward and one input-only backward for
    the whole batch: images are independent in eval mode, so the gradient of the summed
    scores w.r.t. image b is the gradient of image b's own score.
    """
    _check_batch(x)
    with preserved_state(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        scores = class_scores(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad.abs().amax(dim=1)


@library_copy
def guided_backprop(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): (B,3,H,W) → (B,3,H,W).

    The gradient of each image's target logit w.r.t. the input, with every ReLU/ReLU6
    module passing back only positive gradient where its input was positive.
    """
    _check_batch(x)
    with preserved_state(model), relu_backward_rule(model, "guided"), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        scores = class_scores(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad


@library_copy
def neuron_guided_backprop(model: nn.Module, x: torch.Tensor, layer,
                           channel: int) -> torch.Tensor:
    """Guided backprop from one neuron: (B,3,H,W) → (B,3,H,W).

    For each image, the neuron is ``channel`` of ``layer`` at the position where it responds
    most; the result shows which input pixels make that response larger.
    """
    _check_batch(x)
    name = layer_name(model, layer)
    with capture(model, name) as cap, relu_backward_rule(model, "guided"), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        model(x)
        out = cap.outputs[name]
        if out.dim() != 4 or not 0 <= channel < out.shape[1]:
            raise ValueError(f"channel {channel} out of range for {name!r} with output "
                             f"{tuple(out.shape)}.")
        peak = out[:, channel].flatten(1).amax(1)            # (B,)
        (grad,) = torch.autograd.grad(peak.sum(), x)
    return grad


@library_copy
def cam(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Class Activation Map (Zhou et al. 2016): (B,3,H,W) → (B,h,w), one forward, no backward.

    M_c(x,y) = Σ_k w_k^c f_k(x,y) over the last conv features f and the linear layer's
    weights w. Only for conv → global average pooling → linear networks
    (:func:`featviz_helpers.models.gap_fc_head` says which); mean(M_c) + b_c = S_c.
    """
    _check_batch(x)
    head = gap_fc_head(model)
    with capture(model, head.layer) as cap, torch.no_grad():
        logits = model(x)
    t = as_targets(target, x.shape[0], logits.shape[1])
    features = cap.activations[head.layer]
    if head.activation is not None:
        features = head.activation(features)
    return cam_from_features(features, head.fc.weight.detach()[t])


@library_copy
def cam_from_features(features: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """M(x,y) = Σ_k w_k f_k(x,y): features (B,K,h,w), class weights (B,K) → maps (B,h,w)."""
    return torch.einsum("bk,bkhw->bhw", class_weights, features)


@library_copy
def grad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer``: (B,3,H,W) → (B,h,w), after the ReLU.

    α_k = mean over positions of ∂S_c/∂A_k; L = ReLU(Σ_k α_k A_k). One forward, and a
    backward that stops at ``layer`` (nothing below it is differentiated).
    """
    _check_batch(x)
    name = layer_name(model, layer)
    with capture(model, name, stop_gradient=True) as cap, torch.enable_grad():
        scores = class_scores(model(x), target)
        scores.sum().backward()
    activations, gradients = cap.activations[name], cap.gradients[name]
    if activations.dim() != 4:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}; Grad-CAM needs a "
                         "(B,C,h,w) feature map (for a ViT use vit_grad_cam).")
    return _grad_cam_map(activations, gradients)


@library_copy
def _grad_cam_map(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    """ReLU(Σ_k α_k A_k) with α_k the positional mean of the gradient: (B,K,h,w) → (B,h,w)."""
    alpha = gradients.mean(dim=(2, 3), keepdim=True)            # (B, K, 1, 1)
    return (alpha * activations).sum(1).clamp_min(0)


@library_copy
def guided_grad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Guided Grad-CAM: bilinearly upsampled Grad-CAM ⊙ guided backprop, (B,3,H,W)."""
    coarse = grad_cam(model, x, target, layer)
    fine = guided_backprop(model, x, target)
    upsampled = F.interpolate(coarse[:, None], size=x.shape[-2:], mode="bilinear",
                              align_corners=False)
    return fine * upsampled


# --------------------------------------------------------------------------- ViT attention

def _vit_blocks(model: nn.Module) -> list[str]:
    """Names of a torchvision VisionTransformer's encoder blocks, first to last."""
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is None or not len(layers) or not hasattr(layers[0], "self_attention"):
        raise ValueError(f"{type(model).__name__} is not a torchvision VisionTransformer "
                         "(expected model.encoder.layers[i].self_attention).")
    return [f"encoder.layers.{name}" for name, _ in layers.named_children()]


@library_copy
def vit_attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-layer, per-head attention of a torchvision ViT: (B,3,H,W) → (L,B,heads,N,N).

    Recomputed from each block's LayerNorm-ed input and its attention's in-projection:
    softmax(Q Kᵀ / √d_head). Token 0 is [CLS]; N = 1 + number of patches. One forward pass.
    """
    _check_batch(x)
    blocks = _vit_blocks(model)
    norms = [f"{b}.ln_1" for b in blocks]
    with capture(model, norms) as cap, torch.no_grad():
        model(x)
    out = []
    for block, norm in zip(blocks, norms):
        mha = model.get_submodule(f"{block}.self_attention")
        tokens = cap.activations[norm]                           # (B, N, D)
        B, N, D = tokens.shape
        h, d = mha.num_heads, D // mha.num_heads
        bias = None if mha.in_proj_bias is None else mha.in_proj_bias.detach()
        qkv = F.linear(tokens, mha.in_proj_weight.detach(), bias)      # (B, N, 3D)
        q, k, _ = qkv.view(B, N, 3, h, d).permute(2, 0, 3, 1, 4)      # each (B, h, N, d)
        out.append((q @ k.transpose(-2, -1) / d ** 0.5).softmax(dim=-1))
    return torch.stack(out)


@library_copy
def attention_rollout(attn: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): (L,B,heads,N,N) → (B,N,N).

    Per layer: fuse heads (mean, max or min), add the identity for the residual path,
    renormalise rows; then multiply the layers from first to last. Every row sums to 1;
    row 0 ([CLS]) over columns 1.. is the map over patches.
    """
    fuse = {"mean": lambda a: a.mean(dim=2), "max": lambda a: a.amax(dim=2),
            "min": lambda a: a.amin(dim=2)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {sorted(fuse)}, got {head_fusion!r}.")
    if attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (L,B,heads,N,N); got {tuple(attn.shape)}.")
    layers = fuse[head_fusion](attn.detach().double())          # (L, B, N, N)
    eye = torch.eye(layers.shape[-1], dtype=layers.dtype)
    rollout = None
    for a in layers:
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)   # keepdim: divide each *row* by its own sum
        rollout = a if rollout is None else a @ rollout
    return rollout.float()


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """ViT tokens (B,N,D) with [CLS] first → patch features on their grid (B,D,g,g)."""
    B, N, D = tokens.shape
    g = int(round((N - 1) ** 0.5))
    if g * g != N - 1:
        raise ValueError(f"{N - 1} patch tokens do not form a square grid.")
    return tokens[:, 1:].transpose(1, 2).reshape(B, D, g, g)


@library_copy
def vit_grad_cam(model: nn.Module, x: torch.Tensor, target, layer=None) -> torch.Tensor:
    """Grad-CAM for a torchvision ViT on its patch tokens: (B,3,H,W) → (B,g,g).

    ``layer`` is a module whose output is the token sequence (B,N,D), by default the input
    of the last encoder block (the output of the one before). Not the last block's own
    output: the classifier reads only the [CLS] token after it, so the patch tokens there
    get no gradient at all.
    """
    _check_batch(x)
    blocks = _vit_blocks(model)
    if layer is None:
        if len(blocks) < 2:
            raise ValueError("a one-block ViT has no earlier block; pass layer explicitly.")
        layer = blocks[-2]
    name = layer_name(model, layer)
    with capture(model, name, stop_gradient=True) as cap, torch.enable_grad():
        class_scores(model(x), target).sum().backward()
    activations, gradients = cap.activations[name], cap.gradients[name]
    if activations.dim() != 3:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}, not tokens (B,N,D).")
    return _grad_cam_map(tokens_to_grid(activations), tokens_to_grid(gradients))
