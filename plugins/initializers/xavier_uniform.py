"""Xavier (Glorot) uniform initialization: ``W ~ U(-b, b)``, ``b = gain * sqrt(6 / (fan_in +
fan_out))``.

Xavier initialization for tanh, sigmoid and linear layers with bounded weights: the variance
``gain**2 * 2 / (fan_in + fan_out)`` of :mod:`xavier_normal`; the scheme of the original paper.

Reference: Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
networks", AISTATS 2010.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.init_math import (
    NamedGainSpec,
    NumpyFill,
    Shape,
    TorchFill,
    numpy_fill,
    uniform_bound,
    xavier_std,
)


class XavierUniformSpec(NamedGainSpec):
    """``bound = gain * sqrt(6 / (fan_in + fan_out))``."""

    name: Literal["xavier_uniform"] = "xavier_uniform"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return xavier_std(shape, self.gain_value()) ** 2


def build_numpy(spec: XavierUniformSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        bound = uniform_bound(xavier_std(shape, spec.gain_value()))
        return rng.uniform(-bound, bound, size=shape)

    return numpy_fill(draw)


def build_torch(spec: XavierUniformSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.xavier_uniform_(tensor, gain=spec.gain_value(), generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="xavier_uniform", spec=XavierUniformSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Xavier/Glorot initialization for tanh, sigmoid and linear layers: uniform "
                "weights with variance gain^2 * 2 / (fan_in + fan_out).",
        reference="Glorot & Bengio 2010")]
