"""He (Kaiming) uniform initialization: ``W ~ U(-b, b)``, ``b = gain * sqrt(3 / fan)``.

He initialization for ReLU networks with bounded weights: the same variance ``gain**2 / fan``
as :mod:`he_normal` (torch's default scheme for ``nn.Linear`` and ``nn.Conv*`` uses it with a
leaky-ReLU gain).

Reference: He et al., "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
ImageNet Classification", ICCV 2015.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.init_math import (
    NonlinearityGainSpec,
    NumpyFill,
    Shape,
    TorchFill,
    numpy_fill,
    uniform_bound,
)


class HeUniformSpec(NonlinearityGainSpec):
    """``bound = sqrt(3) * gain(nonlinearity) / sqrt(fan)``, ``fan`` chosen by ``mode``."""

    name: Literal["he_uniform"] = "he_uniform"


def build_numpy(spec: HeUniformSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        bound = uniform_bound(spec.std(shape))
        return rng.uniform(-bound, bound, size=shape)

    return numpy_fill(draw)


def build_torch(spec: HeUniformSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.kaiming_uniform_(tensor, a=spec.negative_slope, mode=spec.mode,
                                              nonlinearity=spec.nonlinearity, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="he_uniform", spec=HeUniformSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="He initialization for ReLU networks with uniform weights of variance "
                "gain^2 / fan.",
        reference="He et al. 2015, arXiv:1502.01852")]
