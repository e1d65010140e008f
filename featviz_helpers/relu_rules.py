"""The ReLU backward rules of Springenberg et al. (2015): standard backprop, the deconvnet and
guided backpropagation, applied to every ReLU of a model while a block runs.

Notebook 03 §1 ("Three ways back through a ReLU") derives the rules on the lecture's 3×3
example (:data:`RELU_EXAMPLE_X`, :data:`RELU_EXAMPLE_G`, :data:`RELU_EXAMPLE_EXPECTED`);
§2 ("Guided backprop through a whole network") replaces every ReLU's backward.
:func:`relu_backward_rule` is the library copy that :func:`featviz_helpers.methods.input_gradient`
and the later notebooks use: a finished method, so exercise code may not call it
(:mod:`featviz_helpers.library_guard`). The plumbing students may use (capturing layers,
restoring a model) is in :mod:`featviz_helpers.hooks`.
"""
from __future__ import annotations

import contextlib
import types
import weakref
from typing import Iterator

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .hooks import model_lock
from .library_guard import library_copy, refuse_if_blocked
from .models import Conv2dSame

__all__ = ["RULES", "relu_backward_rule", "RELU_EXAMPLE_X", "RELU_EXAMPLE_G",
           "RELU_EXAMPLE_EXPECTED"]

RULES = ("standard", "deconvnet", "guided")

# The lecture's worked example (notebook 03 §1): forward input x, upstream gradient g, and
# what each rule passes back.
RELU_EXAMPLE_X = torch.tensor([[1.0, -1, 5], [2, -5, -7], [-3, 2, 4]])
RELU_EXAMPLE_G = torch.tensor([[-2.0, 3, -1], [6, -3, 1], [2, -1, 3]])
RELU_EXAMPLE_EXPECTED = {
    "standard": torch.tensor([[-2.0, 0, -1], [6, 0, 0], [0, -1, 3]]),
    "deconvnet": torch.tensor([[0.0, 3, 0], [6, 0, 1], [2, 0, 3]]),
    "guided": torch.tensor([[0.0, 0, 0], [6, 0, 0], [0, 0, 3]]),
}


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
        refuse_if_blocked("relu_rules._RuleReLU")
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
    refuse_if_blocked()
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
    refuse_if_blocked()
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
# Rectifiers written by hand are ReLUs too: clamp(x, min=0) (with a ceiling: ReLU6) and
# maximum(x, 0); x * sigmoid(x) is SiLU written by hand, which is refused like the module.
# x * (x > 0) and torch.where(x > 0, x, 0) are ReLUs too: the mode remembers which tensors
# are x > 0 (also after .float() and the like) to recognise them.
_CLAMPS = frozenset({"clamp", "clamp_", "clamp_min", "clamp_min_", "clip", "clip_"})
_MAXIMA = frozenset({"maximum", "max", "fmax"})
_PRODUCTS = frozenset({"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply"})
_POSITIVE = frozenset({"gt", "__gt__", "greater", "ge", "__ge__", "greater_equal"})
_CASTS = frozenset({"float", "to", "type_as", "type", "half", "double", "bfloat16"})
_WATCHED = frozenset({"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_",
                      "where", *_CLAMPS, *_MAXIMA, *_PRODUCTS, *_POSITIVE, *_CASTS, *_UNGUIDED})

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


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_zero(v) -> bool:
    """Whether ``v`` is the number 0 or a tensor of zeros (the floor of a rectifier)."""
    if _is_number(v):
        return v == 0
    if isinstance(v, torch.Tensor) and v.device.type != "meta":
        with torch._C.DisableTorchFunction():
            return v.numel() > 0 and not bool(v.any())
    return False


def _clamp_bounds(name: str, args, kwargs):
    """(min, max) of a clamp/clamp_min/clip call, None where not given."""
    if name.startswith("clamp_min"):
        return (args[1] if len(args) > 1 else kwargs.get("min")), None
    low = args[1] if len(args) > 1 else kwargs.get("min")
    high = args[2] if len(args) > 2 else kwargs.get("max")
    return low, high


def _remember(table: dict, result, source) -> None:
    """Note that ``result`` was computed from ``source`` (sigmoid(source), source > 0)."""
    if isinstance(result, torch.Tensor) and isinstance(source, torch.Tensor):
        table[id(result)] = (weakref.ref(result), weakref.ref(source))


