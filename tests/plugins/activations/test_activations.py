"""Every builtin activation: NumPy forward and backward against torch autograd and against a
50-digit mpmath reference, on random and extreme inputs, in float32 and float64.

Two references, because where torch's own formula cancels (``1 - y**2`` for tanh near
saturation, ``1 + erf(x)`` for GELU's negative tail, ``1 - sigmoid(x)`` for large ``x``) the
NumPy backend is more accurate than torch:

- against mpmath the NumPy results must be what exact arithmetic gives for an input within
  16 ulp of ``x`` (the accuracy of a backward-stable evaluation: ``x / sqrt(2)`` or
  ``x + 0.044715 x^3`` already round), everywhere;
- against torch they must agree to ``rtol`` (1e-12 float64, 1e-6 float32) plus torch's own
  absolute rounding error where its formula cancels: ``8 eps * |grad| * S(x)``, ``S`` the size
  of the terms that cancel in torch's formula (0 where it does not cancel).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import optiplug

mpmath = pytest.importorskip("mpmath")
mpmath.mp.dps = 50

Array = NDArray[Any]
DTYPES = [np.float64, np.float32]
RTOL_VS_TORCH = {np.float64: 1e-12, np.float32: 1e-6}
SELU_ALPHA = mpmath.mpf("1.6732632423543772848170429916717")
SELU_SCALE = mpmath.mpf("1.0507009873554804934193349852946")
TANH_SCALE = mpmath.sqrt(2 / mpmath.pi)


def _no_cancellation(x: Array) -> Array:
    return np.zeros_like(x)


def _unit(x: Array) -> Array:
    return np.ones_like(x)


def _x_scale(x: Array) -> Array:
    return np.maximum(1.0, np.abs(x))


def _gelu_tanh_grad_scale(x: Array) -> Array:
    # torch: 0.5 (1 + tanh u) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2); the
    # 1 +- tanh(u) factors carry an absolute error of eps.
    return 1.0 + np.abs(x) * (1.0 + 0.134145 * x * x)


@dataclass(frozen=True)
class Case:
    """One activation configuration, its exact math (mpmath) and torch's error model."""

    name: str
    hyper: dict[str, Any]
    value: Callable[[Any], Any]
    derivative: Callable[[Any], Any]
    forward_scale: Callable[[Array], Array] = _no_cancellation
    backward_scale: Callable[[Array], Array] = _no_cancellation
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.name + "".join(f"-{k}={v}" for k, v in self.hyper.items())


def _sigmoid(x: Any) -> Any:
    return 1 / (1 + mpmath.exp(-x))


def _softplus(beta: float, threshold: float) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def value(x: Any) -> Any:
        return x if beta * x > threshold else mpmath.log1p(mpmath.exp(beta * x)) / beta

    def derivative(x: Any) -> Any:
        return mpmath.mpf(1) if beta * x > threshold else _sigmoid(beta * x)

    return value, derivative


def _gelu_tanh_inner(x: Any) -> Any:
    return TANH_SCALE * (x + mpmath.mpf("0.044715") * x**3)


def _gelu_tanh_value(x: Any) -> Any:
    return x * _sigmoid(2 * _gelu_tanh_inner(x))


def _gelu_tanh_derivative(x: Any) -> Any:
    s = _sigmoid(2 * _gelu_tanh_inner(x))
    inner_grad = TANH_SCALE * (1 + 3 * mpmath.mpf("0.044715") * x**2)
    return s + 2 * x * s * (1 - s) * inner_grad


def _elu(alpha: Any, scale: Any) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    def value(x: Any) -> Any:
        return scale * x if x > 0 else scale * alpha * mpmath.expm1(x)

    def derivative(x: Any) -> Any:
        return scale if x > 0 else scale * alpha * mpmath.exp(x)

    return value, derivative


_softplus_default = _softplus(1.0, 20.0)
_softplus_sharp = _softplus(2.0, 5.0)
_elu_15 = _elu(mpmath.mpf(1.5), mpmath.mpf(1))
_selu = _elu(SELU_ALPHA, SELU_SCALE)

