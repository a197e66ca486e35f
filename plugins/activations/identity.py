"""Identity: ``f(x) = x``.

The "no activation" choice for output layers of regression models and for linear bottlenecks,
so that a config can name every layer's activation, including none.

Reference: ``torch.nn.Identity``.
"""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class IdentitySpec(optiplug.ActivationSpec):
    """``identity(x) = x``; no hyperparameters."""

    name: Literal["identity"] = "identity"


class NumpyIdentity(NumpyModule):
    """``y = x``; ``dy/dx = 1``."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        return x

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out


def build_numpy(spec: IdentitySpec) -> NumpyIdentity:
    return NumpyIdentity()


def build_torch(spec: IdentitySpec) -> Any:
    import torch

    return torch.nn.Identity()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="identity", spec=IdentitySpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="No activation (f(x) = x), for regression outputs and linear bottlenecks.",
        reference="torch.nn.Identity")]
