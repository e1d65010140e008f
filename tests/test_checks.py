"""checks: pass correct solutions, and name the usual mistakes precisely."""
import pytest
import torch
import torch.nn.functional as F

from featviz_helpers import checks, methods, viz


def test_rel_error():
    assert checks.rel_error(torch.ones(3), torch.ones(3)) == 0
    assert checks.rel_error(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.01])) == pytest.approx(0.01)
    with pytest.raises(checks.CheckError, match="shapes differ"):
        checks.rel_error(torch.ones(2), torch.ones(3))
    with pytest.raises(checks.CheckError, match="tolerance"):
        checks.assert_close(torch.ones(2), torch.zeros(2), 1e-3, "ones vs zeros")
    with pytest.raises(checks.CheckError, match="tolerance"):
        checks.assert_close(torch.tensor([float("nan")]), torch.ones(1), 1e-3, "nan")


def test_normalize_filters_check(capsys):
    checks.check_normalize_filters(viz.normalize_filters)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(checks.CheckError, match="all filters together"):
        checks.check_normalize_filters(lambda w: (w - w.min()) / (w.max() - w.min()))
    with pytest.raises(checks.CheckError, match="shape"):
        checks.check_normalize_filters(lambda w: viz.normalize_filters(w)[0])


def test_filter_response_check():
    checks.check_filter_response(lambda im, f: F.conv2d(im[None], f[None], padding=f.shape[-1] // 2)[0, 0])
    flipped = lambda im, f: F.conv2d(im[None], f.flip(-1, -2)[None], padding=f.shape[-1] // 2)[0, 0]
    with pytest.raises(checks.CheckError, match="flipped the kernel"):
        checks.check_filter_response(flipped)
    with pytest.raises(checks.CheckError, match="k//2"):
        checks.check_filter_response(lambda im, f: F.conv2d(im[None], f[None])[0, 0])


def grad(model, x, t, score):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(score(model(x), t).sum(), x)
    return g


def logit(out, t):
    return out.gather(1, t[:, None])


@pytest.mark.parametrize("wrong, message", [
    (lambda m, x, t: grad(m, x, t, lambda o, t: o.softmax(1).gather(1, t[:, None])).abs().amax(1),
     "softmax"),
    (lambda m, x, t: grad(m, x, t, logit).abs().sum(1), "summed"),
    (lambda m, x, t: grad(m, x, t, logit).amax(1), "negative"),
    (lambda m, x, t: grad(m, x, t, logit).abs(), "colour dimension"),
    (lambda m, x, t: grad(m, x, t, lambda o, t: o[:, t[0]]).abs().amax(1), "first image's class"),
    (lambda m, x, t: (m.train(), methods.saliency(m, x, t))[1], "mode"),
])
def test_saliency_check_names_the_mistake(small_cnn, wrong, message):
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 3, 4])
    checks.check_saliency(methods.saliency, small_cnn, x, t)
    with pytest.raises(checks.CheckError, match=message):
        checks.check_saliency(wrong, small_cnn, x, t)


def test_relu_rules_check():
    def right(x, g, rule):
        mask = {"standard": x > 0, "deconvnet": g > 0, "guided": (x > 0) & (g > 0)}[rule]
        return g * mask
    checks.check_relu_rules(right)
    with pytest.raises(checks.CheckError, match="deconvnet rule instead"):
        checks.check_relu_rules(lambda x, g, rule: right(x, g, "deconvnet" if rule == "guided" else rule))


def test_guided_backprop_check(small_cnn):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    checks.check_guided_backprop(methods.guided_backprop, small_cnn, x, t)

    def plain(m, x, t):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(x).gather(1, t[:, None]).sum(), x)
        return g
    with pytest.raises(checks.CheckError, match="plain gradient"):
        checks.check_guided_backprop(plain, small_cnn, x, t)

    def leaky(m, x, t):
        m[1].forward = lambda v: v.clamp_min(0)       # forgets to restore
        return methods.guided_backprop(m, x, t)
    with pytest.raises(checks.CheckError, match="replaced forward"):
        checks.check_guided_backprop(leaky, small_cnn, x, t)
    small_cnn[1].__dict__.pop("forward")


def test_cam_check(small_cnn):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 4])
    checks.check_cam(methods.cam, small_cnn, x, t)
    bias = small_cnn[6].bias.detach()
    with pytest.raises(checks.CheckError, match="bias"):
        checks.check_cam(lambda m, x, t: methods.cam(m, x, t) + bias[t].view(-1, 1, 1), small_cnn, x, t)
    with pytest.raises(checks.CheckError, match="divided by Z"):
        checks.check_cam(lambda m, x, t: methods.cam(m, x, t) / 64, small_cnn, x, t)


def test_grad_cam_check(small_cnn):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 4])
    checks.check_grad_cam(methods.grad_cam, small_cnn, x, t, "2")

    def no_relu(m, x, t, layer):
        from featviz_helpers import hooks
        with hooks.capture(m, layer, stop_gradient=True) as cap, torch.enable_grad():
            m(x).gather(1, t[:, None]).sum().backward()
        a, g = cap.activations[layer], cap.gradients[layer]
        return (g.mean((2, 3), keepdim=True) * a).sum(1) - 1.0
    with pytest.raises(checks.CheckError, match="negative"):
        checks.check_grad_cam(no_relu, small_cnn, x, t, "2")
