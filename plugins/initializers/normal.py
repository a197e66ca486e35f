"""Normal initialization: ``W ~ N(mean, std**2)`` with a fixed standard deviation.

For embeddings and small models where a fixed scale is wanted (e.g. ``std=0.02`` in
transformer embeddings); prefer a fan-scaled initializer (He, Xavier) for deep layers.

Reference: ``torch.nn.init.normal_``.
"""

from __future__ import annotations

from typing import Literal

import optiplug
from optiplug.init_math import FiniteFloat, NumpyFill, TorchFill, numpy_fill


class NormalSpec(optiplug.InitializerSpec):
    """``W ~ N(mean, std**2)``."""

    name: Literal["normal"] = "normal"
    mean: FiniteFloat = 0.0
    """Mean of the distribution."""
    std: optiplug.PositiveFloat = 1.0
    """Standard deviation, > 0."""

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return self.mean

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return self.std**2


def build_numpy(spec: NormalSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: rng.normal(spec.mean, spec.std, size=shape))


def build_torch(spec: NormalSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.normal_(tensor, mean=spec.mean, std=spec.std, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="normal", spec=NormalSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Normal weights with a fixed mean and standard deviation, for embeddings and "
                "small models (e.g. std=0.02).",
        reference="torch.nn.init.normal_")]
