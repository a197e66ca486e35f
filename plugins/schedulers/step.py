"""Step decay: multiply the learning rate by ``gamma`` every ``step_size`` steps.

``lr_t = base_lr * gamma ** floor(t / step_size)``. The classic schedule of image classifiers
(e.g. ``gamma=0.1`` every 30 epochs for ResNet on ImageNet); needs the decay points tuned to
the training length.

Reference: He et al., "Deep Residual Learning for Image Recognition", 2016; PyTorch ``StepLR``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class StepSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * gamma ** floor(t / step_size)``."""

    name: Literal["step"] = "step"
    step_size: optiplug.PositiveInt
    """Number of steps between two decays, > 0."""
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    """Multiplicative decay factor, in (0, 1]."""


class NumpyStepLR(NumpyScheduler):
    """NumPy ``StepLR`` (chainable: multiplies the current lr by ``gamma`` at each boundary)."""

    def __init__(self, optimizer: Any, step_size: int, gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self.group_lrs()
        return [lr * self.gamma for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size)
                for base_lr in self.base_lrs]


def build_numpy(spec: StepSpec, optimizer: Any) -> NumpyStepLR:
    return NumpyStepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)


def build_torch(spec: StepSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="step", spec=StepSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Step decay: multiply the learning rate by gamma every step_size steps; the "
                "classic image-classification schedule.",
        reference="He et al. 2016; PyTorch StepLR")]
