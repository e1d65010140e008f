"""Capturing what layers compute, and putting a model back as it was.

One mechanism for the whole course: a forward hook stores a layer's output, and a tensor
hook on that output stores the gradient that flows back into it. (Module backward hooks
are avoided on purpose: they misbehave when an in-place ReLU follows the layer.)
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn

from .library_guard import library_copy, refuse_if_blocked
from .models import get_layer, layer_name

__all__ = ["preserved_state", "LayerCapture", "capture", "count_hooks", "RULES",
           "relu_backward_rule"]


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = True,
                    freeze: bool = True) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode and its parameters frozen; restore after.

    Freezing (``requires_grad=False``) means a backward pass computes only the gradients
    asked for, not weight gradients. The mode and every parameter's ``requires_grad`` flag
    are restored on exit, also when the body raises.
    """
    was_training = {m: m.training for m in model.modules()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        if eval_mode:
            model.eval()
        if freeze:
            for p, _ in flags:
                p.requires_grad_(False)
        yield model
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, training in was_training.items():
            m.training = training


class LayerCapture:
    """Activations and gradients of named layers, keyed by the layer's name.

    ``activations[name]`` is the layer's output (B,C,h,w) from the last forward pass,
    detached; ``gradients[name]`` is d(what you backpropagated)/d(that output), same shape,
    filled in by a backward pass; ``outputs[name]`` is the live output, still in the graph,
    for differentiating a function of a layer (a neuron, say). Use through :func:`capture`.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str | nn.Module],
                 stop_gradient: bool = False):
        self.model = model
        self.stop_gradient = stop_gradient
        self.layers = {layer_name(model, layer): get_layer(model, layer) for layer in layers}
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Layer {name!r} returns {type(output).__name__}, not a tensor; capture a "
                    "layer whose output is one tensor."
                )
            # Clone: an in-place op after this layer (ReLU(inplace=True)) would otherwise
            # overwrite what we stored.
            self.activations[name] = output.detach().clone()
            store = lambda grad: self.gradients.__setitem__(name, grad.detach())
            if self.stop_gradient and torch.is_grad_enabled():
                # Restart the graph here: backward ends at this layer, nothing below it runs.
                leaf = output.detach().requires_grad_(True)
                leaf.register_hook(store)
                self.outputs[name] = leaf
                return leaf.clone()  # in-place ops downstream act on the copy, not the leaf
            if output.requires_grad:
                output.register_hook(store)
                self.outputs[name] = output
        return hook

    def __enter__(self) -> "LayerCapture":
        try:
            for name, module in self.layers.items():
                self._handles.append(module.register_forward_hook(self._forward_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook this object registered."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


@contextlib.contextmanager
def capture(model: nn.Module, layers: str | nn.Module | Iterable[str | nn.Module],
            *, freeze: bool = True, stop_gradient: bool = False) -> Iterator[LayerCapture]:
    """Capture activations and gradients of ``layers`` while the body runs.

    The model is in eval mode (and its parameters frozen unless ``freeze=False``) inside;
    on exit, also on an exception, all hooks are removed and mode and flags restored::

        with capture(model, "_blocks.15") as cap:
            logits = model(x.detach().requires_grad_())
            logits[0, target].backward()
        cap.activations["_blocks.15"], cap.gradients["_blocks.15"]

    With frozen parameters something upstream must require grad for gradients to reach
    the layer: the input, as above, or pass ``freeze=False``. Or pass
    ``stop_gradient=True``: the graph then restarts at the (one) captured layer, so
    ``scores.sum().backward()`` fills ``gradients`` and does no work below the layer.
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    with preserved_state(model, freeze=freeze):
        with LayerCapture(model, layers, stop_gradient=stop_gradient) as cap:
            yield cap


def count_hooks(model: nn.Module) -> int:
    """Number of module hooks (forward, pre-forward, backward) currently on ``model``."""
    total = 0
    for m in model.modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                     "_backward_pre_hooks"):
            total += len(getattr(m, attr, {}))
    return total


# --------------------------------------------------------------------- ReLU backward rules

RULES = ("standard", "deconvnet", "guided")


class _RuleReLU(torch.autograd.Function):
    """ReLU (``top=None``) or ReLU6 (``top=6``) whose backward follows one of :data:`RULES`.

    With forward input x and upstream gradient g (Springenberg et al. 2015):
    standard g·1[x>0], deconvnet g·1[g>0], guided g·1[x>0]·1[g>0]. For ReLU6 the forward
    mask is 1[0<x<6]: the flat top passes no gradient either.
    """

    @staticmethod
    def forward(ctx, x, rule: str, top):
        refuse_if_blocked("hooks._RuleReLU")
        ctx.rule, ctx.top = rule, top
        ctx.save_for_backward(x)
        return x.clamp_min(0) if top is None else x.clamp(0, top)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp_min(0), None, None
        passes = x > 0
        if ctx.top is not None:
            passes &= x < ctx.top
        if ctx.rule == "standard":
            return g * passes, None, None
        return g.clamp_min(0) * passes, None, None


def _rule_forward(module: nn.Module, rule: str):
    top = 6.0 if isinstance(module, nn.ReLU6) else None
    return lambda x: _RuleReLU.apply(x, rule, top)


@library_copy
@contextlib.contextmanager
def relu_backward_rule(model: nn.Module, rule: str = "guided") -> Iterator[int]:
    """Inside the block, every ``nn.ReLU``/``nn.ReLU6`` module of ``model`` backpropagates by
    ``rule`` (see :data:`RULES`); yields how many modules were changed.

    Works with ``inplace=True`` ReLUs (the replacement is out of place) and with one ReLU
    module applied several times (torchvision's ResNet blocks). Functional ``F.relu`` calls
    inside a ``forward`` are not modules and keep the standard rule. Everything is restored
    on exit, also when the body raises.
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    relus = [m for m in model.modules() if type(m) in (nn.ReLU, nn.ReLU6)]
    saved = [(m, m.__dict__.get("forward")) for m in relus]
    try:
        for m in relus:
            m.forward = _rule_forward(m, rule)   # instance attribute shadows the class method
        yield len(relus)
    finally:
        for m, own in saved:
            if own is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = own
