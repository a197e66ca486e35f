"""Polynomial decay: the learning rate falls to 0 along ``(1 - t / T) ** power`` over T steps.

``lr_t = base_lr * (1 - min(t, T) / T) ** power`` (computed recursively, as torch does, so other
changes to ``lr`` compose); 0 from step ``T`` on. ``power = 1`` is a linear decay to 0; the
"poly" schedule of semantic segmentation (DeepLab) uses ``power = 0.9``. Needs the training
length in advance.

Reference: Chen et al., "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets,
Atrous Convolution, and Fully Connected CRFs", 2017; PyTorch ``PolynomialLR``.
"""

from __future__ import annotations

from typing import Any, Literal

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class PolynomialSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * (1 - min(t, total_iters) / total_iters) ** power``."""

    name: Literal["polynomial"] = "polynomial"
    total_iters: optiplug.PositiveInt
    """Number of steps ``T`` until the learning rate reaches 0, > 0."""
    power: optiplug.PositiveFloat = 1.0
    """Exponent of the decay, > 0: 1 is linear, < 1 stays high longer, > 1 drops early."""


class NumpyPolynomialLR(NumpyScheduler):
    """NumPy ``PolynomialLR`` (chainable: multiplies the lr by the ratio of two factors)."""

    def __init__(self, optimizer: Any, total_iters: int = 5, power: float = 1.0,
                 last_epoch: int = -1) -> None:
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial or self.last_epoch > self.total_iters:
            return self.group_lrs()
        decay_factor = ((1.0 - self.last_epoch / self.total_iters)
                        / (1.0 - (self.last_epoch - 1) / self.total_iters)) ** self.power
        return [lr * decay_factor for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        return [base_lr * (1.0 - min(self.total_iters, self.last_epoch) / self.total_iters)
                ** self.power for base_lr in self.base_lrs]


def build_numpy(spec: PolynomialSpec, optimizer: Any) -> NumpyPolynomialLR:
    return NumpyPolynomialLR(optimizer, total_iters=spec.total_iters, power=spec.power)


def build_torch(spec: PolynomialSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=spec.total_iters,
                                                 power=spec.power)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="polynomial", spec=PolynomialSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Polynomial decay to 0 over total_iters steps, (1 - t/T)^power; the 'poly' "
                "schedule of segmentation models.",
        reference="Chen et al. 2017 (DeepLab); PyTorch PolynomialLR")]
