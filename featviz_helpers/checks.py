"""Checks for the notebooks' from-scratch exercises.

Each ``check_*`` runs the student's function on cases with known answers and either
prints one line saying what passed or raises :class:`CheckError` saying precisely what is
wrong — and, where a common mistake can be recognised, which one. The ``hidden_check_*``
functions are the classroom's hidden tests: targets other than the top-1 class, a model
handed over in train mode, a second architecture, inputs that must stay untouched.

Student code always runs on private copies of the model and the inputs (so nothing it does
can reach the notebook's own objects) and with the library copies of the methods blocked
(:mod:`featviz_helpers.library_guard`): calling ``methods.saliency`` is not an answer to
"write saliency".
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from . import methods, models, viz
from .hooks import ModelState, capture, model_state, preserved_state, state_changes
from .relu_rules import RELU_EXAMPLE_EXPECTED, RELU_EXAMPLE_G, RELU_EXAMPLE_X, relu_backward_rule
from .library_guard import LibraryCopyUsed, library_copies_blocked

__all__ = [
    "CheckError",
    "rel_error",
    "assert_close",
    "run_exercise",
    "try_exercise",
    "check_normalize_filters",
    "hidden_check_normalize_filters",
    "check_filter_response",
    "hidden_check_filter_response",
    "check_saliency",
    "hidden_check_saliency",
    "check_relu_rules",
    "hidden_check_relu_rules",
    "check_guided_backprop",
    "hidden_check_guided_backprop",
    "check_cam_from_features",
    "check_cam",
    "hidden_check_cam",
    "check_grad_cam",
    "hidden_check_grad_cam",
    "check_vit_attention",
    "hidden_check_vit_attention",
    "check_rollout",
    "hidden_check_rollout",
    "check_smoothgrad",
    "hidden_check_smoothgrad",
    "check_integrated_gradients",
    "hidden_check_integrated_gradients",
    "check_ascent_step",
    "hidden_check_ascent_step",
    "check_fooling_image",
    "hidden_check_fooling_image",
    "check_fourier_image",
    "hidden_check_fourier_image",
    "check_occlusion",
    "hidden_check_occlusion",
]


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


def _passed(message: str) -> None:
    print(f"passed: {message}")


def _grad_of(model, x, scores_fn):
    """d(sum of scores_fn(model(x)))/dx, (B,C,H,W)."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(scores_fn(model(x)).sum(), x)
    return g


# ------------------------------------------------------------- running the student's code

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
    try:
        with library_copies_blocked(what):
            result = fn(*copies)
    finally:
        touched = [(m, state, keys) for m, state, keys in originals
                   if state_changes(state, model_state(m))]
        for m, state, keys in touched:
            _put_back(m, state, keys)
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


def _hidden_case(case: str, fn, args, expected: torch.Tensor, tol: float = 1e-4,
                 hint: str = "", train: bool = False) -> None:
    """One hidden test: ``fn(*args)`` on private copies must match ``expected`` and leave
    every model and input as it was. ``case`` says in words what is being tested."""
    what = f"[{case}] your function"
    try:
        got = _tensor(what, _run(what, fn, args, train=train))
    except (CheckError, LibraryCopyUsed, NotImplementedError):
        raise
    except Exception as e:  # noqa: BLE001
        raise CheckError(f"{what} raised {type(e).__name__}: {e}") from e
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
        raise CheckError(f"{what}: when the forward pass raised, your function {changes[0]}")


def _seeded(build):
    """``build()`` with torch's global RNG seeded, without disturbing the caller's RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build()


def _random_resnet18() -> nn.Module:
    """ResNet-18 with random weights: in-place ReLUs, one ReLU used twice per block."""
    return _seeded(lambda: models.load_model("resnet18", pretrained=False))


def _hidden_targets(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A class per image that is not its top-1 (rank 2, 4, 3, 5, … of its own top 5)."""
    with preserved_state(model), torch.no_grad():
        top5 = model(x).topk(5, dim=1).indices
    ranks = torch.tensor([2, 4, 3, 5, 1])[torch.arange(x.shape[0]) % 5] - 1
    return top5[torch.arange(x.shape[0]), ranks]


# -------------------------------------------------------------------- notebook 01

_NORMALIZE_HINT = ("Per filter: (w − min) / (max − min), min and max over that filter's C·k·k "
                   "numbers (all colour channels together, so colours keep their balance).")


