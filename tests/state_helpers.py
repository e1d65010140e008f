"""Helpers for the tests that a call leaves a model exactly as it was (fault matrix, threads,
devices): one snapshot of a model's state, from ``featviz_helpers.hooks.model_state``."""
from __future__ import annotations

import contextlib
import re

import pytest
import torch
from torch import nn

from featviz_helpers import hooks


@contextlib.contextmanager
def unchanged(*nets: nn.Module):
    """Assert that the body leaves every model in ``nets`` exactly as it was."""
    before = [hooks.model_state(net) for net in nets]
    yield
    for net, state in zip(nets, before):
        changes = hooks.state_changes(state, hooks.model_state(net))
        assert not changes, f"{type(net).__name__}: {changes}"


def assert_refused(call, error, problem: str, fix: str, nets=()):
    """``call()`` raises ``error`` whose message matches ``problem`` and ``fix`` (regexes, case
    insensitive), and leaves ``nets`` as they were. Returns the message."""
    with unchanged(*nets):
        with pytest.raises(error) as info:
            call()
    message = str(info.value)
    assert re.search(problem, message, re.I | re.S), f"problem not named: {message}"
    assert re.search(fix, message, re.I | re.S), f"no fix given: {message}"
    assert "weights_only=False" not in message
    return message


def small_net() -> nn.Module:
    """A small conv → BN → in-place ReLU stack with a GAP → FC head (CAM works on it), in
    train mode, with one parameter frozen: a method must restore exactly this."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    net.train()
    net[0].bias.requires_grad_(False)
    return net
