"""Batch norm specifics: running statistics (momentum, cumulative average, unbiased variance),
modes without running statistics, input layouts, against torch and the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug
from tests.plugins.normalizers.normalizer_checks import torch_forward_backward, twins


@pytest.mark.parametrize("momentum", [0.1, 0.7, None, 0.0, 1.0])
def test_batch_norm_running_statistics_match_torch_over_many_steps(momentum: float | None
                                                                    ) -> None:
    rng = np.random.default_rng(0)
    layer, module = twins("batch_norm", {"momentum": momentum}, 3, np.float64, rng)
    for step in range(1, 6):
        x = rng.normal(step, 1 + step, size=(5 + step, 3, 2))
        layer.forward(x)
        with torch.no_grad():
            module(torch.from_numpy(x))
        assert int(layer.buffers["num_batches_tracked"]) == step
        for key in ("running_mean", "running_var", "num_batches_tracked"):
            np.testing.assert_allclose(layer.buffers[key], getattr(module, key).numpy(),
                                       rtol=1e-10, atol=1e-12, err_msg=key)


def test_batch_norm_running_variance_is_unbiased_and_momentum_none_is_cumulative() -> None:
    layer = optiplug.normalizer("batch_norm", num_features=2, momentum=None)
    batches = [np.random.default_rng(i).normal(size=(4, 2)) for i in range(3)]
    for x in batches:
        layer.forward(x)
    np.testing.assert_allclose(layer.buffers["running_mean"],
                               np.mean([x.mean(axis=0) for x in batches], axis=0), rtol=1e-12)
    # The first batch has weight 1/1, so the initial running statistics drop out.
    np.testing.assert_allclose(layer.buffers["running_var"],
                               np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0),
                               rtol=1e-12)


def test_batch_norm_eval_uses_running_statistics_and_freezes_them() -> None:
    layer = optiplug.normalizer("batch_norm", num_features=3, affine=False, eps=1e-3)
    rng = np.random.default_rng(1)
    layer.forward(rng.normal(size=(8, 3)))
    running = {k: v.copy() for k, v in layer.buffers.items()}
    layer.eval()
    x = rng.normal(size=(4, 3))
    out = layer.forward(x)
    expected = (x - running["running_mean"]) / np.sqrt(running["running_var"] + 1e-3)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    for key, value in running.items():
        np.testing.assert_array_equal(layer.buffers[key], value)
    # One sample is fine in evaluation.
    np.testing.assert_allclose(layer.forward(x[:1]), expected[:1], rtol=1e-12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_without_running_stats_always_uses_batch_statistics(training: bool) -> None:
    rng = np.random.default_rng(2)
    layer, module = twins("batch_norm", {"track_running_stats": False}, 4, np.float64, rng)
    assert layer.buffers == {} and module.running_mean is None
    layer.train(training)
    module.train(training)
    x, grad_out = rng.normal(size=(6, 4, 3)), rng.normal(size=(6, 4, 3))
    layer.zero_grad()
    out = layer.forward(x)
    grad_x = layer.backward(grad_out)
    out_t, grad_x_t, grads_t = torch_forward_backward(module, x, grad_out)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, grad_x_t, rtol=1e-10, atol=1e-10)
    for key, grad in grads_t.items():
        np.testing.assert_allclose(layer.grads[key], grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dims,shape", [(2, (3, 4, 2, 3)), (3, (2, 4, 2, 2, 3))])
def test_batch_norm_2d_and_3d_match_torch(dims: int, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(4)
    layer, module = twins("batch_norm", {"dims": dims}, 4, np.float64, rng)
    assert type(module) is (torch.nn.BatchNorm2d if dims == 2 else torch.nn.BatchNorm3d)
    x, grad_out = rng.normal(size=shape), rng.normal(size=shape)
    layer.zero_grad()
    out = layer.forward(x)
    grad_x = layer.backward(grad_out)
    out_t, grad_x_t, grads_t = torch_forward_backward(module, x, grad_out)
    np.testing.assert_allclose(out, out_t, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, grad_x_t, rtol=1e-10, atol=1e-10)
    for key, grad in grads_t.items():
        np.testing.assert_allclose(layer.grads[key], grad, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.buffers["running_var"], module.running_var.numpy(),
                               rtol=1e-10)


def test_batch_norm_rejects_one_value_per_channel_in_training_like_torch() -> None:
    layer = optiplug.normalizer("batch_norm", num_features=3)
    module = optiplug.normalizer("batch_norm", backend="torch", num_features=3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        layer.forward(np.ones((1, 3)))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        module(torch.ones(1, 3))


def test_batch_norm_rejects_layout_other_than_dims() -> None:
    layer = optiplug.normalizer("batch_norm", num_features=3)
    with pytest.raises(ValueError, match="dims=1"):
        layer.forward(np.ones((2, 3, 2, 2)))


def test_batch_norm_spec_validates_momentum_and_eps() -> None:
    with pytest.raises(optiplug.ConfigError, match="momentum"):
        optiplug.spec("normalizer", "batch_norm", momentum=1.5)
    with pytest.raises(optiplug.ConfigError, match="eps"):
        optiplug.spec("normalizer", "batch_norm", eps=0.0)
    with pytest.raises(optiplug.ConfigError, match="dims"):
        optiplug.spec("normalizer", "batch_norm", dims=4)
