"""The activations of the layers catalogue: NumPy forward equals torch's forward and NumPy
backward equals torch autograd (float64, 1e-12) and central differences, at random points and
at the kinks exactly as torch defines them; PReLU's slope is trained by an optimizer; GLU and
SwiGLU halve the chosen axis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import optiplug

torch = pytest.importorskip("torch")
F = torch.nn.functional

ELEMENTWISE: dict[str, tuple[dict[str, Any], Callable[[Any], Any]]] = {
    "hardswish": ({}, F.hardswish),
    "hardsigmoid": ({}, F.hardsigmoid),
    "relu6": ({}, F.relu6),
    "mish": ({}, F.mish),
    "celu": ({}, F.celu),
    # An alpha exact in float32: torch's CELU backward rounds alpha to float32 (see below).
    "celu-alpha": ({"alpha": 0.375}, lambda x: F.celu(x, alpha=0.375)),
    "softsign": ({}, F.softsign),
    "logsigmoid": ({}, F.logsigmoid),
    "prelu": ({}, lambda x: F.prelu(x, torch.tensor([0.25], dtype=x.dtype))),
}
# torch's float64 CPU hardsigmoid backward multiplies by 1/6 rounded to float32; the NumPy
# backend uses the exact 1/6 (see the plugin's docstring).
TORCH_SIXTH = float(np.float32(1.0 / 6.0))


def technique_name(case: str) -> str:
    return case.split("-")[0]


def inputs(rng: np.random.Generator) -> np.ndarray:
    x = np.concatenate([rng.uniform(-8, 8, 400), rng.standard_normal(200),
                        [-1e3, -50.0, -20.0, 20.0, 50.0, 1e3]])
    return x.reshape(-1, 6)


def torch_forward_backward(function: Callable[[Any], Any], x: np.ndarray,
                           weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tx = torch.from_numpy(x.copy()).requires_grad_(True)
    ty = function(tx)
    ty.backward(torch.from_numpy(weights))
    return ty.detach().numpy(), tx.grad.numpy()


def numpy_forward_backward(name: str, hyper: dict[str, Any], x: np.ndarray,
                           weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    module = optiplug.activation(name, **hyper)
    y = module.forward(x)
    return y, module.backward(weights)


@pytest.mark.parametrize("case", ELEMENTWISE)
def test_activation_matches_torch_forward_and_autograd_in_float64(case: str) -> None:
    hyper, function = ELEMENTWISE[case]
    rng = np.random.default_rng(0)
    x = inputs(rng)
    weights = rng.standard_normal(x.shape)
    y, grad = numpy_forward_backward(technique_name(case), hyper, x, weights)
    ty, tgrad = torch_forward_backward(function, x, weights)
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-300)
    if case == "hardsigmoid":
        tgrad = tgrad / TORCH_SIXTH * (1.0 / 6.0)
    np.testing.assert_allclose(grad, tgrad, rtol=1e-12, atol=1e-300)


def numerical_gradient(function: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                       step: float = 1e-6) -> np.ndarray:
    return (function(x + step) - function(x - step)) / (2 * step)


@pytest.mark.parametrize("case", ELEMENTWISE)
def test_activation_backward_matches_central_differences_away_from_kinks(case: str) -> None:
    hyper, _ = ELEMENTWISE[case]
    name = technique_name(case)
    rng = np.random.default_rng(1)
    x = rng.uniform(-7, 7, (20, 10))
    kinks = np.array([-3.0, 0.0, 3.0, 6.0])
    x = np.where(np.abs(x[..., None] - kinks).min(axis=-1) < 1e-3, x + 0.01, x)
    module = optiplug.activation(name, **hyper)
    module.forward(x)
    grad = module.backward(np.ones_like(x))
    expected = numerical_gradient(lambda v: optiplug.activation(name, **hyper).forward(v), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-7, atol=1e-9)


def test_celu_backward_differs_from_torch_only_by_torchs_float32_alpha() -> None:
    # torch's derivative formula is elu_backward(grad, alpha, 1, 1.0 / alpha.toFloat(), ...):
    # alpha * s * exp(x * s) with s = 1 / alpha rounded to float32. The NumPy backend uses
    # alpha itself, so its gradient is the exact derivative exp(x / alpha), which the central
    # differences confirm.
    alpha = 0.35
    x = np.linspace(-8, -0.1, 50)
    _, grad = numpy_forward_backward("celu", {"alpha": alpha}, x, np.ones_like(x))
    np.testing.assert_allclose(grad, np.exp(x / alpha), rtol=1e-14)
    _, tgrad = torch_forward_backward(lambda v: F.celu(v, alpha=alpha), x, np.ones_like(x))
    torch_scale = 1.0 / float(np.float32(alpha))
    np.testing.assert_allclose(tgrad, alpha * torch_scale * np.exp(x * torch_scale), rtol=1e-14)
    exact = numerical_gradient(lambda v: optiplug.activation("celu", alpha=alpha).forward(v), x)
    np.testing.assert_allclose(grad, exact, rtol=1e-7, atol=1e-9)


# Derivatives at the kinks, as torch defines them (one-sided choices written out).
KINKS: dict[str, dict[float, float]] = {
    "hardswish": {-3.0: 0.0, 3.0: 1.0, 0.0: 0.5},
    "hardsigmoid": {-3.0: 0.0, 3.0: 0.0, 0.0: 1.0 / 6.0},
    "relu6": {0.0: 0.0, 6.0: 0.0, 3.0: 1.0},
    "celu": {0.0: 1.0},
    "softsign": {0.0: 1.0},
    "prelu": {0.0: 0.25},
}


@pytest.mark.parametrize("name", KINKS)
def test_activation_derivative_at_the_kinks_is_torchs(name: str) -> None:
    points = np.array(list(KINKS[name]))
    expected = np.array(list(KINKS[name].values()))
    _, grad = numpy_forward_backward(name, {}, points, np.ones_like(points))
    np.testing.assert_array_equal(grad, expected)
    _, tgrad = torch_forward_backward(ELEMENTWISE[name][1], points, np.ones_like(points))
    if name == "hardsigmoid":
        expected = np.where(expected != 0, TORCH_SIXTH, 0.0)
    np.testing.assert_array_equal(tgrad, expected)


def test_hardswish_and_relu6_derivatives_just_inside_the_kinks_are_the_inner_formula() -> None:
    tiny = 1e-9
    points = np.array([-3 + tiny, 3 - tiny, tiny, 6 - tiny])
    _, grad = numpy_forward_backward("hardswish", {}, points[:2], np.ones(2))
    np.testing.assert_allclose(grad, points[:2] / 3 + 0.5, rtol=1e-15)
    _, grad = numpy_forward_backward("relu6", {}, points[2:], np.ones(2))
    np.testing.assert_array_equal(grad, [1.0, 1.0])


@pytest.mark.parametrize("case", ELEMENTWISE)
def test_activation_keeps_float32(case: str) -> None:
    hyper, function = ELEMENTWISE[case]
    x = inputs(np.random.default_rng(2)).astype(np.float32)
    y, grad = numpy_forward_backward(technique_name(case), hyper, x, np.ones_like(x))
    assert y.dtype == grad.dtype == np.float32
    ty, tgrad = torch_forward_backward(function, x, np.ones_like(x))
    np.testing.assert_allclose(y, ty, rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(grad, tgrad, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", ELEMENTWISE)
def test_activation_raises_no_floating_point_error_for_huge_inputs(case: str, dtype: Any) -> None:
    hyper, function = ELEMENTWISE[case]
    big = float(np.finfo(dtype).max) / 2
    x = np.array([-big, -1e30, -1e10, 1e10, 1e30, big], dtype=dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"):
        y, grad = numpy_forward_backward(technique_name(case), hyper, x, np.ones_like(x))
    assert np.isfinite(y).all() and np.isfinite(grad).all()
    if dtype == np.float64:
        ty, _ = torch_forward_backward(function, x, np.ones_like(x))
        finite = np.isfinite(ty)  # torch's hardswish overflows to inf in x * 6 / 6
        np.testing.assert_allclose(y[finite], ty[finite], rtol=1e-12)


# ------------------------------------------------------------------------------- PReLU
def test_prelu_per_channel_slopes_match_torch_autograd() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3, 5))
    weights = rng.standard_normal(x.shape)
    ours = optiplug.activation("prelu", num_parameters=3, init=0.1)
    ours.params["weight"][...] = [0.1, -0.2, 0.7]
    theirs = optiplug.activation("prelu", backend="torch", num_parameters=3, init=0.1).double()
    assert isinstance(theirs, torch.nn.PReLU)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor([0.1, -0.2, 0.7], dtype=torch.float64))
    y = ours.forward(x)
    grad = ours.backward(weights)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = theirs(tx)
    ty.backward(torch.from_numpy(weights))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-14)
    np.testing.assert_allclose(ours.grads["weight"], theirs.weight.grad.numpy(), rtol=1e-12)


def test_prelu_slope_gradients_match_central_differences() -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((6, 2, 3))
    weights = rng.standard_normal(x.shape)
    module = optiplug.activation("prelu", num_parameters=2)
    module.forward(x)
    module.backward(weights)
    slopes = module.params["weight"]
    numerical = np.zeros(2)
    for channel in range(2):
        for sign in (1, -1):
            slopes[channel] += sign * 1e-6
            numerical[channel] += sign * np.sum(weights * module.forward(x)) / 2e-6
            slopes[channel] -= sign * 1e-6
    np.testing.assert_allclose(module.grads["weight"], numerical, rtol=1e-7)


def test_prelu_slope_is_trained_by_the_optimizer_as_in_torch() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((32, 3))
    target = np.where(x > 0, x, -0.4 * x)
    ours = optiplug.activation("prelu", num_parameters=3)
    optimizer = optiplug.optimizer("sgd", ours, lr=1.0)
    theirs = torch.nn.PReLU(3).double()
    torch_optimizer = torch.optim.SGD(theirs.parameters(), lr=1.0)
    for _ in range(25):
        ours.zero_grad()
        y = ours.forward(x)
        ours.backward(2 * (y - target) / y.size)
        optimizer.step()
        torch_optimizer.zero_grad()
        loss = ((theirs(torch.from_numpy(x)) - torch.from_numpy(target)) ** 2).mean()
        loss.backward()
        torch_optimizer.step()
    np.testing.assert_allclose(ours.params["weight"], theirs.weight.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.params["weight"], -0.4, atol=1e-3)  # the target slope


def test_prelu_rejects_a_channel_count_other_than_num_parameters() -> None:
    module = optiplug.activation("prelu", num_parameters=4)
    with pytest.raises(ValueError, match="4 channels on axis 1"):
        module.forward(np.ones((2, 3)))


# -------------------------------------------------------------------------- GLU, SwiGLU
def swiglu_reference(x: Any, dim: int) -> Any:
    a, b = x.chunk(2, dim=dim)
    return F.silu(a) * b


GATED = [("glu", dim, lambda x, d: F.glu(x, dim=d)) for dim in (-1, 0, 1)] + \
        [("swiglu", dim, swiglu_reference) for dim in (-1, 0, 1)]


@pytest.mark.parametrize(("name", "dim", "reference"), GATED,
                         ids=[f"{n}-dim{d}" for n, d, _ in GATED])
def test_gated_unit_halves_dim_and_matches_torch(name: str, dim: int,
                                                 reference: Callable[..., Any]) -> None:
    rng = np.random.default_rng(6)
    x = rng.uniform(-6, 6, (4, 6, 8))
    module = optiplug.activation(name, dim=dim)
    y = module.forward(x)
    expected_shape = list(x.shape)
    expected_shape[dim] //= 2
    assert y.shape == tuple(expected_shape)
    assert optiplug.spec("activation", name, dim=dim).output_shape(x.shape) == y.shape
    weights = rng.standard_normal(y.shape)
    grad = module.backward(weights)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = reference(tx, dim)
    ty.backward(torch.from_numpy(weights))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    module_torch = optiplug.activation(name, backend="torch", dim=dim)
    torch.testing.assert_close(module_torch(torch.from_numpy(x)), ty.detach(), rtol=0, atol=0)
    numerical = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        for sign in (1, -1):
            x[index] += sign * 1e-6
            numerical[index] += sign * np.sum(weights * module.forward(x)) / 2e-6
            x[index] -= sign * 1e-6
    np.testing.assert_allclose(grad, numerical, rtol=1e-6, atol=1e-8)


def test_swiglu_is_silu_of_the_first_half_times_the_second() -> None:
    a = np.array([[-2.0, 0.5], [3.0, -0.1]])
    b = np.array([[1.5, -4.0], [0.25, 2.0]])
    y = optiplug.activation("swiglu").forward(np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(y, a / (1 + np.exp(-a)) * b, rtol=1e-15)
    g = optiplug.activation("glu").forward(np.concatenate([a, b], axis=1))
    np.testing.assert_allclose(g, a / (1 + np.exp(-b)), rtol=1e-15)


@pytest.mark.parametrize("name", ["glu", "swiglu"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_gated_unit_rejects_an_odd_axis(name: str, backend: str) -> None:
    module = optiplug.activation(name, backend=backend)
    x = np.ones((2, 5)) if backend == "numpy" else torch.ones(2, 5)
    with pytest.raises((ValueError, RuntimeError), match="even"):
        module(x)


def test_gated_unit_rejects_an_axis_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        optiplug.activation("swiglu", dim=2).forward(np.ones((2, 4)))
    with pytest.raises(optiplug.ConfigError, match="dim"):
        optiplug.activation("glu", dim=64)


@pytest.mark.parametrize(("name", "hyper", "path"), [
    ("celu", {"alpha": 0.0}, "alpha"), ("prelu", {"num_parameters": 0}, "num_parameters"),
    ("prelu", {"init": float("nan")}, "init"), ("prelu", {"init": 3.4e38}, "init"),
    ("hardswish", {"inplace": True}, "inplace"),
    ("swiglu", {"dim": "last"}, "dim")])
def test_layer_activation_specs_reject_bad_hyperparameters(name: str, hyper: dict[str, Any],
                                                           path: str) -> None:
    with pytest.raises(optiplug.ConfigError, match=path):
        optiplug.activation(name, **hyper)


def test_layer_activations_are_listed_with_torchs_modules() -> None:
    listed = {t.name: t.backends for t in optiplug.registry().techniques("activation")}
    assert len(listed) >= 20
    modules = {"hardswish": torch.nn.Hardswish, "hardsigmoid": torch.nn.Hardsigmoid,
               "relu6": torch.nn.ReLU6, "mish": torch.nn.Mish, "celu": torch.nn.CELU,
               "softsign": torch.nn.Softsign, "logsigmoid": torch.nn.LogSigmoid,
               "prelu": torch.nn.PReLU, "glu": torch.nn.GLU}
    for name, module in modules.items():
        assert listed[name] == ("numpy", "torch")
        assert type(optiplug.activation(name, backend="torch")) is module
