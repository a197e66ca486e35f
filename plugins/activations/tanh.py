"""Tanh: the hyperbolic tangent, ``(exp(x) - exp(-x)) / (exp(x) + exp(-x))``.

Zero-centred squashing to (-1, 1): for recurrent networks (LSTM/GRU cell outputs) and small
feed-forward networks. Pair it with Xavier initialization (gain 5/3).

Reference: LeCun et al., "Efficient BackProp", 1998.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class TanhSpec(optiplug.ActivationSpec):
    """``tanh(x)``; no hyperparameters."""

    name: Literal["tanh"] = "tanh"


class NumpyTanh(NumpyModule):
    """``dy/dx = 1 - tanh(x)**2 = sech(x)**2``, from the cached input.

    ``1 - y**2`` from the output cancels to noise once ``|y|`` nears 1 (``|x|`` > ~18 in
    float64); ``sech(x)**2 = 4 e / (1 + e)**2`` with ``e = exp(-2|x|)`` keeps full precision.
    """

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        return np.tanh(x)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        e = np.exp(-2.0 * np.abs(self._x))
        return grad_out * (4.0 * e / ((1.0 + e) * (1.0 + e)))


def build_numpy(spec: TanhSpec) -> NumpyTanh:
    return NumpyTanh()


def build_torch(spec: TanhSpec) -> Any:
    import torch

    return torch.nn.Tanh()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="tanh", spec=TanhSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Hyperbolic tangent squashing to (-1, 1), for recurrent and small networks; "
                "pair with Xavier initialization.",
        reference="LeCun et al. 1998")]
