"""Library copies of the course's visualisation methods.

Each notebook derives a method and writes it from scratch; the copy here is the one later
notebooks, the benchmarks and the checks reuse. Same maths, batched (one target class per
image), and careful with state: the model's mode and ``requires_grad`` flags are restored
and no hook outlives a call. Maps are returned raw; :mod:`featviz_helpers.viz` normalises
them for display.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import operator

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import nn

from .hooks import LayerCapture, capture, preserved_state, relu_backward_rule
from .library_guard import library_copy
from .models import gap_fc_head, layer_name

__all__ = ["as_targets", "class_scores", "saliency", "guided_backprop", "neuron_guided_backprop",
           "cam", "cam_from_features", "grad_cam", "guided_grad_cam", "vit_attention", "attention_rollout",
           "tokens_to_grid", "vit_grad_cam", "smoothgrad", "integrated_gradients", "occlusion",
           "ascent_step", "class_visualisation", "fooling_image", "fourier_scale", "fourier_image",
           "activation_maximisation"]


def as_targets(target, batch_size: int, num_classes: int) -> torch.Tensor:
    """``target`` as a LongTensor (B,) of class indices, checked against the model.

    ``target`` is an int (the same class for every image), a sequence, or an integer tensor
    of shape (B,) — one class per image. The result is built and checked on the CPU (the
    host has the values); callers move it to their model's device.
    """
    if isinstance(target, bool):
        raise TypeError("target must be a class index (int), not a bool.")
    if target is None:
        raise TypeError("target is None; pass a class index per image, e.g. the top-1 "
                        "classes model(x).argmax(dim=1), or one int for every image.")
    if isinstance(target, str):
        raise TypeError(f"target must be a class index (int), not the string {target!r}; "
                        f"look the index up, e.g. model.class_names.index({target!r}).")
    if isinstance(target, int):
        if not 0 <= target < num_classes:      # before building a tensor: 2**70 overflows
            raise ValueError(f"class index {target} is out of range: this model has "
                             f"{num_classes} classes (0..{num_classes - 1}).")
        return torch.full((batch_size,), target, dtype=torch.long, device="cpu")
    try:
        t = target if isinstance(target, torch.Tensor) else torch.as_tensor(target, device="cpu")
    except (TypeError, ValueError, RuntimeError, OverflowError) as e:
        raise TypeError(f"target must be class indices (an int, a list of ints or an integer "
                        f"tensor of shape (B,)); could not read {target!r} ({e}).") from None
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
    t = t.cpu()   # checked on the host; a meta tensor has no values to check
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"class index {t[bad][0].item()} is out of range: this model has {num_classes} "
            f"classes (0..{num_classes - 1})."
        )
    return t.clone()


def _check_batch(x: torch.Tensor) -> None:
    """Refuse anything that is not a non-empty float batch (B,C,H,W) of finite numbers."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a preprocessed batch (B,C,H,W); got {shape}.")
    if x.numel() == 0:
        raise ValueError(f"x is an empty batch {tuple(x.shape)}: there is no image to explain. "
                         "Pass at least one image of at least one pixel.")
    if not x.is_floating_point():
        raise ValueError(f"x has dtype {x.dtype}; a model input is a float batch. Make it with "
                         "images.preprocess(), which scales and normalises the pixels.")
    if x.device.type != "meta" and not torch.isfinite(x).all():
        raise ValueError("x holds NaN or infinite values, so every map computed from it would "
                         "be NaN too. Check where the batch came from (images.preprocess "
                         "refuses such pixels).")


def _model_tensor(model: nn.Module):
    """A parameter (or buffer) of ``model``: where it lives and in what dtype; None if none."""
    return next(itertools.chain(model.parameters(), model.buffers()), None)


