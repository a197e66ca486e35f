"""Paper-defined optimizers (lion, lamb, lars, adan, adopt, adabelief) against their formulas.

Each optimizer runs on both backends over a small tanh network whose gradients are recomputed
from the current parameters every step, in two param groups (the second with its own lr and
weight decay), with some gradients ``None`` on some steps (the first ones included). The
trajectory must equal, to 1e-12 in float64, a direct implementation of the paper's update
written here from the formulas (independent of the plugin code, one parameter at a time), and,
with every gradient present, pytorch_optimizer's implementation with its flags set to the same
conventions (see each plugin's docstring for the conventions that differ).
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import optiplug

from . import trajectory
from .trajectory import as_numpy, as_torch, split_groups, tanh_net_gradients

torch = pytest.importorskip("torch")

Array = np.ndarray
STEPS = 30
NAMES = ("w1", "b1", "w2", "b2")
GROUPS = (("w1", "b1"), ("w2", "b2"))
# Steps at which a parameter has no gradient (its grad is None): the first steps included.
NO_GRAD = {"b1": {0, 1, 5}, "w2": {0, 3, 4}, "b2": {7}}



def initial(dtype: Any = np.float64) -> dict[str, Array]:
    rng = np.random.default_rng(7)
    # w1's norm is above 10, so LAMB's weight-norm clip is exercised.
    return {"w1": (5.0 * rng.standard_normal((5, 3))).astype(dtype),
            "b1": rng.standard_normal(5).astype(dtype),
            "w2": rng.standard_normal((2, 5)).astype(dtype),
            "b2": np.zeros(2, dtype)}


_DATA = np.random.default_rng(3)
X = _DATA.standard_normal((16, 3))
Y = _DATA.standard_normal((16, 2))


def gradients(params: dict[str, np.ndarray], step: int, *, drop: bool = True
              ) -> dict[str, Any]:
    """Gradients of a 2-layer tanh network's mean squared error, recomputed at ``params``;
    ``None`` where :data:`NO_GRAD` says."""
    return tanh_net_gradients(params, X, Y, step, NO_GRAD, drop)


# ------------------------------------------------------------------ reference formulas
Rule = Callable[[dict[str, Any], Array, Array, dict[str, Any], int], None]


def lion_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    b1, b2 = hp["betas"]
    m = s.setdefault("m", np.zeros_like(p))
    c = b1 * m + (1 - b1) * g
    p *= 1 - hp["lr"] * hp["weight_decay"]
    p -= hp["lr"] * np.sign(c)
    s["m"] = b2 * m + (1 - b2) * g


def lamb_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    b1, b2 = hp["betas"]
    m = s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    v = s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    if hp.get("bias_correction", True):
        m, v = m / (1 - b1**t), v / (1 - b2**t)
    r = m / (np.sqrt(v) + hp["eps"]) + hp["weight_decay"] * p
    weight_norm = math.sqrt(float(np.sum(p * p)))
    if hp.get("max_weight_norm") is not None:
        weight_norm = min(weight_norm, hp["max_weight_norm"])
    r_norm = math.sqrt(float(np.sum(r * r)))
    ratio = weight_norm / r_norm if weight_norm > 0 and r_norm > 0 else 1.0
    p -= hp["lr"] * ratio * r


def lars_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    v = s.get("v", 0.0)
    if p.ndim <= 1 and hp.get("exclude_1d", True):
        s["v"] = hp["momentum"] * v + hp["lr"] * g
    else:
        beta = hp["weight_decay"]
        weight_norm = math.sqrt(float(np.sum(p * p)))
        denominator = math.sqrt(float(np.sum(g * g))) + beta * weight_norm
        local = (hp["trust_coefficient"] * weight_norm / denominator
                 if weight_norm > 0 and denominator > 0 else 1.0)
        s["v"] = hp["momentum"] * v + hp["lr"] * local * (g + beta * p)
    p -= s["v"]


def adan_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    # The paper's Algorithm 1 in its own betas (beta_i = 1 - b_i of the official code).
    beta1, beta2, beta3 = (1 - b for b in hp["betas"])
    d = g - s.get("g_prev", g)
    m = s["m"] = (1 - beta1) * s.get("m", 0.0) + beta1 * g
    v = s["v"] = (1 - beta2) * s.get("v", 0.0) + beta2 * d
    n = s["n"] = (1 - beta3) * s.get("n", 0.0) + beta3 * (g + (1 - beta2) * d) ** 2
    m_hat = m / (1 - (1 - beta1) ** t)
    v_hat = v / (1 - (1 - beta2) ** t)
    n_hat = n / (1 - (1 - beta3) ** t)
    eta = hp["lr"] / (np.sqrt(n_hat) + hp["eps"])
    p[...] = (p - eta * (m_hat + (1 - beta2) * v_hat)) / (1 + hp["lr"] * hp["weight_decay"])
    s["g_prev"] = g.copy()


def adopt_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    b1, b2 = hp["betas"]
    decoupled = hp.get("decoupled", False)
    if not decoupled:
        g = g + hp["weight_decay"] * p
    if t == 1:
        s["v"], s["m"] = g * g, np.zeros_like(p)
        return
    if decoupled:
        p *= 1 - hp["lr"] * hp["weight_decay"]
    u = g / np.maximum(np.sqrt(s["v"]), hp["eps"])
    exponent = hp.get("clip_exponent", 0.25)
    if exponent is not None:
        u = np.clip(u, -((t - 1) ** exponent), (t - 1) ** exponent)
    s["m"] = b1 * s["m"] + (1 - b1) * u
    p -= hp["lr"] * s["m"]
    s["v"] = b2 * s["v"] + (1 - b2) * g * g


def adabelief_rule(hp: dict[str, Any], p: Array, g: Array, s: dict[str, Any], t: int) -> None:
    b1, b2 = hp["betas"]
    if hp.get("decoupled", True):
        p *= 1 - hp["lr"] * hp["weight_decay"]
    else:
        g = g + hp["weight_decay"] * p
    m = s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    v = s["s"] = b2 * s.get("s", 0.0) + (1 - b2) * (g - m) ** 2 + hp["eps"]
    p -= hp["lr"] * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + hp["eps"])


# name -> (rule, hyperparameters of group 0, overrides of group 1, pytorch_optimizer builder)
CASES: dict[str, tuple[Rule, dict[str, Any], dict[str, Any], Callable[..., Any]]] = {
    "lion": (lion_rule, {"lr": 3e-3, "betas": (0.8, 0.95), "weight_decay": 0.3},
             {"lr": 1e-3, "weight_decay": 0.0},
             lambda pto, groups, hp: pto.Lion(groups, **hp)),
    "lamb": (lamb_rule, {"lr": 2e-2, "betas": (0.85, 0.99), "eps": 1e-6, "weight_decay": 0.05,
                         "max_weight_norm": 10.0},
             {"lr": 5e-3, "weight_decay": 0.0},
             lambda pto, groups, hp: pto.Lamb(groups, weight_decouple=False, adam_debias=True,
                                         **hp)),
    "lars": (lars_rule, {"lr": 0.5, "momentum": 0.8, "weight_decay": 1e-2,
                         "trust_coefficient": 0.02},
             {"lr": 0.2, "weight_decay": 0.0},
             lambda pto, groups, hp: pto.LARS(groups, **hp)),
    "adan": (adan_rule, {"lr": 1e-2, "betas": (0.9, 0.85, 0.95), "eps": 1e-8,
                         "weight_decay": 0.02},
             {"lr": 4e-3, "weight_decay": 0.0},
             lambda pto, groups, hp: pto.Adan(groups, weight_decouple=False, max_grad_norm=0.0,
                                         **hp)),
    "adopt": (adopt_rule, {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6,
                           "weight_decay": 0.01},
              {"lr": 3e-3, "weight_decay": 0.0},
              lambda pto, groups, hp: pto.ADOPT(groups, weight_decouple=False,
                                           clip_lambda=lambda t: (t - 1) ** 0.25, **hp)),
    "adabelief": (adabelief_rule, {"lr": 1e-2, "betas": (0.85, 0.99), "eps": 1e-12,
                                   "weight_decay": 0.1},
                  {"lr": 3e-3, "weight_decay": 0.0},
                  lambda pto, groups, hp: pto.AdaBelief(groups, weight_decouple=True, rectify=False,
                                                   **hp)),
}
# Options that select another variant of the rule, each run as its own case.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("lion", {}), ("lamb", {}), ("lamb", {"bias_correction": False, "max_weight_norm": None}),
    ("lars", {}), ("lars", {"exclude_1d": False}), ("adan", {}), ("adopt", {}),
    ("adopt", {"decoupled": True, "clip_exponent": None}), ("adabelief", {}),
    ("adabelief", {"decoupled": False}),
]


def reference_run(name: str, hyper: dict[str, Any], overrides: dict[str, Any],
                  drop: bool = True, steps: int = STEPS) -> list[dict[str, Array]]:
    """The trajectory of the reference rule, one parameter at a time, in float64."""
    rule = CASES[name][0]
    params = initial()
    group_hp = [hyper, {**hyper, **overrides}]
    state: dict[str, dict[str, Any]] = {n: {} for n in NAMES}
    counts = dict.fromkeys(NAMES, 0)
    trajectory = []
    for step in range(steps):
        grads = gradients(params, step, drop=drop)
        for index, names in enumerate(GROUPS):
            for n in names:
                if grads[n] is None:
                    continue
                counts[n] += 1
                rule(group_hp[index], params[n], grads[n], state[n], counts[n])
        trajectory.append({n: a.copy() for n, a in params.items()})
    return trajectory


def numpy_groups(params: dict[str, Array], overrides: dict[str, Any]) -> list[dict[str, Any]]:
    return split_groups(params, GROUPS, overrides)


def torch_groups(params: dict[str, Any], overrides: dict[str, Any],
                 named: bool = True) -> list[dict[str, Any]]:
    return split_groups(params, GROUPS, overrides, named)


def set_grads(params: dict[str, Any], step: int, drop: bool = True) -> None:
    trajectory.set_grads(params, gradients(as_numpy(params), step, drop=drop), np.float64)


def numpy_run(name: str, hyper: dict[str, Any], overrides: dict[str, Any],
              steps: int = STEPS) -> list[dict[str, Array]]:
    params = initial()
    opt = optiplug.optimizer(name, numpy_groups(params, overrides), **hyper)
    trajectory = []
    for step in range(steps):
        opt.step(gradients(params, step))
        trajectory.append({n: a.copy() for n, a in params.items()})
    return trajectory


def torch_run(name: str, hyper: dict[str, Any], overrides: dict[str, Any],
              steps: int = STEPS) -> list[dict[str, Array]]:
    params = as_torch(initial())
    opt = optiplug.optimizer(name, torch_groups(params, overrides), **hyper)
    trajectory = []
    for step in range(steps):
        set_grads(params, step)
        opt.step()
        trajectory.append(as_numpy(params))
    return trajectory


def assert_trajectories(actual: list[dict[str, Array]], expected: list[dict[str, Array]],
                        rtol: float) -> None:
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for n in NAMES:
            np.testing.assert_allclose(got[n], want[n], rtol=rtol, atol=rtol,
                                       err_msg=f"parameter {n} after step {step + 1}")


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
    run = numpy_run if backend == "numpy" else torch_run
    actual = run(name, hyper, overrides)
    # The parameters move: a rule that did nothing would not pass by accident.
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
    theirs_hp = {k: v for k, v in hyper.items()
                 if k not in ("max_weight_norm", "bias_correction")}
    if name == "lamb":
        # pytorch_optimizer: no bias correction of v, eps also in the ratio, ||p|| clipped at 10.
        opt = optiplug.optimizer(name, torch_groups(ours, overrides),
                                 **{**hyper, "bias_correction": False, "eps": 1e-13})
        theirs_hp["eps"] = 1e-13
    reference = make(pto, torch_groups(theirs, overrides, named=False), theirs_hp)
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
    start = initial(np.float32)
    numpy_params = {n: a.copy() for n, a in start.items()}
    numpy_opt = optiplug.optimizer(name, numpy_groups(numpy_params, overrides), **hyper)
    torch_p = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in start.items()}
    torch_opt = optiplug.optimizer(name, torch_groups(torch_p, overrides), **hyper)
    for step in range(10):
        grads = gradients(numpy_params, step)
        numpy_opt.step({n: None if g is None else g.astype(np.float32)
                        for n, g in grads.items()})
        for n, g in gradients(as_numpy(torch_p), step).items():
            torch_p[n].grad = None if g is None else torch.from_numpy(g.astype(np.float32))
        torch_opt.step()
    for n in NAMES:
        assert numpy_params[n].dtype == np.float32
        np.testing.assert_allclose(numpy_params[n], torch_p[n].detach().numpy(), rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_resumes_the_trajectory(name: str, backend: str) -> None:
    """Save after 6 steps (some params not yet stepped), pickle, load into a new optimizer over
    copies of the parameters: the next steps equal the uninterrupted run's."""
    _, hyper, overrides, _ = CASES[name]
    expected = reference_run(name, hyper, overrides, steps=12)
    if backend == "numpy":
        params = initial()
        opt = optiplug.optimizer(name, numpy_groups(params, overrides), **hyper)
        for step in range(6):
            opt.step(gradients(params, step))
        saved = pickle.loads(pickle.dumps(opt.state_dict()))
        params = {n: a.copy() for n, a in params.items()}
        resumed = optiplug.optimizer(name, numpy_groups(params, overrides), **hyper)
        resumed.load_state_dict(saved)
        for step in range(6, 12):
            resumed.step(gradients(params, step))
        final = params
    else:
        tparams = as_torch(initial())
        opt = optiplug.optimizer(name, torch_groups(tparams, overrides), **hyper)
        for step in range(6):
            set_grads(tparams, step)
            opt.step()
        saved = pickle.loads(pickle.dumps(opt.state_dict()))
        tparams = as_torch(as_numpy(tparams))
        resumed = optiplug.optimizer(name, torch_groups(tparams, overrides), **hyper)
        resumed.load_state_dict(saved)
        for step in range(6, 12):
            set_grads(tparams, step)
            resumed.step()
        final = as_numpy(tparams)
    for n in NAMES:
        np.testing.assert_allclose(final[n], expected[-1][n], rtol=1e-12, atol=1e-12)


