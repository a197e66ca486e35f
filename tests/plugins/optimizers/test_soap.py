"""SOAP against the reference implementation's algorithm and pytorch_optimizer's ``SOAP``.

A small tanh network with square weight matrices (so every factor ``G G^T``, ``G^T G`` of the
first gradient has full rank and its eigenvectors are unique up to sign, which the update does
not depend on), gradients recomputed each step, two param groups, some grads ``None`` on some
steps. Both backends must equal, to 1e-10 in float64, the algorithm written here one parameter
at a time (eigen refreshes by power iteration + QR included), and, with every grad present,
pytorch_optimizer's ``SOAP``: to 1e-10 before its first QR refresh and to 1e-6 after it
(pytorch_optimizer runs the QR in float32, so its bases then carry float32 rounding).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import optiplug

from .trajectory import tanh_net_gradients

torch = pytest.importorskip("torch")

STEPS = 30
NAMES = ("w1", "b1", "w2", "b2")
GROUPS = (("w1", "b1"), ("w2", "b2"))
NO_GRAD = {"b1": {0, 1, 5}, "w2": {0, 3, 4}, "b2": {7}}
_DATA = np.random.default_rng(3)
X = _DATA.standard_normal((16, 4))
Y = _DATA.standard_normal((16, 4))
HYPER = {"lr": 2e-2, "betas": (0.9, 0.95), "shampoo_beta": 0.8, "eps": 1e-8,
         "weight_decay": 0.05, "precondition_frequency": 4}
OVERRIDES = {"lr": 5e-3, "weight_decay": 0.0}



def initial(dtype: Any = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {"w1": rng.standard_normal((4, 4)).astype(dtype),
            "b1": rng.standard_normal(4).astype(dtype),
            "w2": rng.standard_normal((4, 4)).astype(dtype),
            "b2": np.zeros(4, dtype)}


def gradients(params: dict[str, np.ndarray], step: int, *, drop: bool = True
              ) -> dict[str, Any]:
    """Gradients of a 2-layer tanh network's mean squared error, recomputed at ``params``;
    ``None`` where :data:`NO_GRAD` says."""
    return tanh_net_gradients(params, X, Y, step, NO_GRAD, drop)


def eigenbasis(factor: np.ndarray) -> np.ndarray:
    """Eigenvectors, largest eigenvalue first (LAPACK's choice within a repeated one)."""
    return np.linalg.eigh(factor + 1e-30 * np.eye(len(factor)))[1][:, ::-1]


def reference_soap(hp: dict[str, Any], p: np.ndarray, g: np.ndarray, s: dict[str, Any],
                   precondition_1d: bool) -> None:
    """The reference implementation's step for one parameter (matrices, or vectors as Adam)."""
    b1, b2 = hp["betas"]
    matrices = p.ndim == 2 or precondition_1d
    if not s:
        s.update(t=0, m=np.zeros_like(p), v=np.zeros_like(p))
        if matrices:
            s["L"] = (1 - hp["shampoo_beta"]) * (np.outer(g, g) if p.ndim == 1 else g @ g.T)
            qs = [eigenbasis(s["L"])]
            if p.ndim == 2:
                s["R"] = (1 - hp["shampoo_beta"]) * g.T @ g
                qs.append(eigenbasis(s["R"]))
            s["Q"] = qs
        return
    s["t"] += 1
    t = s["t"]

    def rotate(x: np.ndarray, back: bool = False) -> np.ndarray:
        if not matrices:
            return x
        if p.ndim == 1:
            return s["Q"][0] @ x if back else s["Q"][0].T @ x
        left, right = s["Q"]
        return left @ x @ right.T if back else left.T @ x @ right

    s["m"] = b1 * s["m"] + (1 - b1) * g
    s["v"] = b2 * s["v"] + (1 - b2) * rotate(g) ** 2
    direction = rotate(rotate(s["m"]) / (np.sqrt(s["v"]) + hp["eps"]), back=True)
    p -= hp["lr"] * math.sqrt(1 - b2**t) / (1 - b1**t) * direction
    p *= 1 - hp["lr"] * hp["weight_decay"]
    if not matrices:
        return
    beta = hp["shampoo_beta"]
    s["L"] = beta * s["L"] + (1 - beta) * (np.outer(g, g) if p.ndim == 1 else g @ g.T)
    factors = [s["L"]]
    if p.ndim == 2:
        s["R"] = beta * s["R"] + (1 - beta) * g.T @ g
        factors.append(s["R"])
    if t % hp["precondition_frequency"] == 0:
        for axis, factor in enumerate(factors):
            q = s["Q"][axis]
            power = factor @ q
            order = np.argsort(-np.diag(q.T @ power), kind="stable")
            s["v"] = np.take(s["v"], order, axis=axis)
            s["Q"][axis] = np.linalg.qr(power[:, order])[0]


def reference_run(precondition_1d: bool) -> list[dict[str, np.ndarray]]:
    params = initial()
    group_hp = [HYPER, {**HYPER, **OVERRIDES}]
    state: dict[str, dict[str, Any]] = {n: {} for n in NAMES}
    trajectory = []
    for step in range(STEPS):
        grads = gradients(params, step)
        for index, names in enumerate(GROUPS):
            for n in names:
                if grads[n] is not None:
                    reference_soap(group_hp[index], params[n], grads[n], state[n],
                                   precondition_1d)
        trajectory.append({n: a.copy() for n, a in params.items()})
    return trajectory


def groups(params: dict[str, Any], named: bool = True) -> list[dict[str, Any]]:
    pick = (lambda names: {n: params[n] for n in names}) if named else (
        lambda names: [params[n] for n in names])
    return [{"params": pick(GROUPS[0])}, {"params": pick(GROUPS[1]), **OVERRIDES}]


def run(backend: str, hyper: dict[str, Any], dtype: Any = np.float64, drop: bool = True
        ) -> list[dict[str, np.ndarray]]:
    trajectory = []
    if backend == "numpy":
        params = initial(dtype)
        opt = optiplug.optimizer("soap", groups(params), **hyper)
        for step in range(STEPS):
            opt.step({n: None if g is None else g.astype(dtype)
                      for n, g in gradients(params, step, drop=drop).items()})
            trajectory.append({n: a.copy() for n, a in params.items()})
        return trajectory
    tparams = {n: torch.nn.Parameter(torch.from_numpy(a)) for n, a in initial(dtype).items()}
    opt = optiplug.optimizer("soap", groups(tparams), **hyper)
    for step in range(STEPS):
        values = {n: t.detach().numpy() for n, t in tparams.items()}
        for n, g in gradients(values, step, drop=drop).items():
            tparams[n].grad = None if g is None else torch.from_numpy(g.astype(dtype))
        opt.step()
        trajectory.append({n: t.detach().numpy().copy() for n, t in tparams.items()})
    return trajectory


def assert_same(actual: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]],
                tolerance: float, label: str, steps: int = STEPS) -> None:
    for step in range(steps):
        for n in NAMES:
            np.testing.assert_allclose(actual[step][n], expected[step][n], rtol=tolerance,
                                       atol=tolerance, err_msg=f"{label}: {n} after step "
                                                               f"{step + 1}")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_soap_equals_the_reference_algorithm(backend: str) -> None:
    expected = reference_run(False)
    actual = run(backend, HYPER)
    assert not np.allclose(actual[-1]["w1"], initial()["w1"])
    assert_same(actual, expected, 1e-10, backend)


