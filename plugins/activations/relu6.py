"""ReLU6: ``min(max(x, 0), 6)``, a ReLU capped at 6.

The bounded ReLU of MobileNets: the cap keeps activations in a range that low-precision
(fixed-point, int8) inference represents well.

The derivative is 1 on the open interval ``(0, 6)`` and 0 elsewhere, including at the kinks
``x = 0`` and ``x = 6``, as torch (``hardtanh(x, 0, 6)``) defines it.

Reference: Krizhevsky, "Convolutional Deep Belief Networks on CIFAR-10", 2010; Howard et al.,
"MobileNets", arXiv:1704.04861, 2017.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class ReLU6Spec(optiplug.ActivationSpec):
    """``relu6(x) = min(max(x, 0), 6)``; no hyperparameters."""

    name: Literal["relu6"] = "relu6"


class NumpyReLU6(NumpyModule):
    """``dy/dx = 1 where 0 < x < 6``, 0 elsewhere (kinks included)."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._linear = (x > 0.0) & (x < 6.0)
        return np.clip(x, 0.0, 6.0)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * self._linear


def build_numpy(spec: ReLU6Spec) -> NumpyReLU6:
    return NumpyReLU6()


def build_torch(spec: ReLU6Spec) -> Any:
    import torch

    return torch.nn.ReLU6()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="relu6", spec=ReLU6Spec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="ReLU capped at 6, for mobile networks and low-precision (int8) inference.",
        reference="Howard et al. 2017, arXiv:1704.04861")]