def check_normalize_filters(fn) -> None:
    """``fn(w)``: filters (C_out,C,k,k) → the same shape, each filter min–max scaled to [0,1]."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 3, 5, 5, generator=g) * torch.logspace(-3, 1, 6).view(6, 1, 1, 1)
    got = _tensor("normalize_filters", _run("your normalize_filters", fn, [w]))
    if got.shape != w.shape:
        raise CheckError(f"normalize_filters returned shape {tuple(got.shape)}; it must keep "
                         f"the filters' shape {tuple(w.shape)}.")
    expected = viz.normalize_filters(w)
    whole = (w - w.min()) / (w.max() - w.min())
    if rel_error(got, whole) < 1e-4:
        raise CheckError("You normalised all filters together. Scale each filter by its own "
                         "min and max: filters differ in scale by orders of magnitude, and the "
                         "small ones would all be flat grey.")
    flat = w.flatten(2)
    lo, hi = flat.min(2, keepdim=True).values, flat.max(2, keepdim=True).values
    per_channel = ((flat - lo) / (hi - lo)).view_as(w)
    if rel_error(got, per_channel) < 1e-4:
        raise CheckError("You normalised each colour channel of a filter on its own. Take min "
                         "and max over the whole filter (all three channels together): "
                         "per channel, a filter that wants 'red minus green' turns grey.")
    if got.min() < -1e-6 or got.max() > 1 + 1e-6:
        raise CheckError(f"values range over [{got.min():.3g}, {got.max():.3g}]; each filter "
                         "must map its own minimum to 0 and maximum to 1.")
    assert_close(got, expected, 1e-4, "normalised filters", _NORMALIZE_HINT)
    _passed("each filter scaled to [0,1] by its own min and max.")


def hidden_check_normalize_filters(fn) -> None:
    """Other shapes, float64, a dead (all-zero) filter, and the input left untouched."""
    g = torch.Generator().manual_seed(10)
    for shape in [(5, 1, 7, 7), (4, 16, 1, 1), (2, 3, 11, 11)]:
        w = torch.randn(shape, generator=g) * 3 - 1
        _hidden_case(f"filters of shape {shape}", fn, [w], viz.normalize_filters(w),
                     hint=_NORMALIZE_HINT)
    w = torch.randn(3, 3, 3, 3, generator=g, dtype=torch.float64)
    _hidden_case("float64 filters", fn, [w], viz.normalize_filters(w).double(),
                 hint=_NORMALIZE_HINT)
    w = torch.randn(4, 3, 3, 3, generator=g)
    w[2] = 0.0
    got = _tensor("normalize_filters", _run("[a dead filter] your function", fn, [w]))
    if not torch.isfinite(got).all():
        raise CheckError("[a dead filter, all zeros] your result has NaN or inf: max − min is 0 "
                         "there. Add a small epsilon to the denominator.")
    keep = [0, 1, 3]
    assert_close(got[keep], viz.normalize_filters(w)[keep], 1e-4,
                 "[a dead filter] the other filters", _NORMALIZE_HINT)
    _passed("hidden tests of normalize_filters.")


def check_filter_response(fn) -> None:
    """``fn(image, filt)``: (3,H,W) and (3,k,k) → (H,W), cross-correlation, zero 'same' padding."""
    # A single bright pixel: the response of a cross-correlation to an impulse is the
    # filter rotated by 180 degrees.
    filt = torch.arange(27, dtype=torch.float32).view(3, 3, 3) - 13
    impulse = torch.zeros(3, 5, 5)
    impulse[1, 2, 2] = 1.0
    got = _tensor("filter_response", _run("your filter_response", fn, [impulse, filt])).float()
    if got.shape == (3, 5, 5):
        raise CheckError("your response has a colour dimension: sum the products over the three "
                         "colour channels (and over u, v) — one number per pixel.")
    if got.shape != (5, 5):
        raise CheckError(f"response to a 3×5×5 image has shape {tuple(got.shape)}; expected "
                         "(5, 5): pad by k//2 so the map is as large as the image.")
    centre = got[1:4, 1:4]
    if torch.allclose(centre, filt[1]):
        raise CheckError("For a single bright pixel your response shows the filter upright; "
                         "it should be rotated 180°. You flipped the kernel (true convolution); "
                         "conv layers compute cross-correlation: sum over c,u,v of "
                         "image[c, i+u−p, j+v−p] · filt[c,u,v].")
    assert_close(centre, filt[1].flip(0, 1), 1e-6, "response to a single bright pixel",
                 "It should be the green slice of the filter rotated by 180°.")
    g = torch.Generator().manual_seed(1)
    image, filt = torch.rand(3, 12, 9, generator=g), torch.randn(3, 5, 5, generator=g)
    expected = F.conv2d(image[None], filt[None], padding=2)[0, 0]
    got = _tensor("filter_response", _run("your filter_response", fn, [image, filt])).float()
    assert_close(got, expected, 1e-5, "response of a 5×5 filter on a random image",
                 "Sum over all three colour channels; zero-pad by k//2 on every side.")
    _passed("cross-correlation with zero padding; impulse response is the filter rotated 180°.")


def hidden_check_filter_response(fn) -> None:
    """Non-square images, 7×7 and 1×1 filters, zero padding at the corners, inputs untouched."""
    g = torch.Generator().manual_seed(11)
    hint = "Cross-correlation summed over colour channels, zero padding k//2 on every side."
    for (h, w), k in [((10, 17), 7), ((6, 6), 1), ((9, 4), 3)]:
        image, filt = torch.rand(3, h, w, generator=g), torch.randn(3, k, k, generator=g)
        expected = F.conv2d(image[None], filt[None], padding=k // 2)[0, 0]
        _hidden_case(f"a {h}×{w} image and a {k}×{k} filter", fn, [image, filt], expected,
                     tol=1e-5, hint=hint)
    corner = torch.zeros(3, 6, 6)
    corner[:, 0, 0] = 1.0
    filt = torch.randn(3, 5, 5, generator=g)
    _hidden_case("a bright pixel in the corner (zero padding)", fn, [corner, filt],
                 F.conv2d(corner[None], filt[None], padding=2)[0, 0], tol=1e-5,
                 hint="Pad with zeros (not by repeating or mirroring the border).")
    _passed("hidden tests of filter_response.")


# -------------------------------------------------------------------- notebook 02

_SALIENCY_HINT = ("Check: eval mode, the logit of each image's own target (not the argmax, not "
                  "the first image's), the gradient w.r.t. the input x, then max_c |·|.")


def check_saliency(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,H,W) saliency; compared with the library copy.

    Also checks that the model's mode, ``requires_grad`` flags and weights are as they were
    and no hooks are left behind. Use a batch with different targets to test batching.
    """
    with preserved_state(model), torch.no_grad():
        num_classes = model(x[:1]).shape[1]
    t = methods.as_targets(target, x.shape[0], num_classes)
    got = _tensor("your saliency", _run("your saliency", fn, [model, x, t]))
    B, _, H, W = x.shape
    if got.shape == (B, 3, H, W):
        raise CheckError("your map still has a colour dimension: take the max over the three "
                         "channels of |gradient|.")
    if got.shape != (B, H, W):
        raise CheckError(f"shape {tuple(got.shape)}; expected (B, H, W) = {(B, H, W)}.")
    if (got < 0).any():
        raise CheckError("your map has negative values: take the absolute value of the "
                         "gradient before the max over channels.")
    expected = methods.saliency(model, x, t)
    if rel_error(got, expected) <= 1e-4:
        _passed(f"saliency matches the library copy on {B} image(s) "
                f"(relative error {rel_error(got, expected):.1e}).")
        return
    # Diagnose the usual mistakes.
    with preserved_state(model), torch.enable_grad():
        logit = lambda out: out.gather(1, t[:, None])[:, 0]
        g_prob = _grad_of(model, x, lambda out: out.softmax(1).gather(1, t[:, None])[:, 0])
        g_logit = _grad_of(model, x, logit)
        g_first = _grad_of(model, x, lambda out: out[:, t[0]])
    diagnoses = [
        (g_prob.abs().amax(1), "you differentiated the softmax probability; use the raw class "
                               "score (logit) S_c, before the softmax."),
        (g_logit.abs().sum(1), "you summed |gradient| over colour channels; take the max."),
        (g_logit.abs().mean(1), "you averaged |gradient| over colour channels; take the max."),
        (g_logit.amax(1).abs(), "you took the max of the signed gradient, then |·|; take "
                                "|gradient| first, then the max over channels."),
        (g_first.abs().amax(1), "every image used the first image's class; backprop each "
                                "image's own target (gather one logit per row)."),
    ]
    for candidate, message in diagnoses:
        if rel_error(got, candidate) <= 1e-4:
            raise CheckError(message)
    raise CheckError(f"saliency differs from the library copy: relative error "
                     f"{rel_error(got, expected):.2e}. {_SALIENCY_HINT}")


