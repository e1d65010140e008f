"""ViT attention, rollout and Grad-CAM on tokens; ViT-B/16 offline from a planted checkpoint."""
import os

import pytest
import torch
import torchvision

from featviz_helpers import checks, hooks, images, methods, models


@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(0)
    return models.load_model("shapes_vit", pretrained=False)


def test_attention_matches_multihead_attention(small_vit):
    # The library copy's answer, computed outside the check (inside, every copy refuses).
    x = torch.randn(3, 3, 64, 64)
    answer = methods.vit_attention(small_vit, x)
    checks.check_vit_attention(lambda model, x: answer, small_vit, x)
    assert hooks.count_hooks(small_vit) == 0


def test_attention_shape_and_no_graph(small_vit):
    a = methods.vit_attention(small_vit, torch.randn(2, 3, 64, 64))
    assert a.shape == (4, 2, 4, 65, 65) and not a.requires_grad


def _rollout(attn, head_fusion="mean"):
    """Attention rollout in plain PyTorch, as notebook 06 §3 writes it."""
    fused = {"mean": attn.mean(2), "max": attn.amax(2), "min": attn.amin(2)}[head_fusion]
    eye = torch.eye(attn.shape[-1], dtype=torch.float64)
    out = None
    for a in fused.double():
        a = (a + eye) / (a + eye).sum(-1, keepdim=True)
        out = a if out is None else a @ out
    return out.float()


def test_rollout_rows_identity_and_fusions():
    # An implementation that passes the check, and the library copy equals it.
    checks.check_rollout(_rollout)
    attn = torch.rand(3, 2, 4, 6, 6).softmax(-1)
    for fusion in ("mean", "max", "min"):
        assert torch.allclose(methods.attention_rollout(attn, fusion), _rollout(attn, fusion))
    attn = torch.rand(3, 2, 4, 6, 6).softmax(-1)
    for fusion in ("mean", "max", "min"):
        r = methods.attention_rollout(attn, fusion)
        assert torch.allclose(r.sum(-1), torch.ones(2, 6), atol=1e-6)
    with pytest.raises(ValueError, match="head_fusion"):
        methods.attention_rollout(attn, "median")
    with pytest.raises(ValueError, match="L,B,heads,N,N"):
        methods.attention_rollout(attn[0])


def test_rollout_check_catches_the_keepdim_bug():
    def buggy(attn, fusion):
        r = None
        fused = {"mean": attn.mean(2), "max": attn.amax(2), "min": attn.amin(2)}[fusion]
        for a in fused[:, 0]:                        # one image: (N, N) per layer
            a = a + torch.eye(a.shape[-1])
            a = a / a.sum(-1)
            r = a if r is None else a @ r
        return r[None]
    with pytest.raises(checks.CheckError, match="keepdim"):
        checks.check_rollout(buggy)


def test_vit_grad_cam_layers():
    vit = models.load_model("shapes_vit")   # trained: a random-init ViT's head is all zeros
    x, t = torch.randn(2, 3, 64, 64), torch.tensor([1, 4])
    maps = methods.vit_grad_cam(vit, x, t)
    assert maps.shape == (2, 8, 8) and (maps >= 0).all() and maps.abs().max() > 0
    # After the last block (and after encoder.ln) only [CLS] reaches the head: the patch
    # tokens get no gradient, so the map would be all zero. Refused, not returned.
    for last in ("encoder.layers.encoder_layer_3", "encoder.ln"):
        with pytest.raises(ValueError, match=r"only the \[CLS\] token.*encoder_layer_2"):
            methods.vit_grad_cam(vit, x, t, last)
    with pytest.raises(ValueError, match="not a torchvision VisionTransformer"):
        methods.vit_grad_cam(models.load_model("shapes_cnn", pretrained=False), x, t)
    assert hooks.count_hooks(vit) == 0


def test_tokens_to_grid():
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)
    grid = methods.tokens_to_grid(tokens)
    assert grid.shape == (2, 3, 2, 2) and grid[0, :, 0, 0].tolist() == tokens[0, 1].tolist()
    with pytest.raises(ValueError, match="square"):
        methods.tokens_to_grid(torch.zeros(1, 6, 3))


def test_vit_b_16_offline_from_planted_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    torch.manual_seed(0)
    state = torchvision.models.vit_b_16(weights=None).state_dict()
    path = models.weights_path("vit_b_16")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(state, path)
    big = models.load_model("vit_b_16")
    x = images.preprocess(images.load_image("chelsea"), big)
    attn = methods.vit_attention(big, x)
    assert attn.shape == (12, 1, 12, 197, 197)
    assert torch.allclose(methods.attention_rollout(attn).sum(-1), torch.ones(1, 197), atol=1e-5)
    assert methods.vit_grad_cam(big, x, 3).shape == (1, 14, 14)
