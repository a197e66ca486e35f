"""Mish against its formula (plain Python math) and torch's own kernel."""

from __future__ import annotations

import math

import numpy as np
import optiplug
import pytest


def mish(x: float) -> float:
    return x * math.tanh(math.log1p(math.exp(x)) if x < 30 else x)


def mish_derivative(x: float) -> float:
    sp = math.log1p(math.exp(x)) if x < 30 else x
    return math.tanh(sp) + x * (1 - math.tanh(sp) ** 2) / (1 + math.exp(-x))


def test_mish_numpy_matches_the_formula_and_its_derivative() -> None:
    x = np.linspace(-20, 40, 301)
    layer = optiplug.activation("mish")
    np.testing.assert_allclose(layer(x), [mish(v) for v in x], rtol=1e-13, atol=1e-300)
    np.testing.assert_allclose(layer.backward(np.ones_like(x)), [mish_derivative(v) for v in x],
                               rtol=1e-12, atol=1e-300)


def test_mish_numpy_has_no_overflow_for_large_inputs() -> None:
    x = np.array([-1000.0, 1000.0], dtype=np.float32)
    layer = optiplug.activation("mish")
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = layer(x)
        grad = layer.backward(np.ones_like(x))
    np.testing.assert_array_equal(y, np.array([-0.0, 1000.0], dtype=np.float32))
    np.testing.assert_array_equal(grad, np.array([0.0, 1.0], dtype=np.float32))


def test_mish_torch_matches_numpy() -> None:
    torch = pytest.importorskip("torch")
    x = np.linspace(-8, 8, 101)
    module = optiplug.activation("mish", backend="torch")
    assert isinstance(module, torch.nn.Mish)
    np.testing.assert_allclose(module(torch.tensor(x)).numpy(),
                               optiplug.activation("mish")(x), rtol=1e-12, atol=1e-15)
