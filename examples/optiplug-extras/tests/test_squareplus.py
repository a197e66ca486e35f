"""Squareplus against its formula in exact arithmetic (Python fractions) and torch autograd."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import optiplug
import pytest


def squareplus(x: float, b: float = 4.0) -> float:
    # (x + s) / 2 with s = sqrt(x^2 + b); for x < 0 the algebraically equal b / (2 (s - x)).
    s = math.sqrt(Fraction(x) ** 2 + Fraction(b))
    return b / (2 * (s - x)) if x < 0 else (x + s) / 2


def squareplus_derivative(x: float, b: float = 4.0) -> float:
    return squareplus(x, b) / math.sqrt(Fraction(x) ** 2 + Fraction(b))


def test_squareplus_numpy_matches_the_formula_and_its_derivative() -> None:
    x = np.linspace(-200, 200, 401)
    layer = optiplug.activation("squareplus")
    np.testing.assert_allclose(layer(x), [squareplus(v) for v in x], rtol=1e-14)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)),
                               [squareplus_derivative(v) for v in x], rtol=1e-14)


def test_squareplus_with_b_zero_is_relu() -> None:
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    layer = optiplug.activation("squareplus", b=0.0)
    np.testing.assert_array_equal(layer(x), np.maximum(x, 0.0))
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), [0.0, 0.0, 0.5, 1.0, 1.0])


def test_squareplus_numpy_has_no_overflow_for_large_inputs() -> None:
    x = np.array([-1e30, 1e30], dtype=np.float32)
    layer = optiplug.activation("squareplus")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = layer(x)
        grad = layer.backward(np.ones_like(x))
    assert y.dtype == grad.dtype == np.float32
    np.testing.assert_allclose(y, [1e-30, 1e30], rtol=1e-6)
    np.testing.assert_allclose(grad, [0.0, 1.0], atol=1e-30)


def test_squareplus_torch_matches_numpy_forward_and_autograd() -> None:
    torch = pytest.importorskip("torch")
    x = np.linspace(-8, 8, 101)
    module = optiplug.activation("squareplus", backend="torch", b=2.0)
    layer = optiplug.activation("squareplus", b=2.0)
    tx = torch.tensor(x, requires_grad=True)
    ty = module(tx)
    ty.sum().backward()
    np.testing.assert_allclose(ty.detach().numpy(), layer(x), rtol=1e-14)
    np.testing.assert_allclose(tx.grad.numpy(), layer.backward(np.ones_like(x)), rtol=1e-13)
