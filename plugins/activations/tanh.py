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
    """``y = tanh(x)``; ``dy/dx = 1 - y**2``, from the cached output."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._out = np.tanh(x)
        return self._out

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * (1.0 - self._out * self._out)


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
