"""What every method checks about what it is given: the batch, the target classes, the
layer, and plain integer arguments; and the context a gradient method runs in."""
from __future__ import annotations

import contextlib
import itertools
import operator

import torch
from torch import nn

from ..hooks import LayerCapture, preserved_state


def as_targets(target, batch_size: int, num_classes: int | None) -> torch.Tensor:
    """``target`` as a LongTensor (B,) of class indices, checked against the model.

    ``target`` is an int (the same class for every image), a sequence, or an integer tensor
    of shape (B,) — one class per image. The result is built and checked on the CPU (the
    host has the values); callers move it to their model's device. Raises ``TypeError`` for
    a bool, None, a string or floats, ``ValueError`` for the wrong count or a class out of
    range. :func:`model_targets` asks the model how many classes it has; ``num_classes=None``
    checks everything but the range of a sequence or tensor (:func:`stacked_targets`).
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
        if num_classes is None:
            raise TypeError("as_targets needs the number of classes to check an int target.")
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
    if t.device.type == "meta" or num_classes is None:   # no values to check yet
        return t
    t = t.cpu()   # checked on the host
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"class index {t[bad][0].item()} is out of range: this model has {num_classes} "
            f"classes (0..{num_classes - 1})."
        )
    return t.clone()


def _describe(out) -> str:
    """A short description of what a model returned, for an error message."""
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, dict) or hasattr(out, "keys"):
        parts = ", ".join(f"{k!r}: {_describe(v)}" for k, v in list(out.items())[:4])
        return f"a {type(out).__name__} {{{parts}}}"
    if isinstance(out, (tuple, list)):
        parts = ", ".join(_describe(v) for v in out[:4])
        return f"a {type(out).__name__} of {len(out)} ({parts})"
    return f"a {type(out).__name__}"


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model(x)``, checked to be what every method needs: one tensor of class scores (B,K).

    A model that returns anything else — a tuple ``(logits, features)``, a dict or a
    ``ModelOutput`` with ``logits``, a single score per image (B,), a map per image — is
    refused with a ``ValueError`` that names what came back and how to wrap the model
    (:class:`featviz_helpers.models.ClassScores`) so that it returns the scores.
    """
    out = model(x)
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == x.shape[0]:
        return out
    got = _describe(out)
    if isinstance(out, torch.Tensor) and out.dim() == 1 and out.shape[0] == x.shape[0]:
        fix = ("one score per image (a binary classifier): wrap it so that the score is class "
               "0 of a (B,1) output, models.ClassScores(model, lambda out: out[:, None]), and "
               "pass target=0")
    elif isinstance(out, (tuple, list)):
        fix = ("wrap it so that it returns only the logits, e.g. "
               "models.ClassScores(model, lambda out: out[0]) if they come first")
    elif isinstance(out, dict) or hasattr(out, "keys"):
        fix = ("wrap it so that it returns only the logits, e.g. "
               "models.ClassScores(model, lambda out: out[\"logits\"])")
    else:
        fix = ("these helpers explain classifiers, whose output is one (B, classes) tensor of "
               "scores; wrap the model to return that, models.ClassScores(model, select), "
               "with select a function of its output")
    raise ValueError(f"{type(model).__name__} returned {got} for a batch of {x.shape[0]}, not "
                     f"one tensor of class scores (B, classes). Fix: {fix}. (Layer names of "
                     "the wrapped model gain the prefix 'model.'.)")


def model_targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """``target`` as one class index per image of ``x`` (B,), on x's device, checked against
    the number of classes ``model`` gives (one forward pass of the first image, in eval
    mode, without gradients). Raises as :func:`as_targets` does."""
    with preserved_state(model), torch.no_grad():
        num_classes = logits_of(model, x[:1]).shape[1]
    return as_targets(target, x.shape[0], num_classes).to(x.device)


def stacked_targets(target, batch_size: int, copies: int):
    """The targets of ``copies`` stacked copies of a batch of ``batch_size`` images (SmoothGrad's
    noisy copies, Integrated Gradients' path points), for :func:`input_gradient`: an int as it
    is, else a LongTensor (copies·B,) whose type and count are checked now, and whose classes
    are checked against the model by the first pass, which computes the logits anyway.
    (:func:`model_targets` would spend a forward pass of its own on that: 6% of Integrated
    Gradients with 8 steps on one 224-px image.)"""
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    return as_targets(target, batch_size, None).repeat(copies)


def class_scores(logits: torch.Tensor, target) -> torch.Tensor:
    """The logit of each image's own target class: (B,K), target → (B,)."""
    t = as_targets(target, logits.shape[0], logits.shape[1]).to(logits.device)
    return logits.gather(1, t[:, None])[:, 0]


def check_batch(x: torch.Tensor) -> None:
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
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        raise ValueError(f"x of shape {tuple(x.shape)} looks channels-last (B,H,W,C); the "
                         "models take (B,C,H,W). Move the channels first: "
                         "x.permute(0, 3, 1, 2), or make the batch with images.preprocess().")
    if x.device.type != "meta" and not torch.isfinite(x).all():
        raise ValueError("x holds NaN or infinite values, so every map computed from it would "
                         "be NaN too. Check where the batch came from (images.preprocess "
                         "refuses such pixels).")


