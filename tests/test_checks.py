"""checks: pass correct solutions, and name the usual mistakes precisely."""
import pytest
import torch
import torch.nn.functional as F

from featviz_helpers import checks, hooks, methods, relu_rules, viz
from featviz_helpers.library_guard import LibraryCopyUsed, library_copies_blocked


def test_rel_error():
    assert checks.rel_error(torch.ones(3), torch.ones(3)) == 0
    assert checks.rel_error(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.01])) == pytest.approx(0.01)
    with pytest.raises(checks.CheckError, match="shapes differ"):
        checks.rel_error(torch.ones(2), torch.ones(3))
    with pytest.raises(checks.CheckError, match="tolerance"):
        checks.assert_close(torch.ones(2), torch.zeros(2), 1e-3, "ones vs zeros")
    with pytest.raises(checks.CheckError, match="tolerance"):
        checks.assert_close(torch.tensor([float("nan")]), torch.ones(1), 1e-3, "nan")


def per_filter(w):
    flat = w.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo + 1e-8)).view_as(w)


def test_normalize_filters_check(capsys):
    checks.check_normalize_filters(per_filter)
    checks.hidden_check_normalize_filters(per_filter)
    assert "passed" in capsys.readouterr().out
    with pytest.raises(checks.CheckError, match="all filters together"):
        checks.check_normalize_filters(lambda w: (w - w.min()) / (w.max() - w.min()))
    with pytest.raises(checks.CheckError, match="shape"):
        checks.check_normalize_filters(lambda w: per_filter(w)[0])
    with pytest.raises(checks.CheckError, match="each colour channel"):
        checks.check_normalize_filters(
            lambda w: per_filter(w.reshape(-1, 1, *w.shape[2:])).view_as(w))
    with pytest.raises(checks.CheckError, match="in place"):
        checks.hidden_check_normalize_filters(lambda w: w.sub_(w.min()).div_(w.max() - w.min()))
    with pytest.raises(LibraryCopyUsed, match="viz.normalize_filters"):
        checks.check_normalize_filters(viz.normalize_filters)


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


def right_saliency(m, x, t):
    was_training = m.training
    m.eval()
    try:
        return grad(m, x, t, logit).abs().amax(1)
    finally:
        m.train(was_training)


@pytest.mark.parametrize("wrong, message", [
    (lambda m, x, t: grad(m, x, t, lambda o, t: o.softmax(1).gather(1, t[:, None])).abs().amax(1),
     "softmax"),
    (lambda m, x, t: grad(m, x, t, logit).abs().sum(1), "summed"),
    (lambda m, x, t: grad(m, x, t, logit).amax(1), "negative"),
    (lambda m, x, t: grad(m, x, t, logit).abs(), "colour dimension"),
    (lambda m, x, t: grad(m, x, t, lambda o, t: o[:, t[0]]).abs().amax(1), "first image's class"),
    (lambda m, x, t: (m.train(), right_saliency(m, x, t))[1], "mode"),
    (lambda m, x, t: methods.saliency(m, x, t), "library copy methods.saliency"),
])
def test_saliency_check_names_the_mistake(small_cnn, wrong, message):
    x = torch.randn(3, 3, 8, 8)
    t = torch.tensor([0, 3, 4])
    checks.check_saliency(right_saliency, small_cnn, x, t)
    with pytest.raises((checks.CheckError, LibraryCopyUsed), match=message):
        checks.check_saliency(wrong, small_cnn, x, t)
    assert not small_cnn.training      # the student's code ran on a copy


def test_relu_rules_check():
    def right(x, g, rule):
        mask = {"standard": x > 0, "deconvnet": g > 0, "guided": (x > 0) & (g > 0)}[rule]
        return g * mask
    checks.check_relu_rules(right)
    with pytest.raises(checks.CheckError, match="deconvnet rule instead"):
        checks.check_relu_rules(lambda x, g, rule: right(x, g, "deconvnet" if rule == "guided" else rule))


def test_guided_backprop_check(small_cnn):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    expected = methods.guided_backprop(small_cnn, x, t)
    checks.check_guided_backprop(lambda m, x, t: expected, small_cnn, x, t)

    def plain(m, x, t):
        x = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(m(x).gather(1, t[:, None]).sum(), x)
        return g
    with pytest.raises(checks.CheckError, match="plain gradient"):
        checks.check_guided_backprop(plain, small_cnn, x, t)

    def leaky(m, x, t):
        m[1].forward = lambda v: v.clamp_min(0)       # forgets to restore
        return expected
    with pytest.raises(checks.CheckError, match="replaced forward"):
        checks.check_guided_backprop(leaky, small_cnn, x, t)
    assert "forward" not in small_cnn[1].__dict__   # only the private copy was patched


def test_cam_check(small_cnn):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 4])
    expected = methods.cam(small_cnn, x, t)
    checks.check_cam(lambda m, x, t: expected, small_cnn, x, t)
    bias = small_cnn[6].bias.detach()
    with pytest.raises(checks.CheckError, match="bias"):
        checks.check_cam(lambda m, x, t: expected + bias[t].view(-1, 1, 1), small_cnn, x, t)
    with pytest.raises(checks.CheckError, match="divided by Z"):
        checks.check_cam(lambda m, x, t: expected / 64, small_cnn, x, t)


def test_cam_from_features_check():
    checks.check_cam_from_features(lambda f, w: (w[:, :, None, None] * f).sum(1))
    with pytest.raises(checks.CheckError, match="2·f_0"):
        checks.check_cam_from_features(lambda f, w: (w[:, :, None, None] * f).mean(1))


