"""ELU: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise.

A smooth ReLU whose negative side saturates at ``-alpha``, pushing mean activations toward zero
for faster learning in deep feed-forward and convolutional networks.

Reference: Clevert, Unterthiner & Hochreiter, "Fast and Accurate Deep Network Learning by
Exponential Linear Units (ELUs)", ICLR 2016.
"""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, elu, elu_grad


class ELUSpec(optiplug.ActivationSpec):
    """``elu(x) = x if x > 0 else alpha * (exp(x) - 1)``."""

    name: Literal["elu"] = "elu"
    alpha: optiplug.PositiveFloat = 1.0
    """Saturation value for large negative inputs is ``-alpha``, > 0."""


class NumpyELU(NumpyModule):
    """``dy/dx = 1`` for ``x > 0``, ``alpha * exp(x)`` otherwise, from the cached input."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        return elu(x, self.alpha)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * elu_grad(self._x, self.alpha)


def build_numpy(spec: ELUSpec) -> NumpyELU:
    return NumpyELU(spec.alpha)


def build_torch(spec: ELUSpec) -> Any:
    import torch

    return torch.nn.ELU(alpha=spec.alpha)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="elu", spec=ELUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Exponential linear unit: a smooth ReLU whose negative side saturates at "
                "-alpha, pushing mean activations toward zero.",
        reference="Clevert et al. 2016, arXiv:1511.07289")]
