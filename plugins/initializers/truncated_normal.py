"""Truncated normal initialization: ``N(mean, std**2)`` conditioned on ``low <= W <= high``.

For transformers and vision models (ViT, BERT use ``std=0.02`` within two standard deviations):
a normal initialization without the rare large weights of the tails.

Reference: ``torch.nn.init.trunc_normal_``; Dosovitskiy et al., "An Image is Worth 16x16
Words", ICLR 2021.
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

import optiplug
from optiplug.init_math import (
    FiniteFloat,
    NumpyFill,
    TorchFill,
    numpy_fill,
    truncated_normal,
    truncated_normal_moments,
)


class TruncatedNormalSpec(optiplug.InitializerSpec):
    """``W ~ N(mean, std**2)`` restricted to ``[low, high]`` (absolute bounds, as torch's)."""

    name: Literal["truncated_normal"] = "truncated_normal"
    mean: FiniteFloat = 0.0
    """Mean of the untruncated normal."""
    std: optiplug.PositiveFloat = 1.0
    """Standard deviation of the untruncated normal, > 0."""
    low: FiniteFloat = -2.0
    """Lower bound, absolute (not in standard deviations)."""
    high: FiniteFloat = 2.0
    """Upper bound, absolute, > low."""

    @model_validator(mode="after")
    def _low_below_high(self) -> TruncatedNormalSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return truncated_normal_moments(self.mean, self.std, self.low, self.high)[0]

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return truncated_normal_moments(self.mean, self.std, self.low, self.high)[1]


def build_numpy(spec: TruncatedNormalSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: truncated_normal(rng, shape, spec.mean, spec.std,
                                                          spec.low, spec.high))


def build_torch(spec: TruncatedNormalSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.trunc_normal_(tensor, mean=spec.mean, std=spec.std, a=spec.low,
                                           b=spec.high, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="truncated_normal", spec=TruncatedNormalSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Normal weights cut to [low, high], for transformers and vision models: no "
                "rare large weights from the tails.",
        reference="torch.nn.init.trunc_normal_; Dosovitskiy et al. 2021")]
