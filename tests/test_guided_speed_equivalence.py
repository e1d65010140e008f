"""The fast ReLU rules (native ReLU + a backward hook) give what the all-Python rule gave.

The reference below is the implementation that ``relu_rules.relu_backward_rule`` had before it
was made faster (issue 13): an autograd Function that saves x and builds the masks in
Python, put in place of every ReLU module's forward and of every functional ReLU call.
"""
import contextlib

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from featviz_helpers import hooks, methods, relu_rules
from featviz_helpers.library_guard import LibraryCopyUsed, library_copies_blocked


# ------------------------------------------------------------------ the reference rule

class _ReferenceReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule, top):
        ctx.rule, ctx.top = rule, top
        ctx.save_for_backward(x)
        return x.clamp_min(0) if top is None else x.clamp(0, top)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if ctx.rule == "deconvnet":
            return g.clamp_min(0), None, None
        passes = x > 0
        if ctx.top is not None:
            passes &= x < ctx.top
        if ctx.rule == "standard":
            return g * passes, None, None
        return g.clamp_min(0) * passes, None, None


class _ReferenceFunctional(TorchFunctionMode):
    def __init__(self, rule):
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("relu", "relu_"):
            return _ReferenceReLU.apply(args[0], self.rule, None)
        if name == "relu6":
            return _ReferenceReLU.apply(args[0], self.rule, 6.0)
        if name in ("hardtanh", "hardtanh_"):
            low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
            high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
            assert low == 0
            return _ReferenceReLU.apply(args[0], self.rule, float(high))
        return func(*args, **kwargs)


@contextlib.contextmanager
def reference_rule(model, rule):
    relus = [m for m in model.modules() if type(m) in (nn.ReLU, nn.ReLU6)]
    for m in relus:
        top = 6.0 if isinstance(m, nn.ReLU6) else None
        m.forward = lambda x, top=top: _ReferenceReLU.apply(x, rule, top)
    try:
        with _ReferenceFunctional(rule):
            yield
    finally:
        for m in relus:
            del m.forward


def rule_gradient(model, x, target, rule, reference=False, create_graph=False):
    """d(sum of each image's target logit)/dx under ``rule``."""
    context = reference_rule(model, rule) if reference else relu_rules.relu_backward_rule(model, rule)
    with hooks.preserved_state(model), context, torch.enable_grad():
        xr = x.detach().clone().requires_grad_(True)
        scores = model(xr).gather(1, target[:, None]).sum()
        (grad,) = torch.autograd.grad(scores, xr, create_graph=create_graph)
    return grad.detach()


def assert_same(got, expected):
    # The masks are the same and g·1 = g, so the two agree bit for bit in practice;
    # 1e-6 relative leaves room for a different but equally exact kernel.
    scale = expected.abs().max().clamp_min(1e-30)
    assert (got - expected).abs().max() <= 1e-6 * scale, (got - expected).abs().max()


# ------------------------------------------------------------------ real networks

@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


@pytest.mark.parametrize("model_name", ["efficientnet_lite0", "resnet18"])
def test_guided_and_deconvnet_match_the_reference(model_name, lite0, resnet18):
    model = lite0 if model_name == "efficientnet_lite0" else resnet18
    torch.manual_seed(3)
    x = torch.randn(2, 3, 224, 224)
    t = torch.tensor([7, 282])
    expected = {rule: rule_gradient(model, x, t, rule, reference=True) for rule in relu_rules.RULES}
    assert_same(methods.guided_backprop(model, x, t), expected["guided"])
    for rule in relu_rules.RULES:
        assert_same(rule_gradient(model, x, t, rule), expected[rule])
    # the rules really differ here, so the comparison above means something
    assert not torch.allclose(expected["guided"], expected["standard"])
    assert not torch.allclose(expected["guided"], expected["deconvnet"])
    # and nothing is left behind
    assert hooks.count_hooks(model) == 0
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_guided_backprop_with_create_graph_matches(resnet18):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 64, 64)
    t = torch.tensor([1, 2])
    expected = rule_gradient(resnet18, x, t, "guided", reference=True)
    assert_same(rule_gradient(resnet18, x, t, "guided", create_graph=True), expected)


# ------------------------------------------------------------------ every kind of ReLU

class EveryReLU(nn.Module):
    """Module ReLUs (in place, reused), ReLU6 and every functional spelling."""

    def __init__(self):
        super().__init__()
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6(inplace=True)
        self.scale = nn.Parameter(torch.tensor([1.0, -1.0, 0.5, 2.0, -3.0]))

    def forward(self, x):
        a = self.relu(x * self.scale)
        b = self.relu(x - 1)                       # the same module, a second time
        c = self.relu6(x * 3)
        d = F.relu(x + 0.5) + torch.relu(-x) + (x - 2).relu() + F.relu(x * 2, inplace=True)
        e = F.relu6(x * 4) + F.hardtanh(x * 2, 0.0, 3.0) + F.hardtanh(x, min_val=0.0, max_val=1.0)
        shared = F.relu(x - 0.5) + x           # one upstream gradient tensor for both terms
        return torch.stack([a, b, c, d, e]).sum(0) * self.scale + a * b + shared * self.scale


