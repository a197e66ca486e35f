"""Yogi and SGDW against their formulas and pytorch_optimizer.

The setup of :mod:`.test_paper_optimizers`: a small tanh network whose gradients are recomputed
from the current parameters every step, two param groups (the second with its own lr and
weight decay), some gradients ``None`` on some steps. Each trajectory must equal, to 1e-12 in
float64, the update written here from the formula one parameter at a time, and, with every
gradient present, pytorch_optimizer's implementation to 1e-10.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import optiplug

from .test_paper_optimizers import (
    GROUPS,
    NAMES,
    STEPS,
    as_numpy,
    as_torch,
    assert_trajectories,
    gradients,
    initial,
    numpy_groups,
    set_grads,
    torch_groups,
)

torch = pytest.importorskip("torch")

Array = np.ndarray


def yogi_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    if t == 1:
        s["m"] = np.full_like(p, hp["initial_accumulator"])
        s["v"] = np.full_like(p, hp["initial_accumulator"])
    if hp.get("decoupled", True):
        p *= 1 - hp["lr"] * hp["weight_decay"]
    else:
        g = g + hp["weight_decay"] * p
    b1, b2 = hp["betas"]
    s["m"] = b1 * s["m"] + (1 - b1) * g
    s["v"] = s["v"] - (1 - b2) * np.sign(s["v"] - g * g) * g * g
    m_hat = s["m"] / (1 - b1**t)
    p -= hp["lr"] * m_hat / (np.sqrt(s["v"]) / np.sqrt(1 - b2**t) + hp["eps"])


def sgdw_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    p *= 1 - hp["lr"] * hp["weight_decay"]
    mu = hp["momentum"]
    if mu:
        s["b"] = g.copy() if t == 1 else mu * s["b"] + (1 - hp.get("dampening", 0.0)) * g
        g = g + mu * s["b"] if hp.get("nesterov", False) else s["b"]
    p -= hp["lr"] * g


Rule = Callable[[dict[str, Any], Array, Array, dict[str, Any], int], None]
CASES: dict[str, tuple[Rule, dict[str, Any], dict[str, Any], Callable[..., Any]]] = {
    "yogi": (yogi_rule, {"lr": 2e-2, "betas": (0.85, 0.99), "eps": 1e-3,
                         "initial_accumulator": 1e-6, "weight_decay": 0.1},
             {"lr": 5e-3, "weight_decay": 0.0},
             lambda pto, groups, hp: pto.Yogi(groups, weight_decouple=True, **hp)),
    "sgdw": (sgdw_rule, {"lr": 5e-2, "momentum": 0.8, "dampening": 0.1, "weight_decay": 0.2},
             {"lr": 2e-2, "weight_decay": 0.0},
             lambda pto, groups, hp: pto.SGDW(groups, weight_decouple=True, **hp)),
}
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("yogi", {}), ("yogi", {"decoupled": False}), ("sgdw", {}),
    ("sgdw", {"nesterov": True, "dampening": 0.0}), ("sgdw", {"momentum": 0.0}),
]


def reference_run(name: str, hyper: dict[str, Any], overrides: dict[str, Any],
                  steps: int = STEPS) -> list[dict[str, Array]]:
    rule = CASES[name][0]
    params = initial()
    group_hp = [hyper, {**hyper, **overrides}]
    state: dict[str, dict[str, Any]] = {n: {} for n in NAMES}
    counts = dict.fromkeys(NAMES, 0)
    trajectory = []
    for step in range(steps):
        grads = gradients(params, step)
        for index, names in enumerate(GROUPS):
            for n in names:
                if grads[n] is None:
                    continue
                counts[n] += 1
                rule(group_hp[index], params[n], grads[n], state[n], counts[n])
        trajectory.append({n: a.copy() for n, a in params.items()})
    return trajectory


def run(backend: str, name: str, hyper: dict[str, Any], overrides: dict[str, Any],
        dtype: Any = np.float64) -> list[dict[str, Array]]:
    trajectory = []
    if backend == "numpy":
        params = initial(dtype)
        opt = optiplug.optimizer(name, numpy_groups(params, overrides), **hyper)
        for step in range(STEPS):
            opt.step({n: None if g is None else g.astype(dtype)
                      for n, g in gradients(params, step).items()})
            trajectory.append({n: a.copy() for n, a in params.items()})
        return trajectory
    tparams = as_torch(initial(dtype))
    opt = optiplug.optimizer(name, torch_groups(tparams, overrides), **hyper)
    for step in range(STEPS):
        for n, g in gradients(as_numpy(tparams), step).items():
            tparams[n].grad = None if g is None else torch.from_numpy(g.astype(dtype))
        opt.step()
        trajectory.append(as_numpy(tparams))
    return trajectory


def _variant_id(variant: tuple[str, dict[str, Any]]) -> str:
    name, extra = variant
    return name + "".join(f"-{k}={v}" for k, v in extra.items())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("variant", VARIANTS, ids=[_variant_id(v) for v in VARIANTS])
def test_trajectory_equals_the_papers_formula(variant: tuple[str, dict[str, Any]],
                                              backend: str) -> None:
    name, extra = variant
    _, hyper, overrides, _ = CASES[name]
    hyper = {**hyper, **extra}
    expected = reference_run(name, hyper, overrides)
    actual = run(backend, name, hyper, overrides)
    assert not np.allclose(actual[-1]["w1"], initial()["w1"])
    assert_trajectories(actual, expected, rtol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_backend_matches_pytorch_optimizer(name: str) -> None:
    """Every grad present (pytorch_optimizer counts steps per group): same trajectory."""
    pto = pytest.importorskip("pytorch_optimizer")
    _, hyper, overrides, make = CASES[name]
    ours = as_torch(initial())
    theirs = as_torch(initial())
    opt = optiplug.optimizer(name, torch_groups(ours, overrides), **hyper)
    reference = make(pto, torch_groups(theirs, overrides, named=False), dict(hyper))
    for step in range(STEPS):
        set_grads(ours, step, drop=False)
        set_grads(theirs, step, drop=False)
        opt.step()
        reference.step()
        for n in NAMES:
            np.testing.assert_allclose(ours[n].detach().numpy(), theirs[n].detach().numpy(),
                                       rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name}: parameter {n} after step {step + 1}")


@pytest.mark.parametrize("name", list(CASES))
def test_float32_backends_agree(name: str) -> None:
    _, hyper, overrides, _ = CASES[name]
    numpy_run = run("numpy", name, hyper, overrides, np.float32)
    torch_run = run("torch", name, hyper, overrides, np.float32)
    assert numpy_run[-1]["w1"].dtype == np.float32
    assert_trajectories(numpy_run, torch_run, rtol=1e-5)


def test_bad_hyperparameters_are_config_errors_with_a_path() -> None:
    with pytest.raises(optiplug.ConfigError, match="betas"):
        optiplug.to_spec({"name": "yogi", "betas": [0.9, 1.5]}, kind="optimizer")
    with pytest.raises(optiplug.ConfigError, match="nesterov"):
        optiplug.to_spec({"name": "sgdw", "nesterov": True, "momentum": 0.0},
                         kind="optimizer")
