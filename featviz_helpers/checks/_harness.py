"""The harness every notebook's checks share.

Student code runs on private copies of the model and the inputs, with the library copies
of the methods blocked (:func:`run_exercise`, :func:`try_exercise`); a check compares the
result with the library copy's and diagnoses a mismatch in one way (:func:`_verdict`);
hidden tests run further cases the same way (:func:`_hidden_case`), on targets other than
the top-1 (:func:`_hidden_targets`) and on seeded random models (:func:`_random_resnet18`).
"""
from __future__ import annotations

import copy
import functools
import inspect

import torch
from torch import nn

from .. import models
from ..hooks import ModelState, model_state, preserved_state, state_changes
from ..library_guard import LibraryCopyUsed, library_copies_blocked


class CheckError(AssertionError):
    """An exercise check failed; the message says what is wrong."""


def rel_error(a, b) -> float:
    """max |a − b| / max(max |a|, max |b|): the error relative to the larger array's scale.

    Scale-relative rather than element-wise, so entries that are (nearly) zero in both
    arrays do not blow the ratio up. About 1e-6 is float32 round-off; 1e-2 is a bug.
    """
    a = torch.as_tensor(a).detach().double().cpu()
    b = torch.as_tensor(b).detach().double().cpu()
    if a.shape != b.shape:
        raise CheckError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}.")
    scale = max(a.abs().max().item() if a.numel() else 0.0,
                b.abs().max().item() if b.numel() else 0.0, 1e-30)
    return (a - b).abs().max().item() / scale if a.numel() else 0.0


def assert_close(actual, expected, tol: float, what: str, hint: str = "") -> float:
    """Raise :class:`CheckError` unless ``rel_error(actual, expected) <= tol``; return it."""
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    if actual.shape != expected.shape:
        raise CheckError(
            f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}. {hint}"
        )
    err = rel_error(actual, expected)
    if not err <= tol:  # also catches NaN
        raise CheckError(f"{what}: relative error {err:.2e} > tolerance {tol:.0e}. {hint}")
    return err


# How many times the largest disagreement between differently batched references a
# student's answer may differ by (see :func:`_spread_tolerance`).
_SPREAD_FACTOR = 5.0


def _spread_tolerance(references, floor: float = 1e-4, factor: float = _SPREAD_FACTOR,
                      relative_to=None) -> float:
    """The tolerance for an answer whose round-off depends on batching, chunking or threads:
    ``max(floor, factor × the largest rel_error between two of the references)``.

    ``references`` are the same right answer computed with different batch splits (one
    image or one sample at a time, the library's default chunks, everything at once). In
    a ReLU network round-off can flip a ReLU's mask and change a gradient discretely, so two
    correct implementations may differ by far more than float32's 1e-6; the references'
    own spread measures how far, here, on this machine and thread count. A wrong
    implementation differs by O(1), far more than a few times that spread. With
    ``relative_to``, the references are compared after subtracting it (the change from an
    input, say).
    """
    refs = [torch.as_tensor(r).detach() for r in references]
    if relative_to is not None:
        refs = [r - relative_to for r in refs]
    spread = max((rel_error(a, b) for n, a in enumerate(refs) for b in refs[n + 1:]),
                 default=0.0)
    return max(floor, factor * spread)


def _per_image(method, model: nn.Module, x: torch.Tensor, t: torch.Tensor, *extra):
    """``method(model, x, t, *extra)`` one image at a time (another batch split of the same
    right answer, with its own round-off), concatenated."""
    def own(arg, i):          # a per-image argument (a baseline of B images) is sliced too
        if isinstance(arg, torch.Tensor) and arg.dim() == x.dim() and arg.shape[0] == len(x):
            return arg[i:i + 1]
        return arg
    return torch.cat([method(model, x[i:i + 1], t[i:i + 1], *[own(a, i) for a in extra])
                      for i in range(len(x))])


