"""LeCun normal initialization: ``W ~ N(0, 1 / fan_in)``.

LeCun initialization for SELU (self-normalizing) networks and other unit-gain activations: the
variance that keeps unit-variance inputs at unit variance through a linear layer.

Reference: LeCun et al., "Efficient BackProp", 1998; Klambauer et al., "Self-Normalizing Neural
Networks", NeurIPS 2017.
"""

from __future__ import annotations

from typing import Literal

import optiplug
from optiplug.init_math import NumpyFill, TorchFill, lecun_std, numpy_fill


class LecunNormalSpec(optiplug.InitializerSpec):
    """``std = 1 / sqrt(fan_in)``; no hyperparameters."""

    name: Literal["lecun_normal"] = "lecun_normal"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return lecun_std(shape) ** 2


def build_numpy(spec: LecunNormalSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: rng.normal(0.0, lecun_std(shape), size=shape))


def build_torch(spec: LecunNormalSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        # torch has no LeCun initializer: it is Kaiming's with a linear gain over fan_in.
        return torch.nn.init.kaiming_normal_(tensor, mode="fan_in", nonlinearity="linear",
                                             generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="lecun_normal", spec=LecunNormalSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="LeCun initialization for SELU (self-normalizing) networks: normal weights with "
                "variance 1 / fan_in.",
        reference="LeCun et al. 1998; Klambauer et al. 2017")]
