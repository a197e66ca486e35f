"""CELU: ``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``.

ELU reparametrized so that its derivative is continuous for every ``alpha`` (it is 1 at 0 on
both sides) and the function scales with ``alpha``: ``celu(x, a) = a * celu(x / a, 1)``.

The backward pass is the exact derivative ``exp(x / alpha)`` for ``x <= 0``. (torch's CELU
backward divides by ``alpha`` rounded to float32, so for an ``alpha`` that float32 does not
represent, such as 0.35, torch's float64 gradient differs from it by up to about ``1e-7 |x|``
relative; the forward passes agree.)

Reference: Barron, "Continuously Differentiable Exponential Linear Units", arXiv:1704.07483,
2017.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class CELUSpec(optiplug.ActivationSpec):
    """``celu(x) = x if x > 0 else alpha * (exp(x / alpha) - 1)``."""

    name: Literal["celu"] = "celu"
    alpha: optiplug.PositiveFloat = 1.0
    """Saturation value ``-alpha`` for large negative inputs and the scale of the curve, > 0."""


class NumpyCELU(NumpyModule):
    """``dy/dx = 1 for x > 0, exp(x / alpha)`` otherwise (1 at 0, as torch)."""

    def __init__(self, alpha: float) -> None:
        super().__init__()
        self.alpha = alpha

    def _scaled_negative(self, x: NDArray[Any]) -> NDArray[Any]:
        # min(x, 0) / alpha, bounded at -1000 where exp is 0 in every format: no overflow for
        # huge negative inputs and a small alpha.
        return np.clip(x, -1e3 * self.alpha, 0.0) * (1.0 / self.alpha)

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        # torch multiplies by 1 / alpha (its ELU kernel's input scale); so do we, to the bit.
        negative = self.alpha * np.expm1(self._scaled_negative(x))
        return np.where(x > 0, x, negative)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        x = self._x
        negative = np.exp(self._scaled_negative(x))
        return grad_out * np.where(x > 0, 1.0, negative).astype(x.dtype, copy=False)


def build_numpy(spec: CELUSpec) -> NumpyCELU:
    return NumpyCELU(spec.alpha)


def build_torch(spec: CELUSpec) -> Any:
    import torch

    return torch.nn.CELU(alpha=spec.alpha)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="celu", spec=CELUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Continuously differentiable ELU alpha * (exp(x / alpha) - 1) for x <= 0, whose "
                "slope is 1 at 0 for every alpha.",
        reference="Barron 2017, arXiv:1704.07483")]
