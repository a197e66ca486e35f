"""Hard sigmoid: ``relu6(x + 3) / 6``, a piecewise-linear sigmoid.

0 below -3, 1 above 3, linear in between: the cheap gate of mobile networks (MobileNetV3's
squeeze-and-excitation blocks), with no exponential to evaluate.

The derivative is ``1/6`` on the open interval ``(-3, 3)`` and 0 elsewhere, including at the
kinks ``x = -3`` and ``x = 3``, as torch defines it. (torch's float64 CPU kernel multiplies by
``1/6`` rounded to float32, ``0.1666666716...``, a relative difference of ``3e-8`` from the
exact ``1/6`` used here.)

Reference: Howard et al., "Searching for MobileNetV3", ICCV 2019.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class HardsigmoidSpec(optiplug.ActivationSpec):
    """``hardsigmoid(x) = min(max(x + 3, 0), 6) / 6``; no hyperparameters."""

    name: Literal["hardsigmoid"] = "hardsigmoid"


class NumpyHardsigmoid(NumpyModule):
    """``dy/dx = 1/6 where -3 < x < 3``, 0 elsewhere (kinks included)."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._linear = (x > -3.0) & (x < 3.0)
        return np.clip(x + 3.0, 0.0, 6.0) / 6.0

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * self._linear / 6.0


def build_numpy(spec: HardsigmoidSpec) -> NumpyHardsigmoid:
    return NumpyHardsigmoid()


def build_torch(spec: HardsigmoidSpec) -> Any:
    import torch

    return torch.nn.Hardsigmoid()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="hardsigmoid", spec=HardsigmoidSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Piecewise-linear sigmoid relu6(x + 3) / 6, the cheap gate of mobile networks "
                "(MobileNetV3).",
        reference="Howard et al. 2019, arXiv:1905.02244")]