def test_every_relu_spelling_matches_the_reference_at_exact_zeros():
    net = EveryReLU()
    g = torch.Generator().manual_seed(5)
    # Integers and halves: many x exactly at 0 and at the ReLU6/hardtanh ceilings.
    x = torch.randint(-6, 7, (4, 5), generator=g).float() / 2
    upstream = torch.randint(-2, 3, (4, 5), generator=g).float()
    for rule in relu_rules.RULES:
        results = []
        for reference in (True, False):
            context = reference_rule(net, rule) if reference else relu_rules.relu_backward_rule(net, rule)
            xr = x.clone().requires_grad_(True)
            with context:
                out = net(xr)
            (grad,) = torch.autograd.grad(out, xr, upstream)   # after the block, as in use
            results.append(grad)
        assert torch.equal(results[1], results[0]), rule


def test_relu_straight_into_a_sum():
    # sum's backward hands the ReLU an expanded (stride 0) gradient
    x = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    with relu_rules.relu_backward_rule(nn.Sequential(nn.ReLU()), "guided"):
        y = F.relu(x)
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]


def test_functional_relu_on_a_leaf_and_on_ints():
    net = nn.Sequential(nn.ReLU())
    with relu_rules.relu_backward_rule(net, "guided"):
        x = torch.tensor([-1.0, 0.0, 2.0, 3.0], requires_grad=True)
        y = F.relu(x)
        counts = F.relu(torch.tensor([-2, 0, 5]))      # integer ReLU: values as usual
        net(x)
    y.backward(torch.tensor([1.0, 1.0, -1.0, 2.0]))
    assert x.grad.tolist() == [0.0, 0.0, 0.0, 2.0]
    assert counts.tolist() == [0, 0, 5]


# ------------------------------------------------------------------ the library guard

def test_the_rules_relu_refuses_exercise_code_however_it_is_reached():
    # Entered before the exercise runs, the rule must still refuse to compute for it:
    # through a replaced module, a functional ReLU, or the Function itself.
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    x = torch.randn(2, 3)
    for rule in relu_rules.RULES:
        with relu_rules.relu_backward_rule(net, rule):
            with library_copies_blocked("your code"):
                for call in (lambda: net(x), lambda: F.relu(x), lambda: F.relu6(x),
                             lambda: relu_rules._RuleReLU.apply(x, rule, None)):
                    with pytest.raises(LibraryCopyUsed, match="relu_rules._RuleReLU"):
                        call()
    assert torch.equal(F.relu(x), x.clamp_min(0))          # and outside, all is as usual


# ------------------------------------------------------------------ plain leaves, mode off

class Counting(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__name__", ""))
        return func(*args, **(kwargs or {}))


def test_plain_leaves_skip_only_the_rules_own_mode():
    # Convolutions and BatchNorms run without the rule's mode, but a mode of the caller's,
    # outside the block or inside it, still sees every call, and all is restored after.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = torch.randn(1, 3, 8, 8)
    with Counting() as outer, relu_rules.relu_backward_rule(net, "guided"):
        assert "forward" in net[0].__dict__
        net(x)
        with Counting() as inner:
            net(x)
    assert {"conv2d", "batch_norm"} <= set(outer.names) and {"conv2d", "batch_norm"} <= set(inner.names)
    assert not any("forward" in m.__dict__ for m in net.modules())


def test_a_copy_made_inside_the_block_uses_its_own_weights():
    import copy
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2)).eval()
    x = torch.randn(1, 3, 8, 8)
    with relu_rules.relu_backward_rule(net, "guided"), torch.no_grad():
        twin = copy.deepcopy(net)
        twin[0].weight.mul_(-1)
        assert torch.allclose(twin[0](x), F.conv2d(x, twin[0].weight, twin[0].bias))
        assert torch.allclose(net[0](x), F.conv2d(x, net[0].weight, net[0].bias))


def test_a_subclass_of_a_plain_leaf_is_not_trusted():
    class GeluConv(nn.Conv2d):
        def forward(self, x):
            return F.gelu(super().forward(x))
    net = nn.Sequential(GeluConv(3, 4, 3), nn.ReLU()).eval()
    with pytest.raises(ValueError, match="computes GELU"):
        with relu_rules.relu_backward_rule(net, "guided"):
            net(torch.randn(1, 3, 8, 8))
    assert not any("forward" in m.__dict__ for m in net.modules())
