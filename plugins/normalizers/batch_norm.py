"""Batch normalization: normalize each channel by the statistics of the current mini-batch.

``y = (x - mean_B) / sqrt(var_B + eps) * weight + bias`` per channel, with mean and biased
variance over the batch (and length/spatial) axes while training; running estimates (unbiased
variance, exponential average with ``momentum`` or a cumulative average with ``momentum=None``)
replace them in evaluation. Use it in deep feed-forward and convolutional networks with batches
of more than a few samples; it allows higher learning rates. Follows ``torch.nn.BatchNorm1d``
(and 2d/3d with ``dims``) exactly.

Reference: Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
Reducing Internal Covariate Shift", ICML 2015.
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
    reduced_size,
)


class BatchNormSpec(optiplug.NormalizerSpec):
    """Per-channel normalization by mini-batch statistics, running statistics for evaluation."""

    name: Literal["batch_norm"] = "batch_norm"
    eps: optiplug.PositiveFloat = 1e-5
    """Added to the variance before the square root."""
    momentum: optiplug.Probability | None = 0.1
    """Weight of the new batch in the running statistics; ``None``: cumulative average."""
    affine: bool = True
    """Learn a per-channel scale ``weight`` and shift ``bias``."""
    track_running_stats: bool = True
    """Keep running statistics for evaluation; without them batch statistics are always used."""
    dims: Literal[1, 2, 3] = 1
    """Input layout: 1 for (N, C) or (N, C, L), 2 for (N, C, H, W), 3 for (N, C, D, H, W)."""

    def example_input_shape(self, batch: int, num_features: int) -> tuple[int, ...]:
        return (batch, num_features, *(3,) * self.dims)    # (N, C, L), (N, C, H, W), ...


class NumpyBatchNorm(NumpyNormLayer):
    """Batch norm on channel axis 1; buffers ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (with ``track_running_stats``)."""

    def __init__(self, spec: BatchNormSpec, num_features: int, dtype: DTypeLike) -> None:
        super().__init__(num_features, affine=spec.affine, dtype=dtype, feature_axis=1)
        self.spec = spec
        if spec.track_running_stats:
            self.buffers["running_mean"] = np.zeros(num_features, dtype=self.dtype)
            self.buffers["running_var"] = np.ones(num_features, dtype=self.dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        self._ndims = (2, 3) if spec.dims == 1 else (spec.dims + 2,)

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        x = self._check_input(x, 2)
        if x.ndim not in self._ndims:
            raise ValueError(f"batch_norm with dims={self.spec.dims} expects "
                             f"{' or '.join(f'{n}-D' for n in self._ndims)} input, got {x.shape}")
        axes = (0, *range(2, x.ndim))
        self._batch_stats = self.training or not self.spec.track_running_stats
        if not self._batch_stats:
            mean = self.buffers["running_mean"].astype(x.dtype).reshape(self._feature_shape(x.ndim))
            var = self.buffers["running_var"].astype(x.dtype).reshape(mean.shape)
            self._inv_std = 1.0 / np.sqrt(var + np.asarray(self.spec.eps, dtype=x.dtype))
            x_hat = x - mean
            x_hat *= self._inv_std
            return self._affine_forward(x_hat)
        count = reduced_size(x.shape, axes)
        if self.training and count < 2:
            raise ValueError(f"batch_norm needs more than 1 value per channel when training, got "
                             f"input shape {x.shape}")
        x_hat, self._inv_std, batch_mean, batch_var = normalize(x, axes, self.spec.eps)
        if self.training and self.spec.track_running_stats:
            self._update_running(batch_mean, batch_var, count)
        return self._affine_forward(x_hat)

    def _update_running(self, mean: Any, var: Any, count: int) -> None:
        tracked = self.buffers["num_batches_tracked"]
        tracked += 1
        momentum = 1.0 / float(tracked) if self.spec.momentum is None else self.spec.momentum
        for name, batch in (("running_mean", mean.ravel()),
                            ("running_var", var.ravel() * (count / (count - 1)))):
            running = self.buffers[name]
            running *= 1.0 - momentum
            running += momentum * batch.astype(running.dtype)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        grad_x_hat, x_hat = self._affine_backward(grad_out)
        if not self._batch_stats:
            return grad_x_hat * self._inv_std
        return normalize_backward(grad_x_hat, x_hat, self._inv_std, (0, *range(2, x_hat.ndim)))


def build_numpy(spec: BatchNormSpec, num_features: int | None = None,
                dtype: DTypeLike = np.float64) -> NumpyBatchNorm:
    return NumpyBatchNorm(spec, layer_features("batch_norm", num_features), dtype)


def build_torch(spec: BatchNormSpec, num_features: int | None = None, dtype: Any = None,
                device: Any = None) -> Any:
    import torch

    module = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)[spec.dims - 1]
    return module(layer_features("batch_norm", num_features), eps=spec.eps,
                  momentum=spec.momentum, affine=spec.affine,
                  track_running_stats=spec.track_running_stats, dtype=dtype, device=device)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="batch_norm", spec=BatchNormSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Batch normalization: per-channel mini-batch statistics in training, running "
                "averages in evaluation; for deep MLPs and CNNs with reasonable batch sizes.",
        reference="Ioffe & Szegedy 2015")]