CASES = [
    Case("identity", {}, lambda x: x, lambda x: mpmath.mpf(1)),
    Case("sigmoid", {}, _sigmoid, lambda x: _sigmoid(x) * _sigmoid(-x), backward_scale=_unit),
    Case("tanh", {}, mpmath.tanh, lambda x: mpmath.sech(x) ** 2, backward_scale=_unit),
    Case("relu", {}, lambda x: max(x, 0), lambda x: mpmath.mpf(1 if x > 0 else 0)),
    Case("leaky_relu", {"negative_slope": 0.2}, lambda x: x if x > 0 else 0.2 * x,
         lambda x: mpmath.mpf(1 if x > 0 else 0.2)),
    Case("elu", {"alpha": 1.5}, *_elu_15),
    Case("selu", {}, *_selu),
    Case("gelu", {}, lambda x: x * mpmath.ncdf(x),
         lambda x: mpmath.ncdf(x) + x * mpmath.npdf(x),
         forward_scale=_x_scale, backward_scale=_unit),
    Case("gelu", {"approximate": "tanh"}, _gelu_tanh_value, _gelu_tanh_derivative,
         forward_scale=_x_scale, backward_scale=_gelu_tanh_grad_scale),
    Case("silu", {}, lambda x: x * _sigmoid(x),
         lambda x: _sigmoid(x) * (1 + x * _sigmoid(-x)), backward_scale=_x_scale),
    Case("softplus", {}, *_softplus_default),
    Case("softplus", {"beta": 2.0, "threshold": 5.0}, *_softplus_sharp),
]
ELEMENTWISE = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])


def extreme_inputs(dtype: Any) -> Array:
    """Zeros, tiny and huge magnitudes, the overflow edges of exp in both formats."""
    edges = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 1e-3, -1e-3, 0.5, -0.5, 5.0, -5.0, 20.0,
             -20.0, 30.0, -30.0, 88.0, -88.0, 104.0, -104.0, 1e3, -1e3, 1e4, -1e4]
    if dtype == np.float64:
        edges += [1e-300, -1e-300, 700.0, -700.0, 745.0, -745.0]
    return np.array(edges, dtype=dtype)


def inputs(dtype: Any) -> Array:
    rng = np.random.default_rng(7)
    grid = np.linspace(-40.0, 40.0, 321)
    return np.concatenate([rng.normal(0.0, 3.0, 200), grid, extreme_inputs(np.float64)]
                          ).astype(dtype)


def run_numpy(name: str, hyper: dict[str, Any], x: Array, grad: Array) -> tuple[Array, Array]:
    """Forward and backward of the NumPy module, failing on any floating-point error."""
    module = optiplug.activation(name, **hyper)
    with warnings.catch_warnings(), np.errstate(over="raise", divide="raise", invalid="raise"):
        warnings.simplefilter("error")
        out = module.forward(x)
        grad_in = module.backward(grad)
    return out, grad_in


def run_torch(name: str, hyper: dict[str, Any], x: Array, grad: Array) -> tuple[Array, Array]:
    torch = pytest.importorskip("torch")
    module = optiplug.activation(name, backend="torch", **hyper)
    x_t = torch.tensor(x, requires_grad=True)
    out = module(x_t)
    out.backward(torch.tensor(grad))
    return out.detach().numpy(), x_t.grad.numpy()


def exact_with_slack(fn: Callable[[Any], Any], x: Array, ulps: int) -> tuple[Array, Array]:
    """``fn(x)`` and ``max |fn(x (1 +- ulps eps)) - fn(x)|``, exactly (then rounded)."""
    eps = mpmath.mpf(float(np.finfo(x.dtype).eps)) * ulps
    values, slack = [], []
    for v in x.ravel():
        point = mpmath.mpf(float(v))
        value = fn(point)
        values.append(float(value))
        slack.append(float(max(abs(fn(point * (1 + eps)) - value),
                               abs(fn(point * (1 - eps)) - value))))
    return np.array(values).reshape(x.shape), np.array(slack).reshape(x.shape)


