"""Identity initialization: ``W = I`` for a 2-D weight (``W[i, i] = 1``, zeros elsewhere).

For linear layers that should start as the identity map (as many inputs preserved as possible
when the weight is not square), e.g. residual-free deep stacks or a learned linear projection
initialized to pass its input through. Only for 2-D weights, as ``torch.nn.init.eye_``.

Reference: ``torch.nn.init.eye_``; Le, Jaitly & Hinton, "A Simple Way to Initialize Recurrent
Networks of Rectified Linear Units", arXiv:1504.00941, 2015.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.init_math import NumpyFill, Shape, TorchFill, indicator_moments, numpy_fill


class EyeSpec(optiplug.InitializerSpec):
    """``W = I`` (``min(rows, cols)`` ones on the diagonal); 2-D weights only."""

    name: Literal["eye"] = "eye"

    def example_shapes(self) -> tuple[tuple[int, ...], ...]:
        """2-d weights only: the shapes the conformance kit draws."""
        return ((256, 512), (64, 32))

    def expected_mean(self, shape: tuple[int, ...]) -> float | None:
        return indicator_moments(min(shape), shape[0] * shape[1])[0] if len(shape) == 2 else None

    def expected_variance(self, shape: tuple[int, ...]) -> float | None:
        return indicator_moments(min(shape), shape[0] * shape[1])[1] if len(shape) == 2 else None


def build_numpy(spec: EyeSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        if len(shape) != 2:
            raise ValueError(f"eye initialization needs a 2-D weight, got shape {shape}")
        return np.eye(*shape)

    return numpy_fill(draw)


def build_torch(spec: EyeSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.nn.init.eye_(tensor)

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="eye", spec=EyeSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Identity matrix for 2-D weights, so a linear layer starts by passing its "
                "input through (as many inputs as fit).",
        reference="torch.nn.init.eye_; Le et al. 2015, arXiv:1504.00941")]