def test_preconditioned_vectors_follow_the_reference_algorithm() -> None:
    """``precondition_1d``: a vector's first factor ``g g^T`` has rank 1, so its eigenbasis
    within the null space is whatever LAPACK returns, and it moves with the last bit of the
    factor: the update is compared on the very same gradients (fixed, not recomputed) and the
    same LAPACK call, over two refreshes."""
    hyper = {**HYPER, "precondition_1d": True}
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(5) for _ in range(10)]
    expected, state = np.ones(5), {}
    actual = np.ones(5)
    opt = optiplug.optimizer("soap", {"b": actual}, **hyper)
    for step, grad in enumerate(grads):
        reference_soap(hyper, expected, grad, state, True)
        opt.step({"b": grad})
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-12,
                                   err_msg=f"after step {step + 1}")
    assert not np.allclose(actual, 1.0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_soap_matches_pytorch_optimizer(backend: str) -> None:
    """Every grad present: to rounding until the first QR refresh, then to float32's QR."""
    pto = pytest.importorskip("pytorch_optimizer")
    tparams = {n: torch.nn.Parameter(torch.from_numpy(a)) for n, a in initial().items()}
    reference = pto.SOAP(groups(tparams, named=False), **HYPER)
    expected = []
    for step in range(STEPS):
        values = {n: t.detach().numpy() for n, t in tparams.items()}
        for n, g in gradients(values, step, drop=False).items():
            tparams[n].grad = torch.from_numpy(g)
        reference.step()
        expected.append({n: t.detach().numpy().copy() for n, t in tparams.items()})
    actual = run(backend, HYPER, drop=False)
    # Step 1 builds the bases; the first refresh follows update 4, i.e. step 5.
    assert_same(actual, expected, 1e-10, "before the first refresh", steps=5)
    assert_same(actual, expected, 1e-6, "after refreshes")


def test_float32_backends_agree() -> None:
    assert_same(run("numpy", HYPER, np.float32), run("torch", HYPER, np.float32), 1e-5,
                "float32")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_soap_refuses_tensors_of_more_than_four_dimensions(backend: str) -> None:
    shape = (2, 2, 2, 2, 2)
    params = ({"w": np.zeros(shape)} if backend == "numpy" else
              {"w": torch.nn.Parameter(torch.zeros(shape))})
    with pytest.raises(ValueError, match="at most 4 dimensions"):
        optiplug.optimizer("soap", params)


def test_soap_bad_config_is_a_config_error_with_a_path() -> None:
    with pytest.raises(optiplug.ConfigError, match="precondition_frequency"):
        optiplug.to_spec({"name": "soap", "precondition_frequency": 0}, kind="optimizer")


# ------------------------------------------------ torch: batched equals one tensor at a time
BATCH_SHAPES = {"a0": (4, 5), "a1": (4, 5), "a2": (4, 5), "v0": (5,), "v1": (5,),
                "c0": (3, 2, 4), "c1": (3, 2, 4), "wide0": (6, 5), "wide1": (6, 5),
                "b0": (4, 5), "b1": (4, 5), "u0": (3,), "u1": (3,)}
BATCH_GROUPS = (("a0", "a1", "a2", "v0", "v1", "c0", "c1", "wide0", "wide1"),
                ("b0", "b1", "u0", "u1"))
BATCH_HYPER = {**HYPER, "precondition_frequency": 3, "max_precondition_dim": 5}
BATCH_OVERRIDES = {"lr": 1e-2, "weight_decay": 0.0, "shampoo_beta": 0.7,
                   "precondition_1d": True}
BATCH_NO_GRAD = {"a1": {0, 4}, "v1": {2}, "c1": {1, 5}, "wide1": {6}, "b1": {3}, "u1": {0}}


@pytest.mark.parametrize("batch_numel", [None, 40])
def test_soap_batches_equal_one_tensor_at_a_time(batch_numel: int | None,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The torch backend stacks the parameters of a group that share shape and step count
    (in batches of at most ``SOAP_BATCH_NUMEL`` elements): in float64, over 10 steps and
    three refreshes, with grads sometimes ``None`` (so step counts part), vectors, 3-D
    tensors, an axis too long to precondition and preconditioned vectors, it moves every
    parameter and state tensor as one optimizer per parameter does (batches of one)."""
    from optiplug.plugins.optimizers import catalogue_torch

    if batch_numel is not None:  # a bucket of three (4, 5) matrices: batches of 2 and 1
        monkeypatch.setattr(catalogue_torch, "SOAP_BATCH_NUMEL", batch_numel)
    rng = np.random.default_rng(11)
    start = {n: rng.standard_normal(shape) for n, shape in BATCH_SHAPES.items()}
    grads = [{n: None if step in BATCH_NO_GRAD.get(n, ()) else rng.standard_normal(shape)
              for n, shape in BATCH_SHAPES.items()} for step in range(10)]
    batched = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in start.items()}
    single = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in start.items()}
    together = optiplug.optimizer(
        "soap", [{"params": {n: batched[n] for n in BATCH_GROUPS[0]}},
                 {"params": {n: batched[n] for n in BATCH_GROUPS[1]}, **BATCH_OVERRIDES}],
        **BATCH_HYPER)
    alone = {n: optiplug.optimizer("soap", {n: single[n]},
                                   **{**BATCH_HYPER, **(BATCH_OVERRIDES if n in BATCH_GROUPS[1]
                                                        else {})})
             for n in BATCH_SHAPES}
    for step, step_grads in enumerate(grads):
        for n, g in step_grads.items():
            batched[n].grad = None if g is None else torch.from_numpy(g.copy())
            single[n].grad = None if g is None else torch.from_numpy(g.copy())
        together.step()
        for opt in alone.values():
            opt.step()
        for n in BATCH_SHAPES:
            np.testing.assert_allclose(batched[n].detach().numpy(), single[n].detach().numpy(),
                                       rtol=1e-12, atol=1e-12, err_msg=f"{n} after {step + 1}")
    for n in BATCH_SHAPES:
        expected = alone[n].state[single[n]]
        actual = together.state[batched[n]]
        assert sorted(actual) == sorted(expected), n
        for key, value in expected.items():
            np.testing.assert_allclose(np.asarray(actual[key]), np.asarray(value), rtol=1e-12,
                                       atol=1e-12, err_msg=f"{n}: state {key}")
    assert not np.allclose(batched["c0"].detach().numpy(), start["c0"])
    assert together.state[batched["a1"]]["step"] == 8
