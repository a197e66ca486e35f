"""Constant initialization: ``W = value``.

For biases and normalization scales that start at a chosen value (e.g. an LSTM forget-gate
bias of 1, a normalizer's scale of 1). Never for weights that must break symmetry.

Reference: ``torch.nn.init.constant_``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import optiplug
from optiplug.init_math import FiniteFloat, NumpyFill, TorchFill, numpy_fill


class ConstantSpec(optiplug.InitializerSpec):
    """``W = value``."""

    name: Literal["constant"] = "constant"
    value: FiniteFloat
    """The value every element gets (required)."""

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return self.value

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return 0.0


def build_numpy(spec: ConstantSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: np.full(shape, spec.value))


def build_torch(spec: ConstantSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.constant_(tensor, spec.value)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="constant", spec=ConstantSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Every element set to one value, for biases and normalization scales (e.g. a "
                "forget-gate bias of 1).",
        reference="torch.nn.init.constant_")]
