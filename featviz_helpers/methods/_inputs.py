"""What every method checks about what it is given: the batch, the target classes, the
layer, and plain integer arguments; and the context a gradient method runs in."""
from __future__ import annotations

import contextlib
import itertools
import operator

import torch
from torch import nn

from ..hooks import LayerCapture, preserved_state


def as_targets(target, batch_size: int, num_classes: int) -> torch.Tensor:
    """``target`` as a LongTensor (B,) of class indices, checked against the model.

    ``target`` is an int (the same class for every image), a sequence, or an integer tensor
    of shape (B,) — one class per image. The result is built and checked on the CPU (the
    host has the values); callers move it to their model's device. Raises ``TypeError`` for
    a bool, None, a string or floats, ``ValueError`` for the wrong count or a class out of
    range. :func:`model_targets` asks the model how many classes it has.
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
    if t.device.type == "meta":   # no values to check (nor to copy to the host)
        return t
    t = t.cpu()   # checked on the host
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"class index {t[bad][0].item()} is out of range: this model has {num_classes} "
            f"classes (0..{num_classes - 1})."
        )
    return t.clone()


def model_targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """``target`` as one class index per image of ``x`` (B,), on x's device, checked against
    the number of classes ``model`` gives (one forward pass of the first image, in eval
    mode, without gradients). Raises as :func:`as_targets` does."""
    with preserved_state(model), torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    return as_targets(target, x.shape[0], num_classes).to(x.device)


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


def channel_index(channel) -> int:
    """``channel`` as a plain int; a bool, float or anything else is refused."""
    if isinstance(channel, bool):   # True would index as a mask and select every channel
        raise TypeError(f"channel must be an int channel index, not the bool {channel}.")
    try:
        return operator.index(channel)   # ints, numpy ints, 0-d integer tensors
    except TypeError:
        raise TypeError(f"channel must be an int channel index, got {channel!r} "
                        f"({type(channel).__name__}).") from None