def assert_close(actual: Array, expected: Array, *, rtol: float, atol: Array | float,
                 what: str, x: Array) -> None:
    expected64 = expected.astype(np.float64)
    err = np.abs(actual.astype(np.float64) - expected64)
    # Results below the smallest normal number are compared absolutely: their relative
    # precision is gone in any implementation.
    allowed = rtol * np.abs(expected64) + atol + np.finfo(actual.dtype).tiny
    bad = err > allowed
    if bad.any():
        i = np.argmax(err - allowed)
        pytest.fail(f"{what}: {bad.sum()} mismatches; worst at x={x.ravel()[i]!r}: got "
                    f"{actual.ravel()[i]!r}, expected {expected64.ravel()[i]!r}")


@pytest.mark.parametrize("dtype", DTYPES)
@ELEMENTWISE
def test_activation_matches_torch_autograd(case: Case, dtype: Any) -> None:
    x = inputs(dtype)
    grad = np.random.default_rng(1).normal(size=x.shape).astype(dtype)
    out, grad_in = run_numpy(case.name, case.hyper, x, grad)
    out_t, grad_t = run_torch(case.name, case.hyper, x, grad)
    eps = np.finfo(dtype).eps
    rtol = RTOL_VS_TORCH[dtype]
    x64 = x.astype(np.float64)
    assert_close(out, out_t, rtol=rtol, atol=8 * eps * case.forward_scale(x64), x=x,
                 what="forward")
    assert_close(grad_in, grad_t, rtol=rtol,
                 atol=8 * eps * np.abs(grad) * case.backward_scale(x64), x=x, what="backward")


@pytest.mark.parametrize("dtype", DTYPES)
@ELEMENTWISE
def test_activation_is_backward_stable_against_exact_math(case: Case, dtype: Any) -> None:
    x = np.concatenate([np.linspace(-40.0, 40.0, 161), extreme_inputs(np.float64)]
                       ).astype(dtype)
    out, grad_in = run_numpy(case.name, case.hyper, x, np.ones_like(x))
    rtol = 16 * np.finfo(dtype).eps
    value, slack = exact_with_slack(case.value, x, 16)
    assert_close(out, value, rtol=rtol, atol=slack, x=x, what="forward")
    value, slack = exact_with_slack(case.derivative, x, 16)
    assert_close(grad_in, value, rtol=rtol, atol=slack, x=x, what="backward")


@pytest.mark.parametrize("dtype", DTYPES)
@ELEMENTWISE
def test_activation_preserves_dtype_and_shape(case: Case, dtype: Any) -> None:
    x = np.linspace(-3.0, 3.0, 24, dtype=dtype).reshape(2, 3, 4)
    out, grad_in = run_numpy(case.name, case.hyper, x, np.ones_like(x))
    assert out.dtype == dtype and grad_in.dtype == dtype
    assert out.shape == x.shape and grad_in.shape == x.shape


