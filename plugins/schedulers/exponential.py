"""Exponential decay: multiply the learning rate by ``gamma`` after every step.

``lr_t = base_lr * gamma ** t``. A smooth decay with one knob; ``gamma`` close to 1 (0.95-0.999)
when stepping per epoch, closer still when stepping per batch.

Reference: PyTorch ``torch.optim.lr_scheduler.ExponentialLR``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class ExponentialSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * gamma ** t``."""

    name: Literal["exponential"] = "exponential"
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    """Multiplicative decay factor per step, in (0, 1]."""


class NumpyExponentialLR(NumpyScheduler):
    """NumPy ``ExponentialLR`` (chainable: multiplies the current lr by ``gamma`` each step)."""

    def __init__(self, optimizer: Any, gamma: float, last_epoch: int = -1) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        # The constructor's step must not decay (it would put a resumed run one step ahead).
        if self._is_initial:
            return self.group_lrs()
        return [lr * self.gamma for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


def build_numpy(spec: ExponentialSpec, optimizer: Any) -> NumpyExponentialLR:
    return NumpyExponentialLR(optimizer, gamma=spec.gamma)


def build_torch(spec: ExponentialSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=spec.gamma)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="exponential", spec=ExponentialSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Exponential decay: multiply the learning rate by gamma after every step; smooth "
                "decay with one knob.",
        reference="PyTorch ExponentialLR")]
