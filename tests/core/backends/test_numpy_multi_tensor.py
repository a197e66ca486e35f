"""The fused path's multi-tensor drivers: one compiled call per run of tensors and thread.

Every test compares the numba path bit for bit with the pure-NumPy ufunc path, over layouts
like a network's (hundreds of tensors of mixed sizes in several groups, float32 and float64),
with the gradients written in place as backward passes do, so the step plan is reused and its
drivers run, and with parameters that miss their gradient on some steps.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel

from ...plugins.optimizers.optimizer_cases import GRID

FUSED = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw")
CASES = [(name, hyper) for name in FUSED for hyper in GRID[name]]
pytestmark = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                reason="numba is not installed (pip install 'optiplug[fast]')")


def _network(seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, NDArray[Any]]]:
    """A float64 group and two float32 groups: 240 tensors from 1 to 900 elements (state
    packed into buckets) and three larger ones; the threads' shares meet in the first."""
    rng = np.random.default_rng(seed)
    params: dict[str, NDArray[Any]] = {}
    groups: list[dict[str, Any]] = []
    for index, (dtype, count, extra) in enumerate([(np.float64, 120, 70_000),
                                                   (np.float32, 60, 5_000),
                                                   (np.float32, 60, 9_000)]):
        sizes = [*rng.integers(1, 900, count).tolist(), extra]
        rng.shuffle(sizes)
        names = []
        for position, size in enumerate(sizes):
            name = f"g{index}.{position}"
            params[name] = rng.standard_normal(size).astype(dtype)
            names.append(name)
        groups.append({"params": [(name, params[name]) for name in names]})
    groups[1]["lr"] = 0.003  # another group's scalars
    return groups, params


def _train(name: str, hyper: dict[str, Any], engine: str, monkeypatch: pytest.MonkeyPatch
           ) -> tuple[NumpyOptimizer, dict[str, NDArray[Any]], int]:
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
    groups, params = _network()
    opt = optiplug.optimizer(name, groups, backend="numpy", lr=0.01, **hyper)
    assert opt.kernels == engine
    opt.threads = 2
    opt.parallel_threshold = 1000  # type: ignore[misc]  # split between threads at this size
    rng = np.random.default_rng(1)
    grads: dict[str, NDArray[Any] | None] = {n: np.zeros_like(p) for n, p in params.items()}
    frozen = list(params)[::7]
    driven = 0
    for step in range(7):
        for grad in grads.values():
            if grad is not None:  # a backward pass writing in place
                grad[...] = rng.standard_normal(grad.shape)
        if step == 3:
            for key in frozen:  # no gradient this step: their step counts fall behind
                grads[key] = None
        if step == 4:
            for key in frozen:
                grads[key] = np.asarray(rng.standard_normal(params[key].shape), params[key].dtype)
        if step == 5:
            grads["g0.3"][0] = np.nan  # type: ignore[index]  # propagates the same way
        opt.step(grads)
        plan = opt._plan
        driven += bool(plan is not None and plan.schedule and plan.schedule[0] is not None)
    return opt, params, driven


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN step, on purpose
@pytest.mark.parametrize("case", CASES, ids=[n + "".join(f"-{k}={v}" for k, v in h.items())
                                             for n, h in CASES])