@pytest.mark.parametrize("dtype", DTYPES)
@ELEMENTWISE
def test_activation_raises_no_floating_point_error_for_huge_inputs(case: Case,
                                                                    dtype: Any) -> None:
    x = np.array([-1e30, -1e10, -1e4, 1e4, 1e10, 1e30], dtype=dtype)
    out, grad_in = run_numpy(case.name, case.hyper, x, np.ones_like(x))
    assert np.isfinite(out).all() and np.isfinite(grad_in).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_softmax_matches_torch_along_each_axis(axis: int, dtype: Any) -> None:
    rng = np.random.default_rng(3)
    x = (rng.normal(0.0, 5.0, (4, 5, 6))).astype(dtype)
    x[0, 0, 0], x[1, 1, 1], x[2, 2, 2] = 1e4, -1e4, 0.0
    grad = rng.normal(size=x.shape).astype(dtype)
    out, grad_in = run_numpy("softmax", {"axis": axis}, x, grad)
    out_t, grad_t = run_torch("softmax", {"axis": axis}, x, grad)
    eps = np.finfo(dtype).eps
    rtol = RTOL_VS_TORCH[dtype]
    assert out.dtype == dtype and grad_in.dtype == dtype
    np.testing.assert_allclose(out.sum(axis=axis), 1.0, rtol=8 * x.shape[axis] * eps)
    assert_close(out, out_t, rtol=rtol, atol=0.0, x=x, what="forward")
    # grad_x = y (g - <g, y>): where g is close to <g, y> the difference cancels.
    dot = np.abs((grad * out).sum(axis=axis, keepdims=True))
    scale = out.astype(np.float64) * (np.abs(grad) + dot)
    assert_close(grad_in, grad_t, rtol=rtol, atol=8 * eps * scale, x=x, what="backward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_backward_matches_exact_jacobian(dtype: Any) -> None:
    x = np.array([[-1e4, 0.0, 3.0, 1e-8], [50.0, 49.0, -50.0, 0.5]], dtype=dtype)
    grad = np.array([[0.3, -1.0, 2.0, 0.5], [1.0, 0.25, -2.0, 4.0]], dtype=dtype)
    out, grad_in = run_numpy("softmax", {"axis": -1}, x, grad)
    for row in range(x.shape[0]):
        xs = [mpmath.mpf(float(v)) for v in x[row]]
        exps = [mpmath.exp(v - max(xs)) for v in xs]
        ys = [e / sum(exps) for e in exps]
        dot = sum(mpmath.mpf(float(g)) * y for g, y in zip(grad[row], ys, strict=True))
        expected_grad = [y * (mpmath.mpf(float(g)) - dot) for g, y in zip(grad[row], ys,
                                                                           strict=True)]
        eps = np.finfo(dtype).eps
        assert_close(out[row], np.array([float(y) for y in ys]), rtol=16 * eps, atol=0.0,
                     x=x[row], what="forward")
        assert_close(grad_in[row], np.array([float(g) for g in expected_grad]),
                     rtol=16 * eps, atol=0.0, x=x[row], what="backward")


def test_activation_specs_reject_bad_hyperparameters() -> None:
    with pytest.raises(optiplug.ConfigError):
        optiplug.activation("gelu", approximate="erf")
    with pytest.raises(optiplug.ConfigError):
        optiplug.activation("softplus", beta=0.0)
    with pytest.raises(optiplug.ConfigError):
        optiplug.activation("leaky_relu", negative_slope=-0.1)
    with pytest.raises(optiplug.ConfigError):
        optiplug.activation("softmax", axis="1")


@ELEMENTWISE
def test_activation_spec_round_trips_through_its_dump(case: Case) -> None:
    spec = optiplug.spec("activation", case.name, **case.hyper)
    assert type(spec)(**spec.model_dump()) == spec
    assert optiplug.to_spec(spec.model_dump()) == spec


def test_every_activation_is_listed_with_both_backends() -> None:
    names = {"identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "selu", "gelu", "silu",
             "softplus", "softmax"}
    for name in names:
        technique = optiplug.registry().get("activation", name)
        assert set(technique.backends) == {"numpy", "torch"}
        assert technique.summary and technique.reference


def test_torch_activation_modules_are_torchs_own() -> None:
    torch = pytest.importorskip("torch")
    gelu = optiplug.activation("gelu", backend="torch", approximate="tanh")
    assert isinstance(gelu, torch.nn.GELU) and gelu.approximate == "tanh"
    softplus = optiplug.activation("softplus", backend="torch", beta=2.0, threshold=5.0)
    assert isinstance(softplus, torch.nn.Softplus)
    assert (softplus.beta, softplus.threshold) == (2.0, 5.0)
    assert optiplug.activation("softmax", backend="torch", axis=0).dim == 0
    assert math.isclose(optiplug.activation("leaky_relu", backend="torch",
                                            negative_slope=0.3).negative_slope, 0.3)
