"""Sigmoid (logistic): ``1 / (1 + exp(-x))``.

Squashes to (0, 1): for gates (LSTM, attention gating) and the output of binary classifiers.
Saturates for large ``|x|``, so hidden layers of deep networks prefer ReLU or GELU.

Reference: Rumelhart, Hinton & Williams, "Learning representations by back-propagating errors",
Nature 1986.
"""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, sigmoid_pair


class SigmoidSpec(optiplug.ActivationSpec):
    """``sigmoid(x) = 1 / (1 + exp(-x))``; no hyperparameters."""

    name: Literal["sigmoid"] = "sigmoid"


class NumpySigmoid(NumpyModule):
    """``dy/dx = y (1 - y)``, with ``1 - y = sigmoid(-x)`` cached from the forward pass: ``1 - y``
    computed from ``y`` would lose every digit for large ``x``.
    """

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._out, self._out_neg = sigmoid_pair(x)
        return self._out

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * (self._out * self._out_neg)


def build_numpy(spec: SigmoidSpec) -> NumpySigmoid:
    return NumpySigmoid()


def build_torch(spec: SigmoidSpec) -> Any:
    import torch

    return torch.nn.Sigmoid()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="sigmoid", spec=SigmoidSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Logistic sigmoid squashing to (0, 1), for gates and binary-classifier outputs.",
        reference="Rumelhart et al. 1986")]
