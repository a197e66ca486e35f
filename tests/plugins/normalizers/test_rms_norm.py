"""RMS norm specifics: the formula, and eps=None meaning the input dtype's epsilon."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug
from tests.plugins.normalizers.normalizer_checks import TOLERANCES, TORCH_DTYPES


def test_rms_norm_is_the_formula_without_centering() -> None:
    layer = optiplug.normalizer("rms_norm", num_features=5, eps=1e-3)
    x = np.random.default_rng(0).normal(2.0, 1.0, size=(4, 5))
    expected = x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + 1e-3)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    assert set(layer.params) == {"weight"}


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rms_norm_default_eps_is_the_dtype_epsilon_like_torch(dtype: type) -> None:
    # Inputs so small that eps dominates the mean square: a wrong eps shows at once.
    x = (np.random.default_rng(1).normal(size=(3, 4)) * 1e-4).astype(dtype)
    grad_out = np.random.default_rng(2).normal(size=(3, 4)).astype(dtype)
    layer = optiplug.build({"kind": "normalizer", "name": "rms_norm"}, backend="numpy",
                           num_features=4, dtype=dtype)
    module = optiplug.normalizer("rms_norm", backend="torch", num_features=4).to(
        TORCH_DTYPES[dtype])
    layer.zero_grad()
    out = layer.forward(x)
    grad_x = layer.backward(grad_out)
    x_t = torch.tensor(x, requires_grad=True)
    out_t = module(x_t)
    out_t.backward(torch.from_numpy(grad_out))
    expected = x / np.sqrt(np.mean(x.astype(np.float64)**2, axis=1, keepdims=True)
                           + np.finfo(dtype).eps)
    np.testing.assert_allclose(out, expected, rtol=TOLERANCES[dtype]["rtol"])
    np.testing.assert_allclose(out, out_t.detach().numpy(), **TOLERANCES[dtype])
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), rtol=TOLERANCES[dtype]["rtol"],
                               atol=TOLERANCES[dtype]["atol"] * float(np.abs(grad_x).max()))
    np.testing.assert_allclose(layer.grads["weight"], module.weight.grad.numpy(),
                               **TOLERANCES[dtype])