def hidden_check_saliency(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: classes other than the top-1, mixed in one batch; one image with two
    targets; a model in train mode; ResNet-18; model and inputs left untouched."""
    x = x[:3]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than each image's top-1 class, mixed in one batch", fn,
                 [model, x, t], methods.saliency(model, x, t), hint=_SALIENCY_HINT)
    pair, t2 = x[:1].expand(2, -1, -1, -1), torch.stack([t[0], t[1]])
    _hidden_case("one image twice, with two different target classes", fn, [model, pair, t2],
                 methods.saliency(model, pair, t2), hint=_SALIENCY_HINT)
    _hidden_case("a model handed over in train mode", fn, [model, x[:2], t[:2]],
                 methods.saliency(model, x[:2], t[:2]), train=True,
                 hint="Switch to eval mode inside (BatchNorm must use its running statistics).")
    _hidden_resnet_case(fn, methods.saliency, 2, hint=_SALIENCY_HINT)
    _passed("hidden tests of saliency.")


# -------------------------------------------------------------------- notebook 03

_RELU_HINTS = {
    "standard": "standard backprop passes g where the forward input was positive: g·1[x>0].",
    "deconvnet": "the deconvnet passes g where g itself is positive, ignoring x: g·1[g>0].",
    "guided": "guided backprop needs both: g·1[x>0]·1[g>0].",
}


def check_relu_rules(fn) -> None:
    """``fn(x, g, rule)`` → the gradient a ReLU passes back, for rule in standard/deconvnet/guided."""
    for rule, expected in RELU_EXAMPLE_EXPECTED.items():
        got = _tensor("relu_backward", _run("your relu_backward", fn,
                                            [RELU_EXAMPLE_X, RELU_EXAMPLE_G, rule])).float()
        if got.shape != expected.shape:
            raise CheckError(f"{rule}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}.")
        if not torch.equal(got, expected):
            wrong = [r for r, e in RELU_EXAMPLE_EXPECTED.items() if torch.equal(got, e)]
            also = f" You computed the {wrong[0]} rule instead." if wrong else ""
            raise CheckError(f"{rule} rule on the lecture's example gives\n{got.tolist()}\n"
                             f"expected\n{expected.tolist()}.{also} Recall: {_RELU_HINTS[rule]}")
    _passed("all three ReLU backward rules reproduce the lecture's worked example.")


def hidden_check_relu_rules(fn) -> None:
    """Batched 4-D tensors with exact zeros in x and g; inputs left untouched."""
    g = torch.Generator().manual_seed(12)
    x = torch.randint(-2, 3, (2, 3, 4, 5), generator=g).float()   # many exact zeros
    grad = torch.randint(-2, 3, (2, 3, 4, 5), generator=g).float()
    masks = {"standard": x > 0, "deconvnet": grad > 0, "guided": (x > 0) & (grad > 0)}
    for rule, mask in masks.items():
        _hidden_case(f"{rule} rule on a 4-D batch with zeros in x and g", fn, [x, grad, rule],
                     grad * mask, tol=0.0,
                     hint=f"{_RELU_HINTS[rule]} At exactly 0 nothing passes (strict >).")
    _passed("hidden tests of the ReLU rules.")


def _guided_diagnosis(got, model, x, target) -> str:
    with preserved_state(model), torch.enable_grad():
        plain = _grad_of(model, x, lambda out: methods.class_scores(out, target))
    with preserved_state(model), relu_backward_rule(model, "deconvnet"), torch.enable_grad():
        deconv = _grad_of(model, x, lambda out: methods.class_scores(out, target))
    if rel_error(got, plain) <= 1e-4:
        return ("you returned the plain gradient: the ReLUs did not use the guided rule. "
                "Is your replacement applied to every nn.ReLU / nn.ReLU6 module, during the "
                "forward pass?")
    if rel_error(got, deconv) <= 1e-4:
        return "you used the deconvnet rule (g·1[g>0]); guided needs g·1[x>0]·1[g>0]."
    return ("Are ReLU6 modules handled (no gradient where x ≥ 6 either), and a ReLU module "
            "that is called twice in one forward pass? Each image's own target logit?")


def check_guided_backprop(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,3,H,W), compared with ``methods.guided_backprop``."""
    got = _tensor("your guided backprop", _run("your guided backprop", fn, [model, x, target]))
    expected = methods.guided_backprop(model, x, target)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,3,H,W) = {tuple(expected.shape)}.")
    if rel_error(got, expected) <= 1e-4:
        _passed(f"guided backprop matches the library copy on {type(model).__name__} "
                f"(relative error {rel_error(got, expected):.1e}).")
        return
    raise CheckError(f"guided backprop differs from the library copy (relative error "
                     f"{rel_error(got, expected):.2e}). " + _guided_diagnosis(got, model, x, target))


