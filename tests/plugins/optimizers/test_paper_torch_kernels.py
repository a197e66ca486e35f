"""The multi-tensor torch kernels of the paper optimizers keep the NumPy backend's numbers where
they take shortcuts (Lion's non-finite check, Adan's fused numerators), with gradients that are
finite in some tensors and NaN or infinite in others, and with ``None`` gradients.

Reference: optiplug's NumPy backend, whose update is the paper's formula element by element
(itself checked against pytorch_optimizer and the paper in test_paper_optimizers.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug

GRADS = [  # step -> gradient of each tensor (None: no gradient this step)
    {"a": [0.5, -1.0, 2.0], "b": [1.0, 1.0], "c": None},
    {"a": [1.0, float("nan"), 0.0], "b": [-0.5, 0.25], "c": [3.0]},
    {"a": [1.0, float("inf"), -2.0], "b": None, "c": [-1.0]},
    {"a": [0.1, 0.2, 0.3], "b": [float("-inf"), 0.0], "c": [2.0]},
]


@pytest.mark.parametrize("name", ["lion", "adan"])
def test_torch_kernels_match_numpy_with_nonfinite_and_missing_gradients(name: str) -> None:
    start = {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([-1.0, 0.5]), "c": np.array([0.3])}
    hyper = {"lr": 0.1, "weight_decay": 0.01}
    numpy_params = {k: v.copy() for k, v in start.items()}
    torch_params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in start.items()}
    numpy_opt = optiplug.optimizer(name, numpy_params, **hyper)
    torch_opt = optiplug.optimizer(name, torch_params, **hyper)
    for step, grads in enumerate(GRADS):
        with np.errstate(invalid="ignore"):
            numpy_opt.step({k: np.array(g) for k, g in grads.items() if g is not None})
        for key, param in torch_params.items():
            grad = grads[key]
            param.grad = None if grad is None else torch.tensor(grad, dtype=torch.float64)
        torch_opt.step()
        for key, value in numpy_params.items():
            np.testing.assert_allclose(torch_params[key].detach().numpy(), value, rtol=1e-12,
                                       atol=1e-15, err_msg=f"{name}: {key} at step {step}")