def _references(method, model: nn.Module, x: torch.Tensor, t: torch.Tensor, *extra,
                floor: float = 1e-4, chunked: bool = False, count: int = 1,
                per_image: bool = True):
    """The library's answer ``method(model, x, t, *extra)`` and the tolerance its round-off
    calls for (:func:`_spread_tolerance`), from the same answer batched other ways: one
    image at a time, and, for a ``chunked`` method (one taking ``batch_size``: SmoothGrad,
    Integrated Gradients, occlusion, whose ``count`` inputs per image — samples, path points,
    windows — go through the model in chunks), chunks of one, of one per image, and all at
    once. ``per_image=False`` for a method whose answer for one image depends on the batch
    (SmoothGrad draws its noise for the whole batch)."""
    expected = method(model, x, t, *extra)
    others = [_per_image(method, model, x, t, *extra)] if per_image and len(x) > 1 else []
    if chunked:
        B = len(x)
        default = inspect.signature(method).parameters["batch_size"].default
        for size in sorted({1, B, count * B} - {default}):      # the default is `expected`
            others.append(method(model, x, t, *extra, batch_size=size))
    return expected, _spread_tolerance([expected, *others], floor=floor)


def _passed(message: str) -> None:
    print(f"passed: {message}")


def _verdict(what: str, got: torch.Tensor, expected: torch.Tensor, diagnoses, hint: str,
             tol: float = 1e-4, refusals=()) -> None:
    """The one way a check compares and diagnoses: pass if ``got`` matches ``expected``;
    else name the first recognised mistake among ``diagnoses`` [(what that mistake
    computes, message)], or give ``hint``. ``diagnoses`` may be a function returning that
    list: it is then only computed when needed. ``refusals`` [(whether ``got`` has a
    property no right answer has, message)] are named, for a ``got`` that does not match,
    before any diagnosis (Grad-CAM's negative values, say)."""
    if got.shape != expected.shape:
        raise CheckError(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}. "
                         f"{hint}")
    err = rel_error(got, expected)
    if err <= tol:
        _passed(f"{what} matches the library copy (relative error {err:.1e}).")
        return
    for wrong, message in refusals:
        if wrong:
            raise CheckError(f"{what}: {message}")
    for candidate, message in (diagnoses() if callable(diagnoses) else diagnoses):
        if candidate.shape == got.shape and rel_error(got, candidate) <= tol:
            raise CheckError(f"{what}: {message}")
    raise CheckError(f"{what} differs from the library copy: relative error {err:.2e}. {hint}")


def _score_gradient(model: nn.Module, x: torch.Tensor, scores_fn) -> torch.Tensor:
    """∂(Σ scores_fn(model(x)))/∂x, (B,C,H,W), the model in eval mode and frozen.

    Only for scores :func:`methods.input_gradient` does not take (it differentiates each
    image's target logit): the softmax probability a mistake differentiates, say.
    """
    with preserved_state(model), torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(scores_fn(model(x)).sum(), x)
    return g


# ----------------------------------------------------------- running the student's code

def _private(arg):
    """A copy the student's code may do anything to: modules deep-copied, tensors cloned."""
    if isinstance(arg, nn.Module):
        return copy.deepcopy(arg)
    if isinstance(arg, torch.Tensor):
        return arg.detach().clone()
    return arg


def _mutated_inputs(args, copies) -> list[int]:
    return [n for n, (a, c) in enumerate(zip(args, copies))
            if isinstance(a, torch.Tensor) and not (c.shape == a.shape and torch.equal(c, a))]


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _put_back(model: nn.Module, state: ModelState, hook_keys: list) -> None:
    """Restore ``model`` to ``state`` (taken by :func:`hooks.model_state`): mode, flags,
    tensors, gradients, and no hook or replaced forward that was not there before."""
    for m, training in zip(model.modules(), state.training):
        m.training = training
    for p, flag, had_grad in zip(model.parameters(), state.requires_grad, state.has_grad):
        p.requires_grad_(flag)
        if not had_grad:
            p.grad = None
    with torch.no_grad():
        model.load_state_dict(state.tensors)
    for (name, m), keys in zip(model.named_modules(), hook_keys):
        for attr, before in zip(_HOOK_DICTS, keys):
            hooks = getattr(m, attr)
            for key in [k for k in hooks if k not in before]:
                del hooks[key]
        if "forward" in m.__dict__ and (name or "the model") not in state.patched:
            del m.__dict__["forward"]


def _hook_keys(model: nn.Module) -> list:
    return [[set(getattr(m, attr)) for attr in _HOOK_DICTS] for m in model.modules()]


# Process-wide module hooks (torch.nn.modules.module.register_module_forward_hook and its kin)
# run on every module of every model: one left behind changes every later forward pass.
_GLOBAL_HOOK_DICTS = ("_global_forward_hooks", "_global_forward_pre_hooks",
                      "_global_backward_hooks", "_global_backward_pre_hooks")