def test_numpy_whole_tensor_optimizers_thread_and_match_one_thread() -> None:
    """Large whole-tensor updates (LAMB) dealt out to threads give the single-thread numbers."""
    rng = np.random.default_rng(0)
    shapes = [(300, 400), (1000,), (200, 700), (50,)]
    start = [rng.standard_normal(s) for s in shapes]
    grads = [rng.standard_normal(s) for s in shapes]
    results = []
    for threads in (1, 4):
        params = [a.copy() for a in start]
        opt = optiplug.build({"kind": "optimizer", "name": "lamb", "weight_decay": 0.01},
                             params=params)
        opt.threads = threads
        opt.parallel_threshold = 1
        for _ in range(3):
            opt.step(grads)
        results.append(params)
    for one, many in zip(*results, strict=True):
        np.testing.assert_array_equal(one, many)
    single = [a.copy() for a in start]
    state: dict[str, Any] = {}
    for t in range(1, 4):
        for i, (p, g) in enumerate(zip(single, grads, strict=True)):
            lamb_rule({"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-6, "weight_decay": 0.01},
                      p, g, state.setdefault(str(i), {}), t)
    for got, want in zip(results[0], single, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config, path", [
    ({"name": "lamb", "max_weight_norm": 0.0}, "max_weight_norm"),
    ({"name": "adan", "betas": [0.9, 0.9]}, "betas"),
    ({"name": "lars", "momentum": 1.0}, "momentum"),
    ({"name": "adopt", "clip_exponent": -1.0}, "clip_exponent"),
    ({"name": "lion", "weight_decay": -0.1}, "weight_decay"),
])
def test_invalid_hyperparameters_are_config_errors_with_the_path(config: dict[str, Any],
                                                                path: str) -> None:
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.build({"kind": "optimizer", **config}, backend="numpy",
                       params=[np.zeros(3)])
    assert path in str(info.value)
