"""Vision transformers: attention read from a block's weights, attention rollout, and
Grad-CAM on the patch tokens (notebook 06)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import capture
from ..library_guard import library_copy, refuse_if_blocked
from ..models import layer_name, unwrap
from ._inputs import check_ran, checked_input
from .cam import cam_from_features, grad_cam_weights, layer_activations_and_gradients


def _vit_blocks(model: nn.Module) -> list[str]:
    """Names of a torchvision VisionTransformer's encoder blocks, first to last (inside a
    DataParallel or compiled wrapper too: :func:`featviz_helpers.models.unwrap`)."""
    inner, prefix = unwrap(model)
    encoder = getattr(inner, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is None or not len(layers) or not hasattr(layers[0], "self_attention"):
        raise ValueError(f"{type(inner).__name__} is not a torchvision VisionTransformer "
                         "(expected model.encoder.layers[i].self_attention).")
    return [f"{prefix}encoder.layers.{name}" for name, _ in layers.named_children()]


def patch_grid(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(rows, columns) of the patch grid ``model`` makes of the images ``x`` (B,3,H,W): from
    the model's patch size (torchvision's ``patch_size``, timm's ``patch_embed.patch_size``),
    never from the token count, which also holds the class, distillation or register tokens.
    Raises ``ValueError`` for a model whose patch size cannot be read."""
    inner, _ = unwrap(model)
    size = getattr(inner, "patch_size", None)
    if size is None:
        size = getattr(getattr(inner, "patch_embed", None), "patch_size", None)
    if size is None:
        raise ValueError(f"The patch size of {type(inner).__name__} is unknown (no patch_size or "
                         "patch_embed.patch_size attribute), so its tokens cannot be laid out "
                         "on the image; pass grid=(rows, columns) of patches yourself.")
    ph, pw = (size, size) if isinstance(size, int) else tuple(size)
    return x.shape[-2] // ph, x.shape[-1] // pw


@library_copy
def vit_attention(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-layer, per-head attention of a torchvision ViT (notebook 06 §1): (B,3,H,W) →
    (L,B,heads,N,N).

    Recomputed from each block's LayerNorm-ed input and its attention's in-projection:
    softmax(Q Kᵀ / √d_head). Token 0 is [CLS]; N = 1 + number of patches for torchvision's
    ViTs (more with register or distillation tokens: :func:`patch_grid` lays the patches
    out). One forward pass.
    """
    refuse_if_blocked()
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
    refuse_if_blocked()
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
    return rollout.to(attn.dtype if attn.is_floating_point() else torch.float32)


def _patch_count(n_tokens: int, grid) -> tuple[int, int]:
    """(rows, columns) of the patches among ``n_tokens`` tokens. Without ``grid``, the
    tokens must be [CLS] followed by a square grid."""
    if grid is not None:
        rows, cols = grid
        if rows * cols > n_tokens:
            raise ValueError(f"a {rows}×{cols} patch grid needs {rows * cols} tokens, but there "
                             f"are only {n_tokens}: is grid the patch grid of this model and "
                             "image size (methods.patch_grid(model, x))?")
        return rows, cols
    g = int(round(max(n_tokens - 1, 0) ** 0.5))
    if n_tokens < 2 or g * g != n_tokens - 1:
        raise ValueError(f"{n_tokens} tokens are not one [CLS] token and a square grid of "
                         "patches. For a model with other tokens (registers, distillation), no "
                         "class token, or a non-square image, pass the patch grid: "
                         "grid=methods.patch_grid(model, x).")
    return g, g


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """ViT tokens (B,N,D) → the patch tokens on their grid (B,D,rows,cols) (notebook 06 §4).

    The patches are the last rows·cols tokens (the class, distillation and register tokens
    come first, as in torchvision, timm and DeiT); ``grid`` = (rows, cols) from
    :func:`patch_grid`. Without it the tokens must be [CLS] and a square grid.
    """
    B, N, D = tokens.shape
    rows, cols = _patch_count(N, grid)
    return tokens[:, N - rows * cols:].transpose(1, 2).reshape(B, D, rows, cols)


def cls_maps(attn: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(…, N, N) attention → [CLS]'s (token 0's) attention over the patches on their grid
    (…, rows, cols) (notebook 06 §2). ``grid`` = (rows, cols) from :func:`patch_grid`: the
    token count cannot tell it (1 + 16 registers + 3×3 patches = 1 + 5×5)."""
    N = attn.shape[-1]
    rows, cols = _patch_count(N, grid)
    if rows * cols == N:
        raise ValueError(f"all {N} tokens are patches: this model has no class token whose "
                         "attention to show. Look at one patch's row instead, or at rollout.")
    return attn[..., 0, N - rows * cols:].reshape(*attn.shape[:-2], rows, cols)


@library_copy
def vit_grad_cam(model: nn.Module, x: torch.Tensor, target, layer=None) -> torch.Tensor:
    """Grad-CAM for a torchvision ViT on its patch tokens (Selvaraju et al. 2017 on the token
    grid, as Chefer et al. 2021 compare it; notebook 06 §4): (B,3,H,W) → (B,rows,cols), the
    patch grid read from the model (:func:`patch_grid`), whatever other tokens it has.

    ``layer`` is a module whose output is the token sequence (B,N,D), by default the input
    of the last encoder block (the output of the one before). Not the last block's own
    output: the classifier reads only the [CLS] token after it, so the patch tokens there
    get no gradient at all, and such a layer is refused.
    """
    refuse_if_blocked()
    blocks = _vit_blocks(model)
    if layer is None:
        if len(blocks) < 2:
            raise ValueError("a one-block ViT has no earlier block; pass layer explicitly.")
        layer = blocks[-2]
    name = layer_name(model, layer)
    activations, gradients = layer_activations_and_gradients(model, x, target, name)
    if activations.dim() != 3:
        raise ValueError(f"layer {name!r} gives {tuple(activations.shape)}, not tokens (B,N,D).")
    grid = patch_grid(model, x)
    first_patch = activations.shape[1] - grid[0] * grid[1]     # after [CLS] and other tokens
    if first_patch < 0:
        raise ValueError(f"layer {name!r} gives {activations.shape[1]} tokens, fewer than the "
                         f"{grid[0]}×{grid[1]} patches: pick a layer whose output holds every "
                         "patch token.")
    if (gradients.device.type != "meta" and (gradients[:, first_patch:] == 0).all()
            and (gradients[:, :first_patch] != 0).any()):
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
    features = tokens_to_grid(activations, grid)
    weights = grad_cam_weights(tokens_to_grid(gradients, grid))
    return cam_from_features(features, weights).clamp_min(0)
