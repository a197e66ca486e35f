"""Zeros initialization: ``W = 0``.

For biases, and for the last layer of a residual branch or a normalizer's shift, where starting
at zero makes the block begin as the identity. Never for weights that must break symmetry.

Reference: ``torch.nn.init.zeros_``; Goyal et al., "Accurate, Large Minibatch SGD", 2017
(zero-initialized residual branches).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import optiplug
from optiplug.init_math import NumpyFill, TorchFill, numpy_fill


class ZerosSpec(optiplug.InitializerSpec):
    """``W = 0``; no hyperparameters."""

    name: Literal["zeros"] = "zeros"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return 0.0


def build_numpy(spec: ZerosSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: np.zeros(shape))


def build_torch(spec: ZerosSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.zeros_(tensor)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="zeros", spec=ZerosSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="All zeros, for biases and zero-initialized residual branches; never for "
                "weights that must break symmetry.",
        reference="torch.nn.init.zeros_")]
