"""methods.saliency: the library copy, against identities and one image at a time."""
import pytest
import torch
from torch import nn

from featviz_helpers import hooks, methods


def test_saliency_matches_autograd_on_lite0(lite0, photo_batch):
    x = photo_batch[:1]
    maps = methods.saliency(lite0, x, 967)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(lite0(xr)[0, 967], xr)
    assert maps.shape == (1, 224, 224)
    assert torch.allclose(maps, g.abs().amax(1), atol=1e-6)


def test_batch_of_mixed_targets_equals_one_at_a_time(lite0, photo_batch):
    targets = torch.tensor([281, 967, 872])
    batched = methods.saliency(lite0, photo_batch, targets)
    for i in range(3):
        single = methods.saliency(lite0, photo_batch[i:i + 1], targets[i:i + 1])
        assert torch.allclose(batched[i], single[0], rtol=1e-4, atol=1e-6)


def test_linear_model_saliency_is_max_abs_weight_row():
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 5, 7))
    x = torch.randn(3, 3, 4, 5)
    t = torch.tensor([6, 0, 3])
    expected = linear[1].weight[t].view(3, 3, 4, 5).abs().amax(1)
    assert torch.allclose(methods.saliency(linear, x, t), expected)


def test_relu6_and_inplace_relu_models(small_cnn):
    x = torch.randn(2, 3, 8, 8)
    assert methods.saliency(small_cnn, x, [1, 4]).shape == (2, 8, 8)
    six = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU6(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2)).eval()
    assert (methods.saliency(six, x, 0) >= 0).all()


def test_state_is_restored_and_no_grad_context_is_fine(small_cnn):
    small_cnn.train()
    small_cnn[0].bias.requires_grad_(False)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        maps = methods.saliency(small_cnn, x, 2)
    assert maps.abs().sum() > 0
    assert small_cnn.training and hooks.count_hooks(small_cnn) == 0
    assert not small_cnn[0].bias.requires_grad and small_cnn[0].weight.requires_grad
    assert not x.requires_grad and small_cnn[0].weight.grad is None


def test_eval_mode_is_used(small_cnn):
    bn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten(), nn.Linear(4, 3))
    bn[1].running_var.fill_(4.0)
    x = torch.randn(4, 3, 8, 8)
    bn.train()
    batched = methods.saliency(bn, x, 1)
    assert torch.allclose(batched[1], methods.saliency(bn, x[1:2], 1)[0], atol=1e-6)
    assert bn.training and bn[1].running_var.eq(4.0).all()


@pytest.mark.parametrize("target, error, match", [
    (1000, ValueError, "out of range"),
    (-1, ValueError, "out of range"),
    (torch.tensor([1, 2]), ValueError, "one class index per image"),
    (torch.tensor([1.0, 2.0, 3.0]), TypeError, "integer"),
    (True, TypeError, "bool"),
])
def test_bad_targets_are_refused(lite0, photo_batch, target, error, match):
    with pytest.raises(error, match=match):
        methods.saliency(lite0, photo_batch, target)


def test_bad_batch_is_refused(small_cnn):
    with pytest.raises(ValueError, match="B,C,H,W"):
        methods.saliency(small_cnn, torch.randn(3, 8, 8), 0)
