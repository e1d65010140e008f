"""Plumbing: capturing what layers compute, and putting a model back as it was.

Students may use everything here in their exercises; the ReLU backward rules, a finished
method, are in :mod:`featviz_helpers.relu_rules`.

One mechanism for the whole course: a forward hook stores a layer's output, and a tensor
hook on that output stores the gradient that flows back into it. (Module backward hooks
are avoided on purpose: they misbehave when an in-place ReLU follows the layer.)

Every helper that changes a model's state (mode, ``requires_grad`` flags, hooks, replaced
``forward``s) holds the model's lock (:func:`model_lock`) while it does, so calls on one
model from several threads run one after the other instead of undoing each other's changes.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn

from .models import get_layer, layer_name

__all__ = ["model_lock", "preserved_state", "ModelState", "model_state", "state_changes",
           "LayerCapture", "capture", "count_hooks"]


# ------------------------------------------------------------------------ one lock per model

_locks: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that every helper holds while it changes ``model``'s state.

    Hold it yourself (``with hooks.model_lock(model): ...``) around code of your own that
    calls ``model`` from another thread while the helpers may be using it. Re-entrant, so
    nested helpers (``capture`` inside ``preserved_state`` inside a method) do not deadlock.
    Kept beside the model, not on it, so copying or pickling the model is unaffected.
    """
    with _locks_guard:   # two threads asking at once must get the same lock
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def preserved_state(model: nn.Module, *, eval_mode: bool = True,
                    freeze: bool = True) -> Iterator[nn.Module]:
    """Run the body with ``model`` in eval mode and its parameters frozen; restore after.

    Freezing (``requires_grad=False``) means a backward pass computes only the gradients
    asked for, not weight gradients. The mode and every parameter's ``requires_grad`` flag
    are restored on exit, also when the body raises. The body runs holding the model's
    lock (:func:`model_lock`): another thread's helpers wait until it is done.
    """
    with model_lock(model):
        # The snapshot is taken under the lock: taken before it, it could record another
        # thread's temporary changes (eval mode, frozen flags) and "restore" them.
        was_training = {m: m.training for m in model.modules()}
        # Weights made under torch.inference_mode() cannot get requires_grad=True back outside
        # it, so they are left alone (they cannot take part in a backward pass anyway).
        flags = [(p, p.requires_grad) for p in model.parameters() if not p.is_inference()]
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


@dataclass
class ModelState:
    """Everything about a model that a visualisation method must leave as it found it."""

    training: list
    requires_grad: list
    has_grad: list
    hooks: int
    patched: list
    tensors: dict


def model_state(model: nn.Module) -> ModelState:
    """A snapshot of ``model``: modes, flags, ``.grad``s, hook count, replaced ``forward``s,
    and a copy of every parameter and buffer (BatchNorm statistics included)."""
    return ModelState(
        training=[m.training for m in model.modules()],
        requires_grad=[p.requires_grad for p in model.parameters()],
        has_grad=[p.grad is not None for p in model.parameters()],
        hooks=count_hooks(model),
        patched=[name or "the model" for name, m in model.named_modules()
                 if "forward" in m.__dict__],
        tensors={k: v.detach().clone() for k, v in model.state_dict().items()},
    )


def state_changes(before: ModelState, after: ModelState) -> list[str]:
    """What changed between two :func:`model_state` snapshots, each as a sentence ending in
    what to do about it; empty when nothing did."""
    changes = []
    if after.training != before.training:
        changes.append("changed the model's train/eval mode; remember the caller's mode and "
                       "restore it (model.train(was_training)) in a finally block.")
    if after.requires_grad != before.requires_grad:
        changes.append("changed parameters' requires_grad flags; restore them.")
    if after.hooks != before.hooks:
        changes.append("left hooks on the model; remove them in a finally block.")
    if after.patched != before.patched:
        changes.append(f"left a replaced forward on {after.patched[:3] or before.patched[:3]}; "
                       "restore every one, also when an exception is raised.")
    changed = [k for k, v in after.tensors.items()
               if k not in before.tensors or not torch.equal(v, before.tensors[k])]
    if changed:
        stats = [k for k in changed if "running_" in k or "num_batches" in k]
        if stats:
            changes.append(f"changed BatchNorm statistics ({stats[0]}): a forward pass in "
                           "train mode updates them. Switch to eval mode first.")
        else:
            changes.append(f"changed the model's weights ({changed[0]}): never write into "
                           "parameters (no in-place ops on weight tensors).")
    if after.has_grad != before.has_grad:
        changes.append("left weight gradients (.grad) on the model's parameters; take "
                       "gradients with torch.autograd.grad w.r.t. what you need, or freeze "
                       "the parameters during the backward pass.")
    return changes


class LayerCapture:
    """Activations and gradients of named layers, keyed by the layer's name.

    ``activations[name]`` is the layer's output (B,C,h,w) from the last forward pass,
    detached; ``gradients[name]`` is d(what you backpropagated)/d(that output), same shape,
    filled in by a backward pass; ``outputs[name]`` is the live output, still in the graph,
    for differentiating a function of a layer (a neuron, say); ``calls[name]`` counts how
    often the layer ran inside the block (a module reused within one forward pass runs
    more than once, and then only its last call is kept). Use through :func:`capture`, which
    also holds the model's lock and restores its state.
    """

    def __init__(self, model: nn.Module, layers: Iterable[str | nn.Module],
                 stop_gradient: bool = False):
        self.model = model
        self.stop_gradient = stop_gradient
        # Keyed by the name as given (a module given as such: by its canonical name).
        self.layers = {layer if isinstance(layer, str) else layer_name(model, layer):
                       get_layer(model, layer) for layer in layers}
        self.activations: dict[str, torch.Tensor] = {}
        self.gradients: dict[str, torch.Tensor] = {}
        self.outputs: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {name: 0 for name in self.layers}
        self._handles = []

    def _forward_hook(self, name: str):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(
                    f"Layer {name!r} returns {type(output).__name__}, not a tensor; capture a "
                    "layer whose output is one tensor."
                )
            self.calls[name] += 1
            # Clone: an in-place op after this layer (ReLU(inplace=True)) would otherwise
            # overwrite what we stored.
            self.activations[name] = output.detach().clone()
            # The tensor hook must not hold `self`: the output keeps its hooks, `self` keeps
            # the output, and that cycle through autograd would keep the graph alive.
            gradients = self.gradients
            store = lambda grad: gradients.__setitem__(name, grad.detach())
            if self.stop_gradient and torch.is_grad_enabled():
                # Restart the graph here: backward ends at this layer, nothing below it runs.
                leaf = output.detach().requires_grad_(True)
                leaf.register_hook(store)
                self.outputs[name] = leaf
                return leaf.clone()  # in-place ops downstream act on the copy, not the leaf
            if output.requires_grad:
                output.register_hook(store)
                self.outputs[name] = output
                # The rest of the network gets a copy, so an in-place op after this layer
                # cannot overwrite the live output kept in `outputs`.
                return output.clone()
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

    The model is in eval mode (and its parameters frozen unless ``freeze=False``) inside,
    and the body holds the model's lock (:func:`model_lock`); on exit, also on an exception,
    all hooks are removed and mode and flags restored::

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
