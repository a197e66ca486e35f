"""Variance scaling: the general fan-scaled initializer of Keras and JAX.

``variance = scale / max(1, fan)`` with ``fan`` the ``fan_in``, ``fan_out`` or their mean
(``fan_avg``) of the weight, drawn from one of three distributions:

- ``truncated_normal``: ``N(0, s**2)`` truncated to ``[-2 s, 2 s]`` with
  ``s = sqrt(variance) / 0.87962566103423978`` (the standard deviation of a standard normal
  truncated to ``[-2, 2]``), so the truncated sample has the target variance;
- ``untruncated_normal``: ``N(0, variance)``;
- ``uniform``: ``U(-b, b)``, ``b = sqrt(3 * variance)``.

Every fan-scaled scheme is a case of it: He/Kaiming is ``scale=2, mode=fan_in``, LeCun is
``scale=1, mode=fan_in``, Glorot/Xavier is ``scale=1, mode=fan_avg``; ``truncated_normal`` is
the default of Keras and JAX. Fans are read from torch's weight layout ``(out, in, *kernel)``
(Keras and JAX lay a dense kernel out as ``(in, out)``; the fans, and so the variance, are the
same numbers for the same layer).

Reference: ``tf.keras.initializers.VarianceScaling``; ``jax.nn.initializers.variance_scaling``;
He et al., ICCV 2015; Glorot & Bengio, AISTATS 2010.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.init_math import (
    TRUNCATED_NORMAL_STD_2,
    NumpyFill,
    ScalingMode,
    Shape,
    TorchFill,
    numpy_fill,
    truncated_normal,
    truncated_normal_moments,
    uniform_bound,
    variance_scaling_fan,
)

Distribution = Literal["truncated_normal", "untruncated_normal", "uniform"]


class VarianceScalingSpec(optiplug.InitializerSpec):
    """``variance = scale / max(1, fan(mode))`` from ``distribution``."""

    name: Literal["variance_scaling"] = "variance_scaling"
    scale: optiplug.PositiveFloat = 1.0
    """Variance numerator, > 0 (2 for ReLU networks, as He)."""
    mode: ScalingMode = "fan_in"
    """``fan_in``, ``fan_out`` or ``fan_avg`` (their mean)."""
    distribution: Distribution = "truncated_normal"
    """``truncated_normal`` (within two corrected standard deviations), ``untruncated_normal``
    or ``uniform``."""

    def variance(self, shape: Shape) -> float:
        """The target variance ``scale / max(1, fan)`` of a weight of ``shape``."""
        return self.scale / max(1.0, variance_scaling_fan(shape, self.mode))

    def sampling_std(self, shape: Shape) -> float:
        """The standard deviation of the normal drawn from (corrected when truncated)."""
        std = math.sqrt(self.variance(shape))
        return std / TRUNCATED_NORMAL_STD_2 if self.distribution == "truncated_normal" else std

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        if self.distribution != "truncated_normal":
            return self.variance(shape)
        std = self.sampling_std(shape)
        return truncated_normal_moments(0.0, std, -2.0 * std, 2.0 * std)[1]


def build_numpy(spec: VarianceScalingSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        std = spec.sampling_std(shape)
        if spec.distribution == "truncated_normal":
            return truncated_normal(rng, shape, 0.0, std, -2.0 * std, 2.0 * std)
        if spec.distribution == "untruncated_normal":
            return rng.normal(0.0, std, size=shape)
        bound = uniform_bound(std)
        return rng.uniform(-bound, bound, size=shape)

    return numpy_fill(draw)


def build_torch(spec: VarianceScalingSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        std = spec.sampling_std(tuple(tensor.shape))
        if spec.distribution == "truncated_normal":
            return torch.nn.init.trunc_normal_(tensor, 0.0, std, -2.0 * std, 2.0 * std,
                                               generator=generator)
        if spec.distribution == "untruncated_normal":
            return torch.nn.init.normal_(tensor, 0.0, std, generator=generator)
        bound = uniform_bound(std)
        return torch.nn.init.uniform_(tensor, -bound, bound, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="variance_scaling", spec=VarianceScalingSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="The general fan-scaled initializer of Keras and JAX: variance scale / fan "
                "(fan_in, fan_out or fan_avg), truncated normal, normal or uniform.",
        reference="Keras VarianceScaling; jax.nn.initializers.variance_scaling")]
