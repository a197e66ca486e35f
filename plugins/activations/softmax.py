"""Softmax: ``exp(x_i) / sum_j exp(x_j)`` along one axis.

Turns scores into a probability distribution: the output of multi-class classifiers and the
weights of attention. Computed as ``exp(x - max(x))`` so it never overflows.

Reference: Bridle, "Probabilistic Interpretation of Feedforward Classification Network
Outputs", 1990.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyModule


class SoftmaxSpec(optiplug.ActivationSpec):
    """``softmax(x)_i = exp(x_i) / sum_j exp(x_j)`` along ``axis``."""

    name: Literal["softmax"] = "softmax"
    axis: Annotated[int, Field(ge=-64, lt=64)] = -1
    """The axis that sums to one (torch's ``dim``); negative counts from the end (|axis| < 64,
    NumPy's and torch's most dimensions)."""


class NumpySoftmax(NumpyModule):
    """``grad_x = y * (grad_y - sum(grad_y * y, axis))``, from the cached output."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        exp = np.exp(x - np.max(x, axis=self.axis, keepdims=True))
        self._out = exp / np.sum(exp, axis=self.axis, keepdims=True)
        return self._out

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        dot = np.sum(grad_out * self._out, axis=self.axis, keepdims=True)
        return self._out * (grad_out - dot)


def build_numpy(spec: SoftmaxSpec) -> NumpySoftmax:
    return NumpySoftmax(spec.axis)


def build_torch(spec: SoftmaxSpec) -> Any:
    import torch

    return torch.nn.Softmax(dim=spec.axis)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="softmax", spec=SoftmaxSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Normalized exponential turning scores into probabilities along an axis, for "
                "classifier outputs and attention weights.",
        reference="Bridle 1990")]
