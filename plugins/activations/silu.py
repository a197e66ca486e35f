"""SiLU (Swish): ``x * sigmoid(x)``.

A smooth, non-monotonic ReLU alternative for deep convolutional networks and transformers'
gated feed-forward layers (EfficientNet, SwiGLU).

Reference: Elfwing, Uchibe & Doya, "Sigmoid-Weighted Linear Units for Neural Network Function
Approximation in Reinforcement Learning", 2018; Ramachandran et al., "Searching for Activation
Functions", 2017.
"""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, sigmoid_pair


class SiLUSpec(optiplug.ActivationSpec):
    """``silu(x) = x * sigmoid(x)``; no hyperparameters."""

    name: Literal["silu"] = "silu"


class NumpySiLU(NumpyModule):
    """``dy/dx = s (1 + x (1 - s))``, ``s = sigmoid(x)``; ``1 - s`` is ``sigmoid(-x)``."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        self._s, self._s_neg = sigmoid_pair(x)
        return x * self._s

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * (self._s * (1.0 + self._x * self._s_neg))


def build_numpy(spec: SiLUSpec) -> NumpySiLU:
    return NumpySiLU()


def build_torch(spec: SiLUSpec) -> Any:
    import torch

    return torch.nn.SiLU()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="silu", spec=SiLUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Sigmoid-weighted linear unit (Swish) x * sigmoid(x), a smooth ReLU alternative "
                "for deep CNNs and gated transformer layers.",
        reference="Elfwing et al. 2018; Ramachandran et al. 2017")]
