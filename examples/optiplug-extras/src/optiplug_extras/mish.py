"""Mish: a smooth, self-regularized, non-monotonic activation, ``x * tanh(softplus(x))``.

Like SiLU/Swish it lets small negative values through and is smooth everywhere, which often
trains deep vision models (YOLOv4, ResNets) slightly better than ReLU at a small extra cost.

    y = x tanh(sp),  sp = log(1 + e^x);   dy/dx = tanh(sp) + x (1 - tanh(sp)^2) sigmoid(x)

Reference: Misra, "Mish: A Self Regularized Non-Monotonic Activation Function", BMVC 2020
(arXiv:1908.08681).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import NDArray
from optiplug.backends.numpy import NumpyModule


class MishSpec(optiplug.ActivationSpec):
    """``mish(x) = x * tanh(softplus(x))``; no hyperparameters."""

    name: Literal["mish"] = "mish"


class NumpyMish(NumpyModule):
    """Mish with an analytic backward; softplus and sigmoid in overflow-free forms."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        self._tanh_sp = np.tanh(np.logaddexp(0, x).astype(x.dtype, copy=False))
        return x * self._tanh_sp

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        x, tanh_sp = self._x, self._tanh_sp
        sigmoid = np.exp(-np.logaddexp(0, -x)).astype(x.dtype, copy=False)
        return grad_out * (tanh_sp + x * (1 - tanh_sp * tanh_sp) * sigmoid)


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
        summary="Smooth non-monotonic x * tanh(softplus(x)); a drop-in for ReLU/SiLU in deep "
                "vision models.",
        reference="Misra 2020, arXiv:1908.08681")]
