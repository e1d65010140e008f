"""Capturing what layers compute, and putting a model back as it was.

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
import types
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .library_guard import library_copy, refuse_if_blocked
from .models import Conv2dSame, get_layer, layer_name

__all__ = ["model_lock", "preserved_state", "ModelState", "model_state", "state_changes",
           "LayerCapture", "capture", "count_hooks", "RULES", "relu_backward_rule"]


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
        self.layers = {layer_name(model, layer): get_layer(model, layer) for layer in layers}
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


# --------------------------------------------------------------------- ReLU backward rules

RULES = ("standard", "deconvnet", "guided")


class _RuleReLU(torch.autograd.Function):
    """ReLU (``top=None``) or ReLU6 (``top=6``; any ceiling works) whose backward follows one
    of :data:`RULES`.

    With forward input x and upstream gradient g (Springenberg et al. 2015):
    standard g·1[x>0], deconvnet g·1[g>0], guided g·1[x>0]·1[g>0]. For ReLU6 the forward
    mask is 1[0<x<6]: the flat top passes no gradient either.

    The general form, all in Python. :func:`_rule_relu` computes the same gradients faster
    (a native ReLU whose own backward applies the forward mask) and uses this only for the
    deconvnet rule, which ignores that mask.
    """

    @staticmethod
    def forward(ctx, x, rule: str, top):
        refuse_if_blocked("hooks._RuleReLU")
        ctx.rule, ctx.top = rule, top
        if rule != "deconvnet":               # the deconvnet backward needs only g
            ctx.save_for_backward(x)
        return x.clamp_min(0) if top is None else x.clamp(0, top)

    @staticmethod
    def backward(ctx, g):
        if ctx.rule == "deconvnet":
            return g.clamp_min(0), None, None
        (x,) = ctx.saved_tensors
        passes = x > 0
        if ctx.top is not None:
            passes &= x < ctx.top
        if ctx.rule == "standard":
            return g * passes, None, None
        return g.clamp_min(0) * passes, None, None


def _keep_positive(grad_inputs, grad_outputs):
    """Post-hook on a native ReLU's backward node: g·mask → max(g·mask, 0) = max(g,0)·mask,
    the guided gradient. The node's result is a tensor it has just made and no one else holds,
    so it is clamped in place (one pass, no new tensor; returning None keeps it), unless a
    graph is being built through the backward pass (``create_graph=True``)."""
    g = grad_inputs[0]
    if g is None:
        return None
    with torch._C.DisableTorchFunction():     # a rule's mode may be on; it has no say here
        if g.requires_grad:
            return (g.clamp_min(0),)
        g.clamp_min_(0)
    return None


def _rule_relu(x: torch.Tensor, rule: str, top) -> torch.Tensor:
    """ReLU (``top=None``) or ReLU-with-ceiling ``top`` of ``x`` whose backward follows
    ``rule``: the gradients of :class:`_RuleReLU`, computed mostly natively.

    ``threshold(x, 0, 0)`` and ``hardtanh(x, 0, top)`` save their input x, as
    :class:`_RuleReLU` does, and their backward passes g exactly where 0 < x (< top): the
    standard rule. The guided rule adds :func:`_keep_positive` on that backward node; the
    deconvnet rule, which ignores x, stays with :class:`_RuleReLU`. Call with torch-function
    handling off (no mode may see these calls: ``_RuleOverride`` would take them for the
    model's own ReLUs).
    """
    if rule == "deconvnet" or not x.is_floating_point() or (top is not None and not top > 0):
        return _RuleReLU.apply(x, rule, top)
    y = torch.threshold(x, 0.0, 0.0) if top is None else torch._C._nn.hardtanh(x, 0.0, top)
    if rule == "guided" and y.grad_fn is not None:
        y.grad_fn.register_hook(_keep_positive)
    return y


# Activations that guided backprop and the deconvnet have no rule for. A network that
# computes one of these is refused: its "guided" gradient would be partly the plain one.
# Gates and normalisers (sigmoid, tanh, softmax) and max-pooling are not rectifiers; they
# pass the ordinary gradient, as in Springenberg et al.
_UNGUIDED = {
    "gelu": "GELU", "silu": "SiLU (Swish)", "mish": "Mish", "elu": "ELU", "elu_": "ELU",
    "selu": "SELU", "selu_": "SELU", "celu": "CELU", "celu_": "CELU",
    "leaky_relu": "LeakyReLU", "leaky_relu_": "LeakyReLU", "rrelu": "RReLU", "rrelu_": "RReLU",
    "prelu": "PReLU", "hardswish": "Hardswish", "softplus": "Softplus",
    "threshold": "Threshold", "threshold_": "Threshold", "_threshold": "Threshold",
}
# Every function name that _RuleOverride acts on; it passes all others straight through.
_WATCHED = frozenset({"relu", "relu_", "relu6", "hardtanh", "hardtanh_", *_UNGUIDED})

# Leaf modules whose forward (this exact class's) calls one fixed function, none of them an
# activation: F.conv*/F.pad, F.batch_norm, F.linear, the pools, F.dropout. While a rule is
# active they run with its torch-function mode off, which it would only have passed through:
# a mode costs several microseconds per torch call (more for Python-level functions like
# F.batch_norm), about 7% of a forward pass of EfficientNet-Lite0 at batch 1. Subclasses
# are not trusted: their forward may do anything.
_PLAIN_LEAVES = frozenset({
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    Conv2dSame,                                   # this package's: F.pad, then F.conv2d
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.Linear,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.Flatten,
})


def _forward_without_rule_mode(self: nn.Module, *args, **kwargs):
    """Forward of a :data:`_PLAIN_LEAVES` module while a rule is active: its class's own
    forward, with the rule's mode taken off this thread's torch-function mode stack (if it
    is on top; otherwise, say under a mode the caller entered inside the rule's block, it
    runs as usual). Bound to the module (``types.MethodType``), so a copy made with
    ``copy.deepcopy`` meanwhile calls its own forward, not the original's."""
    depth = torch._C._len_torch_function_stack()
    if depth and isinstance(torch._C._get_function_stack_at(depth - 1), _RuleOverride):
        mode = torch._C._pop_torch_function_stack()
        try:
            return type(self).forward(self, *args, **kwargs)
        finally:
            torch._C._push_on_torch_function_stack(mode)
    return type(self).forward(self, *args, **kwargs)


class _RuleOverride(TorchFunctionMode):
    """While active (in this thread only): functional ReLUs follow the rule too, and an
    activation the rule does not cover raises instead of passing the plain gradient.

    ``F.relu``, ``torch.relu``, ``x.relu()``, ``F.relu6`` and ``F.hardtanh(x, 0, top)``
    are not modules, so replacing module ``forward``s cannot reach them (DenseNet's last
    ReLU, GoogLeNet's every ReLU); a torch-function mode sees every such call. ``applied``
    counts the ReLUs, modules and functional, that ran under the rule.

    Every torch call of the forward pass comes here, so the common case returns at once,
    and the plain leaf modules (:data:`_PLAIN_LEAVES`) run with the mode off.
    """

    def __init__(self, rule: str):
        super().__init__()
        self.rule = rule
        self.applied = 0

    def relu(self, x: torch.Tensor, top) -> torch.Tensor:
        """ReLU (``top=None``) or ReLU-with-ceiling ``top`` of ``x``, backward by the rule.
        Out of place, like the replaced modules: callers use the returned tensor."""
        refuse_if_blocked("hooks._RuleReLU")
        self.applied += 1
        with torch._C.DisableTorchFunction():   # this mode must not see the ReLU it computes
            return _rule_relu(x, self.rule, top)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) not in _WATCHED:
            return func(*args, **kwargs) if kwargs else func(*args)
        kwargs = kwargs or {}
        name = func.__name__
        if name in ("relu", "relu_"):
            return self.relu(args[0], None)
        if name == "relu6":
            return self.relu(args[0], 6.0)
        if name in ("hardtanh", "hardtanh_"):
            low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            if low == 0:                      # hardtanh(x, 0, 6) is ReLU6
                return self.relu(args[0], float(high))
            self.refuse(f"Hardtanh with floor {low}")
        if name in _UNGUIDED:
            self.refuse(_UNGUIDED[name])
        return func(*args, **kwargs)

    def refuse(self, activation: str) -> None:
        if self.rule == "standard":           # the plain derivative: nothing to override
            return
        raise ValueError(
            f"The {self.rule} rule cannot be applied to this model: its forward pass computes "
            f"{activation}, and the {self.rule} rule is defined only for ReLU and ReLU6. Its "
            f"map would silently mix {self.rule} and plain gradients. Use a ReLU network, or "
            "a method that does not override nonlinearities: methods.saliency (the plain "
            "gradient), methods.grad_cam, or for a ViT methods.vit_grad_cam and "
            "methods.attention_rollout."
        )

    def check_applied(self, model, inputs, output) -> None:
        """Forward hook on the whole model: refuse a forward pass in which no ReLU ran."""
        if self.applied == 0 and self.rule != "standard":
            raise ValueError(
                f"No ReLU ran under the {self.rule} rule in {type(model).__name__}'s forward "
                f"pass (no nn.ReLU/nn.ReLU6 module, no F.relu call), so the {self.rule} "
                "gradient would just be the plain gradient. A home-made activation (say "
                "x.clamp(min=0)) is not recognised: use nn.ReLU or F.relu in the model, or "
                "methods.saliency for the plain gradient."
            )


