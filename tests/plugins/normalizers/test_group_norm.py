"""Group norm specifics: group/channel divisibility, the layer- and instance-norm limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import optiplug


def test_group_norm_needs_num_groups_dividing_num_features() -> None:
    with pytest.raises(optiplug.ConfigError, match="num_groups"):
        optiplug.normalizer("group_norm", num_features=6)
    for backend in ("numpy", "torch"):
        with pytest.raises(optiplug.ConfigError, match="do not divide"):
            optiplug.normalizer("group_norm", backend=backend, num_features=6, num_groups=4)


def test_group_norm_with_one_group_normalizes_each_whole_sample() -> None:
    layer = optiplug.normalizer("group_norm", num_features=4, num_groups=1, affine=False)
    x = np.random.default_rng(0).normal(size=(3, 4, 5))
    flat = x.reshape(3, -1)
    expected = (flat - flat.mean(axis=1, keepdims=True)) / np.sqrt(
        flat.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(layer.forward(x), expected.reshape(x.shape), rtol=1e-12)


def test_group_norm_with_one_channel_per_group_is_instance_norm() -> None:
    layer = optiplug.normalizer("group_norm", num_features=4, num_groups=4, affine=False)
    instance = torch.nn.InstanceNorm1d(4, eps=1e-5).double()
    rng = np.random.default_rng(1)
    x, grad_out = rng.normal(size=(3, 4, 6)), rng.normal(size=(3, 4, 6))
    out = layer.forward(x)
    grad_x = layer.backward(grad_out)
    x_t = torch.tensor(x, requires_grad=True)
    instance(x_t).backward(torch.from_numpy(grad_out))
    np.testing.assert_allclose(out, instance(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), rtol=1e-10, atol=1e-10)
