"""SELU: ``scale * elu(x, alpha)`` with the fixed constants of self-normalizing networks.

For deep fully connected networks without normalization layers: with LeCun-normal weights the
activations converge to zero mean and unit variance. Pair with ``lecun_normal`` (or He with
``nonlinearity="linear"``).

Reference: Klambauer et al., "Self-Normalizing Neural Networks", NeurIPS 2017.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, elu, elu_grad

SELU_ALPHA: Final = 1.6732632423543772848170429916717
SELU_SCALE: Final = 1.0507009873554804934193349852946


class SELUSpec(optiplug.ActivationSpec):
    """``selu(x) = scale * (x if x > 0 else alpha * (exp(x) - 1))``; no hyperparameters."""

    name: Literal["selu"] = "selu"


class NumpySELU(NumpyModule):
    """``dy/dx = scale`` for ``x > 0``, ``scale * alpha * exp(x)`` otherwise, from the input."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        return elu(x, SELU_ALPHA, SELU_SCALE)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * elu_grad(self._x, SELU_ALPHA, SELU_SCALE)


def build_numpy(spec: SELUSpec) -> NumpySELU:
    return NumpySELU()


def build_torch(spec: SELUSpec) -> Any:
    import torch

    return torch.nn.SELU()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="selu", spec=SELUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Scaled ELU of self-normalizing networks, for deep fully connected nets without "
                "normalization layers; pair with LeCun-normal initialization.",
        reference="Klambauer et al. 2017, arXiv:1706.02515")]
