"""Instance norm against ``torch.nn.InstanceNorm1d/2d/3d``: every input layout (batched and
unbatched), affine and running statistics, training and evaluation, forward and backward (torch
autograd and central differences), running buffers over several steps, and torch's errors."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from tests.plugins.normalizers.normalizer_checks import (
    TOLERANCES,
    numerical_gradient,
    torch_forward_backward,
    twins,
)

SHAPES = {1: [(4, 3, 7), (3, 7)], 2: [(2, 3, 4, 5), (3, 4, 5)], 3: [(2, 3, 2, 3, 4)]}
CASES = [(dims, shape, affine, track) for dims, shapes in SHAPES.items() for shape in shapes
         for affine in (False, True) for track in (False, True)]


def case_id(case: tuple[int, tuple[int, ...], bool, bool]) -> str:
    dims, shape, affine, track = case
    return f"{dims}d-{'x'.join(map(str, shape))}-affine={affine}-track={track}"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("dims", "shape", "affine", "track"), CASES,
                         ids=[case_id(c) for c in CASES])
def test_instance_norm_matches_torch_in_training_and_evaluation(
        dims: int, shape: tuple[int, ...], affine: bool, track: bool, dtype: Any) -> None:
    rng = np.random.default_rng(dims)
    hyper = {"dims": dims, "affine": affine, "track_running_stats": track, "momentum": 0.3}
    layer, module = twins("instance_norm", hyper, 3, dtype, rng)
    tolerance = TOLERANCES[dtype]
    for step in range(3):
        x = rng.normal(step, 1 + step, size=shape).astype(dtype)
        grad_out = rng.standard_normal(shape).astype(dtype)
        layer.zero_grad()
        y = layer.forward(x)
        grad = layer.backward(grad_out)
        ty, tgrad, tparams = torch_forward_backward(module, x, grad_out)
        assert y.dtype == grad.dtype == dtype and y.shape == grad.shape == shape
        np.testing.assert_allclose(y, ty, **tolerance)
        np.testing.assert_allclose(grad, tgrad, **tolerance)
        for name, value in tparams.items():
            np.testing.assert_allclose(layer.grads[name], value, **tolerance, err_msg=name)
        for name, value in layer.buffers.items():
            np.testing.assert_allclose(value, getattr(module, name).numpy(), **tolerance,
                                       err_msg=name)
    layer.eval()
    module.eval()
    x = rng.normal(size=shape).astype(dtype)
    grad_out = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    grad = layer.backward(grad_out)
    ty, tgrad, _ = torch_forward_backward(module, x, grad_out)
    np.testing.assert_allclose(y, ty, **tolerance)
    np.testing.assert_allclose(grad, tgrad, **tolerance)


@pytest.mark.parametrize("track", [False, True])
@pytest.mark.parametrize("shape", [(3, 2, 5), (2, 2, 3, 3)])
def test_instance_norm_backward_matches_central_differences(shape: tuple[int, ...],
                                                            track: bool) -> None:
    rng = np.random.default_rng(7)
    layer = optiplug.normalizer("instance_norm", num_features=2, affine=True,
                                track_running_stats=track, dims=len(shape) - 2)
    for value in layer.params.values():
        value += rng.normal(size=value.shape)
    x = rng.standard_normal(shape)
    weights = rng.standard_normal(shape)
    layer.eval() if track else layer.train()
    layer.forward(x)
    grad = layer.backward(weights)
    buffers = {name: value.copy() for name, value in layer.buffers.items()}

    def loss() -> float:
        return float(np.sum(weights * layer.forward(x)))

    np.testing.assert_allclose(grad, numerical_gradient(loss, x), rtol=1e-6, atol=1e-8)
    for name, value in layer.params.items():
        np.testing.assert_allclose(layer.grads[name], numerical_gradient(loss, value),
                                   rtol=1e-6, atol=1e-8, err_msg=name)
    for name, value in buffers.items():
        np.testing.assert_array_equal(layer.buffers[name], value)  # eval: buffers untouched


def test_instance_norm_output_has_zero_mean_and_unit_variance_per_instance_and_channel() -> None:
    x = np.random.default_rng(8).normal(5.0, 3.0, size=(4, 3, 6, 7))
    eps = 1e-5
    y = optiplug.normalizer("instance_norm", num_features=3, dims=2, eps=eps).forward(x)
    np.testing.assert_allclose(y.mean(axis=(2, 3)), 0.0, atol=1e-13)
    variance = x.var(axis=(2, 3))
    np.testing.assert_allclose(y.var(axis=(2, 3)), variance / (variance + eps), rtol=1e-12)


def test_instance_norm_running_statistics_average_the_instances_as_torch() -> None:
    x = np.random.default_rng(9).normal(size=(5, 2, 8))
    layer = optiplug.normalizer("instance_norm", num_features=2, track_running_stats=True,
                                momentum=0.25)
    layer.forward(x)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.25 * x.mean(axis=2).mean(axis=0),
                               rtol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_var"],
                               0.75 + 0.25 * x.var(axis=2, ddof=1).mean(axis=0), rtol=1e-12)
    assert int(layer.buffers["num_batches_tracked"]) == 0  # torch's never counts either
    module = optiplug.normalizer("instance_norm", backend="torch", num_features=2,
                                 track_running_stats=True)
    assert set(layer.state_dict()) == set(module.state_dict())


def test_instance_norm_errors_like_torch() -> None:
    layer = optiplug.normalizer("instance_norm", num_features=3, dims=2)
    with pytest.raises(ValueError, match=r"expects 3-D .* or 4-D"):
        layer.forward(np.ones((2, 3, 4, 5, 6)))
    with pytest.raises(ValueError, match="more than 1 spatial element"):
        layer.forward(np.ones((2, 3, 1, 1)))
    with pytest.raises(TypeError, match="floating"):
        layer.forward(np.ones((2, 3, 4, 4), dtype=np.int64))
    affine = optiplug.normalizer("instance_norm", num_features=3, affine=True)
    with pytest.raises(ValueError, match="4 channels"):
        affine.forward(np.ones((2, 4, 5)))
    with pytest.raises(ValueError):
        optiplug.normalizer("instance_norm", backend="torch", num_features=3,
                            affine=True)(torch.ones(2, 4, 5))


def test_instance_norm_without_parameters_warns_on_a_channel_mismatch_as_torch() -> None:
    x = np.random.default_rng(10).standard_normal((2, 4, 5))
    with pytest.warns(UserWarning, match="num_features"):
        y = optiplug.normalizer("instance_norm", num_features=3).forward(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = torch.nn.InstanceNorm1d(3).double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("hyper", "path"), [({"dims": 4}, "dims"), ({"momentum": 1.5},
                                                                     "momentum"),
                                             ({"eps": 0.0}, "eps"), ({"affine": 1}, "affine")])
def test_instance_norm_spec_rejects_bad_hyperparameters(hyper: dict[str, Any], path: str) -> None:
    with pytest.raises(optiplug.ConfigError, match=path):
        optiplug.normalizer("instance_norm", num_features=3, **hyper)
    with pytest.raises(optiplug.ConfigError, match="num_features"):
        optiplug.normalizer("instance_norm")


def test_instance_norm_momentum_zero_freezes_the_statistics_as_torchs_momentum_none() -> None:
    x = np.random.default_rng(11).normal(3.0, 2.0, size=(4, 2, 6))
    layer = optiplug.normalizer("instance_norm", num_features=2, track_running_stats=True,
                                momentum=0.0)
    module = torch.nn.InstanceNorm1d(2, momentum=None, track_running_stats=True).double()
    layer.forward(x)
    module(torch.from_numpy(x))
    for name in ("running_mean", "running_var"):
        np.testing.assert_array_equal(layer.buffers[name], getattr(module, name).numpy())
    np.testing.assert_array_equal(layer.buffers["running_mean"], [0.0, 0.0])
    with pytest.raises(optiplug.ConfigError, match="momentum"):
        optiplug.normalizer("instance_norm", num_features=2, momentum=None)
