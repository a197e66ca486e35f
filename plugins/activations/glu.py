"""GLU: the gated linear unit, ``a * sigmoid(b)`` with ``a, b`` the two halves of the input.

The input is split in two equal halves along ``dim`` (first half ``a``, second ``b``) and the
output, half as wide, is ``a`` gated by ``sigmoid(b)``: put it after a linear layer twice as
wide as the output you want. The gate of gated convolutional language models and of the GLU
variants of transformer feed-forward layers.

Reference: Dauphin et al., "Language Modeling with Gated Convolutional Networks", ICML 2017.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyModule, halved_shape, sigmoid_pair, split_halves


class GLUSpec(optiplug.ActivationSpec):
    """``glu(x) = a * sigmoid(b)``, ``a, b = split(x, 2, dim)``; halves ``dim``."""

    name: Literal["glu"] = "glu"
    dim: Annotated[int, Field(ge=-64, lt=64)] = -1
    """The axis that is halved (torch's ``dim``); its size must be even. Negative counts from
    the end (|dim| < 64)."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The input shape with ``dim`` halved."""
        return halved_shape(input_shape, self.dim)


class NumpyGLU(NumpyModule):
    """``da = g sigmoid(b)``, ``db = g a sigmoid(b) sigmoid(-b)``, concatenated along ``dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._a, b = split_halves(x, self.dim, "glu")
        self._s, self._s_neg = sigmoid_pair(b)
        return self._a * self._s

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        gated = grad_out * self._s
        return np.concatenate([gated, gated * self._a * self._s_neg], axis=self.dim)


def build_numpy(spec: GLUSpec) -> NumpyGLU:
    return NumpyGLU(spec.dim)


def build_torch(spec: GLUSpec) -> Any:
    import torch

    return torch.nn.GLU(dim=spec.dim)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="glu", spec=GLUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Gated linear unit a * sigmoid(b) over the two halves of the input; halves the "
                "feature axis (dim).",
        reference="Dauphin et al. 2017, arXiv:1612.08083")]
