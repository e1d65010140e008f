"""Checks of notebook 06_vit_attention: attention read from the blocks' weights (§1) and
attention rollout (§3)."""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from .. import methods
from ..hooks import capture
from ..library_guard import refuse_if_blocked
from ._harness import (CheckError, _hidden_case, _passed, _run, _seeded, _spread_tolerance,
                       _tensor, rel_error)


def _mha_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every block's attention from PyTorch's own ``nn.MultiheadAttention``: (L,B,heads,N,N)."""
    refuse_if_blocked()
    blocks = list(model.encoder.layers)
    names = [f"encoder.layers.{n}.ln_1" for n, _ in model.encoder.layers.named_children()]
    with capture(model, names) as cap, torch.no_grad():
        model(x)
        reference = []
        for block, name in zip(blocks, names):
            t = cap.activations[name]
            _, w = block.self_attention(t, t, t, need_weights=True, average_attn_weights=False)
            reference.append(w)
    return torch.stack(reference)


def _mha_references(model: nn.Module, x: torch.Tensor):
    """:func:`_mha_reference` and the tolerance its round-off calls for: at least 1e-5, more
    if the batch and one image at a time disagree by more (:func:`_spread_tolerance`)."""
    reference = _mha_reference(model, x)
    per_image = torch.cat([_mha_reference(model, x[i:i + 1]) for i in range(len(x))], dim=1)
    return reference, _spread_tolerance([reference, per_image], floor=1e-5)


def check_vit_attention(fn, model: nn.Module, x: torch.Tensor) -> None:
    """``fn(model, x)`` → (L,B,heads,N,N); compared with PyTorch's own attention weights
    (notebook 06 §1, "Attention, from the block's weights").

    For every block, ``nn.MultiheadAttention(..., need_weights=True,
    average_attn_weights=False)`` is run on the same LayerNorm-ed input.
    """
    got = _tensor("your attention extraction", _run("your attention extraction", fn, [model, x]))
    reference, tol = _mha_references(model, x)
    if got.shape != reference.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (L,B,heads,N,N) = "
                         f"{tuple(reference.shape)}.")
    rows = got.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        raise CheckError("rows of your attention do not sum to 1: softmax over the *key* axis "
                         "(the last one), after scaling QKᵀ by 1/√d_head.")
    err = rel_error(got, reference)
    if not err <= tol:
        bad_layers = [l for l in range(len(reference)) if not rel_error(got[l], reference[l]) <= tol]
        raise CheckError(f"attention differs from nn.MultiheadAttention's (relative error "
                         f"{err:.1e}, first at layer {bad_layers[0]}). Use the block's LayerNorm-ed "
                         "input (ln_1), in_proj_weight/in_proj_bias split into Q, K, V, heads of "
                         "size d = D/heads, and the 1/√d scale.")
    _passed(f"attention of all {len(reference)} layers matches nn.MultiheadAttention "
            f"(relative error {err:.1e}).")


def _small_vit() -> nn.Module:
    """Another torchvision ViT: 3 blocks, 2 heads of 16, 4×4 patches of 16-pixel images."""
    return _seeded(lambda: torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5)).eval()


def hidden_check_vit_attention(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 06 §1: another ViT (other depth, heads, grid) in train mode;
    inputs untouched."""
    hint = ("Read depth, heads and sizes from the model (len(model.encoder.layers), "
            "mha.num_heads, D // heads), not from the shapes ViT.")
    vit = _small_vit()
    xs = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    reference, tol = _mha_references(vit, xs)
    _hidden_case("a ViT with 3 blocks and 2 heads, handed over in train mode", fn, [vit, xs],
                 reference, tol=tol, train=True, hint=hint)
    reference, tol = _mha_references(model, x[-2:])
    _hidden_case("the course's ViT on 2 other images", fn, [model, x[-2:]], reference, tol=tol,
                 hint=hint)
    _passed("hidden tests of attention extraction.")


def check_rollout(fn) -> None:
    """``fn(attn, head_fusion)`` → (B,N,N) attention rollout, compared with the library copy
    (notebook 06 §3, "Attention rollout")."""
    g = torch.Generator().manual_seed(3)
    # One image: then a missing keepdim broadcasts silently instead of raising.
    attn = torch.rand(3, 1, 4, 5, 5, generator=g).softmax(-1)
    for fusion in ("mean", "max", "min"):
        got = _tensor("rollout", _run("your rollout", fn, [attn, fusion])).float()
        expected = methods.attention_rollout(attn, fusion)
        if got.shape != expected.shape:
            raise CheckError(f"{fusion}: shape {tuple(got.shape)}; expected (B,N,N) = "
                             f"{tuple(expected.shape)}.")
        rows = got.sum(-1)
        if not torch.allclose(rows, torch.ones_like(rows), atol=1e-5):
            raise CheckError(f"{fusion}: rows sum to {rows.flatten()[:3].tolist()}…, not 1. "
                             "Renormalise each row of (A + I) by its own sum — "
                             "a.sum(-1, keepdim=True); without keepdim the division broadcasts "
                             "along the wrong axis.")
        if rel_error(got, expected) > 1e-5:
            raise CheckError(f"{fusion}: differs from the library copy (relative error "
                             f"{rel_error(got, expected):.1e}). Fuse heads, add I, renormalise "
                             "rows, then multiply layers with the *later* layer on the left.")
    eye = torch.eye(5).expand(3, 2, 4, 5, 5)
    one_hot = _tensor("rollout", _run("your rollout", fn, [eye, "mean"])).float()[:, 0]
    if not torch.allclose(one_hot, torch.eye(5)[0].expand(2, 5)):
        raise CheckError("identity attention must roll out to the identity: [CLS]'s row one-hot "
                         "on itself.")
    _passed("attention rollout: rows sum to 1, identity stays identity, all fusions match.")


def hidden_check_rollout(fn) -> None:
    """Hidden tests of notebook 06 §3: a batch of images, one layer, other token counts; the
    input untouched."""
    g = torch.Generator().manual_seed(14)
    hint = ("Per layer: fuse heads, add I, divide each row by its own sum; multiply layers "
            "with the later one on the left; one rollout per image.")
    for L, B, heads, N in [(2, 3, 3, 7), (1, 2, 2, 4), (4, 2, 5, 10)]:
        attn = torch.rand(L, B, heads, N, N, generator=g).softmax(-1)
        for fusion in ("mean", "max", "min"):
            _hidden_case(f"{L} layer(s), {B} images, {heads} heads, {N} tokens, {fusion} fusion",
                         fn, [attn, fusion], methods.attention_rollout(attn, fusion), tol=1e-5,
                         hint=hint)
    _passed("hidden tests of attention rollout.")

