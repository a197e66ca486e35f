"""Layer norm specifics against torch and the formula."""

from __future__ import annotations

import numpy as np

import optiplug
from tests.plugins.normalizers.normalizer_checks import torch_forward_backward, twins


def test_layer_norm_is_the_per_sample_formula_and_ignores_mode() -> None:
    layer = optiplug.normalizer("layer_norm", num_features=5, eps=1e-2)
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 5))
    expected = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-2)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12)
    np.testing.assert_allclose(layer.eval().forward(x), expected, rtol=1e-12)
    assert layer.buffers == {}


def test_layer_norm_without_bias_matches_torch() -> None:
    rng = np.random.default_rng(1)
    layer, module = twins("layer_norm", {"bias": False}, 6, np.float64, rng)
    assert set(layer.params) == {"weight"} and module.bias is None
    x, grad_out = rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 3, 6))
    layer.zero_grad()
    out = layer.forward(x)
    grad_x = layer.backward(grad_out)
    out_t, grad_x_t, grads_t = torch_forward_backward(module, x, grad_out)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, grad_x_t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["weight"], grads_t["weight"], rtol=1e-10, atol=1e-10)


def test_layer_norm_float32_input_stays_float32_with_float64_params() -> None:
    layer = optiplug.normalizer("layer_norm", num_features=4)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    out = layer.forward(x)
    grad_x = layer.backward(np.ones_like(out))
    assert out.dtype == np.float32 and grad_x.dtype == np.float32
    assert layer.grads["weight"].dtype == np.float64