def _relu6_net() -> nn.Module:
    """A small ReLU6 network whose activations often pass 6 (the flat top matters)."""
    net = _seeded(lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))
    with torch.no_grad():
        net[0].weight.mul_(8.0)
    return net.eval()


def hidden_check_guided_backprop(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: mixed non-top-1 targets, train mode, ReLU6's flat top, ResNet-18 in train
    mode, every ReLU restored even when the forward pass raises."""
    x = x[:2]
    t = _hidden_targets(model, x)
    hint = "Each image's own target logit, the guided rule at every ReLU/ReLU6, eval mode."
    _hidden_case("targets other than each image's top-1 class, mixed in one batch", fn,
                 [model, x, t], methods.guided_backprop(model, x, t), hint=hint)
    _hidden_case("a model handed over in train mode", fn, [model, x[:1], t[:1]],
                 methods.guided_backprop(model, x[:1], t[:1]), train=True,
                 hint="Switch to eval mode inside, and restore the caller's mode after.")
    net = _relu6_net()
    xs, ts = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 2, 3])
    _hidden_case("a ReLU6 network whose activations pass 6", fn, [net, xs, ts],
                 methods.guided_backprop(net, xs, ts),
                 hint="ReLU6's forward mask is 1[0 < x < 6]: the flat top passes nothing back.")
    resnet = _random_resnet18()
    xr, tr = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)), torch.tensor([1, 9])
    _hidden_case("ResNet-18 (random weights) handed over in train mode", fn, [resnet, xr, tr],
                 methods.guided_backprop(resnet, xr, tr), train=True, hint=hint)
    _restores_after_error("a forward pass that raises (a 2-channel input)", fn, resnet,
                          [xr[:, :2], tr])
    _passed("hidden tests of guided backprop.")


# -------------------------------------------------------------------- notebook 04

def check_cam_from_features(fn) -> None:
    """``fn(features, class_weights)``: (B,K,h,w), (B,K) → (B,h,w), on a hand-computed case."""
    f = torch.tensor([[[[1.0, 2], [3, 4]], [[0, 1], [-1, 0]]]])        # (1, 2, 2, 2)
    w = torch.tensor([[2.0, -1]])                                       # (1, 2)
    expected = torch.tensor([[[2.0, 3], [7, 8]]])                       # 2·f_0 − 1·f_1
    got = _tensor("cam_from_features", _run("your cam_from_features", fn, [f, w]))
    if got.shape != expected.shape:
        raise CheckError(f"2 maps of 2×2 with weights (2, −1) gave shape {tuple(got.shape)}; "
                         f"expected (B,h,w) = {tuple(expected.shape)}: sum over the channels k.")
    assert_close(got, expected, 1e-6, "M = 2·f_0 − 1·f_1 on a 2×2 grid",
                 f"got {got.tolist()}; M(x,y) = Σ_k w_k f_k(x,y), with the signs of the weights "
                 "kept and no bias, mean or ReLU.")
    _passed("CAM from features reproduces the hand-computed 2×2 case.")


def check_cam(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,h,w) class activation maps, compared with ``methods.cam``."""
    got = _tensor("your CAM", _run("your CAM", fn, [model, x, target]))
    expected = methods.cam(model, x, target)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,h,w) = {tuple(expected.shape)} "
                         "at the last conv layer's resolution (no upsampling here).")
    if rel_error(got, expected) <= 1e-4:
        _passed(f"CAM matches the library copy (relative error {rel_error(got, expected):.1e}).")
        return
    raise CheckError(_cam_diagnosis(got, expected, model, x, target))


def _cam_diagnosis(got, expected, model, x, target) -> str:
    z = expected.shape[-1] * expected.shape[-2]
    head = models.gap_fc_head(model)
    t = methods.as_targets(target, x.shape[0], head.fc.out_features)
    bias = head.fc.bias.detach()[t].view(-1, 1, 1)
    for candidate, message in [
        (expected + bias, "you added the bias b_c to every position; CAM is Σ_k w_k f_k only "
                          "(the bias is a constant that belongs to the score, not to a place)."),
        (expected / z, "you divided by Z = h·w; CAM is the sum Σ_k w_k f_k (its *mean* is the "
                       "score minus the bias)."),
        (expected.clamp_min(0), "you applied a ReLU; CAM keeps negative evidence."),
    ]:
        if rel_error(got, candidate) <= 1e-4:
            return message
    return (f"CAM differs from the library copy (relative error {rel_error(got, expected):.2e}). "
            "Use the last conv features after the head's activation (models.gap_fc_head(model)"
            ".activation, if any), eval mode, and the weights of each image's own target class.")


def _random_densenet121() -> nn.Module:
    """DenseNet-121 with random weights: its head applies a functional ReLU before pooling."""
    return _seeded(lambda: models.load_model("densenet121", pretrained=False))


