"""Xavier (Glorot) normal initialization: ``W ~ N(0, gain**2 * 2 / (fan_in + fan_out))``.

Xavier initialization for tanh, sigmoid and linear layers: balances the variance of forward
activations and backward gradients by averaging fan-in and fan-out.

Reference: Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
networks", AISTATS 2010.
"""

from __future__ import annotations

from typing import Literal

import optiplug
from optiplug.init_math import NamedGainSpec, NumpyFill, TorchFill, numpy_fill, xavier_std


class XavierNormalSpec(NamedGainSpec):
    """``std = gain * sqrt(2 / (fan_in + fan_out))``."""

    name: Literal["xavier_normal"] = "xavier_normal"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return xavier_std(shape, self.gain_value()) ** 2


def build_numpy(spec: XavierNormalSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: rng.normal(0.0, xavier_std(shape, spec.gain_value()),
                                                    size=shape))


def build_torch(spec: XavierNormalSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.xavier_normal_(tensor, gain=spec.gain_value(), generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="xavier_normal", spec=XavierNormalSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Xavier/Glorot initialization for tanh, sigmoid and linear layers: normal "
                "weights with variance gain^2 * 2 / (fan_in + fan_out).",
        reference="Glorot & Bengio 2010")]
