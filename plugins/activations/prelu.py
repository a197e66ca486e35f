"""PReLU: ``x`` for ``x > 0``, ``a * x`` otherwise, with a learned slope ``a``.

A leaky ReLU whose negative slope is a parameter trained with the network: one slope shared by
all channels (``num_parameters=1``) or one per channel (``num_parameters=C``, channels on axis 1
as in torch's ``(N, C, *)`` layout). The slope is the layer's ``weight``: in NumPy's
``params``/``grads`` and in the torch module's ``parameters()``, so an optimizer built over the
layer trains it. He et al. use it with He initialization and no weight decay on ``a``.

At ``x = 0`` the input gradient is ``a`` and the slope gradient 0, as torch.

Reference: He et al., "Delving Deep into Rectifiers: Surpassing Human-Level Performance on
ImageNet Classification", ICCV 2015.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyModule


class PReLUSpec(optiplug.ActivationSpec):
    """``prelu(x) = x if x > 0 else weight * x``, ``weight`` learned."""

    name: Literal["prelu"] = "prelu"
    num_parameters: optiplug.PositiveInt = 1
    """Number of slopes: 1 (shared) or the number of channels (input axis 1)."""
    init: float = Field(0.25, ge=-1e3, le=1e3, allow_inf_nan=False)
    """Initial value of every slope (torch's default 0.25), within [-1000, 1000] (a slope, and
    representable in float16/float32 parameters)."""

    def example_input_shape(self, batch: int, num_features: int) -> tuple[int, ...]:
        """The conformance kit's input: ``num_parameters`` channels on axis 1 when there is
        one slope per channel (a shared slope takes any input)."""
        return (batch, self.num_parameters if self.num_parameters > 1 else num_features)


class NumpyPReLU(NumpyModule):
    """``params["weight"]`` of shape ``(num_parameters,)``; ``backward`` adds
    ``sum(grad * x where x <= 0)`` per channel into ``grads["weight"]``."""

    def __init__(self, num_parameters: int, init: float, dtype: DTypeLike) -> None:
        super().__init__()
        self.params["weight"] = np.full(num_parameters, init, dtype=dtype)
        self.grads["weight"] = np.zeros(num_parameters, dtype=dtype)

    def _slope(self, x: NDArray[Any]) -> NDArray[Any]:
        weight = self.params["weight"]
        if weight.size == 1:
            return weight.astype(x.dtype).reshape(())
        if x.ndim < 2 or x.shape[1] != weight.size:
            raise ValueError(f"prelu with num_parameters={weight.size} needs input with "
                             f"{weight.size} channels on axis 1, got shape {x.shape}")
        return weight.astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 2))

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        self._positive = x > 0
        return np.where(self._positive, x, self._slope(x) * x)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        x = self._x
        slope_grad = np.where(self._positive, 0.0, x * grad_out)
        weight_grad = self.grads["weight"]
        if weight_grad.size == 1:
            weight_grad += slope_grad.sum()
        else:
            weight_grad += slope_grad.sum(axis=(0, *range(2, x.ndim)))
        return np.where(self._positive, grad_out, self._slope(x) * grad_out)


def build_numpy(spec: PReLUSpec, dtype: DTypeLike = np.float64) -> NumpyPReLU:
    return NumpyPReLU(spec.num_parameters, spec.init, dtype)


def build_torch(spec: PReLUSpec, dtype: Any = None, device: Any = None) -> Any:
    import torch

    return torch.nn.PReLU(num_parameters=spec.num_parameters, init=spec.init, dtype=dtype,
                          device=device)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="prelu", spec=PReLUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Leaky ReLU whose negative slope (shared or per channel) is a parameter trained "
                "by the optimizer.",
        reference="He et al. 2015, arXiv:1502.01852")]
