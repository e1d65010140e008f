"""No route from exercise code to the library's implementations earns points: every library
copy refuses inside the checks, however it is reached, and the plumbing students may use
still works there."""
from __future__ import annotations

import concurrent.futures
import importlib
import inspect

import pytest
import torch

from featviz_helpers import checks, hooks, library_guard, methods, relu_rules, viz
from featviz_helpers.library_guard import LibraryCopyUsed, library_copies_blocked

from state_helpers import small_net

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
T = torch.tensor([1, 3])


@pytest.fixture()
def net():
    return small_net().eval()


def test_no_library_copy_keeps_an_unguarded_body():
    copies = [getattr(methods, n) for n in methods.__all__
              if library_guard.is_library_copy(getattr(methods, n))]
    copies += [relu_rules.relu_backward_rule, viz.normalize_filters]
    assert len(copies) > 20
    for fn in copies:
        body = inspect.unwrap(fn)
        assert "refuse_if_blocked" in body.__code__.co_names, fn.__name__
        assert not hasattr(methods, "_" + fn.__name__)


def test_marking_a_function_without_the_guard_is_refused():
    with pytest.raises(TypeError, match="does not call refuse_if_blocked"):
        @library_guard.library_copy
        def unguarded(x):
            return x


ROUTES = {
    "the public copy": lambda net: methods.saliency(net, X, T),
    "its module's copy": lambda net: methods.gradients.saliency(net, X, T),
    "__wrapped__, if any": lambda net: getattr(methods.saliency, "__wrapped__",
                                               methods.saliency)(net, X, T),
    "inspect.unwrap": lambda net: inspect.unwrap(methods.smoothgrad)(net, X, T, 2),
    "a closure cell, if any": lambda net: (
        methods.integrated_gradients.__closure__[0].cell_contents
        if methods.integrated_gradients.__closure__ else methods.integrated_gradients)(
            net, X, T, None, 2),
    "a reloaded module": lambda net: importlib.reload(methods.gradients).saliency(net, X, T),
    "a reloaded guard": lambda net: (importlib.reload(library_guard),
                                     methods.saliency(net, X, T)),
    "Grad-CAM's seam": lambda net: methods.layer_activations_and_gradients(net, X, T, "3"),
    "Grad-CAM's weights": lambda net: methods.grad_cam_weights(torch.rand(2, 3, 4, 4)),
    "the ReLU rule's ReLU": lambda net: relu_rules._rule_relu(X, "guided", None),
    "the ReLU rule's backward hook": lambda net: relu_rules._keep_positive((X,), (X,)),
    "the ReLU rule's autograd function": lambda net: relu_rules._RuleReLU.apply(X, "guided", None),
    "the ReLU rule's mode": lambda net: relu_rules._RuleOverride("guided").relu(X, None),
    "the ReLU rule as a context": lambda net: relu_rules.relu_backward_rule(net).__enter__(),
    "occlusion's masked forward passes": lambda net: methods.masked_probabilities(
        net, X, torch.zeros(1, 8, 8, dtype=torch.bool), T),
    "occlusion's windows": lambda net: methods.occlusion_masks(8, 8, 4, 2),
    "filter normalisation": lambda net: viz.normalize_filters(torch.rand(2, 3, 3, 3)),
    "rollout": lambda net: methods.attention_rollout(torch.rand(1, 1, 1, 3, 3)),
    "another thread": lambda net: concurrent.futures.ThreadPoolExecutor(1).submit(
        methods.saliency, net, X, T).result(),
}


@pytest.mark.parametrize("route", ROUTES)
def test_every_route_is_refused_inside_an_exercise(net, route):
    def my_method(model):
        return ROUTES[route](model)

    with pytest.raises(LibraryCopyUsed, match=r"your my_method called the library copy"):
        checks.run_exercise(my_method, net)
    methods.saliency(net, X, T)                      # outside, everything works as before


def test_the_checks_reference_answers_are_refused_too(net):
    from featviz_helpers.checks import vit_attention

    def my_vit_attention(model):
        return vit_attention._mha_reference(model, X)

    with pytest.raises(LibraryCopyUsed, match="_mha_reference"):
        checks.run_exercise(my_vit_attention, net)


def test_switching_the_guard_off_is_refused_and_undone(net):
    def my_saliency(model):
        library_guard._state.exercise = None
        return methods.saliency(model, X, T)

    with pytest.raises(LibraryCopyUsed, match="switched off or replaced the library guard"):
        checks.run_exercise(my_saliency, net)
    with library_copies_blocked("probe"), pytest.raises(LibraryCopyUsed):
        methods.saliency(net, X, T)


def test_replacing_the_guard_is_refused_and_undone(net):
    original = methods.gradients.refuse_if_blocked

    def my_saliency(model):
        methods.gradients.refuse_if_blocked = lambda *args: None
        return methods.saliency(model, X, T)

    with pytest.raises(LibraryCopyUsed, match="switched off or replaced the library guard"):
        checks.run_exercise(my_saliency, net)
    assert methods.gradients.refuse_if_blocked is original


def test_plumbing_still_works_inside_an_exercise(net):
    def my_saliency(model, x, target):
        with hooks.preserved_state(model), hooks.capture(model, "3") as cap:
            x = x.clone().requires_grad_(True)
            scores = model(x).gather(1, target[:, None]).sum()
            (g,) = torch.autograd.grad(scores, x)
        assert cap.activations["3"].shape == (2, 8, 8, 8)
        return g.abs().amax(1)

    got = checks.run_exercise(my_saliency, net, X, T)
    assert torch.allclose(got, methods.saliency(net, X, T))
