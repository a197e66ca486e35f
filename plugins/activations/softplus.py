"""Softplus: ``log(1 + exp(beta x)) / beta``, linear above ``threshold``.

A smooth ReLU with positive outputs: for parameters that must stay positive (variances, scales
in probabilistic models) and as a smooth rectifier. ``beta`` sharpens the corner; where
``beta x > threshold`` the output is ``x``, as in torch.

Reference: Dugas et al., "Incorporating Second-Order Functional Knowledge for Better Option
Pricing", NeurIPS 2000; ``torch.nn.Softplus``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, sigmoid, softplus


class SoftplusSpec(optiplug.ActivationSpec):
    """``softplus(x) = log(1 + exp(beta x)) / beta``, or ``x`` where ``beta x > threshold``."""

    name: Literal["softplus"] = "softplus"
    beta: optiplug.PositiveFloat = 1.0
    """Sharpness, > 0: larger is closer to ReLU."""
    threshold: optiplug.PositiveFloat = 20.0
    """Above ``beta x > threshold`` the function is the identity (as torch's)."""


class NumpySoftplus(NumpyModule):
    """``dy/dx = sigmoid(beta x)``, or 1 above the threshold, from the cached input."""

    def __init__(self, beta: float, threshold: float) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        scaled = x * self.beta
        return np.where(scaled > self.threshold, x, softplus(scaled) / self.beta)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        scaled = self._x * self.beta
        return np.where(scaled > self.threshold, grad_out, grad_out * sigmoid(scaled))


def build_numpy(spec: SoftplusSpec) -> NumpySoftplus:
    return NumpySoftplus(spec.beta, spec.threshold)


def build_torch(spec: SoftplusSpec) -> Any:
    import torch

    return torch.nn.Softplus(beta=spec.beta, threshold=spec.threshold)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="softplus", spec=SoftplusSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Smooth ReLU log(1 + exp(beta x)) / beta with positive outputs, for parameters "
                "that must stay positive (scales, variances).",
        reference="Dugas et al. 2000; torch.nn.Softplus")]
