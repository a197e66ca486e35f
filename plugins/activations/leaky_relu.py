"""Leaky ReLU: ``x`` for ``x > 0``, ``negative_slope * x`` otherwise.

A ReLU whose negative side keeps a small gradient, so units cannot die; used in GANs and deep
convolutional networks. Pair it with He initialization (``nonlinearity="leaky_relu"``).

Reference: Maas, Hannun & Ng, "Rectifier Nonlinearities Improve Neural Network Acoustic
Models", ICML 2013.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class LeakyReLUSpec(optiplug.ActivationSpec):
    """``leaky_relu(x) = x if x > 0 else negative_slope * x``."""

    name: Literal["leaky_relu"] = "leaky_relu"
    negative_slope: optiplug.NonNegativeFloat = 0.01
    """Slope for ``x <= 0`` (0 gives ReLU)."""


class NumpyLeakyReLU(NumpyModule):
    """``dy/dx = 1 where x > 0, negative_slope elsewhere`` (torch's choice at 0)."""

    def __init__(self, negative_slope: float) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._mask = x > 0
        return np.where(self._mask, x, x * self.negative_slope)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return np.where(self._mask, grad_out, grad_out * self.negative_slope)


def build_numpy(spec: LeakyReLUSpec) -> NumpyLeakyReLU:
    return NumpyLeakyReLU(spec.negative_slope)


def build_torch(spec: LeakyReLUSpec) -> Any:
    import torch

    return torch.nn.LeakyReLU(negative_slope=spec.negative_slope)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="leaky_relu", spec=LeakyReLUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="ReLU with a small negative slope so units never die, for GANs and deep CNNs; "
                "pair with He initialization.",
        reference="Maas et al. 2013")]
