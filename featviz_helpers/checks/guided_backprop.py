"""Checks of notebook 03_guided_backprop: the three ways back through a ReLU (§1), guided
backprop through a whole network (§2) and the Fourier-parametrised image of "What does
this neuron look for?" (§4)."""
from __future__ import annotations

import torch
from torch import nn

from .. import methods
from ..relu_rules import RELU_EXAMPLE_EXPECTED, RELU_EXAMPLE_G, RELU_EXAMPLE_X
from ._harness import (CheckError, _hidden_case, _hidden_targets, _passed, _random_resnet18,
                       _references, _restores_after_error, _run, _seeded, _tensor, _verdict)


_RELU_HINTS = {
    "standard": "standard backprop passes g where the forward input was positive: g·1[x>0].",
    "deconvnet": "the deconvnet passes g where g itself is positive, ignoring x: g·1[g>0].",
    "guided": "guided backprop needs both: g·1[x>0]·1[g>0].",
}


def check_relu_rules(fn) -> None:
    """``fn(x, g, rule)`` → the gradient a ReLU passes back, for rule in
    standard/deconvnet/guided, on the lecture's 3×3 example (notebook 03 §1, "Three ways back
    through a ReLU")."""
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
    """Hidden tests of notebook 03 §1: batched 4-D tensors with exact zeros in x and g;
    inputs left untouched."""
    g = torch.Generator().manual_seed(12)
    x = torch.randint(-2, 3, (2, 3, 4, 5), generator=g).float()   # many exact zeros
    grad = torch.randint(-2, 3, (2, 3, 4, 5), generator=g).float()
    masks = {"standard": x > 0, "deconvnet": grad > 0, "guided": (x > 0) & (grad > 0)}
    for rule, mask in masks.items():
        _hidden_case(f"{rule} rule on a 4-D batch with zeros in x and g", fn, [x, grad, rule],
                     grad * mask, tol=0.0,
                     hint=f"{_RELU_HINTS[rule]} At exactly 0 nothing passes (strict >).")
    _passed("hidden tests of the ReLU rules.")


_GUIDED_HINT = ("Are ReLU6 modules handled (no gradient where x ≥ 6 either), and a ReLU module "
                "that is called twice in one forward pass? Each image's own target logit?")


def _guided_mistakes(model, x, target):
    """The plain gradient and the deconvnet rule's, each image's own target logit."""
    return [
        (methods.input_gradient(model, x, target),
         "you returned the plain gradient: the ReLUs did not use the guided rule. Is your "
         "replacement applied to every nn.ReLU / nn.ReLU6 module, during the forward pass?"),
        (methods.input_gradient(model, x, target, rule="deconvnet"),
         "you used the deconvnet rule (g·1[g>0]); guided needs g·1[x>0]·1[g>0]."),
    ]


def check_guided_backprop(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,3,H,W), compared with ``methods.guided_backprop``
    (notebook 03 §2, "Guided backprop through a whole network")."""
    got = _tensor("your guided backprop", _run("your guided backprop", fn, [model, x, target]))
    t = methods.model_targets(model, x, target)
    expected, tol = _references(methods.guided_backprop, model, x, t)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,3,H,W) = {tuple(expected.shape)}.")
    _verdict(f"guided backprop on {type(model).__name__}", got, expected,
             lambda: _guided_mistakes(model, x, target), _GUIDED_HINT, tol=tol)


def _relu6_net() -> nn.Module:
    """A small ReLU6 network whose activations often pass 6 (the flat top matters)."""
    net = _seeded(lambda: nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)))
    with torch.no_grad():
        net[0].weight.mul_(8.0)
    return net.eval()


def hidden_check_guided_backprop(fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 03 §2: mixed non-top-1 targets, train mode, ReLU6's flat top,
    ResNet-18 in train mode, every ReLU restored even when the forward pass raises."""
    x = x[:2]
    t = _hidden_targets(model, x)
    hint = "Each image's own target logit, the guided rule at every ReLU/ReLU6, eval mode."
    expected, tol = _references(methods.guided_backprop, model, x, t)
    _hidden_case("targets other than each image's top-1 class, mixed in one batch", fn,
                 [model, x, t], expected, tol=tol, hint=hint)
    _hidden_case("a model handed over in train mode", fn, [model, x[:1], t[:1]],
                 methods.guided_backprop(model, x[:1], t[:1]), train=True,
                 hint="Switch to eval mode inside, and restore the caller's mode after.")
    net = _relu6_net()
    xs, ts = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0, 2, 3])
    expected, tol = _references(methods.guided_backprop, net, xs, ts)
    _hidden_case("a ReLU6 network whose activations pass 6", fn, [net, xs, ts], expected, tol=tol,
                 hint="ReLU6's forward mask is 1[0 < x < 6]: the flat top passes nothing back.")
    resnet = _random_resnet18()
    xr, tr = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)), torch.tensor([1, 9])
    expected, tol = _references(methods.guided_backprop, resnet, xr, tr)
    _hidden_case("ResNet-18 (random weights) handed over in train mode", fn, [resnet, xr, tr],
                 expected, tol=tol, train=True, hint=hint)
    _restores_after_error("a forward pass that raises (a 2-channel input)", fn, resnet,
                          [xr[:, :2], tr])
    _passed("hidden tests of guided backprop.")


_FOURIER_HINT = ("sigmoid(C · irfft2(spectrum · fourier_scale(h, w), s=(h, w), norm='ortho') / 4) "
                 "with C = COLOR_CORRELATION_SQRT divided by its largest column norm, applied to "
                 "the three channels at every pixel.")


def check_fourier_image(fn) -> None:
    """``fn(spectrum, h, w)`` → pixels (B,3,h,w) in [0,1], against ``methods.fourier_image``
    (notebook 03 §4, "What does this neuron look for?")."""
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
    """Hidden tests of notebook 03 §4: a batch of two, non-square images with an odd width,
    an odd height, both odd, and a single row of frequencies' worth of odd sizes."""
    g = torch.Generator().manual_seed(42)
    for b, h, w, what in [(2, 12, 21, "odd width"), (1, 15, 16, "odd height"),
                          (2, 13, 9, "odd height and width"), (1, 7, 24, "odd height, wide"),
                          (1, 1, 5, "a single row")]:
        spectrum = torch.complex(torch.randn(b, 3, h, w // 2 + 1, generator=g),
                                 torch.randn(b, 3, h, w // 2 + 1, generator=g))
        _hidden_case(f"{b} image(s) of {h}×{w} pixels ({what})", fn, [spectrum, h, w],
                     methods.fourier_image(spectrum, h, w), tol=1e-5,
                     hint=_FOURIER_HINT + " The frequencies of an odd size are not those of "
                                          "the even size below it: torch.fft.fftfreq(h) and "
                                          "rfftfreq(w) (or methods.fourier_scale) get them "
                                          "right; irfft2 needs s=(h, w).")
    _passed("hidden tests of fourier_image.")

