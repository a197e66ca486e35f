"""Every optimizer on both backends follows torch.optim's trajectory for 200 steps."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import optiplug

from .optimizer_cases import (
    GRID,
    TOLERANCE,
    assert_close,
    initial,
    numpy_grads,
    numpy_groups,
    set_torch_grads,
    torch_groups,
    torch_params,
    torch_reference,
)

STEPS = 200
# Every case on both NumPy kernel engines (see conftest.py): the fused path and the fallback.
pytestmark = pytest.mark.usefixtures("numpy_kernels")


CASES = [(name, hyper) for name, grid in GRID.items() for hyper in grid]


def _case_id(case: tuple[str, dict[str, Any]]) -> str:
    name, hyper = case
    return name + "".join(f"-{k}={v}" for k, v in hyper.items())


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_optimizer_matches_torch_trajectory_on_both_backends(
        case: tuple[str, dict[str, Any]], dtype: type[np.floating[Any]]) -> None:
    name, hyper = case
    maximize = bool(hyper.get("maximize", False))
    tolerance = TOLERANCE[dtype]
    start = initial(dtype)

    reference_params = torch_params(start)
    reference = torch_reference(name, torch_groups(reference_params, name, named=False), hyper)
    torch_backend_params = torch_params(start)
    torch_backend = optiplug.optimizer(name, torch_groups(torch_backend_params, name),
                                       **hyper)
    numpy_params = {n: a.copy() for n, a in start.items()}
    numpy_backend = optiplug.optimizer(name, numpy_groups(numpy_params, name), **hyper)

    assert type(numpy_backend).optiplug_backend == "numpy"
    assert isinstance(torch_backend, type(reference))
    for step in range(1, STEPS + 1):
        set_torch_grads(reference_params, maximize, dtype, step)
        set_torch_grads(torch_backend_params, maximize, dtype, step)
        reference.step()
        torch_backend.step()
        numpy_backend.step(numpy_grads(numpy_params, maximize, dtype, step))
        if step % 20 == 0:
            for n, expected in reference_params.items():
                assert_close(torch_backend_params[n], expected, tolerance,
                             f"torch backend {n} at step {step}")
                assert_close(numpy_params[n], expected, tolerance,
                             f"numpy backend {n} at step {step}")
                assert_close(numpy_params[n], torch_backend_params[n], tolerance,
                             f"numpy vs torch backend {n} at step {step}")
    moved = max(float(np.max(np.abs(numpy_params[n] - start[n]))) for n in start)
    assert moved > 1e-3, "the trajectory must actually move"


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(GRID))
def test_numpy_optimizer_blocked_update_matches_torch_on_large_tensor(
        name: str, dtype: type[np.floating[Any]]) -> None:
    import torch

    rng = np.random.default_rng(3)
    size = 5000
    start = rng.standard_normal(size).astype(dtype)
    target = rng.standard_normal(size).astype(dtype)
    hyper = GRID[name][-1]
    sign = -1 if hyper.get("maximize") else 1
    # A block size much smaller than the tensor, split over two threads: the blocking and
    # threading must not change a single number.
    param = start.copy()
    opt = optiplug.optimizer(name, {"x": param}, lr=1e-2, **hyper)
    opt.block_size = 1024
    opt.threads = 2
    opt.parallel_threshold = 0
    reference_param = torch.nn.Parameter(torch.from_numpy(start.copy()))
    reference = torch_reference(name, [reference_param], {"lr": 1e-2, **hyper})
    for _ in range(50):
        opt.step({"x": sign * (param - target)})
        reference_param.grad = sign * (reference_param.detach() - torch.from_numpy(target))
        reference.step()
    assert_close(param, reference_param, TOLERANCE[dtype], name)
