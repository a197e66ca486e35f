"""SwiGLU: the Swish-gated linear unit, ``silu(a) * b`` with ``a, b`` the two halves of the input.

The input is split in two equal halves along ``dim`` (first half ``a``, second ``b``); the
output, half as wide, is ``b`` gated by ``silu(a) = a * sigmoid(a)``. The feed-forward
activation of LLaMA, PaLM and most recent transformers (``W2 (silu(x W1) * x W3)``, with
``W1`` and ``W3`` fused into one linear layer twice as wide). torch has no module for it; the
torch backend's module computes ``F.silu(a) * b`` with torch's kernels.

Reference: Shazeer, "GLU Variants Improve Transformer", arXiv:2002.05202, 2020.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyModule, halved_shape, sigmoid_pair, split_halves


class SwiGLUSpec(optiplug.ActivationSpec):
    """``swiglu(x) = silu(a) * b``, ``a, b = split(x, 2, dim)``; halves ``dim``."""

    name: Literal["swiglu"] = "swiglu"
    dim: Annotated[int, Field(ge=-64, lt=64)] = -1
    """The axis that is halved; its size must be even. Negative counts from the end
    (|dim| < 64)."""

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The input shape with ``dim`` halved."""
        return halved_shape(input_shape, self.dim)


class NumpySwiGLU(NumpyModule):
    """``da = g b s (1 + a (1 - s))``, ``db = g a s`` (``s = sigmoid(a)``, ``1 - s`` computed as
    ``sigmoid(-a)``), concatenated along ``dim``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._a, self._b = split_halves(x, self.dim, "swiglu")
        self._s, self._s_neg = sigmoid_pair(self._a)
        self._silu = self._a * self._s
        return self._silu * self._b

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        silu_grad = self._s * (1.0 + self._a * self._s_neg)
        return np.concatenate([grad_out * self._b * silu_grad, grad_out * self._silu],
                              axis=self.dim)


def build_numpy(spec: SwiGLUSpec) -> NumpySwiGLU:
    return NumpySwiGLU(spec.dim)


@functools.cache
def _torch_module() -> Any:
    import torch

    class SwiGLU(torch.nn.Module):
        """``F.silu(a) * b`` over the two halves of the input along ``dim``."""

        def __init__(self, dim: int = -1) -> None:
            super().__init__()
            self.dim = dim

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[self.dim] % 2:
                raise ValueError(f"swiglu halves dim={self.dim}, whose size must be even; got "
                                 f"input shape {tuple(x.shape)}")
            a, b = x.chunk(2, dim=self.dim)
            return torch.nn.functional.silu(a) * b

        def extra_repr(self) -> str:
            return f"dim={self.dim}"

    return SwiGLU


def build_torch(spec: SwiGLUSpec) -> Any:
    return _torch_module()(spec.dim)


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="swiglu", spec=SwiGLUSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Swish-gated linear unit silu(a) * b over the two halves of the input, the "
                "feed-forward activation of LLaMA-style transformers; halves dim.",
        reference="Shazeer 2020, arXiv:2002.05202")]