def hidden_check_cam(fn, features_fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: mixed non-top-1 targets; a batch of weights in cam_from_features; a GAP
    head with an activation (DenseNet-121); train mode (ResNet-18); inputs untouched."""
    g = torch.Generator().manual_seed(13)
    f, w = torch.randn(3, 5, 4, 6, generator=g), torch.randn(3, 5, generator=g)
    _hidden_case("cam_from_features on 3 images with their own weights", features_fn, [f, w],
                 methods.cam_from_features(f, w), tol=1e-5,
                 hint="Image b uses its own row class_weights[b]: M_b = Σ_k w_bk f_bk.")
    x = x[:3]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than each image's top-1 class, mixed in one batch", fn,
                 [model, x, t], methods.cam(model, x, t),
                 hint="Take the FC weights of each image's own target, not of the predicted class.")
    xs = torch.randn(2, 3, 64, 64, generator=g)
    dense = _random_densenet121()
    _hidden_case("DenseNet-121 (a ReLU between the features and the pooling), train mode", fn,
                 [dense, xs, torch.tensor([5, 2])], methods.cam(dense, xs, torch.tensor([5, 2])),
                 train=True, hint="Apply models.gap_fc_head(model).activation to the features "
                                  "when it is not None: the pooling sees activated features.")
    resnet = _random_resnet18()
    _hidden_case("ResNet-18 (random weights) handed over in train mode", fn,
                 [resnet, xs, torch.tensor([0, 8])], methods.cam(resnet, xs, torch.tensor([0, 8])),
                 train=True, hint="Eval mode inside (BatchNorm's running statistics), restored after.")
    _passed("hidden tests of CAM.")


# -------------------------------------------------------------------- notebook 05

_GRAD_CAM_HINT = ("α_k = mean of ∂S_c/∂A_k over positions (per image, per channel); "
                  "L = ReLU(Σ_k α_k A_k), at the layer you were given, each image's own target.")


def check_grad_cam(fn, model: nn.Module, x: torch.Tensor, target, layer) -> None:
    """``fn(model, x, target, layer)`` → (B,h,w), compared with ``methods.grad_cam``."""
    got = _tensor("your Grad-CAM", _run("your Grad-CAM", fn, [model, x, target, layer]))
    expected = methods.grad_cam(model, x, target, layer)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,h,w) = {tuple(expected.shape)} "
                         "at the layer's resolution.")
    if rel_error(got, expected) <= 1e-4:
        _passed(f"Grad-CAM matches the library copy at {layer!r} "
                f"(relative error {rel_error(got, expected):.1e}).")
        return
    if (got < 0).any():
        raise CheckError("your map has negative values: Grad-CAM ends with a ReLU, keeping only "
                         "evidence *for* the class.")
    with capture(model, layer, stop_gradient=True) as cap, torch.enable_grad():
        methods.class_scores(model(x), target).sum().backward()
    name = models.layer_name(model, layer)
    a, g = cap.activations[name], cap.gradients[name]
    for candidate, message in [
        ((g * a).sum(1).clamp_min(0), "you multiplied gradients and activations position by "
                                      "position; first average the gradients over positions to "
                                      "get one weight α_k per channel."),
        ((g.sum((2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "you summed the gradients over positions; α_k is their mean (divide by Z = h·w)."),
        ((g.mean((0, 2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "you averaged the gradients over the batch too; α_k is per image: mean over (h, w) only."),
        ((-g.mean((2, 3), keepdim=True) * a).sum(1).clamp_min(0),
         "your map is the counterfactual one: the gradient's sign is flipped."),
    ]:
        if rel_error(got, candidate) <= 1e-4:
            raise CheckError(message)
    raise CheckError(f"Grad-CAM differs from the library copy (relative error "
                     f"{rel_error(got, expected):.2e}). {_GRAD_CAM_HINT}")


def hidden_check_grad_cam(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: mixed non-top-1 targets, train mode, ResNet-18 at two layers, hooks
    removed even when the forward pass raises."""
    x = x[:3]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than each image's top-1 class, mixed in one batch, at "
                 "'_blocks.15'", fn, [model, x, t, "_blocks.15"],
                 methods.grad_cam(model, x, t, "_blocks.15"), hint=_GRAD_CAM_HINT)
    _hidden_case("a model handed over in train mode", fn, [model, x[:2], t[:2], "_head_act"],
                 methods.grad_cam(model, x[:2], t[:2], "_head_act"), train=True,
                 hint="Eval mode inside (BatchNorm's running statistics), restored after.")
    resnet = _random_resnet18()
    xr = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    tr = torch.tensor([4, 6])
    for layer in ("layer3", "layer4"):
        _hidden_case(f"ResNet-18 (random weights) in train mode at {layer!r}", fn,
                     [resnet, xr, tr, layer], methods.grad_cam(resnet, xr, tr, layer),
                     train=True, hint=_GRAD_CAM_HINT)
    _restores_after_error("a forward pass that raises (a 2-channel input)", fn, resnet,
                          [xr[:, :2], tr, "layer3"])
    _passed("hidden tests of Grad-CAM.")


# -------------------------------------------------------------------- notebook 06

