"""Layer normalization: normalize each sample over its last (feature) dimension.

``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and biased variance of each
sample's ``num_features`` values, the same in training and evaluation (no running statistics,
independent of the batch size). The standard choice in transformers and recurrent networks,
and whenever batches are small. Follows ``torch.nn.LayerNorm(num_features)``.

Reference: Ba, Kiros & Hinton, "Layer Normalization", arXiv:1607.06450, 2016.
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


class LayerNormSpec(optiplug.NormalizerSpec):
    """Per-sample normalization over the last dimension."""

    name: Literal["layer_norm"] = "layer_norm"
    eps: optiplug.PositiveFloat = 1e-5
    """Added to the variance before the square root."""
    affine: bool = True
    """Learn a per-feature scale ``weight`` (and shift ``bias``)."""
    bias: bool = True
    """Learn the shift ``bias`` too (only with ``affine``)."""


class NumpyLayerNorm(NumpyNormLayer):
    """Layer norm over the last axis of ``(..., num_features)`` input."""

    def __init__(self, spec: LayerNormSpec, num_features: int, dtype: DTypeLike) -> None:
        super().__init__(num_features, affine=spec.affine, bias=spec.bias, dtype=dtype,
                         feature_axis=-1)
        self.spec = spec

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        x_hat, self._inv_std, _, _ = normalize(self._check_input(x, 1), (-1,), self.spec.eps)
        return self._affine_forward(x_hat)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        grad_x_hat, x_hat = self._affine_backward(grad_out)
        return normalize_backward(grad_x_hat, x_hat, self._inv_std, (-1,))


def build_numpy(spec: LayerNormSpec, num_features: int | None = None,
                dtype: DTypeLike = np.float64) -> NumpyLayerNorm:
    return NumpyLayerNorm(spec, layer_features("layer_norm", num_features), dtype)


def build_torch(spec: LayerNormSpec, num_features: int | None = None, dtype: Any = None,
                device: Any = None) -> Any:
    import torch

    return torch.nn.LayerNorm(layer_features("layer_norm", num_features), eps=spec.eps,
                              elementwise_affine=spec.affine, bias=spec.bias, dtype=dtype,
                              device=device)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="layer_norm", spec=LayerNormSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Layer normalization: each sample over its features, independent of the batch; "
                "the standard in transformers and RNNs.",
        reference="Ba, Kiros & Hinton 2016")]