def model_tensor(model: nn.Module):
    """A parameter (or buffer) of ``model``: where it lives and in what dtype; None if none."""
    return next(itertools.chain(model.parameters(), model.buffers()), None)


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and float dtype of ``model``'s weights (CPU and float32 if it has none)."""
    ref = model_tensor(model)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    return device, dtype


def checked_input(model: nn.Module, x: torch.Tensor, for_gradient: bool = True) -> torch.Tensor:
    """``x`` checked (on the model's device), detached, and in the model's float dtype.

    For a gradient method call it inside :func:`autograd_on`: then an input made under
    ``torch.inference_mode()`` is copied into an ordinary tensor that autograd can use.
    """
    check_batch(x)
    ref = model_tensor(model)
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
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()           # x[:1].expand(2, ...), say: convolutions ran 30× slower
    return x


@contextlib.contextmanager
def autograd_on():
    """Autograd on, also when the caller is inside ``torch.no_grad()`` or
    ``torch.inference_mode()``: the gradient methods need a graph."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def check_ran(cap: LayerCapture, name: str, model: nn.Module) -> None:
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


def check_gradient_reaches(scores: torch.Tensor, name: str) -> None:
    if not scores.requires_grad:
        raise ValueError(f"No gradient reaches layer {name!r}: the class scores do not depend on "
                         "its output. Pick a layer on the path to the classifier.")


def positive_int(value, what: str, minimum: int = 1) -> int:
    """``value`` as an int ≥ ``minimum``; a bool, float or anything else is refused."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be an int ≥ {minimum}, got {value!r}.")
    return value


# About two 224×224 images. Per image, a forward pass of EfficientNet-Lite0 at 224 px on a
# 2-core CPU took 13 ms in batches of 2, 11–15 ms in batches of 4 and 16–27 ms in batches of 8
# (the activations of a larger batch no longer fit the cache; which of 2 and 4 is faster changed
# between measurements); the shapes models at 64 px, whose activations are about 4× larger per
# input pixel, took about 1.0 ms per image in passes of 8 to 24 and 1.4–1.8 ms in passes of 49
# to 98, so the budget is set where both are near their best.
# Gradient passes keep their own default of 16 images (SmoothGrad, Integrated Gradients): they
# also hold every activation for the backward pass, and for the shapes models 16 a pass was
# 1.3× faster than 49.
PIXELS_PER_PASS = 2 * 224 * 224


def images_per_pass(batch_size, x: torch.Tensor) -> int:
    """How many images a forward-only chunked method (occlusion, and the masked passes of
    Score-CAM, Ablation-CAM, deletion and insertion) sends through the model at once:
    ``batch_size`` when given (an int ≥ 1), else as many images of ``x``'s size as make
    :data:`PIXELS_PER_PASS` (2 at 224 px, 8 at 112, 24 at 64). Only speed depends on it:
    images are independent in eval mode."""
    if batch_size is not None:
        return positive_int(batch_size, "batch_size (images per forward pass)")
    return max(1, PIXELS_PER_PASS // (x.shape[-2] * x.shape[-1]))


def channel_index(channel) -> int:
    """``channel`` as a plain int; a bool, float or anything else is refused."""
    if isinstance(channel, bool):   # True would index as a mask and select every channel
        raise TypeError(f"channel must be an int channel index, not the bool {channel}.")
    try:
        return operator.index(channel)   # ints, numpy ints, 0-d integer tensors
    except TypeError:
        raise TypeError(f"channel must be an int channel index, got {channel!r} "
                        f"({type(channel).__name__}).") from None


def unit_responses(out: torch.Tensor, name: str, channels: list[int]) -> torch.Tensor:
    """The responses of ``channels`` in a layer's output: (B,K,h,w) from a feature map
    (B,C,h,w), (B,K) from a layer with one value per unit (B,C), e.g. a ``Linear``. Any
    other output (ViT tokens (B,N,D), say) is refused: which number is "the channel's
    response" is not defined there."""
    if out.dim() not in (2, 4):
        raise ValueError(f"Layer {name!r} gives {tuple(out.shape)}, neither a feature map "
                         "(B,C,h,w) nor one value per unit (B,C), so a channel's response is "
                         "not defined there (for ViT tokens (B,N,D): which token?). Pick a "
                         "convolutional or linear layer.")
    bad = [c for c in channels if not 0 <= c < out.shape[1]]
    if bad:
        raise ValueError(f"channel {bad[0]} out of range for {name!r}, which has "
                         f"{out.shape[1]} channels (0..{out.shape[1] - 1}); output "
                         f"{tuple(out.shape)}.")
    return out[:, channels]


def baseline_like(x: torch.Tensor, baseline) -> torch.Tensor:
    """The baseline image x' for each image of ``x`` (B,C,H,W): zeros for ``None`` (after
    normalisation, the colour the preprocessing subtracts), else a number or a tensor that
    broadcasts to ``x``, in x's dtype and on its device; anything else is refused."""
    if baseline is None:
        return torch.zeros_like(x)
    start = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    try:
        return start.expand_as(x)
    except RuntimeError:
        raise ValueError(f"baseline of shape {tuple(start.shape)} does not fit the images "
                         f"{tuple(x.shape)}: pass a number or a tensor that broadcasts to the "
                         "batch — (B,C,H,W), (C,H,W), or (1,C,1,1) for one colour.") from None