def _mha_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every block's attention from PyTorch's own ``nn.MultiheadAttention``: (L,B,heads,N,N)."""
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


def check_vit_attention(fn, model: nn.Module, x: torch.Tensor) -> None:
    """``fn(model, x)`` → (L,B,heads,N,N); compared with PyTorch's own attention weights.

    For every block, ``nn.MultiheadAttention(..., need_weights=True,
    average_attn_weights=False)`` is run on the same LayerNorm-ed input.
    """
    got = _tensor("your attention extraction", _run("your attention extraction", fn, [model, x]))
    reference = _mha_reference(model, x)
    if got.shape != reference.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (L,B,heads,N,N) = "
                         f"{tuple(reference.shape)}.")
    rows = got.sum(-1)
    if not torch.allclose(rows, torch.ones_like(rows), atol=1e-4):
        raise CheckError("rows of your attention do not sum to 1: softmax over the *key* axis "
                         "(the last one), after scaling QKᵀ by 1/√d_head.")
    err = rel_error(got, reference)
    if err > 1e-5:
        bad_layers = [l for l in range(len(reference)) if rel_error(got[l], reference[l]) > 1e-5]
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
    """Hidden tests: another ViT (other depth, heads, grid) in train mode; inputs untouched."""
    hint = ("Read depth, heads and sizes from the model (len(model.encoder.layers), "
            "mha.num_heads, D // heads), not from the shapes ViT.")
    vit = _small_vit()
    xs = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    _hidden_case("a ViT with 3 blocks and 2 heads, handed over in train mode", fn, [vit, xs],
                 _mha_reference(vit, xs), tol=1e-5, train=True, hint=hint)
    _hidden_case("the course's ViT on 2 other images", fn, [model, x[-2:]],
                 _mha_reference(model, x[-2:]), tol=1e-5, hint=hint)
    _passed("hidden tests of attention extraction.")


def check_rollout(fn) -> None:
    """``fn(attn, head_fusion)`` → (B,N,N) attention rollout, compared with the library copy."""
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
    """Hidden tests: a batch of images, one layer, other token counts; the input untouched."""
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


# ------------------------------------------------ beyond the lecture: one pattern for all

def _verdict(what: str, got: torch.Tensor, expected: torch.Tensor, diagnoses, hint: str,
             tol: float = 1e-4) -> None:
    """Pass if ``got`` matches ``expected``; else name the first recognised mistake among
    ``diagnoses`` [(what that mistake computes, message)], or give ``hint``. ``diagnoses``
    may be a function returning that list: it is then only computed when needed."""
    if got.shape != expected.shape:
        raise CheckError(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}. "
                         f"{hint}")
    err = rel_error(got, expected)
    if err <= tol:
        _passed(f"{what} matches the library copy (relative error {err:.1e}).")
        return
    for candidate, message in (diagnoses() if callable(diagnoses) else diagnoses):
        if candidate.shape == got.shape and rel_error(got, candidate) <= tol:
            raise CheckError(f"{what}: {message}")
    raise CheckError(f"{what} differs from the library copy: relative error {err:.2e}. {hint}")


def _small_resnet_case(seed: int):
    """A random-weight ResNet-18 (in-place ReLUs, BatchNorm) with two 64 px inputs."""
    return (_random_resnet18(),
            torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed)),
            torch.tensor([3, 7]))


def _hidden_resnet_case(fn, method, seed: int, *extra, hint: str) -> None:
    """The hidden case most exercises share: ``fn(resnet, x, t, *extra)`` against the
    library's ``method`` with the same arguments, on :func:`_small_resnet_case`'s ResNet-18
    handed over in train mode."""
    resnet, xr, tr = _small_resnet_case(seed)
    _hidden_case("ResNet-18 (random weights) handed over in train mode", fn,
                 [resnet, xr, tr, *extra], method(resnet, xr, tr, *extra), train=True, hint=hint)


def _checked_targets(model: nn.Module, x: torch.Tensor, target) -> torch.Tensor:
    """``target`` as one class index per image of ``x``, checked against ``model``: (B,)."""
    with preserved_state(model):
        return methods.model_targets(model, x, target)


def _target_grads(model, x, t) -> torch.Tensor:
    """∂S_t/∂x per image, the model in eval mode and frozen: (B,C,H,W)."""
    with preserved_state(model), torch.enable_grad():
        return _grad_of(model, x, lambda out: out.gather(1, t[:, None])[:, 0])


# ---------------------------------------------------------- notebook 02: SmoothGrad and IG

_SMOOTHGRAD_HINT = ("σ = noise · (max − min of each image); ε = torch.randn((samples, *x.shape), "
                    "generator=torch.Generator().manual_seed(seed)); average the raw gradients "
                    "of each image's own target logit over the samples, in eval mode.")


def _smoothgrad_mistakes(model, x, t, samples, noise, seed):
    eps = torch.randn((samples, *x.shape), generator=torch.Generator().manual_seed(seed))
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    grads = torch.stack([_target_grads(model, x + noise * span * e, t) for e in eps])
    unscaled = torch.stack([_target_grads(model, x + noise * e, t) for e in eps])
    return [
        (grads.abs().mean(0), "you averaged |gradient|; SmoothGrad averages the raw gradients "
                              "(take |·| only to display)."),
        (grads.sum(0), "you summed over the samples; SmoothGrad is their mean."),
        (unscaled.mean(0), "your noise is not scaled by the image's range: σ = noise · (max − "
                           "min) of each image."),
    ]


def check_smoothgrad(fn, model: nn.Module, x: torch.Tensor, target, samples: int = 8,
                     noise: float = 0.15, seed: int = 0) -> None:
    """``fn(model, x, target, samples, noise, seed)`` → (B,3,H,W), against ``methods.smoothgrad``."""
    t = _checked_targets(model, x, target)
    got = _tensor("your SmoothGrad", _run("your SmoothGrad", fn,
                                           [model, x, t, samples, noise, seed]))
    expected = methods.smoothgrad(model, x, t, samples=samples, noise=noise, seed=seed)
    _verdict("SmoothGrad", got, expected,
             lambda: _smoothgrad_mistakes(model, x, t, samples, noise, seed), _SMOOTHGRAD_HINT)


def hidden_check_smoothgrad(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: mixed non-top-1 targets; another seed and noise; train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than the top-1, mixed, seed 3, noise 0.2", fn,
                 [model, x, t, 4, 0.2, 3], methods.smoothgrad(model, x, t, 4, 0.2, 3),
                 hint=_SMOOTHGRAD_HINT)
    _hidden_resnet_case(fn, methods.smoothgrad, 21, 5, 0.1, 1, hint=_SMOOTHGRAD_HINT)
    _passed("hidden tests of SmoothGrad.")


_IG_HINT = ("IG = (x − x') · mean over k = 1..m of ∂S_c/∂x at x' + (k/m)(x − x'): the "
            "paper's right Riemann sum, each image's own target logit, eval mode.")


def _ig_mistakes(model, x, t, baseline, steps):
    d = x - baseline
    grads = lambda alphas: torch.stack([_target_grads(model, baseline + a * d, t) for a in alphas])
    right = grads([k / steps for k in range(1, steps + 1)])
    left = grads([k / steps for k in range(steps)])
    return [
        (right.mean(0), "you left out the factor (x − x'): IG multiplies the averaged gradient "
                        "by the difference from the baseline."),
        (d * right.sum(0), "you summed the gradients; the integral is their *mean* (Δα = 1/m)."),
        (d * left.mean(0), "your points are α = 0, 1/m, …, (m−1)/m (a left sum); the paper's "
                           "sum uses α = 1/m, 2/m, …, 1."),
    ]


def check_integrated_gradients(fn, model: nn.Module, x: torch.Tensor, target,
                               steps: int = 8) -> None:
    """``fn(model, x, target, baseline, steps)`` → (B,3,H,W) against
    ``methods.integrated_gradients``, with the all-zeros baseline."""
    t = _checked_targets(model, x, target)
    baseline = torch.zeros_like(x)
    got = _tensor("your Integrated Gradients",
                  _run("your Integrated Gradients", fn, [model, x, t, baseline, steps]))
    expected = methods.integrated_gradients(model, x, t, baseline, steps)
    _verdict("Integrated Gradients", got, expected,
             lambda: _ig_mistakes(model, x, t, baseline, steps), _IG_HINT)


def hidden_check_integrated_gradients(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: mixed non-top-1 targets with a non-zero baseline; train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    blurred = x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()     # each image's mean colour
    _hidden_case("targets other than the top-1, a baseline of each image's mean colour", fn,
                 [model, x, t, blurred, 5], methods.integrated_gradients(model, x, t, blurred, 5),
                 hint=_IG_HINT)
    _hidden_resnet_case(fn, methods.integrated_gradients, 22, torch.zeros(2, 3, 64, 64), 6,
                        hint=_IG_HINT)
    _passed("hidden tests of Integrated Gradients.")


# ------------------------------------------------ notebook 02: class visualisation, fooling

_ASCENT_HINT = ("I + lr · (∂S_c/∂I − 2λ I): the gradient of each image's own target logit "
                "(not the softmax), plus the gradient of −λ‖I‖², in eval mode.")


def check_ascent_step(fn, model: nn.Module, img: torch.Tensor, target, lr: float = 1.0,
                      l2: float = 1e-2) -> None:
    """``fn(model, img, target, lr, l2)`` → the next image (B,3,H,W), against ``methods.ascent_step``."""
    t = _checked_targets(model, img, target)
    got = _tensor("your ascent step", _run("your ascent step", fn, [model, img, t, lr, l2]))
    expected = methods.ascent_step(model, img, t, lr, l2)
    _verdict("one ascent step", got, expected, lambda: _ascent_mistakes(model, img, t, lr, l2),
             _ASCENT_HINT)


def _ascent_mistakes(model, img, t, lr, l2):
    g = _target_grads(model, img, t)
    with preserved_state(model), torch.enable_grad():
        g_prob = _grad_of(model, img, lambda out: out.softmax(1).gather(1, t[:, None])[:, 0])
    return [
        (img - lr * (g - 2 * l2 * img), "you stepped *down* the gradient; ascent adds it."),
        (img + lr * (g + 2 * l2 * img), "the decay has the wrong sign: the gradient of −λ‖I‖² "
                                        "is −2λI, which shrinks the image."),
        (img + lr * (g - l2 * img), "the gradient of −λ‖I‖² is −2λI (you used −λI)."),
        (img + lr * g, "you left out the L2 decay −2λI."),
        (img + lr * (g_prob - 2 * l2 * img), "you ascended the softmax probability; use the logit "
                                             "S_c (Simonyan et al. explain why, §2)."),
    ]


def hidden_check_ascent_step(fn, model: nn.Module, img: torch.Tensor) -> None:
    """Hidden tests: two different classes in one batch from a non-blank image; train-mode ResNet-18."""
    g = torch.Generator().manual_seed(31)
    start = 0.3 * torch.randn(2, 3, *img.shape[-2:], generator=g)
    t = torch.tensor([130, 1])
    _hidden_case("two classes in one batch, from a noisy start, lr 2, λ 0.05", fn,
                 [model, start, t, 2.0, 0.05], methods.ascent_step(model, start, t, 2.0, 0.05),
                 hint=_ASCENT_HINT)
    _hidden_resnet_case(fn, methods.ascent_step, 23, 0.5, 0.1, hint=_ASCENT_HINT)
    _passed("hidden tests of the ascent step.")


_FOOLING_HINT = ("Repeat until the top-1 class is the target: g = ∂S_target/∂x, x ← x + lr · "
                 "g/‖g‖₂ (the whole image's L2 norm); stop as soon as the model is fooled.")


def check_fooling_image(fn, model: nn.Module, x: torch.Tensor, target, lr: float = 0.5,
                        max_steps: int = 100) -> None:
    """``fn(model, x, target, lr, max_steps)`` → fooled (B,3,H,W), against ``methods.fooling_image``."""
    t = _checked_targets(model, x, target)
    got = _tensor("your fooling image",
                  _run("your fooling image", fn, [model, x, t, lr, max_steps]))
    if got.shape != x.shape:
        raise CheckError(f"your fooling image has shape {tuple(got.shape)}; expected the input's "
                         f"{tuple(x.shape)}.")
    with preserved_state(model), torch.no_grad():
        said = model(got).argmax(1)
    if not torch.equal(said, t):
        raise CheckError(f"the model still says {said.tolist()} for your image, not the target "
                         f"{t.tolist()}. {_FOOLING_HINT}")
    expected = methods.fooling_image(model, x, t, lr, max_steps)
    steps_got = ((got - x).flatten(1).norm(dim=1) / lr).tolist()
    steps_expected = ((expected - x).flatten(1).norm(dim=1) / lr).tolist()
    _verdict("the fooling image", got, expected, [], f"{_FOOLING_HINT} (Your change is "
             f"{steps_got[0]:.1f} step lengths long, the library's {steps_expected[0]:.1f}: "
             "longer means more steps than needed or unnormalised steps.)")


def hidden_check_fooling_image(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: another target class and step size; an image that is already its target."""
    x = x[:1]
    with preserved_state(model), torch.no_grad():
        top1 = model(x).argmax(1)
    t = _hidden_targets(model, x)
    _hidden_case("the 2nd-ranked class as target, lr 0.25", fn, [model, x, t, 0.25, 100],
                 methods.fooling_image(model, x, t, 0.25, 100), hint=_FOOLING_HINT)
    _hidden_case("the target is already the top-1 class (nothing to change)", fn,
                 [model, x, top1, 0.5, 100], x.detach().clone(), hint=_FOOLING_HINT)
    _passed("hidden tests of the fooling image.")


