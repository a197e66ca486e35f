"""Group normalization: normalize each sample over groups of channels (and their positions).

The ``C`` channels of ``(N, C, *)`` input are split into ``num_groups`` groups; each sample's
group is normalized by its own mean and biased variance, then scaled and shifted per channel.
Independent of the batch size, so use it instead of batch norm for small batches (detection,
segmentation, video). ``num_groups=1`` is layer norm over ``(C, *)``, ``num_groups=C`` is
instance norm. Follows ``torch.nn.GroupNorm``.

Reference: Wu & He, "Group Normalization", ECCV 2018.
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


class GroupNormSpec(optiplug.NormalizerSpec):
    """Per-sample normalization over groups of channels."""

    name: Literal["group_norm"] = "group_norm"
    num_groups: optiplug.PositiveInt
    """Number of channel groups; must divide the number of channels (32 in the paper)."""
    eps: optiplug.PositiveFloat = 1e-5
    """Added to the variance before the square root."""
    affine: bool = True
    """Learn a per-channel scale ``weight`` and shift ``bias``."""


class NumpyGroupNorm(NumpyNormLayer):
    """Group norm of ``(N, C, *)`` input."""

    def __init__(self, spec: GroupNormSpec, num_features: int, dtype: DTypeLike) -> None:
        if num_features % spec.num_groups:
            raise optiplug.ConfigError([optiplug.ConfigIssue("num_groups", (
                f"{spec.num_groups} groups do not divide num_features={num_features}"))])
        super().__init__(num_features, affine=spec.affine, dtype=dtype, feature_axis=1)
        self.spec = spec

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        x = self._check_input(x, 2)
        grouped = x.reshape(x.shape[0], self.spec.num_groups, -1)
        x_hat, self._inv_std, _, _ = normalize(grouped, (2,), self.spec.eps)
        return self._affine_forward(x_hat.reshape(x.shape))

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        grad_x_hat, x_hat = self._affine_backward(grad_out)
        grouped = (x_hat.shape[0], self.spec.num_groups, -1)
        grad = normalize_backward(grad_x_hat.reshape(grouped), x_hat.reshape(grouped),
                                  self._inv_std, (2,))
        return grad.reshape(x_hat.shape)


def build_numpy(spec: GroupNormSpec, num_features: int | None = None,
                dtype: DTypeLike = np.float64) -> NumpyGroupNorm:
    return NumpyGroupNorm(spec, layer_features("group_norm", num_features), dtype)


def build_torch(spec: GroupNormSpec, num_features: int | None = None, dtype: Any = None,
                device: Any = None) -> Any:
    import torch

    num_channels = layer_features("group_norm", num_features)
    if num_channels % spec.num_groups:
        raise optiplug.ConfigError([optiplug.ConfigIssue("num_groups", (
            f"{spec.num_groups} groups do not divide num_features={num_channels}"))])
    return torch.nn.GroupNorm(spec.num_groups, num_channels, eps=spec.eps, affine=spec.affine,
                              dtype=dtype, device=device)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="group_norm", spec=GroupNormSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Group normalization: each sample over groups of channels, independent of the "
                "batch; replaces batch norm for small-batch CNNs.",
        reference="Wu & He 2018")]
