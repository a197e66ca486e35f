"""GELU: the Gaussian error linear unit, ``x * Phi(x)`` (``Phi`` the standard normal CDF).

The activation of transformers (BERT, GPT, ViT): a smooth ReLU weighting each input by how
likely it is to be positive. ``approximate="tanh"`` uses
``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, as GPT-2 did.

Reference: Hendrycks & Gimpel, "Gaussian Error Linear Units (GELUs)", arXiv:1606.08415, 2016.
"""

from __future__ import annotations

import math
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, normal_cdf, normal_pdf, sigmoid_pair

_TANH_SCALE: Final = math.sqrt(2.0 / math.pi)
_TANH_CUBIC: Final = 0.044715
# Beyond |x| = 1e3 the tanh form is exactly 0 or x in every float format; clipping keeps x^3
# from overflowing for huge inputs.
_TANH_CLIP: Final = 1e3


class GELUSpec(optiplug.ActivationSpec):
    """``gelu(x) = x * Phi(x)``, or its tanh approximation."""

    name: Literal["gelu"] = "gelu"
    approximate: Literal["none", "tanh"] = "none"
    """``none``: exact, through the error function; ``tanh``: the tanh approximation."""


class NumpyGELU(NumpyModule):
    """Exact: ``dy/dx = Phi(x) + x phi(x)``; tanh form: ``y = x s``, ``s = sigmoid(2u)``,
    ``dy/dx = s + 2 x s (1 - s) du/dx`` (``1 + tanh(u) = 2 sigmoid(2u)`` stays accurate where
    ``1 + tanh(u)`` would cancel).
    """

    def __init__(self, approximate: Literal["none", "tanh"]) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        if self.approximate == "none":
            self._cdf = normal_cdf(x)
            return x * self._cdf
        clipped = np.clip(x, -_TANH_CLIP, _TANH_CLIP)
        inner = _TANH_SCALE * (clipped + _TANH_CUBIC * clipped * clipped * clipped)
        self._s, self._s_neg = sigmoid_pair(2.0 * inner)
        return x * self._s

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        x = self._x
        if self.approximate == "none":
            return grad_out * (self._cdf + x * normal_pdf(x))
        clipped = np.clip(x, -_TANH_CLIP, _TANH_CLIP)
        inner_grad = _TANH_SCALE * (1.0 + (3.0 * _TANH_CUBIC) * clipped * clipped)
        return grad_out * (self._s + 2.0 * clipped * self._s * self._s_neg * inner_grad)


def build_numpy(spec: GELUSpec) -> NumpyGELU:
    return NumpyGELU(spec.approximate)


def build_torch(spec: GELUSpec) -> Any:
    import torch

    return torch.nn.GELU(approximate=spec.approximate)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="gelu", spec=GELUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Gaussian error linear unit x * Phi(x), the smooth ReLU of transformers; exact "
                "or tanh-approximated.",
        reference="Hendrycks & Gimpel 2016, arXiv:1606.08415")]
