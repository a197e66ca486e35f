"""Lifecycle hooks: a real step-logger plugin sees every step on both backends; unused hooks
attach nothing to step()."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug

STEP_LOGGER = '''
import optiplug

EVENTS = []

@optiplug.hookimpl
def optiplug_built(technique, spec, backend, obj):
    EVENTS.append(("built", technique.kind, technique.name, backend))

@optiplug.hookimpl
def optiplug_before_step(optimizer, backend):
    EVENTS.append(("before", backend, float(optimizer.param_groups[0]["lr"])))
    optimizer.param_groups[0]["lr"] = 0.5  # hooks may adjust the optimizer

@optiplug.hookimpl
def optiplug_after_step(optimizer, backend):
    EVENTS.append(("after", backend, float(optimizer.param_groups[0]["lr"])))
'''


def make_params(backend: str):
    if backend == "torch":
        weight = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        weight.grad = torch.full_like(weight, 2.0)
        return [weight], lambda: weight.detach().numpy(), None
    weight = np.ones(3)
    return {"w": weight}, lambda: weight, {"w": np.full(3, 2.0)}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_step_logger_plugin_sees_and_adjusts_every_step(make_dist, fresh_registry, backend):
    make_dist("step-logger", "0.2", entry_points={"step_logger": "step_logger"},
              modules={"step_logger": STEP_LOGGER})
    registry = fresh_registry()
    import step_logger

    params, value, grads = make_params(backend)
    opt = optiplug.build({"kind": "optimizer", "name": "sgd", "lr": 0.1}, params=params,
                         registry=registry)
    for _ in range(2):
        opt.step(grads) if grads is not None else opt.step()
    expected = [("built", "optimizer", "sgd", backend),
                ("before", backend, 0.1), ("after", backend, 0.5),
                ("before", backend, 0.5), ("after", backend, 0.5)]
    assert expected == step_logger.EVENTS
    # the hook's lr of 0.5 was used by both steps: 1 - 2 * (0.5 * 2)
    np.testing.assert_allclose(value(), np.full(3, -1.0), rtol=0, atol=1e-15)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_without_hook_implementations_nothing_is_attached_to_step(fresh_registry, backend):
    registry = fresh_registry()
    params, _, _ = make_params(backend)
    opt = optiplug.build({"kind": "optimizer", "name": "sgd", "lr": 0.1}, params=params,
                         registry=registry)
    assert not registry.hook.optiplug_before_step.get_hookimpls()
    if backend == "torch":
        pre, post = opt._optimizer_step_pre_hooks, opt._optimizer_step_post_hooks
    else:
        pre, post = opt._step_pre_hooks, opt._step_post_hooks
    assert len(pre) == 0 and len(post) == 0
