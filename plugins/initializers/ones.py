"""Ones initialization: ``W = 1``.

For the scale of a normalization layer or a gate, where starting at one makes the layer begin
as the identity; never for weights that must break symmetry.

Reference: ``torch.nn.init.ones_``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import optiplug
from optiplug.init_math import NumpyFill, TorchFill, numpy_fill


class OnesSpec(optiplug.InitializerSpec):
    """``W = 1``; no hyperparameters."""

    name: Literal["ones"] = "ones"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 1.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return 0.0


def build_numpy(spec: OnesSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: np.ones(shape))


def build_torch(spec: OnesSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.ones_(tensor)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="ones", spec=OnesSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="All ones, for normalization scales and gates that should start as the "
                "identity; never for weights that must break symmetry.",
        reference="torch.nn.init.ones_")]