def _input(model: nn.Module, x: torch.Tensor, for_gradient: bool = True) -> torch.Tensor:
    """``x`` checked (on the model's device), detached, and in the model's float dtype.

    For a gradient method call it inside :func:`_autograd`: then an input made under
    ``torch.inference_mode()`` is copied into an ordinary tensor that autograd can use.
    """
    _check_batch(x)
    ref = _model_tensor(model)
    if ref is not None and x.device != ref.device:
        raise ValueError(f"x is on {x.device} but the model is on {ref.device}; move the batch "
                         f"to the model's device first: x.to({str(ref.device)!r}).")
    if for_gradient and any(p.is_inference() for p in model.parameters()):
        raise ValueError("The model's weights were created under torch.inference_mode(), and "
                         "such tensors cannot take part in a backward pass. Load the model "
                         "outside inference_mode (torch.no_grad() is fine for your own "
                         "forward passes): the gradient methods switch autograd on themselves.")
    x = x.detach()
    if ref is not None and ref.is_floating_point() and x.dtype != ref.dtype:
        x = x.to(ref.dtype)          # a float64 batch for a float32 model, say
    if x.is_inference():             # made under inference_mode: autograd cannot use it
        x = x.clone()
    return x


@contextlib.contextmanager
def _autograd():
    """Autograd on, also when the caller is inside ``torch.no_grad()`` or
    ``torch.inference_mode()``: the gradient methods need a graph."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _check_ran(cap: LayerCapture, name: str, model: nn.Module) -> None:
    """Refuse a captured layer that did not run exactly once in the forward pass."""
    runs = cap.calls[name]
    if runs == 0:
        raise ValueError(
            f"Layer {name!r} did not run in {type(model).__name__}'s forward pass, so there is "
            "nothing to capture there (GoogLeNet's and Inception's auxiliary heads, for one, "
            "run only in train mode). Pick a layer on the path from the input to the class "
            "scores; model.named_modules() lists them."
        )
    if runs > 1:
        parent = name.rpartition(".")[0]
        example = f", e.g. the enclosing {parent!r}" if parent else ""
        raise ValueError(
            f"Layer {name!r} runs {runs} times in one forward pass (one module used in several "
            "places, like the ReLU of a torchvision ResNet block), so which of its outputs to "
            f"explain is ambiguous. Pick a layer that runs once{example}."
        )


def _check_gradient_reaches(scores: torch.Tensor, name: str) -> None:
    if not scores.requires_grad:
        raise ValueError(f"No gradient reaches layer {name!r}: the class scores do not depend on "
                         "its output. Pick a layer on the path to the classifier.")


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
    with preserved_state(model), _autograd():
        x = _input(model, x).requires_grad_(True)
        scores = class_scores(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad.abs().amax(dim=1)


@library_copy
def guided_backprop(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al. 2015): (B,3,H,W) → (B,3,H,W).

    The gradient of each image's target logit w.r.t. the input, with every ReLU/ReLU6
    (modules and functional calls) passing back only positive gradient where its input was
    positive. A model with another activation (GELU, SiLU, …) is refused: see
    :func:`featviz_helpers.hooks.relu_backward_rule`.
    """
    with preserved_state(model), relu_backward_rule(model, "guided"), _autograd():
        x = _input(model, x).requires_grad_(True)
        scores = class_scores(model(x), target)
        (grad,) = torch.autograd.grad(scores.sum(), x)
    return grad


def _channel_index(channel) -> int:
    """``channel`` as a plain int; a bool, float or anything else is refused."""
    if isinstance(channel, bool):   # True would index as a mask and select every channel
        raise TypeError(f"channel must be an int channel index, not the bool {channel}.")
    try:
        return operator.index(channel)   # ints, numpy ints, 0-d integer tensors
    except TypeError:
        raise TypeError(f"channel must be an int channel index, got {channel!r} "
                        f"({type(channel).__name__}).") from None


