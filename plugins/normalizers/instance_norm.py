"""Instance normalization: normalize each sample's each channel over its own positions.

``y = (x - mean) / sqrt(var + eps) * weight + bias`` with the mean and biased variance of one
sample's one channel over its length (1-D), height and width (2-D) or depth, height and width
(3-D). Independent of the batch and of the other channels: the normalization of style transfer
and image generation, where per-image contrast should be removed. Follows
``torch.nn.InstanceNorm1d``/``2d``/``3d`` (chosen by ``dims``) exactly:

- inputs are ``(N, C, *spatial)`` or, unbatched, ``(C, *spatial)``;
- ``affine`` (default off, as torch) learns a per-channel ``weight`` and ``bias``;
- ``track_running_stats`` (default off) keeps ``running_mean`` and ``running_var`` (the
  batch mean of the per-instance means and unbiased variances, averaged with ``momentum``) and
  uses them in evaluation mode; ``num_batches_tracked`` is kept for torch's state-dict layout
  and, as in torch, never counts;
- with neither ``affine`` nor running statistics, a channel count other than ``num_features``
  only warns (torch's behaviour: the number is unused then); otherwise it is an error.

Reference: Ulyanov, Vedaldi & Lempitsky, "Instance Normalization: The Missing Ingredient for
Fast Stylization", arXiv:1607.08022, 2016.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

import optiplug
from optiplug.backends.numpy import (
    NumpyNormLayer,
    float_input,
    layer_features,
    normalize,
    normalize_backward,
    reduced_size,
)


class InstanceNormSpec(optiplug.NormalizerSpec):
    """Per-sample, per-channel normalization over the spatial positions."""

    name: Literal["instance_norm"] = "instance_norm"
    eps: optiplug.PositiveFloat = 1e-5
    """Added to the variance before the square root."""
    momentum: optiplug.Probability = 0.1
    """Weight of the new batch in the running statistics (with ``track_running_stats``); 0
    freezes them (what torch's ``momentum=None`` does for instance norm)."""
    affine: bool = False
    """Learn a per-channel scale ``weight`` and shift ``bias`` (off by default, as torch)."""
    track_running_stats: bool = False
    """Keep running statistics and use them in evaluation mode (off by default, as torch)."""
    dims: Literal[1, 2, 3] = 1
    """Spatial dimensions: 1 for (N, C, L), 2 for (N, C, H, W), 3 for (N, C, D, H, W); the
    batch axis may be left out."""

    def example_input_shape(self, batch: int, num_features: int) -> tuple[int, ...]:
        # (N, C, L), (N, C, H, W), ...; 6 positions per axis (with 3, float32 input gradients
        # of the two backends drift apart beyond the kit's tolerance)
        return (batch, num_features, *(6,) * self.dims)


class NumpyInstanceNorm(NumpyNormLayer):
    """Instance norm on channel axis 1 (of the batched input); buffers ``running_mean``,
    ``running_var``, ``num_batches_tracked`` with ``track_running_stats``."""

    def __init__(self, spec: InstanceNormSpec, num_features: int, dtype: DTypeLike) -> None:
        super().__init__(num_features, affine=spec.affine, dtype=dtype, feature_axis=1)
        self.spec = spec
        if spec.track_running_stats:
            self.buffers["running_mean"] = np.zeros(num_features, dtype=self.dtype)
            self.buffers["running_var"] = np.ones(num_features, dtype=self.dtype)
            self.buffers["num_batches_tracked"] = np.zeros((), dtype=np.int64)
        self._unbatched = False

    def _batched(self, x: Any) -> NDArray[Any]:
        x = float_input(x, "instance_norm")
        dims = self.spec.dims
        if x.ndim not in (dims + 1, dims + 2):
            raise ValueError(f"instance_norm with dims={dims} expects {dims + 1}-D (unbatched) "
                             f"or {dims + 2}-D input, got shape {x.shape}")
        self._unbatched = x.ndim == dims + 1
        channel_axis = 0 if self._unbatched else 1
        channels = x.shape[channel_axis]
        if channels != self.num_features:
            message = (f"instance_norm: input has {channels} channels on axis {channel_axis} "
                       f"(shape {x.shape}), num_features is {self.num_features}")
            if self.affine or self.spec.track_running_stats:
                raise ValueError(message)
            warnings.warn(f"{message}; without affine or running statistics num_features is "
                          f"unused", stacklevel=3)
        return x[None] if self._unbatched else x

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        x = self._batched(x)
        axes = tuple(range(2, x.ndim))
        self._batch_stats = self.training or not self.spec.track_running_stats
        if not self._batch_stats:
            shape = (1, -1) + (1,) * len(axes)
            mean = self.buffers["running_mean"].astype(x.dtype).reshape(shape)
            var = self.buffers["running_var"].astype(x.dtype).reshape(shape)
            self._inv_std = 1.0 / np.sqrt(var + np.asarray(self.spec.eps, dtype=x.dtype))
            out = self._affine_forward((x - mean) * self._inv_std)
        else:
            count = reduced_size(x.shape, axes)
            if count < 2:
                raise ValueError(f"instance_norm needs more than 1 spatial element per channel, "
                                 f"got input shape {x.shape}")
            x_hat, self._inv_std, mean, var = normalize(x, axes, self.spec.eps)
            if self.training and self.spec.track_running_stats:
                self._update_running(mean, var, count)
            out = self._affine_forward(x_hat)
        return out[0] if self._unbatched else out

    def _update_running(self, mean: Any, var: Any, count: int) -> None:
        # torch updates one running copy per instance, then averages them over the batch.
        momentum = self.spec.momentum
        for name, batch in (("running_mean", mean.mean(axis=0).ravel()),
                            ("running_var", (var * (count / (count - 1))).mean(axis=0).ravel())):
            running = self.buffers[name]
            running *= 1.0 - momentum
            running += momentum * batch.astype(running.dtype)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        grad_out = np.asarray(grad_out)
        grad_x_hat, x_hat = self._affine_backward(grad_out[None] if self._unbatched else grad_out)
        if not self._batch_stats:
            grad = grad_x_hat * self._inv_std
        else:
            grad = normalize_backward(grad_x_hat, x_hat, self._inv_std, tuple(range(2, x_hat.ndim)))
        return grad[0] if self._unbatched else grad


def build_numpy(spec: InstanceNormSpec, num_features: int | None = None,
                dtype: DTypeLike = np.float64) -> NumpyInstanceNorm:
    return NumpyInstanceNorm(spec, layer_features("instance_norm", num_features), dtype)


def build_torch(spec: InstanceNormSpec, num_features: int | None = None, dtype: Any = None,
                device: Any = None) -> Any:
    import torch

    module = (torch.nn.InstanceNorm1d, torch.nn.InstanceNorm2d,
              torch.nn.InstanceNorm3d)[spec.dims - 1]
    return module(layer_features("instance_norm", num_features), eps=spec.eps,
                  momentum=spec.momentum, affine=spec.affine,
                  track_running_stats=spec.track_running_stats, dtype=dtype, device=device)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="instance_norm", spec=InstanceNormSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Instance normalization: each sample's each channel over its positions, "
                "independent of the batch; for style transfer and image generation.",
        reference="Ulyanov et al. 2016, arXiv:1607.08022")]