def _global_hook_keys() -> list[set]:
    from torch.nn.modules import module
    return [set(getattr(module, attr, {})) for attr in _GLOBAL_HOOK_DICTS]


def _remove_new_global_hooks(before: list[set]) -> bool:
    """Remove the global module hooks registered since ``before``; whether there were any."""
    from torch.nn.modules import module
    found = False
    for attr, keys in zip(_GLOBAL_HOOK_DICTS, before):
        registry = getattr(module, attr, {})
        for key in [k for k in registry if k not in keys]:
            del registry[key]
            found = True
    return found


def _run(what: str, fn, args, train: bool = False):
    """``fn(*copies of args)`` with the library copies blocked; checks it left them alone.

    Models among ``args`` are deep-copied (and put in train mode if ``train``), tensors
    cloned. Raises :class:`CheckError` if the call changed a model's state or an input —
    or the caller's own model, reached through a global name instead of the argument (which
    is then put back as it was, so later cells are not affected).
    """
    originals = [(a, model_state(a), _hook_keys(a)) for a in args if isinstance(a, nn.Module)]
    copies = [_private(a) for a in args]
    nets = [c for c in copies if isinstance(c, nn.Module)]
    if train:
        for net in nets:
            net.train()
    before = [model_state(net) for net in nets]
    global_hooks = _global_hook_keys()
    try:
        with library_copies_blocked(what):
            result = fn(*copies)
    except NotImplementedError as e:
        if str(e):                      # raised by something the student called: theirs to read
            raise
        raise NotImplementedError(      # the blank exercise's own stub
            f"`{getattr(fn, '__name__', 'your function')}` is not written yet: replace "
            "`raise NotImplementedError()` in its cell with your code, run that cell, then this "
            "one again.") from None
    finally:
        left_global_hook = _remove_new_global_hooks(global_hooks)
        touched = [(m, state, keys) for m, state, keys in originals
                   if state_changes(state, model_state(m))]
        for m, state, keys in touched:
            _put_back(m, state, keys)
    if left_global_hook:
        raise CheckError(f"{what} left a global module hook (torch.nn.modules.module."
                         "register_module_…_hook), which would run on every module of every "
                         "model from now on; hook the one layer you need, and remove the hook "
                         "in a finally block. (It has been removed.)")
    if touched:
        raise CheckError(f"{what} changed the notebook's own model, not the copy it was given: "
                         "use the `model` argument, not a global variable. (The notebook's "
                         "model has been put back as it was.)")
    for net, state in zip(nets, before):
        changes = state_changes(state, model_state(net))
        if changes:
            raise CheckError(f"{what} {changes[0]}")
    mutated = _mutated_inputs(args, copies)
    if mutated:
        raise CheckError(f"{what} changed its input argument number {mutated[0] + 1} in place; "
                         "work on new tensors (no `+=`, `.clamp_()`, `x[...] = ...` on inputs): "
                         "the caller still needs them.")
    return result


def _tensor(what: str, result) -> torch.Tensor:
    if not isinstance(result, torch.Tensor):
        raise CheckError(f"{what} must return a torch.Tensor, not {type(result).__name__}.")
    return result.detach()


def run_exercise(fn, *args):
    """``fn(*args)`` on private copies, with the library copies blocked; its result.

    For identity checks on your function: raises :class:`CheckError` if it changed the
    model or an input, so a mistake cannot reach the notebook's own model.
    """
    return _run(f"your {getattr(fn, '__name__', 'function')}", fn, args)


def try_exercise(fn, *args):
    """Your function's result on private copies of ``args``, or ``None`` with a note.

    For the cells that show your own result: an exercise that is not written yet (or
    raises) prints one line instead of stopping the notebook; the graded cells say why.
    """
    name = getattr(fn, "__name__", "your function")
    try:
        return run_exercise(fn, *args)
    except NotImplementedError:
        print(f"`{name}` is not written yet, so this cell shows the library copy instead.")
    except Exception as e:  # noqa: BLE001 - any failure is reported, never raised here
        print(f"`{name}` raised {type(e).__name__}: {e}\nThis cell shows the library copy "
              "instead; the graded cells above say what to fix.")
    return None


# ------------------------------------------------------------------------- hidden cases

