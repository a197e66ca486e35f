"""ReLU: the rectified linear unit, ``max(x, 0)``.

The default activation of deep feed-forward and convolutional networks: cheap, does not
saturate for positive inputs. Pair it with He initialization.

Reference: Nair & Hinton, "Rectified Linear Units Improve Restricted Boltzmann Machines", 2010.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class ReLUSpec(optiplug.ActivationSpec):
    """``relu(x) = max(x, 0)``; no hyperparameters."""

    name: Literal["relu"] = "relu"


class NumpyReLU(NumpyModule):
    """``y = max(x, 0)``; ``dy/dx = 1 where x > 0``."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._mask = x > 0
        return np.maximum(x, 0)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * self._mask


def build_numpy(spec: ReLUSpec) -> NumpyReLU:
    return NumpyReLU()


def build_torch(spec: ReLUSpec) -> Any:
    import torch

    return torch.nn.ReLU()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="relu", spec=ReLUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Rectified linear unit max(x, 0): the default for deep networks; pair with He "
                "initialization.",
        reference="Nair & Hinton 2010")]