def _rule_forward(module: nn.Module, override: _RuleOverride):
    top = 6.0 if isinstance(module, nn.ReLU6) else None
    return lambda x: override.relu(x, top)


@library_copy
@contextlib.contextmanager
def relu_backward_rule(model: nn.Module, rule: str = "guided") -> Iterator[int]:
    """Inside the block, every ReLU/ReLU6 of ``model`` backpropagates by ``rule`` (see
    :data:`RULES`); yields how many ``nn.ReLU``/``nn.ReLU6`` modules were changed.

    Works with ``inplace=True`` ReLUs (the replacement is out of place) and with one ReLU
    module applied several times (torchvision's ResNet blocks). Functional calls
    (``F.relu``, ``torch.relu``, ``F.relu6``) made in this thread follow the rule too. With
    ``"guided"`` or ``"deconvnet"``, a forward pass that computes an activation the rule
    does not cover (GELU, SiLU, ELU, LeakyReLU, …), or in which no ReLU ran at all, raises
    ``ValueError`` instead of returning a partly plain gradient. Everything is restored on
    exit, also when the body raises; the body holds the model's lock (:func:`model_lock`).

    (Inside the block, convolutions, BatchNorms, pools and the like also have a ``forward``
    of their own: the same computation, without the torch-function mode, for speed.)
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}.")
    with model_lock(model):
        modules = list(model.modules())
        relus = [m for m in modules if type(m) in (nn.ReLU, nn.ReLU6)]
        saved = [(m, m.__dict__.get("forward")) for m in relus]
        # Plain leaves (convolutions, BatchNorms, ...) not already given a forward of their own
        leaves = [m for m in modules if type(m) in _PLAIN_LEAVES and "forward" not in m.__dict__]
        override = _RuleOverride(rule)
        handle = None
        try:
            for m in relus:
                m.forward = _rule_forward(m, override)  # instance attribute shadows the method
            for m in leaves:
                m.__dict__["forward"] = types.MethodType(_forward_without_rule_mode, m)
            handle = model.register_forward_hook(override.check_applied)
            with override:
                yield len(relus)
        finally:
            if handle is not None:
                handle.remove()
            for m in leaves:
                m.__dict__.pop("forward", None)
            for m, own in saved:
                if own is None:
                    m.__dict__.pop("forward", None)
                else:
                    m.forward = own
