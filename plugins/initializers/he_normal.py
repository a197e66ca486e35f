"""He (Kaiming) normal initialization: ``W ~ N(0, gain**2 / fan)``.

He initialization for ReLU networks: it keeps the variance of activations (``fan_in``) or of
gradients (``fan_out``) constant through deep rectifier layers, where Xavier's shrinks it.

Reference: He et al., "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
ImageNet Classification", ICCV 2015.
"""

from __future__ import annotations

from typing import Literal

import optiplug
from optiplug.init_math import NonlinearityGainSpec, NumpyFill, TorchFill, numpy_fill


class HeNormalSpec(NonlinearityGainSpec):
    """``std = gain(nonlinearity) / sqrt(fan)``, ``fan`` chosen by ``mode``."""

    name: Literal["he_normal"] = "he_normal"


def build_numpy(spec: HeNormalSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: rng.normal(0.0, spec.std(shape), size=shape))


def build_torch(spec: HeNormalSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.kaiming_normal_(tensor, a=spec.negative_slope, mode=spec.mode,
                                             nonlinearity=spec.nonlinearity, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="he_normal", spec=HeNormalSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="He initialization for ReLU networks: normal weights with variance gain^2 / fan, "
                "keeping signal variance constant through deep rectifier layers.",
        reference="He et al. 2015, arXiv:1502.01852")]