def _attempt(what: str, fn, args, train: bool = False, hint: str = "") -> torch.Tensor:
    """``fn(*args)`` as :func:`_run` runs it, its result a tensor; an exception of the
    student's code becomes a :class:`CheckError` naming it (and ``hint``), while the
    harness's own refusals pass through."""
    try:
        return _tensor(what, _run(what, fn, args, train=train))
    except (CheckError, LibraryCopyUsed, NotImplementedError):
        raise
    except Exception as e:  # noqa: BLE001 - any failure of student code is reported
        raise CheckError(f"{what} raised {type(e).__name__}: {e}" + (f". {hint}" if hint else "")) \
            from e


def _hidden_case(case: str, fn, args, expected: torch.Tensor, tol: float = 1e-4,
                 hint: str = "", train: bool = False) -> None:
    """One hidden test: ``fn(*args)`` on private copies must match ``expected`` and leave
    every model and input as it was. ``case`` says in words what is being tested."""
    what = f"[{case}] your function"
    got = _attempt(what, fn, args, train=train)
    if got.shape != expected.shape:
        raise CheckError(f"{what} returned shape {tuple(got.shape)}, expected "
                         f"{tuple(expected.shape)}. {hint}")
    err = rel_error(got, expected)
    if not err <= tol:
        raise CheckError(f"{what} differs from the right answer: relative error {err:.2e}. "
                         f"{hint}")


def _restores_after_error(case: str, fn, model: nn.Module, args) -> None:
    """Hidden test: when the forward pass raises inside ``fn``, the model is still restored."""
    what = f"[{case}] your function"
    net = copy.deepcopy(model)
    before = model_state(net)
    with library_copies_blocked(what):
        try:
            fn(net, *args)
        except (LibraryCopyUsed, NotImplementedError):
            raise
        except Exception:  # noqa: BLE001 - the error is expected; the state is what we test
            pass
    changes = state_changes(before, model_state(net))
    if changes:
        raise CheckError(f"[{case}] when the forward pass raised, your function {changes[0]}")


def _hidden_targets(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A class per image that is not its top-1 (rank 2, 4, 3, 5, … of its own top 5)."""
    with preserved_state(model), torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    ranks = torch.tensor([2, 4, 3, 5, 1])[torch.arange(x.shape[0]) % 5] - 1
    return top5[torch.arange(x.shape[0]), ranks]


def _small_resnet_case(seed: int):
    """A random-weight ResNet-18 (in-place ReLUs, BatchNorm) with two 64 px inputs."""
    return (_random_resnet18(),
            torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)),
            torch.tensor([3, 7]))


def _hidden_resnet_case(fn, method, seed: int, *extra, hint: str, **options) -> None:
    """The hidden case most exercises share: ``fn(resnet, x, t, *extra)`` against the
    library's ``method`` with the same arguments, on :func:`_small_resnet_case`'s ResNet-18
    handed over in train mode; the tolerance from the library's own spread over batch splits
    (:func:`_references`, which takes ``options``)."""
    resnet, xr, tr = _small_resnet_case(seed)
    expected, tol = _references(method, resnet, xr, tr, *extra, **options)
    _hidden_case("ResNet-18 (random weights) handed over in train mode", fn,
                 [resnet, xr, tr, *extra], expected, tol=tol, train=True, hint=hint)


def _hidden_raises(case: str, fn, args, hint: str = "", train: bool = False) -> None:
    """One hidden test whose right answer is an error: ``fn(*args)`` on private copies must
    raise (any exception but a failed check or a library copy used)."""
    what = f"[{case}] your function"
    try:
        _run(what, fn, args, train=train)
    except (CheckError, LibraryCopyUsed, NotImplementedError):
        raise
    except Exception:  # noqa: BLE001 - the error is the right answer
        return
    raise CheckError(f"{what} returned a result; it should have raised an error. {hint}")


# ----------------------------------------------------------------- seeded random models

def _seeded(build):
    """``build()`` with torch's global RNG seeded, without disturbing the caller's RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build()


@functools.lru_cache(maxsize=None)
def _random_resnet18_template() -> nn.Module:
    return _seeded(lambda: models.load_model("resnet18", pretrained=False))


def _random_resnet18() -> nn.Module:
    """ResNet-18 with random weights: in-place ReLUs, one ReLU used twice per block. A fresh
    copy each call (a submission may damage the one it gets), copied from one built once per
    kernel: its random initialisation takes five times longer than the copy."""
    return copy.deepcopy(_random_resnet18_template())

