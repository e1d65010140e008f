"""Checks of notebook 04_cam: CAM from features and weights, and CAM from a model (the
maths in §1, the exercise in §2), and their hidden tests."""
from __future__ import annotations

import torch
from torch import nn

from .. import methods, models
from ._harness import (CheckError, _hidden_case, _hidden_targets, _passed, _random_resnet18,
                       _run, _seeded, _tensor, _verdict, assert_close)


def check_cam_from_features(fn) -> None:
    """``fn(features, class_weights)``: (B,K,h,w), (B,K) → (B,h,w), on a hand-computed case
    (notebook 04 §2, "Exercise: CAM"; M = Σ_k w_k f_k as derived in §1)."""
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


_CAM_HINT = ("Use the last conv features after the head's activation (models.gap_fc_head(model)"
             ".activation, if any), eval mode, and the weights of each image's own target class.")


def _cam_mistakes(expected, model, x, target):
    """The library's map with the bias added, divided by Z = h·w, or after a ReLU."""
    z = expected.shape[-1] * expected.shape[-2]
    head = models.gap_fc_head(model)
    t = methods.as_targets(target, x.shape[0], head.fc.out_features)
    bias = head.fc.bias.detach()[t].view(-1, 1, 1)
    return [
        (expected + bias, "you added the bias b_c to every position; CAM is Σ_k w_k f_k only "
                          "(the bias is a constant that belongs to the score, not to a place)."),
        (expected / z, "you divided by Z = h·w; CAM is the sum Σ_k w_k f_k (its *mean* is the "
                       "score minus the bias)."),
        (expected.clamp_min(0), "you applied a ReLU; CAM keeps negative evidence."),
    ]


def check_cam(fn, model: nn.Module, x: torch.Tensor, target) -> None:
    """``fn(model, x, target)`` → (B,h,w) class activation maps, compared with ``methods.cam``
    (notebook 04 §2, "Exercise: CAM")."""
    got = _tensor("your CAM", _run("your CAM", fn, [model, x, target]))
    expected = methods.cam(model, x, target)
    if got.shape != expected.shape:
        raise CheckError(f"shape {tuple(got.shape)}; expected (B,h,w) = {tuple(expected.shape)} "
                         "at the last conv layer's resolution (no upsampling here).")
    _verdict("CAM", got, expected, lambda: _cam_mistakes(expected, model, x, target), _CAM_HINT)


def _random_densenet121() -> nn.Module:
    """DenseNet-121 with random weights: its head applies a functional ReLU before pooling."""
    return _seeded(lambda: models.load_model("densenet121", pretrained=False))


def hidden_check_cam(fn, features_fn, model: nn.Module, x: torch.Tensor) -> None:
    """Hidden tests of notebook 04 §2 (both functions): mixed non-top-1 targets; a batch of
    weights in cam_from_features; a GAP head with an activation (DenseNet-121); train mode
    (ResNet-18); inputs untouched."""
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