@library_copy
def neuron_guided_backprop(model: nn.Module, x: torch.Tensor, layer,
                           channel: int) -> torch.Tensor:
    """Guided backprop from one neuron: (B,3,H,W) → (B,3,H,W).

    For each image, the neuron is ``channel`` of ``layer`` at the position where it responds
    most; the result shows which input pixels make that response larger.
    """
    channel = _channel_index(channel)
    name = layer_name(model, layer)
    with capture(model, name) as cap, relu_backward_rule(model, "guided"), _autograd():
        x = _input(model, x).requires_grad_(True)
        model(x)
        _check_ran(cap, name, model)
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
    x = _input(model, x, for_gradient=False)
    head = gap_fc_head(model)
    with capture(model, head.layer) as cap, torch.no_grad():
        logits = model(x)
    _check_ran(cap, head.layer, model)
    weights = head.fc.weight.detach()
    t = as_targets(target, x.shape[0], logits.shape[1]).to(weights.device)
    features = cap.activations[head.layer]
    if head.activation is not None:
        features = head.activation(features)
    return cam_from_features(features, weights[t])


@library_copy
def cam_from_features(features: torch.Tensor, class_weights: torch.Tensor) -> torch.Tensor:
    """M(x,y) = Σ_k w_k f_k(x,y): features (B,K,h,w), class weights (B,K) → maps (B,h,w)."""
    return torch.einsum("bk,bkhw->bhw", class_weights, features)


def _layer_gradient(model: nn.Module, x: torch.Tensor, target, name: str):
    """Activations and gradients of each image's target logit at layer ``name``: one forward
    and a backward that stops at the layer. Both (B,…) as the layer outputs them."""
    with capture(model, name, stop_gradient=True) as cap, _autograd():
        logits = model(_input(model, x))
        _check_ran(cap, name, model)
        scores = class_scores(logits, target)
        _check_gradient_reaches(scores, name)
        scores.sum().backward()
    return cap.activations[name], cap.gradients[name]


@library_copy
def grad_cam(model: nn.Module, x: torch.Tensor, target, layer) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) at ``layer``: (B,3,H,W) → (B,h,w), after the ReLU.

    α_k = mean over positions of ∂S_c/∂A_k; L = ReLU(Σ_k α_k A_k). One forward, and a
    backward that stops at ``layer`` (nothing below it is differentiated).
    """
    name = layer_name(model, layer)
    activations, gradients = _layer_gradient(model, x, target, name)
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
    x = _input(model, x, for_gradient=False)
    blocks = _vit_blocks(model)
    norms = [f"{b}.ln_1" for b in blocks]
    with capture(model, norms) as cap, torch.no_grad():
        model(x)
    for norm in norms:
        _check_ran(cap, norm, model)
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


@library_copy
def vit_grad_cam(model: nn.Module, x: torch.Tensor, target, layer=None) -> torch.Tensor:
    """Grad-CAM for a torchvision ViT on its patch tokens: (B,3,H,W) → (B,g,g).

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
    activations, gradients = _layer_gradient(model, x, target, name)
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
    return _grad_cam_map(tokens_to_grid(activations), tokens_to_grid(gradients))


# ------------------------------------------------------------ beyond the lecture: averaging

