"""Thread safety: several threads calling the helpers on one model at once get the same
answers as the same calls one after the other, and the model is left exactly as it was.

Every helper that changes a model's state holds that model's re-entrant lock
(``hooks.model_lock``) while it does. Without it, guided backprop's patched ReLUs leak into a
saliency map computed at the same time, one call's restore undoes another's eval mode (and
BatchNorm statistics change), and two Grad-CAMs steal each other's hooks.
"""
from __future__ import annotations

import gc
import threading
import weakref

import pytest
import torch
from torch import nn

from featviz_helpers import hooks, methods, metrics, models

from state_helpers import small_net, unchanged

THREADS = 4
ROUNDS = 6
X = torch.rand(3, 3, 16, 16) * 2 - 1
T = torch.tensor([1, 3, 4])
MAPS = torch.rand(3, 4, 4)

# Every CNN method of the catalogue (at layer "3", a conv of small_net), and a metric that
# runs the model.
CALLS = {method.name: (lambda m, method=method: method.example(m, X, T, "3"))
         for method in methods.CATALOGUE if method.architecture == "CNN"}
CALLS["deletion_auc"] = lambda m: metrics.deletion_auc(m, X, MAPS, T, steps=4)


def run_together(jobs):
    """Run each job ``ROUNDS`` times in its own thread, all starting at once; their results."""
    start = threading.Barrier(len(jobs))
    results = [None] * len(jobs)
    errors = []

    def work(i, job):
        start.wait()
        try:
            results[i] = [job() for _ in range(ROUNDS)]
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, job), daemon=True)
               for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)   # a guard against a deadlock, not a speed requirement
    assert not any(t.is_alive() for t in threads), "a thread is stuck: deadlock?"
    if errors:
        raise errors[0]
    return results


def assert_all_equal(results, expected):
    for rounds, want in zip(results, expected):
        for got in rounds:
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.fixture()
def net():
    net = small_net()      # train mode, BatchNorm, in-place ReLUs, one frozen parameter
    net.input_spec = models.SHAPES_SPEC      # the optimised images read their pixel range
    return net


def test_guided_backprop_beside_saliency(net):
    # The worst case: guided backprop patches the ReLUs while saliency runs.
    names = ["guided backprop", "saliency"] * (THREADS // 2)
    expected = [CALLS[n](net) for n in names]
    with unchanged(net):
        results = run_together([lambda n=n: CALLS[n](net) for n in names])
    assert_all_equal(results, expected)


def test_grad_cam_beside_grad_cam(net):
    layers = ["3", "4", "0", "5"]
    expected = [methods.grad_cam(net, X, T, layer) for layer in layers]
    with unchanged(net):
        results = run_together([lambda l=l: methods.grad_cam(net, X, T, l) for l in layers])
    assert_all_equal(results, expected)


def test_every_method_at_once_on_a_train_mode_model(net):
    assert net.training
    expected = [call(net) for call in CALLS.values()]
    with unchanged(net):      # mode, flags, BatchNorm statistics, hooks, patched forwards
        results = run_together([lambda c=c: c(net) for c in CALLS.values()])
    assert_all_equal(results, expected)


def test_a_call_that_raises_beside_one_that_works(net):
    # Thread 1's calls fail after their forward pass (class 7 of 5 is out of range); thread 2's
    # must still be right, and the model restored.
    expected = CALLS["guided backprop"](net)

    def failing():
        with pytest.raises(ValueError, match="out of range"):
            methods.grad_cam(net, X, 7, "3")
        return expected

    with unchanged(net):
        results = run_together([failing, lambda: CALLS["guided backprop"](net)])
    assert_all_equal(results, [expected, expected])


def test_nested_helpers_in_one_thread_do_not_deadlock(net):
    # capture inside preserved_state inside a method, in one thread, while another thread
    # waits for the same model: the lock is re-entrant.
    expected_gc = methods.grad_cam(net, X, T, "3")
    expected_sal = methods.saliency(net, X, T)

    def nested():
        with hooks.preserved_state(net), hooks.capture(net, "0") as cap:
            with torch.no_grad():
                net(X)
            result = methods.grad_cam(net, X, T, "3")
        assert cap.activations["0"].shape == (3, 8, 16, 16)
        return result

    with unchanged(net):
        results = run_together([nested, lambda: methods.saliency(net, X, T)])
    assert_all_equal(results, [expected_gc, expected_sal])


def test_own_code_is_safe_under_the_models_lock(net):
    # A plain input gradient of your own, computed while another thread runs guided backprop:
    # holding hooks.model_lock(model) keeps the patched ReLUs out of it.
    def plain_gradient():
        with hooks.model_lock(net), hooks.preserved_state(net), torch.enable_grad():
            x = X.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(methods.class_scores(net(x), T).sum(), x)
        return g

    expected = [plain_gradient(), CALLS["guided backprop"](net)]
    with unchanged(net):
        results = run_together([plain_gradient, lambda: CALLS["guided backprop"](net)])
    assert_all_equal(results, expected)


def test_one_lock_per_model_and_none_kept_alive():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    assert hooks.model_lock(a) is hooks.model_lock(a)
    assert hooks.model_lock(a) is not hooks.model_lock(b)
    gone = weakref.ref(a)
    del a
    gc.collect()
    assert gone() is None      # the lock table does not keep models alive
