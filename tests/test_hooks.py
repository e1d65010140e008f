"""hooks: capture activations and gradients; nothing left behind, even after an exception."""
import pytest
import torch

from featviz_helpers import hooks


def test_capture_activation_and_gradient(small_cnn):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    with hooks.capture(small_cnn, ["0", "2"]) as cap:
        out = small_cnn(x)
        out[:, 1].sum().backward()
    assert set(cap.activations) == {"0", "2"}
    assert cap.activations["0"].shape == (2, 8, 8, 8)
    # Conv "0" feeds an in-place ReLU: the stored activation must be the pre-ReLU output.
    assert (cap.activations["0"] < 0).any()
    # The last conv's gradient: d out[:,1] / d conv2 = fc weight[1] / 64 through ReLU and GAP.
    relu_mask = (cap.activations["2"] > 0).float()
    w = small_cnn[6].weight[1].view(1, 8, 1, 1) / 64
    assert torch.allclose(cap.gradients["2"], w * relu_mask, atol=1e-7)


def test_hooks_removed_and_state_restored_after_exception(small_cnn):
    small_cnn.train()
    small_cnn[0].weight.requires_grad_(True)
    small_cnn[2].weight.requires_grad_(False)
    with pytest.raises(RuntimeError, match="boom"):
        with hooks.capture(small_cnn, "2"):
            assert not small_cnn.training
            assert hooks.count_hooks(small_cnn) == 1
            raise RuntimeError("boom")
    assert hooks.count_hooks(small_cnn) == 0
    assert small_cnn.training
    assert small_cnn[0].weight.requires_grad and not small_cnn[2].weight.requires_grad


def test_unknown_layer_registers_nothing(small_cnn):
    with pytest.raises(KeyError):
        with hooks.capture(small_cnn, ["0", "nope"]):
            pass
    assert hooks.count_hooks(small_cnn) == 0


def test_preserved_state_restores_mixed_modes(small_cnn):
    small_cnn.train()
    small_cnn[1].eval()                      # a submodule in its own mode
    with hooks.preserved_state(small_cnn):
        assert not any(m.training for m in small_cnn.modules())
        assert not any(p.requires_grad for p in small_cnn.parameters())
    assert small_cnn.training and not small_cnn[1].training
    assert all(p.requires_grad for p in small_cnn.parameters())