# ------------------------------------------------------ notebook 03: Fourier parametrisation

_FOURIER_HINT = ("sigmoid(C · irfft2(spectrum · fourier_scale(h, w), s=(h, w), norm='ortho') / 4) "
                 "with C = COLOR_CORRELATION_SQRT divided by its largest column norm, applied to "
                 "the three channels at every pixel.")


def check_fourier_image(fn) -> None:
    """``fn(spectrum, h, w)`` → pixels (B,3,h,w) in [0,1], against ``methods.fourier_image``."""
    g = torch.Generator().manual_seed(41)
    spectrum = torch.complex(torch.randn(1, 3, 16, 9, generator=g),
                             torch.randn(1, 3, 16, 9, generator=g))
    got = _tensor("your fourier_image", _run("your fourier_image", fn, [spectrum, 16, 16]))
    expected = methods.fourier_image(spectrum, 16, 16)
    scale = methods.fourier_scale(16, 16)
    c = methods.COLOR_CORRELATION_SQRT / methods.COLOR_CORRELATION_SQRT.norm(dim=0).max()
    raw = torch.fft.irfft2(spectrum * scale, s=(16, 16), norm="ortho") / 4
    plain = torch.fft.irfft2(spectrum * scale, s=(16, 16)) / 4
    _verdict("fourier_image", got, expected, [
        (torch.sigmoid(raw), "no colour decorrelation: mix the channels with C at every pixel."),
        (torch.einsum("ij,bjhw->bihw", c, raw), "no sigmoid: squash to [0, 1] at the end."),
        (torch.sigmoid(torch.einsum("ij,bjhw->bihw", c.T, raw)),
         "C is applied transposed: pixel_i = Σ_j C_ij · channel_j."),
        (torch.sigmoid(torch.einsum("ij,bjhw->bihw", c, plain)),
         "use the orthonormal inverse FFT, norm='ortho'."),
        (torch.sigmoid(torch.einsum("ij,bjhw->bihw", c,
                                    torch.fft.irfft2(spectrum, s=(16, 16), norm="ortho") / 4)),
         "you did not scale the spectrum by fourier_scale (the 1/f decay)."),
    ], _FOURIER_HINT, tol=1e-5)


