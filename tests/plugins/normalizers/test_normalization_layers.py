"""Every normalization layer's NumPy forward and backward against torch autograd and numerical
gradients, in training and evaluation mode, float64 and float32."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.backends.numpy import NumpyModule
from tests.plugins.normalizers.normalizer_checks import (
    LAYER_CASES,
    TOLERANCES,
    case_id,
    feature_size,
    numerical_gradient,
    torch_forward_backward,
    twins,
)

Case = tuple[str, dict[str, Any], tuple[int, ...]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_matches_torch_outputs_gradients_and_buffers(case: Case, training: bool,
                                                           dtype: type) -> None:
    name, hyper, shape = case
    rng = np.random.default_rng(7)
    layer, module = twins(name, hyper, feature_size(name, shape), dtype, rng)
    layer.train(training)
    module.train(training)
    tol = TOLERANCES[dtype]
    for _ in range(3):  # several steps: running statistics accumulate
        x = rng.normal(0.5, 2.0, size=shape).astype(dtype)
        grad_out = rng.normal(size=shape).astype(dtype)
        layer.zero_grad()
        out = layer.forward(x)
        grad_x = layer.backward(grad_out)
        out_t, grad_x_t, grads_t = torch_forward_backward(module, x, grad_out)
        assert out.dtype == dtype and grad_x.dtype == dtype
        np.testing.assert_allclose(out, out_t, **tol)
        np.testing.assert_allclose(grad_x, grad_x_t, **tol)
        assert set(layer.grads) == set(grads_t)
        for key, grad in grads_t.items():
            np.testing.assert_allclose(layer.grads[key], grad, **tol, err_msg=key)
        for key, buffer in layer.buffers.items():
            np.testing.assert_allclose(buffer, getattr(module, key).numpy(), **tol, err_msg=key)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_backward_matches_numerical_gradient(case: Case, training: bool) -> None:
    name, hyper, shape = case
    rng = np.random.default_rng(3)
    layer, _ = twins(name, hyper, feature_size(name, shape), np.float64, rng)
    layer.train(training)
    x = rng.normal(size=shape)
    grad_out = rng.normal(size=shape)

    def loss() -> float:
        return float(np.sum(layer.forward(x) * grad_out))

    layer.zero_grad()
    layer.forward(x)
    grad_x = layer.backward(grad_out)
    np.testing.assert_allclose(grad_x, numerical_gradient(loss, x), rtol=1e-6, atol=1e-7)
    for key, param in layer.params.items():
        np.testing.assert_allclose(layer.grads[key], numerical_gradient(loss, param),
                                   rtol=1e-6, atol=1e-7, err_msg=key)


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_without_affine_matches_torch_and_has_no_params(case: Case) -> None:
    name, hyper, shape = case
    rng = np.random.default_rng(5)
    layer, module = twins(name, {**hyper, "affine": False}, feature_size(name, shape),
                          np.float64, rng)
    assert layer.params == {} and list(module.parameters()) == []
    x, grad_out = rng.normal(size=shape), rng.normal(size=shape)
    out = layer.forward(x)
    grad_x = layer.backward(grad_out)
    out_t, grad_x_t, _ = torch_forward_backward(module, x, grad_out)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, grad_x_t, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_exposes_named_params_and_accumulates_grads_like_torch(case: Case) -> None:
    name, hyper, shape = case
    rng = np.random.default_rng(11)
    layer, module = twins(name, hyper, feature_size(name, shape), np.float64, rng)
    assert isinstance(layer, NumpyModule)
    assert set(layer.params) == {n for n, _ in module.named_parameters()}
    assert set(layer.buffers) == {n for n, _ in module.named_buffers()}
    x, grad_out = rng.normal(size=shape), rng.normal(size=shape)
    layer.zero_grad()
    layer.forward(x)
    layer.backward(grad_out)
    once = {key: grad.copy() for key, grad in layer.grads.items()}
    grad_arrays = dict(layer.grads)
    layer.forward(x)
    layer.backward(grad_out)
    for key, grad in layer.grads.items():
        assert grad is grad_arrays[key]  # updated in place: optimizers may hold references
        np.testing.assert_allclose(grad, 2 * once[key], rtol=1e-12)
    layer.zero_grad()
    assert all(not grad.any() for grad in layer.grads.values())


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_state_dict_round_trip_gives_identical_outputs(case: Case) -> None:
    name, hyper, shape = case
    rng = np.random.default_rng(13)
    layer, _ = twins(name, hyper, feature_size(name, shape), np.float64, rng)
    layer.forward(rng.normal(size=shape))  # moves running statistics
    copy = optiplug.normalizer(name, num_features=feature_size(name, shape), **hyper)
    copy.load_state_dict(layer.state_dict())
    x = rng.normal(size=shape)
    for mode in (True, False):
        layer.train(mode)
        copy.train(mode)
        np.testing.assert_array_equal(copy.forward(x), layer.forward(x))


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_rejects_wrong_feature_size_and_integer_input(case: Case) -> None:
    name, hyper, shape = case
    layer = optiplug.normalizer(name, num_features=feature_size(name, shape) + 1, **hyper) \
        if name != "group_norm" else optiplug.normalizer(name, num_features=12, **hyper)
    with pytest.raises(ValueError, match="features"):
        layer.forward(np.ones(shape))
    good = optiplug.normalizer(name, num_features=feature_size(name, shape), **hyper)
    with pytest.raises(TypeError, match="floating"):
        good.forward(np.ones(shape, dtype=np.int64))
    with pytest.raises(RuntimeError, match="before forward"):
        good.backward(np.ones(shape))


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm", "rms_norm"])
def test_layer_without_num_features_is_a_config_error(name: str) -> None:
    hyper = {"num_groups": 1} if name == "group_norm" else {}
    for backend in ("numpy", "torch"):
        with pytest.raises(optiplug.ConfigError, match="num_features"):
            optiplug.normalizer(name, backend=backend, **hyper)


@pytest.mark.parametrize("name", ["batch_norm", "layer_norm", "group_norm", "rms_norm"])
def test_torch_builder_returns_torchs_own_module(name: str) -> None:
    hyper = {"num_groups": 2} if name == "group_norm" else {}
    module = optiplug.normalizer(name, backend="torch", num_features=4, **hyper)
    expected = {"batch_norm": torch.nn.BatchNorm1d, "layer_norm": torch.nn.LayerNorm,
                "group_norm": torch.nn.GroupNorm, "rms_norm": torch.nn.RMSNorm}[name]
    assert type(module) is expected
