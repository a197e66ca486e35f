"""Weight norm against ``torch.nn.utils.parametrizations.weight_norm``: the NumPy wrapper's
``weight_g``/``weight_v`` gradients equal torch autograd's for ``original0``/``original1``
(and central differences) for every ``dim``, wrapped layers of any shape, the default square
linear layer that starts as the identity, and an optimizer that trains ``g`` and ``v`` the same
on both backends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.plugins.normalizers.weight_norm import NumpyLinear
from tests.plugins.normalizers.normalizer_checks import numerical_gradient

TORCH_NAMES = {"weight_g": "parametrizations.weight.original0",
               "weight_v": "parametrizations.weight.original1", "bias": "bias"}


def wrap(layer: Any, backend: str = "numpy", **hyper: Any) -> Any:
    """``layer`` weight-normalized through the config path (``layer=`` is a runtime value)."""
    return optiplug.build({"kind": "normalizer", "name": "weight_norm", **hyper},
                          backend=backend, layer=layer)


def linear_twins(weight: np.ndarray, bias: np.ndarray, dim: int | None) -> tuple[Any, Any]:
    """A NumPy linear layer and a torch ``nn.Linear`` with the same weight, both normalized."""
    ours = wrap(NumpyLinear(weight.copy(), bias.copy()), dim=dim)
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    theirs = wrap(linear, "torch", dim=dim)
    return ours, theirs


def torch_run(module: Any, x: np.ndarray, grad_out: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    module.zero_grad(set_to_none=True)
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = module(tx)
    ty.backward(torch.from_numpy(grad_out))
    grads = dict(module.named_parameters())
    return ty.detach().numpy(), tx.grad.numpy(), {
        name: grads[torch_name].grad.numpy() for name, torch_name in TORCH_NAMES.items()}


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_gradients_of_g_and_v_match_torch_autograd(dim: int | None) -> None:
    rng = np.random.default_rng(0)
    ours, theirs = linear_twins(rng.standard_normal((5, 3)), rng.standard_normal(5), dim)
    params = dict(theirs.named_parameters())
    for name, torch_name in TORCH_NAMES.items():
        assert ours.params[name].shape == tuple(params[torch_name].shape), name
        np.testing.assert_allclose(ours.params[name], params[torch_name].detach().numpy(),
                                   rtol=1e-14)
    # Move g and v off the values they start at (g = ||v||), on both backends.
    with torch.no_grad():
        for name, torch_name in TORCH_NAMES.items():
            ours.params[name] += 0.3 * rng.standard_normal(ours.params[name].shape)
            params[torch_name].copy_(torch.from_numpy(ours.params[name]))
    for _ in range(2):  # gradients accumulate like torch's .grad
        x = rng.standard_normal((7, 3))
        grad_out = rng.standard_normal((7, 5))
        ours.zero_grad()
        y = ours.forward(x)
        grad = ours.backward(grad_out)
        ty, tgrad, tgrads = torch_run(theirs, x, grad_out)
        np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grad, tgrad, rtol=1e-12, atol=1e-14)
        for name, value in tgrads.items():
            np.testing.assert_allclose(ours.grads[name], value, rtol=1e-12, atol=1e-14,
                                       err_msg=name)
    np.testing.assert_allclose(ours.layer.params["weight"], theirs.weight.detach().numpy(),
                               rtol=1e-14)


@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_gradients_match_central_differences(dim: int | None) -> None:
    rng = np.random.default_rng(1)
    layer = NumpyLinear(rng.standard_normal((4, 3)), rng.standard_normal(4))
    ours = wrap(layer, dim=dim)
    ours.params["weight_g"] *= 1.7
    x = rng.standard_normal((6, 3))
    weights = rng.standard_normal((6, 4))
    ours.forward(x)
    grad = ours.backward(weights)

    def loss() -> float:
        return float(np.sum(weights * ours.forward(x)))

    np.testing.assert_allclose(grad, numerical_gradient(loss, x), rtol=1e-7, atol=1e-9)
    for name in ("weight_g", "weight_v", "bias"):
        np.testing.assert_allclose(ours.grads[name], numerical_gradient(loss, ours.params[name]),
                                   rtol=1e-7, atol=1e-9, err_msg=name)


def test_weight_norm_wraps_any_layer_with_a_weight_like_torch() -> None:
    # A per-channel PReLU slope, normalized as a whole (dim=None) and per entry (dim=0).
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 4))
    for dim in (None, 0):
        prelu = optiplug.activation("prelu", num_parameters=3)
        prelu.params["weight"][...] = [0.2, -0.5, 0.9]
        ours = wrap(prelu, dim=dim)
        module = torch.nn.PReLU(3, dtype=torch.float64)
        with torch.no_grad():
            module.weight.copy_(torch.tensor([0.2, -0.5, 0.9], dtype=torch.float64))
        theirs = wrap(module, "torch", dim=dim)
        assert theirs is module  # reparametrized in place, as torch's weight_norm
        ours.params["weight_g"] *= 0.5
        with torch.no_grad():
            theirs.parametrizations.weight.original0.mul_(0.5)
        grad_out = rng.standard_normal(x.shape)
        y = ours.forward(x)
        ours.backward(grad_out)
        tx = torch.from_numpy(x)
        ty = theirs(tx)
        ty.backward(torch.from_numpy(grad_out))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.grads["weight_g"],
                                   theirs.parametrizations.weight.original0.grad.numpy(),
                                   rtol=1e-12)
        # dim=0 on a vector: each entry is its own direction, so dL/dv is 0 (up to rounding).
        np.testing.assert_allclose(ours.grads["weight_v"],
                                   theirs.parametrizations.weight.original1.grad.numpy(),
                                   rtol=1e-12, atol=1e-14)


def test_weight_norm_default_layer_starts_as_the_identity_on_both_backends() -> None:
    x = np.random.default_rng(3).standard_normal((4, 6))
    ours = optiplug.normalizer("weight_norm", num_features=6)
    theirs = optiplug.normalizer("weight_norm", backend="torch", num_features=6,
                                 dtype=torch.float64)
    assert set(ours.params) == {"weight_g", "weight_v", "bias"}
    np.testing.assert_array_equal(ours.params["weight_g"], np.ones((6, 1)))
    np.testing.assert_array_equal(ours.params["weight_v"], np.eye(6))
    np.testing.assert_array_equal(ours.forward(x), x)
    np.testing.assert_array_equal(theirs(torch.from_numpy(x)).detach().numpy(), x)
    assert {name for name, _ in theirs.named_parameters()} == set(TORCH_NAMES.values())


@pytest.mark.parametrize("optimizer", [("sgd", {"lr": 0.1}), ("adam", {"lr": 0.05})])
def test_an_optimizer_trains_g_and_v_the_same_on_both_backends(
        optimizer: tuple[str, dict[str, Any]]) -> None:
    name, hyper = optimizer
    rng = np.random.default_rng(4)
    ours, theirs = linear_twins(rng.standard_normal((3, 4)), np.zeros(3), 0)
    numpy_optimizer = optiplug.optimizer(name, ours, **hyper)
    torch_optimizer = optiplug.optimizer(name, theirs, **hyper)
    x = rng.standard_normal((16, 4))
    target = x @ rng.standard_normal((4, 3))
    start = ours.params["weight_g"].copy()
    for _ in range(20):
        ours.zero_grad()
        y = ours.forward(x)
        ours.backward(2 * (y - target) / y.size)
        numpy_optimizer.step()
        torch_optimizer.zero_grad()
        loss = ((theirs(torch.from_numpy(x)) - torch.from_numpy(target)) ** 2).mean()
        loss.backward()
        torch_optimizer.step()
    parameters = dict(theirs.named_parameters())
    for ours_name, torch_name in TORCH_NAMES.items():
        np.testing.assert_allclose(ours.params[ours_name],
                                   parameters[torch_name].detach().numpy(), rtol=1e-10,
                                   atol=1e-12, err_msg=ours_name)
    assert not np.allclose(ours.params["weight_g"], start)  # g was trained
    v, g = ours.params["weight_v"], ours.params["weight_g"]
    np.testing.assert_allclose(ours.compute_weight(),
                               g * v / np.linalg.norm(v, axis=1, keepdims=True), rtol=1e-14)


def test_weight_norm_keeps_float32() -> None:
    ours = optiplug.normalizer("weight_norm", num_features=5, dtype=np.float32)
    x = np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)
    y = ours.forward(x)
    assert y.dtype == ours.backward(np.ones_like(y)).dtype == np.float32
    assert ours.params["weight_g"].dtype == np.float32


def test_weight_norm_bad_setups_are_config_errors() -> None:
    with pytest.raises(optiplug.ConfigError, match="num_features"):
        optiplug.normalizer("weight_norm")
    with pytest.raises(optiplug.ConfigError, match="not both"):
        optiplug.build({"kind": "normalizer", "name": "weight_norm"}, backend="numpy",
                       num_features=3, layer=NumpyLinear(np.eye(3), np.zeros(3)))
    with pytest.raises(optiplug.ConfigError, match="parameter"):
        wrap(optiplug.activation("relu"))
    with pytest.raises(optiplug.ConfigError, match="parameter"):
        wrap(torch.nn.ReLU(), "torch")
    with pytest.raises(optiplug.ConfigError, match="parameter"):
        wrap(torch.nn.Linear(2, 2), "torch", parameter="kernel")
    with pytest.raises(optiplug.ConfigError, match="dim"):
        optiplug.normalizer("weight_norm", num_features=3, dim=2)
    with pytest.raises(optiplug.ConfigError, match="dim"):
        optiplug.normalizer("weight_norm", backend="torch", num_features=3, dim=2)
    with pytest.raises(optiplug.ConfigError, match="parameter"):
        optiplug.normalizer("weight_norm", num_features=3, parameter="weight.0")
    with pytest.raises(optiplug.ConfigError, match="dim"):
        optiplug.normalizer("weight_norm", num_features=3, dim=-1)