def _positive_int(value, what: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``; a bool, float or anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int ≥ {minimum}, got {value!r}.")
    return value


def _target_gradients(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
    """∂S_t/∂input for every row of ``inputs`` (N,C,H,W) and its class ``targets`` (N,):
    forward and input-only backward in chunks of ``batch_size`` images. Call inside
    :func:`preserved_state` and :func:`_autograd`."""
    grads = []
    for rows, t in zip(inputs.split(batch_size), targets.split(batch_size)):
        rows = rows.detach().requires_grad_(True)
        scores = model(rows).gather(1, t[:, None])[:, 0]
        grads.append(torch.autograd.grad(scores.sum(), rows)[0])
    return torch.cat(grads)


def _model_targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """``target`` checked against the number of classes ``model`` gives ``x``: (B,) on x's device."""
    with torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    return as_targets(target, x.shape[0], num_classes).to(x.device)


@library_copy
def smoothgrad(model: nn.Module, x: torch.Tensor, target, samples: int = 25,
               noise: float = 0.15, seed: int = 0, batch_size: int = 16) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): (B,3,H,W) → (B,3,H,W), the mean gradient of each
    image's target logit over ``samples`` noisy copies of the image.

    The noise is Gaussian with σ = ``noise`` × (max − min of that image), drawn as
    ``torch.randn((samples, B, C, H, W), generator=torch.Generator().manual_seed(seed))``
    on the CPU, so a seed gives the same maps on every device. Display it like guided
    backprop, or as a saliency map with :func:`viz.channel_max`. Costs ``samples``
    forwards and input-only backwards.
    """
    samples = _positive_int(samples, "samples (the number of noisy copies)")
    batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not noise >= 0:
        raise ValueError(f"noise is σ as a fraction of each image's range, a number ≥ 0 "
                         f"(Smilkov et al. use 0.1–0.2); got {noise!r}.")
    with preserved_state(model), _autograd():
        x = _input(model, x)
        t = _model_targets(model, x, target)
        B = x.shape[0]
        span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(1, B, 1, 1, 1)
        rng = torch.Generator(device="cpu").manual_seed(seed)
        eps = torch.randn((samples, *x.shape), generator=rng, device="cpu")
        noisy = x[None] + noise * span * eps.to(device=x.device, dtype=x.dtype)
        grads = _target_gradients(model, noisy.flatten(0, 1), t.repeat(samples), batch_size)
    return grads.view(samples, *x.shape).mean(0)


@library_copy
def integrated_gradients(model: nn.Module, x: torch.Tensor, target, baseline=None,
                         steps: int = 32, batch_size: int = 16) -> torch.Tensor:
    """Integrated Gradients (Sundararajan, Taly & Yan 2017): (B,3,H,W) → (B,3,H,W).

    IG_i = (x_i − x'_i) · (1/m) Σ_{k=1..m} ∂S_c/∂x_i at x' + (k/m)(x − x'): the paper's
    (right) Riemann sum with m = ``steps`` (notebook 02 §10). The baseline x' defaults to
    zeros, which after normalisation is the colour the model's preprocessing subtracts
    (``model.input_spec.mean``): a flat mid-grey 127/255 for EfficientNet-Lite0, 0.5 grey for
    the shapes models, ImageNet's mean colour for torchvision's models. A tensor broadcastable
    to ``x`` is used as given. Completeness: Σ_i IG_i → S_c(x) − S_c(x') as m grows (error
    O(1/m), not monotone in m on a piecewise-linear network); Sundararajan et al. ask for it
    within 5 % before a map is used, so check it with :func:`metrics.completeness_error`:
    32 steps at 224 px are not enough for Lite0 on notebook 02's photos.
    """
    steps = _positive_int(steps, "steps (the number of points on the path)")
    batch_size = _positive_int(batch_size, "batch_size")
    with preserved_state(model), _autograd():
        x = _input(model, x)
        t = _model_targets(model, x, target)
        start = (torch.zeros_like(x) if baseline is None
                 else torch.as_tensor(baseline, dtype=x.dtype, device=x.device).expand_as(x))
        alphas = torch.arange(1, steps + 1, dtype=x.dtype, device=x.device) / steps
        path = start[None] + alphas.view(-1, 1, 1, 1, 1) * (x - start)[None]  # (m,B,C,H,W)
        grads = _target_gradients(model, path.flatten(0, 1), t.repeat(steps), batch_size)
    return (x - start) * grads.view(steps, *x.shape).mean(0)


# ------------------------------------------------------------ beyond the lecture: perturbation

def _window_starts(size: int, window: int, stride: int) -> list[int]:
    """Top-left corners along one side: every ``stride`` pixels, plus one flush with the
    far edge, so every pixel is covered by at least one window."""
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


@library_copy
def occlusion(model: nn.Module, x: torch.Tensor, target, window: int = 32, stride: int = 16,
              fill: float = 0.0, batch_size: int = 16) -> torch.Tensor:
    """Occlusion sensitivity (Zeiler & Fergus 2014): (B,3,H,W) → (B,H,W).

    A ``window``×``window`` square of value ``fill`` (0 = after normalisation, the colour the
    model's preprocessing subtracts, ``model.input_spec.mean``: mid-grey 127/255 for Lite0,
    ImageNet's mean colour for torchvision's models) slides over the image with ``stride``;
    each position costs one forward pass. The drop of the target class's *probability*,
    p(x) − p(x with the square), is credited to every pixel under the square, and each pixel
    gets the mean over the windows that cover it. Positive: hiding the pixel hurts the class.
    No gradients at all. The occluded copies go through the model about ``batch_size`` images
    at a time (16: on a 2-core CPU at 224 px, chunks of 64 were 1.4–1.6× slower per image).
    """
    window = _positive_int(window, "window (the side of the square, in pixels)")
    stride = _positive_int(stride, "stride (pixels between window positions)")
    batch_size = _positive_int(batch_size, "batch_size")
    x = _input(model, x, for_gradient=False)
    B, _, H, W = x.shape
    if window > min(H, W):
        raise ValueError(f"window {window} is larger than the {H}×{W} image; use at most "
                         f"{min(H, W)}.")
    corners = [(i, j) for i in _window_starts(H, window, stride)
               for j in _window_starts(W, window, stride)]
    masks = torch.zeros(len(corners), 1, H, W, dtype=torch.bool, device=x.device)
    for n, (i, j) in enumerate(corners):
        masks[n, :, i:i + window, j:j + window] = True
    with preserved_state(model), torch.no_grad():
        logits = model(x)
        t = as_targets(target, B, logits.shape[1]).to(x.device)
        p = logits.softmax(1).gather(1, t[:, None])                       # (B, 1)
        drops = []
        for chunk in masks.split(max(1, batch_size // B)):
            hidden = torch.where(chunk[:, None], torch.as_tensor(fill, dtype=x.dtype,
                                                                 device=x.device), x[None])
            q = model(hidden.flatten(0, 1)).softmax(1).view(len(chunk), B, -1)
            drops.append(p[None, :, 0] - q.gather(2, t.view(1, B, 1).expand(len(chunk), B, 1))[..., 0])
        drops = torch.cat(drops)                                          # (P, B)
    credit = torch.einsum("pb,phw->bhw", drops, masks[:, 0].to(x.dtype))
    return credit / masks[:, 0].sum(0).to(x.dtype)


# --------------------------------------------------------- beyond the lecture: optimised images

def _pixel_range(model: nn.Module, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised values of pixels 0 and 1 for ``model``'s input, each (1,3,1,1)."""
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ValueError("This model has no `input_spec`, so the valid pixel range is unknown; "
                         "load it with featviz_helpers.models.load_model().")
    mean = torch.tensor(spec.mean, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device, dtype=dtype).view(1, 3, 1, 1)
    return -mean / std, (1 - mean) / std


@library_copy
def ascent_step(model: nn.Module, img: torch.Tensor, target, lr: float,
                l2: float) -> torch.Tensor:
    """One step of gradient ascent on S_c(I) − λ‖I‖² (Simonyan et al. 2014, §2; notebook 02
    §11): I ← I + lr · (∂S_c/∂I − 2λ I), for each image's own target class. (B,3,H,W) → same."""
    with preserved_state(model), _autograd():
        img = _input(model, img)
        t = _model_targets(model, img, target)
        grad = _target_gradients(model, img, t, img.shape[0])
    return img + lr * (grad - 2 * l2 * img)


@library_copy
def class_visualisation(model: nn.Module, target, size: int = 128, steps: int = 60,
                        lr: float = 1.0, l2: float = 1e-2, jitter: int = 8,
                        blur_every: int = 10, blur_sigma: float = 0.5, seed: int = 0,
                        callback=None) -> torch.Tensor:
    """Class model visualisation (Simonyan et al. 2014, §2; notebook 02 §11): an image
    (B,3,size,size), normalised like the model's input, that each target class's logit rates
    highly. ``target`` has one class per image to make.

    Regularisers: the L2 decay of the ascent step (Simonyan et al.), random jitter and the
    clamp to valid pixel values (Mordvintsev, Olah & Tyka's DeepDream, 2015), and a periodic
    Gaussian blur (Yosinski et al. 2015; their clipping of small-norm or small-contribution
    pixels is not used).

    From a blank image (zeros after normalisation: the colour the model's preprocessing
    subtracts, ``model.input_spec.mean``, mid-grey 127/255 for Lite0), ``steps`` times: shift
    the image by a random offset of up to ``jitter`` pixels, take an :func:`ascent_step`, shift
    back; clamp to valid pixels; every ``blur_every`` steps blur with σ = ``blur_sigma``
    pixels. The offsets come from ``torch.Generator().manual_seed(seed)``.
    ``callback(step, image)``, if given, is called after every step (step 1..steps) with the
    current image, e.g. to keep frames.
    """
    size = _positive_int(size, "size (pixels)")
    steps = _positive_int(steps, "steps", minimum=0)
    jitter = _positive_int(jitter, "jitter (pixels)", minimum=0)
    blur_every = _positive_int(blur_every, "blur_every (steps; 0 = never)", minimum=0)
    ref = _model_tensor(model)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    low, high = _pixel_range(model, device, dtype)
    with preserved_state(model), torch.no_grad():
        num_classes = model(torch.zeros(1, 3, size, size, device=device, dtype=dtype)).shape[1]
    count = 1 if isinstance(target, int) else torch.as_tensor(target).reshape(-1).shape[0]
    t = as_targets(target, count, num_classes)
    img = torch.zeros(len(t), 3, size, size, device=device, dtype=dtype)
    rng = torch.Generator(device="cpu").manual_seed(seed)
    kernel = 2 * math.ceil(3 * blur_sigma) + 1 if blur_sigma > 0 else 0
    for step in range(1, steps + 1):
        dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=rng, device="cpu").tolist()
                  if jitter else (0, 0))
        shifted = img.roll((dy, dx), dims=(2, 3))
        img = ascent_step(model, shifted, t, lr, l2).roll((-dy, -dx), dims=(2, 3))
        img = torch.maximum(torch.minimum(img, high), low)
        if blur_every and kernel and step % blur_every == 0:
            img = TF.gaussian_blur(img, [kernel, kernel], [blur_sigma, blur_sigma])
        if callback is not None:
            callback(step, img.detach().clone())
    return img.detach()


@library_copy
def fooling_image(model: nn.Module, x: torch.Tensor, target, lr: float = 0.5,
                  max_steps: int = 100) -> torch.Tensor:
    """An adversarial example (Szegedy et al. 2014; notebook 02 §12): (B,3,H,W) → (B,3,H,W),
    each image changed by the fewest normalised gradient steps after which the model's top-1
    class is its target. Not Szegedy et al.'s search (box-constrained L-BFGS), a simpler one.
    The name follows the lecture's slides; in the literature "fooling images" are Nguyen,
    Yosinski & Clune's (2015) unrecognisable images that a network classifies with high
    confidence.

    Step: x ← x + lr · g / ‖g‖₂ with g = ∂S_target/∂x (the whole image's L2 norm). An image
    stops changing as soon as its top-1 is the target (an image already there is returned
    unchanged). Raises if some image is not fooled within ``max_steps``.
    """
    max_steps = _positive_int(max_steps, "max_steps", minimum=0)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr is the L2 length of each step, a number > 0; got {lr!r}.")
    with preserved_state(model), _autograd():
        x = _input(model, x)
        t = _model_targets(model, x, target)
        for _ in range(max_steps + 1):
            with torch.no_grad():
                todo = model(x).argmax(1) != t
            if not todo.any():
                return x.detach()
            if _ == max_steps:
                break
            g = _target_gradients(model, x[todo], t[todo], int(todo.sum()))
            step = lr * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            x = x.detach().clone()
            x[todo] += step
    raise ValueError(f"{int(todo.sum())} image(s) still not classified as their target after "
                     f"{max_steps} steps of length {lr}; raise max_steps or lr.")


# ----------------------------------------------------- beyond the lecture: activation maximisation

# Olah et al.'s (2017, Lucid) square root of ImageNet's colour covariance, from an SVD: a
# picture is optimised in these decorrelated colour coordinates, then mapped to RGB.
COLOR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                                       [0.27, 0.00, -0.05],
                                       [0.27, -0.09, 0.03]])


