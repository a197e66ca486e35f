"""Lion against the paper's update rule written out in plain Python, on both backends."""

from __future__ import annotations

import math

import numpy as np
import optiplug
import pytest


def reference_lion(p: list[float], grads: list[list[float]], lr: float, beta1: float,
                   beta2: float, weight_decay: float) -> list[float]:
    """Algorithm 2 of Chen et al. 2023, one float at a time."""
    p, m = list(p), [0.0] * len(p)
    for g in grads:
        for i, gi in enumerate(g):
            c = beta1 * m[i] + (1 - beta1) * gi
            p[i] = p[i] * (1 - lr * weight_decay) - lr * math.copysign(1.0, c) * (c != 0)
            m[i] = beta2 * m[i] + (1 - beta2) * gi
    return p


def gradients(steps: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((steps, size))


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_numpy_matches_the_reference_rule(weight_decay: float) -> None:
    grads = gradients(15, 9)
    start = np.linspace(-1, 1, 9)
    param = start.copy()
    opt = optiplug.optimizer("lion_extras", [param], lr=0.01, betas=(0.8, 0.95),
                             weight_decay=weight_decay)
    for g in grads:
        opt.step([g])
    expected = reference_lion(list(start), grads.tolist(), 0.01, 0.8, 0.95, weight_decay)
    np.testing.assert_allclose(param, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_lion_torch_matches_the_reference_rule(weight_decay: float) -> None:
    torch = pytest.importorskip("torch")
    grads = gradients(15, 9)
    start = np.linspace(-1, 1, 9)
    param = torch.nn.Parameter(torch.tensor(start))
    opt = optiplug.optimizer("lion_extras", [param], lr=0.01, betas=(0.8, 0.95),
                             weight_decay=weight_decay)
    assert isinstance(opt, torch.optim.Optimizer)
    for g in grads:
        param.grad = torch.tensor(g)
        opt.step()
    expected = reference_lion(list(start), grads.tolist(), 0.01, 0.8, 0.95, weight_decay)
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=1e-12, atol=1e-15)


def test_lion_torch_per_tensor_path_equals_foreach_path() -> None:
    torch = pytest.importorskip("torch")
    from optiplug_extras._torch_lion import Lion

    grads = gradients(10, 12)
    results = []
    for foreach in (True, False):
        params = [torch.nn.Parameter(torch.ones(5)), torch.nn.Parameter(torch.ones(7))]
        opt = Lion(params, lr=0.1, weight_decay=0.01, foreach=foreach)
        for g in grads:
            params[0].grad = torch.tensor(g[:5], dtype=torch.float32)
            params[1].grad = torch.tensor(g[5:], dtype=torch.float32)
            opt.step()
        results.append(torch.cat([p.detach() for p in params]))
    assert torch.equal(results[0], results[1])


def test_lion_steps_every_coordinate_by_exactly_lr() -> None:
    param = np.zeros(1000)
    opt = optiplug.optimizer("lion_extras", {"w": param}, lr=0.5)
    opt.step({"w": np.random.default_rng(1).standard_normal(1000)})
    np.testing.assert_array_equal(np.abs(param), 0.5)


def test_lion_rejects_a_beta_of_one_in_config() -> None:
    with pytest.raises(optiplug.ConfigError, match=r"betas\.0"):
        optiplug.build({"kind": "optimizer", "name": "lion_extras", "betas": [1.0, 0.99]},
                       params=[np.zeros(2)])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_lion_gets_param_group_rules_from_the_public_spec_base(backend: str) -> None:
    grads = gradients(6, 5)
    start = np.linspace(-1, 1, 5)
    params, step = _named(backend, {"w": start[:3], "b": start[3:]})
    opt = optiplug.build({"kind": "optimizer", "name": "lion_extras", "lr": 0.01,
                          "weight_decay": 0.5,
                          "param_groups": [{"match": "b", "lr": 0.1, "weight_decay": 0.0}]},
                         params=params)
    for g in grads:
        step(opt, {"w": g[:3], "b": g[3:]})
    got = _values(params)
    w = reference_lion(list(start[:3]), grads[:, :3].tolist(), 0.01, 0.9, 0.99, 0.5)
    b = reference_lion(list(start[3:]), grads[:, 3:].tolist(), 0.1, 0.9, 0.99, 0.0)
    np.testing.assert_allclose(got["w"], w, rtol=1e-12)
    np.testing.assert_allclose(got["b"], b, rtol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_lion_skips_a_nonfinite_step_by_the_public_policy(backend: str) -> None:
    start = np.linspace(-1, 1, 4)
    params, step = _named(backend, {"w": start})
    opt = optiplug.build({"kind": "optimizer", "name": "lion_extras", "lr": 0.1,
                          "nonfinite": "skip"}, params=params)
    step(opt, {"w": np.array([1.0, np.nan, 1.0, 1.0])})
    np.testing.assert_array_equal(_values(params)["w"], start)
    assert opt.skipped_steps == 1
    step(opt, {"w": np.ones(4)})
    np.testing.assert_allclose(_values(params)["w"], start - 0.1, rtol=1e-15)
    raising = optiplug.build({"kind": "optimizer", "name": "lion_extras", "nonfinite": "raise"},
                             params=params)
    with pytest.raises(optiplug.NonfiniteGradientError, match="'w'"):
        step(raising, {"w": np.array([np.inf, 0.0, 0.0, 0.0])})


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_lion_state_loads_by_parameter_name_after_reordering(backend: str) -> None:
    grads = gradients(4, 5)
    start = np.linspace(-1, 1, 5)
    params, step = _named(backend, {"w": start[:3], "b": start[3:]})
    opt = optiplug.optimizer("lion_extras", params, lr=0.01)
    for g in grads[:2]:
        step(opt, {"w": g[:3], "b": g[3:]})
    saved = opt.state_dict()
    current = _values(params)
    copies, step_copies = _named(backend, {"b": current["b"], "w": current["w"]})
    again = optiplug.optimizer("lion_extras", copies, lr=0.01)
    again.load_state_dict(saved)
    for g in grads[2:]:
        step_copies(again, {"w": g[:3], "b": g[3:]})
    expected = reference_lion(list(start), grads.tolist(), 0.01, 0.9, 0.99, 0.0)
    resumed = _values(copies)
    np.testing.assert_allclose(np.concatenate([resumed["w"], resumed["b"]]), expected,
                               rtol=1e-12)


def _named(backend: str, values: dict[str, np.ndarray]) -> tuple[dict[str, object], object]:
    """Float64 parameters by name on ``backend`` and a ``step(opt, grads)`` for them."""
    if backend == "numpy":
        params = {name: value.copy() for name, value in values.items()}

        def step_numpy(opt: object, grads: dict[str, np.ndarray]) -> None:
            opt.step(dict(grads))  # type: ignore[attr-defined]

        return params, step_numpy
    torch = pytest.importorskip("torch")
    tensors = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in values.items()}

    def step_torch(opt: object, grads: dict[str, np.ndarray]) -> None:
        for name, grad in grads.items():
            tensors[name].grad = torch.tensor(grad)
        opt.step()  # type: ignore[attr-defined]

    return tensors, step_torch


def _values(params: dict[str, object]) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() if hasattr(value, "detach") else value.copy()
            for name, value in params.items()}