def test_grad_cam_check(small_cnn):
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 4])
    expected = methods.grad_cam(small_cnn, x, t, "2")
    checks.check_grad_cam(lambda *args: expected, small_cnn, x, t, "2")

    def no_relu(m, x, t, layer):
        with hooks.capture(m, layer, stop_gradient=True) as cap, torch.enable_grad():
            m(x).gather(1, t[:, None]).sum().backward()
        a, g = cap.activations[layer], cap.gradients[layer]
        return (g.mean((2, 3), keepdim=True) * a).sum(1) - 1.0
    with pytest.raises(checks.CheckError, match="negative"):
        checks.check_grad_cam(no_relu, small_cnn, x, t, "2")


def test_library_copies_are_blocked_only_inside_the_block(small_cnn):
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([2])
    alias = methods.grad_cam                      # renaming does not get around it
    with library_copies_blocked("your code"):
        for call in (lambda: methods.saliency(small_cnn, x, t), lambda: alias(small_cnn, x, t, "2"),
                     lambda: relu_rules.relu_backward_rule(small_cnn, "guided").__enter__(),
                     lambda: viz.normalize_filters(torch.ones(1, 3, 2, 2))):
            with pytest.raises(LibraryCopyUsed, match="your code called the library copy"):
                call()
        with hooks.capture(small_cnn, "2"):       # plumbing stays allowed
            small_cnn(x)
    assert methods.saliency(small_cnn, x, t).shape == (1, 8, 8)


def test_run_exercise_protects_the_callers_model(small_cnn):
    before = {k: v.clone() for k, v in small_cnn.state_dict().items()}

    def vandal(m, x):
        with torch.no_grad():
            m[0].weight.zero_()
        return m(x)
    with pytest.raises(checks.CheckError, match="changed the model's weights"):
        checks.run_exercise(vandal, small_cnn, torch.randn(1, 3, 8, 8))
    assert all(torch.equal(v, before[k]) for k, v in small_cnn.state_dict().items())


def test_try_exercise_reports_instead_of_raising(capsys):
    def blank(w):
        raise NotImplementedError()
    assert checks.try_exercise(blank, torch.ones(2)) is None
    assert "not written yet" in capsys.readouterr().out
    assert checks.try_exercise(lambda w: 1 / 0, torch.ones(2)) is None
    assert "ZeroDivisionError" in capsys.readouterr().out
    assert torch.equal(checks.try_exercise(lambda w: w * 2, torch.ones(2)), torch.full((2,), 2.0))


def test_a_student_reaching_the_global_model_is_caught_and_undone(small_cnn):
    x = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in small_cnn.state_dict().items()}

    def uses_global(m, x, t):
        small_cnn.train()                                   # the notebook's model, not m
        small_cnn[1].forward = lambda v: v.clamp_min(0)
        small_cnn[2].register_forward_hook(lambda *a: None)
        with torch.no_grad():
            small_cnn[6].bias.add_(1.0)
        return torch.zeros(2, 8, 8)
    with pytest.raises(checks.CheckError, match="notebook's own model"):
        checks.check_saliency(uses_global, small_cnn, x, torch.tensor([0, 1]))
    assert not small_cnn.training and "forward" not in small_cnn[1].__dict__
    assert hooks.count_hooks(small_cnn) == 0
    assert all(torch.equal(v, before[k]) for k, v in small_cnn.state_dict().items())


def test_the_attention_reference_is_refused_to_exercise_code():
    from featviz_helpers.checks import vit_attention
    with library_copies_blocked("your code"):
        with pytest.raises(LibraryCopyUsed, match="_mha_reference"):
            vit_attention._mha_reference(None, None)


def test_the_tolerance_follows_the_references_own_spread():
    from featviz_helpers.checks._harness import _spread_tolerance
    a = torch.tensor([1.0, 2.0, 3.0])
    assert _spread_tolerance([a, a.clone()]) == 1e-4                  # no spread: the floor
    b = a + torch.tensor([0.0, 0.0, 3e-3])                            # one flipped entry: 1e-3
    assert _spread_tolerance([a, b, a]) == pytest.approx(5e-3, rel=1e-3)
    assert _spread_tolerance([a, b], relative_to=a) == 5.0           # changes compared


def test_a_global_module_hook_left_behind_is_caught_and_removed(small_cnn):
    """torch's process-wide module hooks run on every model: the per-module hook count cannot
    see one, so the harness compares torch's global registries too, and removes what is new."""
    from torch.nn.modules import module
    x = torch.randn(2, 3, 8, 8)
    before = len(module._global_forward_hooks)

    def leaves_a_global_hook(m, x, t):
        module.register_module_forward_hook(lambda mod, inputs, output: None)
        return _saliency_by_hand(m, x, t)
    checks.check_saliency(_saliency_by_hand, small_cnn, x, torch.tensor([0, 1]))
    with pytest.raises(checks.CheckError, match="global module hook"):
        checks.check_saliency(leaves_a_global_hook, small_cnn, x, torch.tensor([0, 1]))
    assert len(module._global_forward_hooks) == before


def _saliency_by_hand(model, x, t):
    """Saliency written out, as a student would (the model is in eval mode already)."""
    xr = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(model(xr).gather(1, t.view(-1, 1)).sum(), xr)
    return grad.abs().amax(1)
