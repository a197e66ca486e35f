"""RMS normalization: scale each sample's features by their root mean square, no centering.

``y = x / sqrt(mean(x^2) + eps) * weight`` over the last dimension: layer norm without the mean
subtraction and bias, cheaper and as effective in practice. Used in modern transformers
(T5, LLaMA). ``eps=None`` uses the machine epsilon of the input's dtype, as torch does. Follows
``torch.nn.RMSNorm(num_features)``.

Reference: Zhang & Sennrich, "Root Mean Square Layer Normalization", NeurIPS 2019.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

import optiplug
from optiplug.backends.numpy import (
    NumpyNormLayer,
    layer_features,
    normalize,
    normalize_backward,
)


class RMSNormSpec(optiplug.NormalizerSpec):
    """Per-sample scaling by the root mean square of the last dimension."""

    name: Literal["rms_norm"] = "rms_norm"
    eps: optiplug.PositiveFloat | None = None
    """Added to the mean square before the square root; ``None``: the input dtype's epsilon."""
    affine: bool = True
    """Learn a per-feature scale ``weight`` (RMS norm has no shift)."""


class NumpyRMSNorm(NumpyNormLayer):
    """RMS norm over the last axis of ``(..., num_features)`` input."""

    def __init__(self, spec: RMSNormSpec, num_features: int, dtype: DTypeLike) -> None:
        super().__init__(num_features, affine=spec.affine, bias=False, dtype=dtype,
                         feature_axis=-1)
        self.spec = spec

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        x = self._check_input(x, 1)
        eps = float(np.finfo(x.dtype).eps) if self.spec.eps is None else self.spec.eps
        x_hat, self._inv_std, _, _ = normalize(x, (-1,), eps, center=False)
        return self._affine_forward(x_hat)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        grad_x_hat, x_hat = self._affine_backward(grad_out)
        return normalize_backward(grad_x_hat, x_hat, self._inv_std, (-1,), center=False)


def build_numpy(spec: RMSNormSpec, num_features: int | None = None,
                dtype: DTypeLike = np.float64) -> NumpyRMSNorm:
    return NumpyRMSNorm(spec, layer_features("rms_norm", num_features), dtype)


def build_torch(spec: RMSNormSpec, num_features: int | None = None, dtype: Any = None,
                device: Any = None) -> Any:
    import torch

    return torch.nn.RMSNorm(layer_features("rms_norm", num_features), eps=spec.eps,
                            elementwise_affine=spec.affine, dtype=dtype, device=device)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="rms_norm", spec=RMSNormSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="RMS normalization: each sample scaled by the root mean square of its features, "
                "no centering; the cheaper layer norm of modern transformers.",
        reference="Zhang & Sennrich 2019")]
