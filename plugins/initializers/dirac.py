"""Dirac initialization: a convolution kernel that starts as the identity map.

``W[g * out_per_group + d, d, *center] = 1`` for ``d < min(out_per_group, in_channels)`` in
each of ``groups`` groups, zeros elsewhere, where ``center`` is the middle of each kernel
dimension: the convolution copies as many input channels to its output as it can (each group
its own). For very deep plain convolutional networks (DiracNets) and for residual-free blocks
that should start as the identity. 3-D to 5-D weights (``Conv1d`` to ``Conv3d``), as
``torch.nn.init.dirac_``.

Reference: ``torch.nn.init.dirac_``; Zagoruyko & Komodakis, "DiracNets: Training Very Deep
Neural Networks Without Skip-Connections", arXiv:1706.00388, 2017.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.init_math import NumpyFill, Shape, TorchFill, indicator_moments, numpy_fill


class DiracSpec(optiplug.InitializerSpec):
    """Identity convolution kernel per group of output channels; 3-D to 5-D weights only."""

    name: Literal["dirac"] = "dirac"
    groups: optiplug.PositiveInt = 1
    """Number of groups of the convolution (its ``groups``); must divide ``out_channels``."""

    def _ones(self, shape: tuple[int, ...]) -> int | None:
        if len(shape) not in (3, 4, 5) or shape[0] % self.groups:
            return None
        return self.groups * min(shape[0] // self.groups, shape[1])

    def example_shapes(self) -> tuple[tuple[int, ...], ...]:
        """3-d to 5-d weights only: the shapes the conformance kit draws."""
        return ((64, 32, 3, 3), (32, 16, 5))

    def expected_mean(self, shape: tuple[int, ...]) -> float | None:
        ones = self._ones(shape)
        return None if ones is None else indicator_moments(ones, math.prod(shape))[0]

    def expected_variance(self, shape: tuple[int, ...]) -> float | None:
        ones = self._ones(shape)
        return None if ones is None else indicator_moments(ones, math.prod(shape))[1]


def build_numpy(spec: DiracSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        if len(shape) not in (3, 4, 5):
            raise ValueError(f"dirac initialization needs a 3-D, 4-D or 5-D weight, got shape "
                             f"{shape}")
        if shape[0] % spec.groups:
            raise ValueError(f"dirac initialization: groups={spec.groups} must divide the "
                             f"output channels (dim 0) of shape {shape}")
        out_per_group = shape[0] // spec.groups
        channels = np.arange(min(out_per_group, shape[1]))
        rows = (np.arange(spec.groups)[:, None] * out_per_group + channels).ravel()
        weight = np.zeros(shape)
        center = tuple(size // 2 for size in shape[2:])
        weight[(rows, np.tile(channels, spec.groups), *center)] = 1.0
        return weight

    return numpy_fill(draw)


def build_torch(spec: DiracSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.dirac_(tensor, groups=spec.groups)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="dirac", spec=DiracSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Identity convolution kernels (per group), so a conv layer starts by copying "
                "its input channels; for very deep plain CNNs.",
        reference="torch.nn.init.dirac_; Zagoruyko & Komodakis 2017, arXiv:1706.00388")]