def fourier_scale(h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """1 / max(|f|, 1/max(h,w))^decay for the rfft2 frequencies of an h×w image: (h, w//2+1).

    Scaling a white spectrum by it gives natural-image-like 1/f noise; optimising the
    spectrum then moves each frequency at a speed proportional to a natural image's
    amplitude there — the same speed *relative to natural images*, not in absolute terms
    (Olah et al. 2017; notebook 03 §4)."""
    fy = torch.fft.fftfreq(h, device="cpu")[:, None]      # on the CPU whatever the default
    fx = torch.fft.rfftfreq(w, device="cpu")[None, :]
    freqs = (fy ** 2 + fx ** 2).sqrt()
    return 1.0 / freqs.clamp_min(1.0 / max(h, w)) ** decay


@library_copy
def fourier_image(spectrum: torch.Tensor, h: int, w: int, decay: float = 1.0) -> torch.Tensor:
    """A picture from its parameters in Fourier space: (B,3,h,w//2+1) complex → (B,3,h,w)
    pixels in [0,1].

    image = sigmoid(C · irfft2(spectrum · fourier_scale(h, w, decay)) / 4), with the
    orthonormal inverse FFT (``norm="ortho"``), the 1/4 of Lucid, and C the colour
    decorrelation matrix :data:`COLOR_CORRELATION_SQRT` scaled so its largest column has
    norm 1 (C mixes the three channels at every pixel).
    """
    if not torch.is_complex(spectrum) or spectrum.dim() != 4 or spectrum.shape[1] != 3:
        raise ValueError(f"spectrum must be complex (B,3,h,w//2+1); got {spectrum.dtype} "
                         f"{tuple(spectrum.shape)}.")
    if spectrum.shape[-2:] != (h, w // 2 + 1):
        raise ValueError(f"spectrum of {tuple(spectrum.shape[-2:])} does not describe an "
                         f"{h}×{w} image: expected ({h}, {w // 2 + 1}).")
    scale = fourier_scale(h, w, decay).to(spectrum.device)
    decorrelated = torch.fft.irfft2(spectrum * scale, s=(h, w), norm="ortho") / 4  # (B,3,h,w)
    c = COLOR_CORRELATION_SQRT.to(decorrelated.device, decorrelated.dtype)
    c = c / c.norm(dim=0).max()
    return torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, decorrelated))


