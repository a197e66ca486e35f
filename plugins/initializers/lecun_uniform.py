"""LeCun uniform initialization: ``W ~ U(-b, b)``, ``b = sqrt(3 / fan_in)``.

LeCun initialization for SELU (self-normalizing) networks and other unit-gain activations, with
bounded weights of variance ``1 / fan_in``.

Reference: LeCun et al., "Efficient BackProp", 1998.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.init_math import NumpyFill, Shape, TorchFill, lecun_std, numpy_fill, uniform_bound


class LecunUniformSpec(optiplug.InitializerSpec):
    """``bound = sqrt(3 / fan_in)``; no hyperparameters."""

    name: Literal["lecun_uniform"] = "lecun_uniform"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return lecun_std(shape) ** 2


def build_numpy(spec: LecunUniformSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        bound = uniform_bound(lecun_std(shape))
        return rng.uniform(-bound, bound, size=shape)

    return numpy_fill(draw)


def build_torch(spec: LecunUniformSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        # torch has no LeCun initializer: it is Kaiming's with a linear gain over fan_in.
        return torch.nn.init.kaiming_uniform_(tensor, mode="fan_in", nonlinearity="linear",
                                              generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="lecun_uniform", spec=LecunUniformSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="LeCun initialization for SELU (self-normalizing) networks: uniform weights "
                "with variance 1 / fan_in.",
        reference="LeCun et al. 1998")]
