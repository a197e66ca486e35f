"""The fused NumPy kernels (numba) give the same bits as the pure-NumPy ufunc chains."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, kernel_engine

from ...plugins.optimizers.optimizer_cases import GRID

FUSED = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adadelta", "adam", "adamw")
CASES = [(name, hyper) for name in FUSED for hyper in GRID[name]]
needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                 reason="numba is not installed (pip install 'optiplug[fast]')")


def _layout(dtype: type[np.floating[Any]]) -> dict[str, NDArray[Any]]:
    # One array cut into blocks and split between two threads by the ufunc path, and small
    # ones packed into one bucket.
    rng = np.random.default_rng(0)
    shapes = {"big": (300, 1000), "a": (30, 7), "b": (7,), "c": (64,), "d": (5, 5)}
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in shapes.items()}


def _run(name: str, hyper: dict[str, Any], engine: str, dtype: type[np.floating[Any]],
         monkeypatch: pytest.MonkeyPatch) -> tuple[NumpyOptimizer, dict[str, NDArray[Any]]]:
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
    params = _layout(dtype)
    opt = optiplug.optimizer(name, params, backend="numpy", lr=0.01, **hyper)
    assert opt.kernels == engine
    opt.threads = 2
    rng = np.random.default_rng(1)
    for step in range(4):
        grads = {n: rng.standard_normal(p.shape).astype(dtype) for n, p in params.items()}
        if step == 2:
            grads["b"][3] = np.nan  # NaN propagates the same way (np.maximum for AMSGrad)
            grads["big"][5, 5] = np.inf
        opt.step(grads)
    return opt, params


@needs_numba
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN step, on purpose
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[n + "".join(f"-{k}={v}" for k, v in h.items())
                                             for n, h in CASES])
def test_fused_kernel_gives_the_bits_of_the_ufunc_path(
        case: tuple[str, dict[str, Any]], dtype: type[np.floating[Any]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    name, hyper = case
    fused, fused_params = _run(name, hyper, "numba", dtype, monkeypatch)
    plain, plain_params = _run(name, hyper, "numpy", dtype, monkeypatch)
    for key, value in plain_params.items():
        assert fused_params[key].dtype == value.dtype
        np.testing.assert_array_equal(fused_params[key], value, strict=True, err_msg=key)
        for state_key, state in plain.state[key].items():
            np.testing.assert_array_equal(fused.state[key][state_key], state,
                                          err_msg=f"{key}.{state_key}")


@needs_numba
def test_subclass_that_overrides_update_does_not_inherit_the_fused_kernel(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "numba")
    adam = type(optiplug.optimizer("adam", {"x": np.zeros(3)}, backend="numpy"))

    class SignAdam(adam):  # type: ignore[misc, valid-type]
        def update(self, param: Any, grad: Any, state: Any, scratch: Any, scalars: Any) -> None:
            super().update(param, np.sign(grad), state, scratch, scalars)

    x = np.ones(4)
    opt = SignAdam({"x": x}, lr=0.1)
    assert opt.kernels == "numpy"
    opt.step({"x": np.array([3.0, -2.0, 0.5, 0.0])})
    # Adam's first step moves by lr * sign(m): here m has the sign of sign(grad).
    np.testing.assert_allclose(x, [0.9, 1.1, 0.9, 1.0], rtol=1e-6)


def test_engine_switch_rejects_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "cuda")
    with pytest.raises(optiplug.ConfigError, match=r"OPTIPLUG_NUMPY_KERNELS='cuda'.*numba, numpy"):
        optiplug.optimizer("adam", {"x": np.zeros(3)}, backend="numpy")
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "numpy")
    assert kernel_engine() == "numpy"


def test_numba_forced_without_numba_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    kernels = sys.modules["optiplug.backends._numpy_kernels"]
    monkeypatch.setattr(kernels, "_numba_available", False)  # as if numba were not installed
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "numba")
    with pytest.raises(optiplug.ConfigError, match=r"numba is not installed: pip install "
                                                   r"'optiplug\[fast\]'"):
        optiplug.optimizer("adam", {"x": np.zeros(3)}, backend="numpy")
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "auto")
    assert optiplug.optimizer("adam", {"x": np.zeros(3)}, backend="numpy").kernels == "numpy"


def test_import_and_build_compile_nothing_and_keep_the_cache_out_of_the_package(
        tmp_path: Any) -> None:
    code = ("import sys, numpy as np, optiplug\n"
            "opt = optiplug.optimizer('adam', {'x': np.zeros(3, np.float32)}, backend='numpy')\n"
            "print('numba' in sys.modules)\n"
            "from optiplug.backends.numpy import kernel_cache_dir\n"
            "print(kernel_cache_dir())\n")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["False", str(tmp_path / "optiplug" / "numba")]


@pytest.mark.parametrize("engine", ["numba", "numpy"])
def test_reused_step_plan_follows_gradients_that_change_in_place_or_are_replaced(
        engine: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if engine == "numba" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed")
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
    rng = np.random.default_rng(3)
    start = {f"p{i}": rng.standard_normal(size).astype(np.float32)
             for i, size in enumerate([50, 7, 3000, 40_000, 12])}
    reused = {n: p.copy() for n, p in start.items()}
    fresh = {n: p.copy() for n, p in start.items()}
    held = optiplug.optimizer("adam", reused, backend="numpy", lr=0.01, amsgrad=True)
    reference = optiplug.optimizer("adam", fresh, backend="numpy", lr=0.01, amsgrad=True)
    grads: dict[str, Any] = {n: np.zeros_like(p) for n, p in start.items()}
    for step in range(8):
        for grad in grads.values() if isinstance(grads, dict) else grads:
            if grad is not None:  # a backward pass writing in place
                grad[...] = rng.standard_normal(grad.shape)
        if step == 3:
            grads["p2"] = None  # frozen for a step: the plan must not step it
        if step == 4:
            grads["p2"] = rng.standard_normal(3000).astype(np.float32)  # a new array
        if step == 5:
            held.load_state_dict(reference.state_dict())
        if step == 6:
            grads = list(grads.values())  # the same arrays, as a list
        held.step(grads)
        reference.step({n: None if g is None else g.copy() for n, g in zip(
            start, grads.values() if isinstance(grads, dict) else grads, strict=True)})
        if step in (2, 7):
            assert held._plan is not None, step
    for name in start:
        np.testing.assert_array_equal(reused[name], fresh[name], strict=True)
        assert held.state[name]["step"] == reference.state[name]["step"]
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            np.testing.assert_array_equal(held.state[name][key], reference.state[name][key])
    assert held.state["p2"]["step"] == 7


def _sum_of_squares(values: NDArray[Any]) -> float:
    total = 0.0
    for i in range(values.size):
        value = np.float64(values[i])  # float() of a float32 stays float32 in numba
        total += value * value
    return total


@needs_numba
def test_a_reassociated_kernel_sums_like_an_exact_sum_and_keeps_its_flag_when_pickled() -> None:
    import math
    import pickle

    from optiplug.backends.numpy import FusedKernel, fused_kernel

    plain = fused_kernel(_sum_of_squares)
    loose = fused_kernel(reassociate=True)(_sum_of_squares)
    assert isinstance(loose, FusedKernel) and loose.reassociate and not plain.reassociate
    values = np.random.default_rng(0).standard_normal(100_003).astype(np.float32)
    exact = math.fsum(float(v) * float(v) for v in values)  # float32 squares are exact
    assert plain.compiled(values) == _sum_of_squares(values)  # in order: the same bits
    assert math.isclose(loose.compiled(values), exact, rel_tol=1e-13)
    copy = pickle.loads(pickle.dumps(loose))
    assert copy.reassociate and copy.compiled(values) == loose.compiled(values)


def _halve(values: NDArray[Any], factor: Any) -> None:
    for i in range(values.size):
        values[i] = values[i] * factor


def _normalize(values: NDArray[Any]) -> float:
    total = _loose_sum_of_squares(values)  # a fused kernel of this module: its dispatcher
    _exact_scale(values, values.dtype.type(1.0 / np.sqrt(total)))
    return total


def _foreign_sum(values: NDArray[Any]) -> float:
    return lars_sums_kernel(values, values)[0]  # noqa: F821 (bound in the test below)


@needs_numba
def test_a_kernel_calls_fused_kernels_of_its_module_each_with_its_own_flags() -> None:
    import math

    from optiplug.backends.numpy import fused_kernel

    global _loose_sum_of_squares, _exact_scale
    _loose_sum_of_squares = fused_kernel(reassociate=True)(_sum_of_squares)
    _exact_scale = fused_kernel(_halve)
    normalize = fused_kernel(_normalize)
    values = np.random.default_rng(1).standard_normal(10_001)
    squares = math.fsum(values * values)
    expected = values / np.sqrt(squares)
    assert math.isclose(normalize.compiled(values), squares, rel_tol=1e-13)
    np.testing.assert_allclose(values, expected, rtol=1e-13)
    # The helpers keep their own flags: the sum is reassociated, the scaling is not.
    assert _loose_sum_of_squares.reassociate and not _exact_scale.reassociate


@needs_numba
def test_a_kernel_that_calls_a_fused_kernel_of_another_module_is_a_clear_error() -> None:
    from optiplug.backends.numpy import fused_kernel
    from optiplug.plugins.optimizers.lars import lars_sums_kernel

    global_names = globals()
    global_names["lars_sums_kernel"] = lars_sums_kernel
    try:
        with pytest.raises(TypeError, match=r"own module only.*define the helper in"):
            fused_kernel(_foreign_sum).compiled(np.ones(3))
    finally:
        del global_names["lars_sums_kernel"]


def test_a_driver_key_follows_the_helpers_a_kernel_calls() -> None:
    # A driver compiled on a kernel embeds the kernel's helpers: an edited helper must give a
    # new key (a new driver module) even where the kernel's own bytecode is unchanged.
    import types

    def module(helper_body: str) -> Any:
        namespace = types.ModuleType("optiplug_test_helpers")
        exec("from optiplug.backends.numpy import fused_kernel\n"
             "@fused_kernel\n"
             "def helper(values):\n"
             f"    {helper_body}\n"
             "@fused_kernel\n"
             "def kernel(values):\n"
             "    helper(values)\n", namespace.__dict__)
        return namespace

    first = module("values[0] = 1.0").kernel
    again = module("values[0] = 1.0").kernel
    edited = module("values[0] = 2.0").kernel
    assert first.code_parts() == again.code_parts()
    assert first.code_parts() != edited.code_parts()
    assert first.__wrapped__.__code__.co_code == edited.__wrapped__.__code__.co_code
