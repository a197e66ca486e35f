"""Mish: ``x * tanh(softplus(x))``.

A smooth, non-monotonic self-gated activation close to SiLU; used in YOLOv4 and other detection
backbones where it trains slightly better than ReLU and Swish.

Reference: Misra, "Mish: A Self Regularized Non-Monotonic Activation Function", BMVC 2020.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, sigmoid, softplus


class MishSpec(optiplug.ActivationSpec):
    """``mish(x) = x * tanh(log(1 + exp(x)))``; no hyperparameters."""

    name: Literal["mish"] = "mish"


class NumpyMish(NumpyModule):
    """``dy/dx = t + x sigmoid(x) (1 - t**2)``, ``t = tanh(softplus(x))``."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        self._t = np.tanh(softplus(x))
        return x * self._t

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        t = self._t
        return grad_out * (t + self._x * sigmoid(self._x) * (1.0 - t * t))


def build_numpy(spec: MishSpec) -> NumpyMish:
    return NumpyMish()


def build_torch(spec: MishSpec) -> Any:
    import torch

    return torch.nn.Mish()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="mish", spec=MishSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Smooth self-gated x * tanh(softplus(x)), a SiLU-like activation for detection "
                "backbones (YOLOv4).",
        reference="Misra 2020, arXiv:1908.08681")]
