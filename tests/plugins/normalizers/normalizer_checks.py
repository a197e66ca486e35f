"""Helpers shared by the normalizer tests: torch twins of NumPy layers, numerical gradients."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import optiplug

TOLERANCES = {np.float64: {"rtol": 1e-10, "atol": 1e-10},
              np.float32: {"rtol": 1e-5, "atol": 1e-5}}
TORCH_DTYPES = {np.float64: torch.float64, np.float32: torch.float32}

# (technique, hyperparameters, input shape) covering every layer and input layout.
LAYER_CASES = [
    ("batch_norm", {}, (16, 5)),
    ("batch_norm", {}, (6, 4, 7)),
    ("batch_norm", {"dims": 2}, (4, 3, 5, 2)),
    ("layer_norm", {}, (9, 6)),
    ("layer_norm", {}, (3, 4, 6)),
    ("group_norm", {"num_groups": 3}, (5, 6)),
    ("group_norm", {"num_groups": 2}, (4, 6, 5)),
    ("rms_norm", {}, (9, 6)),
    ("rms_norm", {}, (3, 4, 6)),
]


def case_id(case: tuple[str, dict[str, Any], tuple[int, ...]]) -> str:
    name, hyper, shape = case
    extra = "-".join(f"{k}={v}" for k, v in hyper.items())
    return f"{name}{'-' + extra if extra else ''}-{'x'.join(map(str, shape))}"


def feature_size(name: str, shape: tuple[int, ...]) -> int:
    return shape[-1] if name in ("layer_norm", "rms_norm") else shape[1]


def twins(name: str, hyper: dict[str, Any], num_features: int, dtype: type[np.floating[Any]],
          rng: np.random.Generator) -> tuple[Any, Any]:
    """The NumPy layer and torch's module with the same random parameters and buffers."""
    spec = optiplug.spec("normalizer", name, **hyper)
    layer = optiplug.build(spec, backend="numpy", num_features=num_features, dtype=dtype)
    module = optiplug.build(spec, backend="torch", num_features=num_features,
                            dtype=TORCH_DTYPES[dtype])
    with torch.no_grad():
        for key, value in layer.params.items():
            value[...] = rng.normal(1.0 if key == "weight" else 0.0, 0.5, size=value.shape)
            getattr(module, key).copy_(torch.from_numpy(value))
        if "running_mean" in layer.buffers:
            layer.buffers["running_mean"][...] = rng.normal(size=num_features)
            layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, size=num_features)
            module.running_mean.copy_(torch.from_numpy(layer.buffers["running_mean"]))
            module.running_var.copy_(torch.from_numpy(layer.buffers["running_var"]))
    return layer, module


def torch_forward_backward(module: Any, x: np.ndarray, grad_out: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Output, input gradient and parameter gradients of ``module`` by torch autograd."""
    module.zero_grad(set_to_none=True)
    x_t = torch.tensor(x, requires_grad=True)
    out = module(x_t)
    out.backward(torch.from_numpy(grad_out))
    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters()}
    return out.detach().numpy(), x_t.grad.numpy(), grads


def numerical_gradient(loss: Callable[[], float], array: np.ndarray, step: float = 1e-6
                       ) -> np.ndarray:
    """Central differences of ``loss()`` with respect to every entry of ``array`` (in place)."""
    grad = np.zeros_like(array)
    flat, flat_grad = array.reshape(-1), grad.reshape(-1)
    for index in range(flat.size):
        original = flat[index]
        flat[index] = original + step
        plus = loss()
        flat[index] = original - step
        minus = loss()
        flat[index] = original
        flat_grad[index] = (plus - minus) / (2 * step)
    return grad
