"""A small problem every optimizer test runs: three parameters in two groups, quadratic loss.

``loss = sum(0.5 * h * (p - target)^2)`` (negated when maximizing) with curvatures ``h`` in
``[0.5, 2]``, plus a fixed pseudo-random gradient noise per step (a mini-batch gradient), so
every optimizer converges, and the variance estimates (centered RMSprop) stay away from the
catastrophic cancellation that deterministic gradients would give.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

import optiplug

SHAPES = {"w": (6, 5), "b": (5,), "v": (7,)}
GROUPS = (("w", "b"), ("v",))
TORCH_CLASSES = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
                 "rmsprop": "RMSprop", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW",
                 "radam": "RAdam", "nadam": "NAdam", "adamax": "Adamax", "asgd": "ASGD",
                 "rprop": "Rprop", "adafactor": "Adafactor"}
LR = {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.1, "rmsprop": 0.01,
      "adadelta": 1.0, "adam": 0.01, "adamw": 0.01, "radam": 0.01, "nadam": 0.01,
      "adamax": 0.01, "asgd": 0.05, "rprop": 0.01, "adafactor": 0.05}
# The hyperparameter grid: every flag torch has for the algorithm, alone and combined.
GRID: dict[str, list[dict[str, Any]]] = {
    "sgd": [{}, {"weight_decay": 0.1}, {"maximize": True, "weight_decay": 0.05}],
    "momentum": [{}, {"dampening": 0.3, "weight_decay": 0.05}, {"maximize": True,
                                                                 "momentum": 0.5}],
    "nesterov": [{}, {"weight_decay": 0.1}, {"maximize": True, "momentum": 0.5}],
    "adagrad": [{}, {"lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.1},
                {"maximize": True, "eps": 1e-6}],
    "rmsprop": [{}, {"centered": True}, {"momentum": 0.9, "weight_decay": 0.1},
                {"centered": True, "momentum": 0.5, "maximize": True, "alpha": 0.9}],
    "adadelta": [{}, {"weight_decay": 0.1, "rho": 0.95}, {"maximize": True, "eps": 1e-4}],
    "adam": [{}, {"amsgrad": True}, {"weight_decay": 0.1, "maximize": True},
             {"betas": (0.8, 0.99), "amsgrad": True, "weight_decay": 0.01}],
    "adamw": [{}, {"amsgrad": True}, {"maximize": True, "weight_decay": 0.1}],
    "radam": [{}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "decoupled_weight_decay": True,
                                          "maximize": True, "betas": (0.8, 0.99)}],
    "nadam": [{}, {"weight_decay": 0.1, "momentum_decay": 0.01},
              {"weight_decay": 0.1, "decoupled_weight_decay": True, "maximize": True}],
    "adamax": [{}, {"weight_decay": 0.1, "eps": 1e-3}, {"maximize": True, "betas": (0.8, 0.99)}],
    # t0 within the run: the iterate average starts and is checked too.
    "asgd": [{}, {"weight_decay": 0.1, "lambd": 1e-2, "alpha": 0.5},
             {"t0": 50.0, "lambd": 1e-3, "maximize": True}],
    "rprop": [{}, {"etas": (0.3, 1.5), "step_sizes": (1e-4, 0.05)}, {"maximize": True}],
    "adafactor": [{}, {"weight_decay": 0.1, "beta2_decay": -0.5, "d": 2.0},
                  {"eps": (1e-20, 1e-2), "maximize": True}],
}
TOLERANCE = {np.float64: 1e-10, np.float32: 1e-5}


def initial(dtype: type[np.floating[Any]], seed: int = 0) -> dict[str, NDArray[Any]]:
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


@cache
def problem(dtype: type[np.floating[Any]], steps: int = 400) -> tuple[
        dict[str, NDArray[Any]], dict[str, NDArray[Any]], list[dict[str, NDArray[Any]]]]:
    """Curvatures, targets and per-step gradient noise of the quadratic, per parameter."""
    rng = np.random.default_rng(1)
    curvature = {n: rng.uniform(0.5, 2.0, s).astype(dtype) for n, s in SHAPES.items()}
    target = {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
    noise = [{n: (0.3 * rng.standard_normal(s)).astype(dtype) for n, s in SHAPES.items()}
             for _ in range(steps)]
    return curvature, target, noise


def numpy_grads(params: dict[str, NDArray[Any]], maximize: bool,
                dtype: type[np.floating[Any]], step: int) -> dict[str, NDArray[Any]]:
    curvature, target, noise = problem(dtype)
    sign = -1 if maximize else 1
    return {n: sign * (curvature[n] * (p - target[n]) + noise[step][n])
            for n, p in params.items()}


def set_torch_grads(params: dict[str, torch.Tensor], maximize: bool,
                    dtype: type[np.floating[Any]], step: int) -> None:
    curvature, target, noise = problem(dtype)
    sign = -1 if maximize else 1
    for n, p in params.items():
        p.grad = sign * (torch.from_numpy(curvature[n]) * (p.detach() - torch.from_numpy(
            target[n])) + torch.from_numpy(noise[step][n]))


def group_lrs(name: str) -> tuple[float, float]:
    """Two groups with different learning rates."""
    return LR[name], LR[name] * 0.5


def numpy_groups(params: dict[str, NDArray[Any]], name: str) -> list[dict[str, Any]]:
    lrs = group_lrs(name)
    return [{"params": {n: params[n] for n in names}, "lr": lr}
            for names, lr in zip(GROUPS, lrs, strict=True)]


def torch_groups(params: dict[str, torch.Tensor], name: str,
                 named: bool = True) -> list[dict[str, Any]]:
    lrs = group_lrs(name)
    return [{"params": [(n, params[n]) if named else params[n] for n in names], "lr": lr}
            for names, lr in zip(GROUPS, lrs, strict=True)]


def torch_params(start: dict[str, NDArray[Any]]) -> dict[str, torch.Tensor]:
    return {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in start.items()}


def reference_kwargs(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """torch.optim keyword arguments equal to optiplug's spec for ``name`` with ``hyper``."""
    spec = optiplug.spec("optimizer", name, **hyper)
    kwargs = {k: v for k, v in spec.hyperparameters().items()
              if k not in {*optiplug.OptimizerSpec.policy_fields, "fused", "foreach"}}
    if name == "nesterov":
        kwargs["nesterov"] = True
    return kwargs


def torch_reference(name: str, groups: list[dict[str, Any]], hyper: dict[str, Any]) -> Any:
    """torch.optim's own single-tensor implementation: the reference trajectory."""
    cls = getattr(torch.optim, TORCH_CLASSES[name])
    return cls(groups, **reference_kwargs(name, hyper), foreach=False)


def assert_close(actual: Any, expected: Any, tolerance: float, what: str) -> None:
    """``max|actual - expected| <= tolerance * max|expected|`` (relative to the tensor's scale)."""
    a = np.asarray(actual.detach() if isinstance(actual, torch.Tensor) else actual)
    e = np.asarray(expected.detach() if isinstance(expected, torch.Tensor) else expected)
    assert a.dtype == e.dtype, f"{what}: dtype {a.dtype} != {e.dtype}"
    scale = float(np.max(np.abs(e)))
    error = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64))))
    assert error <= tolerance * scale, (
        f"{what}: max abs error {error:.3g} > {tolerance:g} * scale {scale:.3g}")