def _recorded(table: dict, t):
    """The tensor ``t`` was computed from, if the table noted it; else None."""
    refs = table.get(id(t)) if isinstance(t, torch.Tensor) else None
    return refs[1]() if refs is not None and refs[0]() is t else None


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
        # id(sigmoid(y)) -> (weak result, weak y): to recognise y * sigmoid(y); and
        # id(y > 0) -> (weak result, weak y): to recognise y * (y > 0) and where(y > 0, y, 0).
        self._sigmoids: dict[int, tuple] = {}
        self._positive: dict[int, tuple] = {}

    def relu(self, x: torch.Tensor, top, in_place: bool = False) -> torch.Tensor:
        """ReLU (``top=None``) or ReLU-with-ceiling ``top`` of ``x``, backward by the rule.
        Computed out of place, like the replaced modules; for an in-place call (``relu_``,
        ``clamp_``) the result is then copied into ``x``, whose gradient flows through it,
        so code that ignores the returned tensor sees the rectified values."""
        refuse_if_blocked("relu_rules._RuleReLU")
        self.applied += 1
        with torch._C.DisableTorchFunction():   # this mode must not see the ReLU it computes
            if not in_place:
                return _rule_relu(x, self.rule, top)
            # The rule's node saves its input for backward: give it a copy, since x changes.
            return x.copy_(_rule_relu(x.clone(), self.rule, top))

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", None) not in _WATCHED:
            return func(*args, **kwargs) if kwargs else func(*args)
        kwargs = kwargs or {}
        name = func.__name__
        in_place = name.endswith("_") and not name.startswith("__") or name == "__imul__"
        if name in ("relu", "relu_"):
            return self.relu(args[0], None, in_place)
        if name == "relu6":
            return self.relu(args[0], 6.0)
        if name in ("hardtanh", "hardtanh_"):
            low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            if low == 0:                      # hardtanh(x, 0, 6) is ReLU6
                return self.relu(args[0], float(high), in_place)
            self.refuse(f"Hardtanh with floor {low}")
        if name in _CLAMPS:
            low, high = _clamp_bounds(name, args, kwargs)
            if _is_zero(low) and (high is None or _is_number(high) and high > 0):
                return self.relu(args[0], None if high is None else float(high), in_place)
        if name in _MAXIMA and len(args) == 2 and not kwargs:
            # Only two tensors: torch.max(x, 0) is a reduction over dimension 0.
            a, b = args
            for x, floor in ((a, b), (b, a)):
                if (isinstance(x, torch.Tensor) and isinstance(floor, torch.Tensor)
                        and torch.broadcast_shapes(x.shape, floor.shape) == x.shape
                        and _is_zero(floor)):
                    return self.relu(x, None)
        if name in ("sigmoid", "sigmoid_"):
            result = func(*args, **kwargs)
            _remember(self._sigmoids, result, args[0])
            return result
        if name in _POSITIVE and len(args) == 2 and _is_zero(args[1]):
            result = func(*args, **kwargs)
            _remember(self._positive, result, args[0])
            return result
        if name in _CASTS and self._positive and _recorded(self._positive, args[0]) is not None:
            result = func(*args, **kwargs)      # (x > 0).float() is still the mask of x
            _remember(self._positive, result, _recorded(self._positive, args[0]))
            return result
        if name in _PRODUCTS and len(args) == 2:
            a, b = args
            for x, other in ((a, b), (b, a)):
                if self._positive and _recorded(self._positive, other) is x:
                    return self.relu(x, None, in_place=name in ("mul_", "__imul__"))
                if self._sigmoids and _recorded(self._sigmoids, other) is x:
                    self.refuse("x · sigmoid(x) (SiLU/Swish written by hand)")
        if name == "where" and len(args) == 3 and self._positive:
            condition, x, other = args
            if _recorded(self._positive, condition) is x and _is_zero(other):
                return self.relu(x, None)
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
                "(x + x.abs()) / 2) is not recognised: use nn.ReLU or F.relu in the model, or "
                "methods.saliency for the plain gradient."
            )


def _rule_forward(module: nn.Module, override: _RuleOverride):
    top = 6.0 if isinstance(module, nn.ReLU6) else None
    return lambda x: override.relu(x, top)


@library_copy
@contextlib.contextmanager
def relu_backward_rule(model: nn.Module, rule: str = "guided") -> Iterator[int]:
    """Inside the block, every ReLU/ReLU6 of ``model`` backpropagates by ``rule`` (see
    :data:`RULES`; Springenberg et al. 2015, notebook 03 §1–§2); yields how many
    ``nn.ReLU``/``nn.ReLU6`` modules were changed.

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
    refuse_if_blocked()
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
