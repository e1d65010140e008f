"""Vision transformers: attention read from a block's weights, attention rollout, and
Grad-CAM on the patch tokens (notebook 06)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import capture
from ..library_guard import library_copy
from ..models import layer_name
from ._inputs import check_ran, checked_input
from .cam import cam_from_features, grad_cam_weights, layer_activations_and_gradients


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
    """Per-layer, per-head attention of a torchvision ViT (notebook 06 §1): (B,3,H,W) →
    (L,B,heads,N,N).

    Recomputed from each block's LayerNorm-ed input and its attention's in-projection:
    softmax(Q Kᵀ / √d_head). Token 0 is [CLS]; N = 1 + number of patches. One forward pass.
    """
    x = checked_input(model, x, for_gradient=False)
    blocks = _vit_blocks(model)
    norms = [f"{b}.ln_1" for b in blocks]
    with capture(model, norms) as cap, torch.no_grad():
        model(x)
    for norm in norms:
        check_ran(cap, norm, model)
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
    """Attention rollout (Abnar & Zuidema 2020; notebook 06 §3): (L,B,heads,N,N) → (B,N,N).

    Per layer: fuse heads (mean, max or min), add the identity for the residual path,
    renormalise rows; then multiply the layers from first to last. Every row sums to 1;
    row 0 ([CLS]) over columns 1.. is the map over patches.
    """
    fuse = {"mean": lambda a: a.mean(dim=2), "max": lambda a: a.amax(dim=2),
            "min": lambda a: a.amin(dim=2)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {sorted(fuse)}, got {head_fusion!r}.")
    if not isinstance(attn, torch.Tensor):
        raise TypeError(f"attn must be one tensor (L,B,heads,N,N), not a {type(attn).__name__}; "
                        "stack per-layer maps first: torch.stack(list_of_layers).")
    if attn.dim() != 5 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"attn must be (L,B,heads,N,N); got {tuple(attn.shape)}.")
    if 0 in attn.shape:
        raise ValueError(f"attn {tuple(attn.shape)} is empty: rollout needs at least one layer, "
                         "one image, one head and one token.")
    # Float64 keeps the product of many row-stochastic matrices accurate; Apple's MPS
    # has no float64, so there float32 has to do.
    dtype = torch.float32 if attn.device.type == "mps" else torch.float64
    layers = fuse[head_fusion](attn.detach().to(dtype))         # (L, B, N, N)
    eye = torch.eye(layers.shape[-1], dtype=layers.dtype, device=layers.device)
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


def cls_maps(attn: torch.Tensor) -> torch.Tensor:
    """(…, N, N) attention → [CLS]'s attention over the patches on their grid (…, g, g)
    (notebook 06 §2)."""
    g = int(round((attn.shape[-1] - 1) ** 0.5))
    return attn[..., 0, 1:].reshape(*attn.shape[:-2], g, g)


@library_copy
def vit_grad_cam(model: nn.Module, x: torch.Tensor, target, layer=None) -> torch.Tensor:
    """Grad-CAM for a torchvision ViT on its patch tokens (Selvaraju et al. 2017 on the token
    grid, as Chefer et al. 2021 compare it; notebook 06 §4): (B,3,H,W) → (B,g,g).

    ``layer`` is a module whose output is the token sequence (B,N,D), by default the input
    of the last encoder block (the output of the one before). Not the last block's own
    output: the classifier reads only the [CLS] token after it, so the patch tokens there
    get no gradient at all, and such a layer is refused.
    """
    blocks = _vit_blocks(model)
    if layer is None:
        if len(blocks) < 2:
            raise ValueError("a one-block ViT has no earlier block; pass layer explicitly.")
        layer = blocks[-2]
    name = layer_name(model, layer)
    activations, gradients = layer_activations_and_gradients(model, x, target, name)
    if activations.dim() != 3:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}, not tokens (B,N,D).")
    if (gradients.device.type != "meta" and (gradients[:, 1:] == 0).all()
            and (gradients[:, 0] != 0).any()):
        # After the last attention nothing mixes the tokens: only [CLS] reaches the head.
        # (When [CLS] gets nothing either, the scores do not depend on the layer at all, as
        # with a freshly built ViT's all-zero head: then the zero map is the right answer.)
        earlier = (f"the default, the output of {blocks[-2]!r} (the input of the last block)"
                   if len(blocks) > 1 else "the model's input tokens")
        raise ValueError(
            f"At layer {name!r} only the [CLS] token reaches the classifier: the patch tokens "
            "get no gradient at all, so the map would be all zero. Use a layer before the "
            f"last block's attention, e.g. {earlier}."
        )
    features = tokens_to_grid(activations)
    return cam_from_features(features, grad_cam_weights(tokens_to_grid(gradients))).clamp_min(0)
