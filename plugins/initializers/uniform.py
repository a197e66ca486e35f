"""Uniform initialization: ``W ~ U(low, high)`` with fixed bounds.

For small models, biases and embeddings where a fixed range is wanted; prefer a fan-scaled
initializer (He, Xavier) for deep layers.

Reference: ``torch.nn.init.uniform_``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

import optiplug
from optiplug.init_math import FiniteFloat, NumpyFill, TorchFill, numpy_fill


class UniformSpec(optiplug.InitializerSpec):
    """``W ~ U(low, high)``, ``low < high``."""

    name: Literal["uniform"] = "uniform"
    low: FiniteFloat = 0.0
    """Lower bound of the interval."""
    high: FiniteFloat = 1.0
    """Upper bound of the interval, > low."""

    @model_validator(mode="after")
    def _low_below_high(self) -> UniformSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return (self.low + self.high) / 2

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return (self.high - self.low) ** 2 / 12


def build_numpy(spec: UniformSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: rng.uniform(spec.low, spec.high, size=shape))


def build_torch(spec: UniformSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.uniform_(tensor, a=spec.low, b=spec.high, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="uniform", spec=UniformSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Uniform weights on a fixed interval [low, high), for small models, biases and "
                "embeddings.",
        reference="torch.nn.init.uniform_")]