def _robust_transform(img: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Transformation robustness as Lucid applies it (older than Olah et al. 2017, who
    combined it with the Fourier parametrisation; jitter goes back to DeepDream), one random
    draw for the whole batch: pad, jitter, scale, rotate, jitter. (B,3,H,W) → (B,3,H',W').

    The pad and the jitters scale with the picture: Lucid's 12 px pad and 8 px then 4 px
    jitters at 128 px, half of each at 64 px (a bigger pad only makes every step dearer).
    """
    pad = max(1, round(img.shape[-1] * 12 / 128))
    img = F.pad(img, (pad, pad, pad, pad), mode="constant", value=0.5)
    big, small = max(1, 2 * pad // 3), max(1, pad // 3)
    dy, dx = torch.randint(-big, big + 1, (2,), generator=rng, device="cpu").tolist()
    img = img.roll((dy, dx), dims=(2, 3))
    scale = 1 + (int(torch.randint(0, 11, (1,), generator=rng, device="cpu")) - 5) / 50
    angle = float(torch.randint(-10, 11, (1,), generator=rng, device="cpu"))
    img = TF.affine(img, angle=angle, translate=[0, 0], scale=scale, shear=[0.0],
                    interpolation=TF.InterpolationMode.BILINEAR)
    dy, dx = torch.randint(-small, small + 1, (2,), generator=rng, device="cpu").tolist()
    return img.roll((dy, dx), dims=(2, 3))


class _LayerReached(Exception):
    """Raised by :func:`_stop_at` once the layer has run: nothing after it is needed."""


@contextlib.contextmanager
def _stop_at(module: nn.Module):
    """Inside, a forward pass of the model ends (with :class:`_LayerReached`) as soon as
    ``module`` has run; hooks registered before this one (a capture) still see its output."""
    def stop(module, inputs, output):
        raise _LayerReached
    handle = module.register_forward_hook(stop)
    try:
        yield
    finally:
        handle.remove()


@library_copy
def activation_maximisation(model: nn.Module, layer, channel, size: int = 64,
                            steps: int = 16, lr: float = 0.4, seed: int = 0,
                            callback=None) -> torch.Tensor:
    """What a channel wants to see (Olah, Mordvintsev & Schubert 2017, *Feature
    Visualization*): a picture (3,size,size) in [0,1] maximising the mean activation of
    ``channel`` at ``layer``. For a list of K channels: K pictures (K,3,size,size), one per
    channel, optimised together in one batch, each its own single-channel call (to round-off).

    The picture is :func:`fourier_image` of a spectrum (seeded from ``seed``) that Adam
    optimises, and each step the model sees it through a random :func:`_robust_transform`
    (pad, jitter, scale, rotate), so that the picture cannot exploit exact pixels. The first
    step runs the whole model (to check the layer runs once); later steps stop at the layer,
    as nothing after it changes its activation. ``callback(step, picture)`` is called after
    every step (1..steps) with the picture(s) as that step left them.
    """
    single = not isinstance(channel, (list, tuple))
    channels = [_channel_index(c) for c in ([channel] if single else channel)]
    if not channels:
        raise ValueError("activation_maximisation got an empty list of channels; pass one "
                         "channel index or a non-empty list of them.")
    size = _positive_int(size, "size (pixels)")
    steps = _positive_int(steps, "steps", minimum=0)
    name = layer_name(model, layer)
    ref = _model_tensor(model)
    device = ref.device if ref is not None else torch.device("cpu")
    rng = torch.Generator(device="cpu").manual_seed(seed)
    # Every channel starts from the same seeded spectrum and sees the same transformations;
    # Adam works element by element and each picture's loss is its own, so batching changes
    # no picture.
    start = torch.randn((1, 3, size, size // 2 + 1, 2), generator=rng, device="cpu") * 0.01
    spectrum = start.repeat(len(channels), 1, 1, 1, 1).to(device).requires_grad_(True)
    optimiser = torch.optim.Adam([spectrum], lr=lr)
    spec = _spec_of(model)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    rows = torch.arange(len(channels), device=device)
    index = torch.tensor(channels, device=device)
    with capture(model, name) as cap, _autograd():
        picture = fourier_image(torch.view_as_complex(spectrum), size, size)
        for step in range(1, steps + 1):
            x = (_robust_transform(picture, rng) - mean) / std
            if step == 1:
                model(x)
                _check_ran(cap, name, model)
                out = cap.outputs[name]
                bad = [c for c in channels if out.dim() != 4 or not 0 <= c < out.shape[1]]
                if bad:
                    raise ValueError(f"channel {bad[0]} out of range for {name!r} with output "
                                     f"{tuple(out.shape)}.")
            else:
                with _stop_at(cap.layers[name]):      # the module capture already found
                    try:
                        model(x)
                    except _LayerReached:
                        pass
            optimiser.zero_grad()
            (-cap.outputs[name][rows, index].mean((1, 2)).sum()).backward()
            optimiser.step()
            picture = fourier_image(torch.view_as_complex(spectrum), size, size)
            if callback is not None:
                done = picture.detach().clone()
                callback(step, done[0] if single else done)
    return picture.detach()[0] if single else picture.detach()


def _spec_of(model: nn.Module):
    spec = getattr(model, "input_spec", None)
    if spec is None:
        raise ValueError("This model has no `input_spec`, so its input normalisation is "
                         "unknown; load it with featviz_helpers.models.load_model().")
    return spec