def hidden_check_fourier_image(fn) -> None:
    """Hidden tests: a batch of two, a non-square image with an odd width."""
    g = torch.Generator().manual_seed(42)
    spectrum = torch.complex(torch.randn(2, 3, 12, 11, generator=g),
                             torch.randn(2, 3, 12, 11, generator=g))
    _hidden_case("two images of 12×21 pixels (odd width)", fn, [spectrum, 12, 21],
                 methods.fourier_image(spectrum, 12, 21), tol=1e-5, hint=_FOURIER_HINT)
    _passed("hidden tests of fourier_image.")


# ------------------------------------------------------------------- notebook 05: occlusion

_OCCLUSION_HINT = ("For each window position (every `stride` pixels, plus one flush with the far "
                   "edge): set the window to 0, drop = p(target | x) − p(target | occluded x) "
                   "(softmax probabilities); each pixel gets the mean drop of the windows "
                   "covering it.")


def check_occlusion(fn, model: nn.Module, x: torch.Tensor, target, window: int,
                    stride: int) -> None:
    """``fn(model, x, target, window, stride)`` → (B,H,W), against ``methods.occlusion``."""
    t = _checked_targets(model, x, target)
    got = _tensor("your occlusion map",
                  _run("your occlusion map", fn, [model, x, t, window, stride]))
    expected = methods.occlusion(model, x, t, window, stride)
    _verdict("occlusion", got, expected,
             lambda: _occlusion_mistakes(model, x, t, window, stride, expected), _OCCLUSION_HINT)


def _occlusion_mistakes(model, x, t, window, stride, expected):
    """The usual mistakes, built from the same window drops."""
    H, W = x.shape[-2:]
    corners = [(i, j) for i in methods.window_starts(H, window, stride)
               for j in methods.window_starts(W, window, stride)]
    with preserved_state(model), torch.no_grad():
        logits = model(x)
        p, s = logits.softmax(1).gather(1, t[:, None]), logits.gather(1, t[:, None])
        cover = torch.zeros(H, W)
        total_p, total_s = torch.zeros(x.shape[0], H, W), torch.zeros(x.shape[0], H, W)
        for i, j in corners:
            hidden = x.clone()
            hidden[..., i:i + window, j:j + window] = 0
            out = model(hidden)
            total_p[:, i:i + window, j:j + window] += (p - out.softmax(1).gather(1, t[:, None]))[:, :, None]
            total_s[:, i:i + window, j:j + window] += (s - out.gather(1, t[:, None]))[:, :, None]
            cover[i:i + window, j:j + window] += 1
    return [
        (-expected, "the sign is flipped: the map is p(x) − p(occluded x), positive where hiding "
                    "the pixels hurts the class."),
        (total_p, "you summed the drops of the windows covering a pixel; take their mean."),
        (total_s / cover, "you used the logit; Zeiler & Fergus's map is the class probability."),
    ]


def hidden_check_occlusion(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests: mixed non-top-1 targets with a stride that does not tile the image;
    train-mode ResNet-18."""
    x = x[:2]
    t = _hidden_targets(model, x)
    _hidden_case("targets other than the top-1, window 20, stride 12 (needs the edge window)",
                 fn, [model, x, t, 20, 12], methods.occlusion(model, x, t, 20, 12),
                 hint=_OCCLUSION_HINT)
    _hidden_resnet_case(fn, methods.occlusion, 24, 16, 16, hint=_OCCLUSION_HINT)
    _passed("hidden tests of occlusion.")