def test_multi_tensor_drivers_give_the_bits_of_the_ufunc_path(
        case: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    name, hyper = case
    fused, fused_params, driven = _train(name, hyper, "numba", monkeypatch)
    plain, plain_params, _ = _train(name, hyper, "numpy", monkeypatch)
    # Steps 1-2 and 5-6 reuse a plan (the drivers run); 0, 3 and 4 see new gradient sets.
    assert driven == 4
    for key, value in plain_params.items():
        np.testing.assert_array_equal(fused_params[key], value, strict=True, err_msg=key)
        assert fused.state[key]["step"] == plain.state[key]["step"]
        for state_key, state in plain.state[key].items():
            np.testing.assert_array_equal(fused.state[key][state_key], state,
                                          err_msg=f"{key}.{state_key}")
    assert fused.state["g0.0"]["step"] == 6 and fused.state["g0.1"]["step"] == 7


class _ScaledSign(NumpyOptimizer):
    """A third-party technique: ``p -= lr * (g + decay * p)`` with a state of the last step,
    its kernel written once with the public ``fused_kernel``."""

    state_keys = ("last",)

    def __init__(self, params: Any, lr: float = 0.1, decay: float = 0.0, **options: Any
                 ) -> None:
        super().__init__(params, {"lr": lr, "decay": decay}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return (-group["lr"], group["decay"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, decay = scalars
        _scaled_kernel(param, grad, state[0], decay, neg_lr, True)  # reordered, a constant

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, decay = scalars
        np.multiply(param, decay, out=scratch[0])
        np.add(scratch[0], grad, out=scratch[0])
        np.multiply(scratch[0], neg_lr, out=state[0])
        np.add(param, state[0], out=param)


class _DoubledStep(_ScaledSign):
    """Computes with a scalar before the kernel: not recordable, so called per tensor."""

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, decay = scalars
        _scaled_kernel(param, grad, state[0], decay, neg_lr * 2, True)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        super().update(param, grad, state, scratch, (scalars[0] * 2, scalars[1]))


@fused_kernel
def _scaled_kernel(param: NDArray[Any], grad: NDArray[Any], last: NDArray[Any], decay: Any,
                   neg_lr: Any, write: bool) -> None:
    for i in range(param.size):
        p = param[i]
        step = (p * decay + grad[i]) * neg_lr
        if write:
            last[i] = step
        param[i] = p + step


@pytest.mark.parametrize("cls", [_ScaledSign, _DoubledStep])
def test_a_third_party_fused_kernel_runs_driven_or_per_tensor_with_the_same_bits(
        cls: type[_ScaledSign], monkeypatch: pytest.MonkeyPatch) -> None:
    results = {}
    for engine in ("numba", "numpy"):
        monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
        rng = np.random.default_rng(5)
        params = {f"p{i}": rng.standard_normal(size).astype(np.float32)
                  for i, size in enumerate([3, 4000, 17, 300_000, 1])}
        grads = {name: np.zeros_like(p) for name, p in params.items()}
        opt = cls([{"params": params, "decay": 0.01}], lr=0.05)
        assert opt.kernels == engine
        for _ in range(4):
            for grad in grads.values():
                grad[...] = rng.standard_normal(grad.shape)
            opt.step(grads)
        plan = opt._plan
        assert plan is not None
        if engine == "numba":
            # The recordable technique runs on its driver; the other one per tensor.
            assert (plan.schedule[0] is not None) == (cls is _ScaledSign)
        results[engine] = (params, opt.state)
    (fused, fused_state), (plain, plain_state) = results["numba"], results["numpy"]
    for name, value in plain.items():
        np.testing.assert_array_equal(fused[name], value, strict=True)
        np.testing.assert_array_equal(fused_state[name]["last"], plain_state[name]["last"])


def test_drivers_are_generated_into_the_kernel_cache_and_loaded_from_it_by_a_later_process(
        tmp_path: Any, cold_then_warm: Any) -> None:
    code = ("import os, sys, numpy as np, optiplug\n"
            "params = {str(i): np.ones(n, np.float32) for i, n in enumerate([5, 3000, 70])}\n"
            "grads = {k: np.full_like(p, 0.5) for k, p in params.items()}\n"
            "opt = optiplug.optimizer('adagrad', params, backend='numpy', lr=0.1)\n"
            "opt.step(grads); opt.step(grads); opt.step(grads)\n"
            "driver = opt._plan.schedule[0].workers[0][0][1]\n"
            "print(sum(driver.stats.cache_hits.values()), params['1'][0])\n")
    runs = cold_then_warm(code)
    # Adagrad from 1 with g = 0.5: p -= 0.1 * 0.5 / sqrt(0.25 k) at steps k = 1, 2, 3.
    expected = np.float32(1)
    for k in (1, 2, 3):
        expected -= np.float32(0.1) * np.float32(0.5) / (
            np.sqrt(np.float32(0.25) * np.float32(k)) + np.float32(1e-10))
    assert [run[0] for run in runs] == ["0", "1"]  # compiled once, then loaded
    assert all(float(run[1]) == pytest.approx(float(expected), rel=1e-6) for run in runs)
    drivers = list((tmp_path / "optiplug" / "numba" / "drivers").glob("optiplug_driver_*.py"))
    assert len(drivers) == 1
    package = os.path.dirname(optiplug.__file__)
    assert not any("optiplug_driver" in name for _, _, names in os.walk(package)
                   for name in names)


def test_a_gradient_of_another_dtype_keeps_the_per_tensor_calls_and_their_numbers(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "numba")
    rng = np.random.default_rng(2)
    start = {"w": rng.standard_normal(3000).astype(np.float32),
             "b": rng.standard_normal(40).astype(np.float32)}
    results = []
    for drivers in (True, False):
        params = {name: p.copy() for name, p in start.items()}
        grads = {name: np.zeros(p.shape, np.float64) for name, p in params.items()}
        opt = optiplug.optimizer("adam", params, backend="numpy", lr=0.01)
        opt.fused_drivers = drivers
        noise = np.random.default_rng(3)
        for _ in range(4):
            for grad in grads.values():
                grad[...] = noise.standard_normal(grad.shape)
            opt.step(grads)
        assert opt._plan is not None and opt._plan.schedule == ([None] if drivers else [])
        results.append(params)
    for name in start:
        np.testing.assert_array_equal(results[0][name], results[1][name], strict=True)
    # Adam's formula in float64 on the same gradients.
    noise = np.random.default_rng(3)
    reference = {name: p.astype(np.float64) for name, p in start.items()}
    moments = {name: (np.zeros(p.shape), np.zeros(p.shape)) for name, p in start.items()}
    for t in range(1, 5):
        for name, p in reference.items():
            g = noise.standard_normal(p.shape)
            m, v = moments[name]
            m[...] = 0.9 * m + 0.1 * g
            v[...] = 0.999 * v + 0.001 * g * g
            p -= 0.01 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    for name in start:
        np.testing.assert_allclose(results[0][name], reference[name], rtol=1e-5, atol=1e-6)


def test_changing_threads_between_steps_deals_the_elements_again_with_the_same_bits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    results = []
    for engine in ("numba", "numpy"):
        monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
        rng = np.random.default_rng(4)
        params = {f"p{i}": rng.standard_normal(size).astype(np.float32)
                  for i, size in enumerate([2000, 30, 50_000, 900])}
        grads = {name: np.zeros_like(p) for name, p in params.items()}
        opt = optiplug.optimizer("rmsprop", params, backend="numpy", lr=0.01, momentum=0.9)
        opt.parallel_threshold = 1000  # type: ignore[misc]
        workers = []
        for threads in (1, 1, 2, 2, 3, 1):
            opt.threads = threads
            for grad in grads.values():
                grad[...] = rng.standard_normal(grad.shape)
            opt.step(grads)
            schedule = opt._plan.schedule[0] if opt._plan and opt._plan.schedule else None
            workers.append(0 if schedule is None else len(schedule.workers))
        if engine == "numba":
            assert workers == [0, 1, 2, 2, 3, 1]
        results.append(params)
    for name, value in results[1].items():
        np.testing.assert_array_equal(results[0][name], value, strict=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_gradients_are_found_on_the_drivers_path_as_per_tensor(
        dtype: type[np.floating[Any]], bad: float, monkeypatch: pytest.MonkeyPatch) -> None:
    finals = []
    for engine in ("numba", "numpy"):
        monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
        rng = np.random.default_rng(6)
        params = {f"p{i}": rng.standard_normal(size).astype(dtype)
                  for i, size in enumerate([700, 3, 40_000, 5, 1200])}
        grads = {name: np.zeros_like(p) for name, p in params.items()}
        skipping = optiplug.optimizer("adam", params, backend="numpy", lr=0.01,
                                      nonfinite="skip")
        for step in range(6):
            for grad in grads.values():
                grad[...] = rng.standard_normal(grad.shape)
            if step in (3, 5):
                grads["p2"][39_999 - step] = bad  # the last elements: past the vector loop
            if step == 4:
                grads["p3"][4] = bad
            skipping.step(grads)
        assert skipping.skipped_steps == 3
        assert skipping.state["p0"]["step"] == 3
        if engine == "numba":
            plan = skipping._plan
            assert plan is not None and plan.schedule[0] is not None  # the drivers ran
            raising = optiplug.optimizer("adam", {n: p.copy() for n, p in params.items()},
                                         backend="numpy", nonfinite="raise")
            grads["p2"][:] = 0.5
            for _ in range(2):
                raising.step(grads)
            group = raising.param_groups[0]
            before = [p.copy() for p in group["params"]]
            grads["p4"][0] = bad
            with pytest.raises(optiplug.NonfiniteGradientError, match="'p4'"):
                raising.step(grads)
            for p, saved in zip(group["params"], before, strict=True):
                np.testing.assert_array_equal(p, saved)  # nothing half-changed
        finals.append(params)
    for name, value in finals[1].items():
        np.testing.assert_array_equal(finals[0][name], value, strict=True)

