"""Hard swish: ``x * relu6(x + 3) / 6``, a piecewise approximation of SiLU/Swish.

0 below -3, ``x`` above 3, a parabola in between: MobileNetV3's activation, Swish's accuracy
without its exponential.

The derivative is 0 for ``x <= -3``, ``x / 3 + 1/2`` for ``-3 < x < 3`` and 1 for ``x >= 3``:
at the kinks torch takes the outer side's value (0 at -3, 1 at 3), and so does this backend.

Reference: Howard et al., "Searching for MobileNetV3", ICCV 2019.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class HardswishSpec(optiplug.ActivationSpec):
    """``hardswish(x) = x * min(max(x + 3, 0), 6) / 6``; no hyperparameters."""

    name: Literal["hardswish"] = "hardswish"


class NumpyHardswish(NumpyModule):
    """``dy/dx = 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, 1 for x >= 3`` (torch's kinks)."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        # torch's formula on x < 3, and x itself above (where torch's x * 6 / 6 is x unless
        # x * 6 overflows): no overflow for any finite input.
        inner = np.minimum(x, 3.0)
        return np.where(x < 3.0, inner * np.clip(inner + 3.0, 0.0, 6.0) / 6.0, x)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        x = self._x
        slope = np.where(x < 3.0, x / 3.0 + 0.5, 1.0)
        slope[x <= -3.0] = 0.0
        return grad_out * slope.astype(x.dtype, copy=False)


def build_numpy(spec: HardswishSpec) -> NumpyHardswish:
    return NumpyHardswish()


def build_torch(spec: HardswishSpec) -> Any:
    import torch

    return torch.nn.Hardswish()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="hardswish", spec=HardswishSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Piecewise Swish x * relu6(x + 3) / 6 without an exponential, for mobile CNNs "
                "(MobileNetV3).",
        reference="Howard et al. 2019, arXiv:1905.02244")]
