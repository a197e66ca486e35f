"""Orthogonal initialization: a (semi-)orthogonal weight matrix times ``gain``.

For recurrent networks and very deep linear or tanh stacks: all singular values equal ``gain``,
so repeated multiplication neither explodes nor vanishes the signal. Trailing (kernel)
dimensions are flattened into columns.

Reference: Saxe et al., "Exact solutions to the nonlinear dynamics of learning in deep linear
neural networks", ICLR 2014.
"""

from __future__ import annotations

import math
from typing import Literal

import optiplug
from optiplug.init_math import GainSpec, NumpyFill, TorchFill, numpy_fill, orthogonal


class OrthogonalSpec(GainSpec):
    """``W W^T = gain**2 I`` (rows <= columns) or ``W^T W = gain**2 I`` (rows > columns)."""

    name: Literal["orthogonal"] = "orthogonal"

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return self.gain**2 / max(shape[0], math.prod(shape[1:]))


def build_numpy(spec: OrthogonalSpec) -> NumpyFill:
    return numpy_fill(lambda rng, shape: orthogonal(rng, shape, spec.gain))


def build_torch(spec: OrthogonalSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.orthogonal_(tensor, gain=spec.gain, generator=generator)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="orthogonal", spec=OrthogonalSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Orthogonal weights scaled by gain, for recurrent and very deep networks: "
                "every singular value equals gain.",
        reference="Saxe et al. 2014, arXiv:1312.6120")]
