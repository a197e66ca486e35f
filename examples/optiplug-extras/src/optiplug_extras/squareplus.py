"""Squareplus: a softplus-like activation made of a square root, ``(x + sqrt(x**2 + b)) / 2``.

Smooth, positive and monotonic like softplus, but with only a square root (no exponential or
logarithm), so it is cheap on any hardware; ``b`` sets the curvature near 0 (``b = 0`` is ReLU).
Computed in forms that neither overflow nor cancel: ``s = hypot(x, sqrt(b))`` and, for
``x < 0``, ``(x + s) / 2 = b / (2 (s - x))``.

    y = (x + s) / 2;   dy/dx = (1 + x / s) / 2 = y / s

Reference: So, "Squareplus: A Softplus-Like Algebraic Rectifier", arXiv:2112.11687, 2021.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import NDArray
from optiplug.backends.numpy import NumpyModule


class SquareplusSpec(optiplug.ActivationSpec):
    """``squareplus(x) = (x + sqrt(x**2 + b)) / 2``."""

    name: Literal["squareplus"] = "squareplus"
    b: optiplug.NonNegativeFloat = 4.0
    """Curvature near 0, >= 0 (the paper's default 4; 0 gives ReLU)."""


class NumpySquareplus(NumpyModule):
    """Squareplus with its analytic backward ``dy/dx = y / s``, ``s = sqrt(x**2 + b)``."""

    def __init__(self, b: float) -> None:
        super().__init__()
        self.b = b

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        s = np.hypot(x, np.sqrt(self.b)).astype(x.dtype, copy=False)
        # x + s cancels for x < 0; there (x + s)(s - x) = b gives it without cancellation.
        negative = x < 0
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.where(negative, self.b / (2.0 * (s - x)), (x + s) / 2.0)
        self._s, self._y = s, y.astype(x.dtype, copy=False)
        return self._y

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = np.where(self._s > 0, self._y / self._s, 0.5)  # b = 0: ReLU, 1/2 at 0
        return grad_out * slope.astype(self._y.dtype, copy=False)


def build_numpy(spec: SquareplusSpec) -> NumpySquareplus:
    return NumpySquareplus(spec.b)


@functools.cache
def _torch_module() -> Any:
    # One class, made on first use: torch is imported only when a torch module is built.
    import torch

    class Squareplus(torch.nn.Module):
        """The same forms with torch's kernels; autograd gives the backward."""

        def __init__(self, b: float) -> None:
            super().__init__()
            self.b = b

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = torch.hypot(x, torch.full_like(x, self.b**0.5))
            return torch.where(x < 0, self.b / (2 * (s - x)), (x + s) / 2)

    return Squareplus


def build_torch(spec: SquareplusSpec) -> Any:
    return _torch_module()(spec.b)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="squareplus", spec=SquareplusSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Softplus-like (x + sqrt(x^2 + b)) / 2 with only a square root; cheap, smooth "
                "and positive.",
        reference="So 2021, arXiv:2112.11687")]
