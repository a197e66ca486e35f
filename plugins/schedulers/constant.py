"""Constant learning rate, optionally scaled by a factor for the first steps.

``lr_t = base_lr * factor`` for ``t < total_iters``, then ``base_lr``. With the defaults
(``factor=1``, ``total_iters=0``) the learning rate never changes: the baseline schedule, and the
one to use when the optimizer (Adam and kin) adapts step sizes itself.

Reference: PyTorch ``torch.optim.lr_scheduler.ConstantLR``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class ConstantSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * (factor if t < total_iters else 1)``."""

    name: Literal["constant"] = "constant"
    factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    """Multiplier of the learning rate during the first ``total_iters`` steps, in (0, 1]."""
    total_iters: optiplug.NonNegativeInt = 0
    """Number of steps the factor applies; 0 with ``factor=1`` is a plain constant."""

    @model_validator(mode="after")
    def _factor_needs_steps(self) -> ConstantSpec:
        if self.factor != 1.0 and self.total_iters == 0:
            raise ValueError(f"factor={self.factor} needs total_iters >= 1, the number of steps "
                             f"it applies (with total_iters=0 it would never be undone)")
        return self


class NumpyConstantLR(NumpyScheduler):
    """NumPy ``ConstantLR``: scale by ``factor`` at step 0, undo it at ``total_iters``."""

    def __init__(self, optimizer: Any, factor: float = 1.0, total_iters: int = 0,
                 last_epoch: int = -1) -> None:
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.factor for lr in self.group_lrs()]
        if self.last_epoch != self.total_iters:
            return self.group_lrs()
        return [lr * (1.0 / self.factor) for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        return [base_lr * (self.factor + (self.last_epoch >= self.total_iters)
                           * (1 - self.factor)) for base_lr in self.base_lrs]


def build_numpy(spec: ConstantSpec, optimizer: Any) -> NumpyConstantLR:
    return NumpyConstantLR(optimizer, factor=spec.factor, total_iters=spec.total_iters)


def build_torch(spec: ConstantSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=spec.factor,
                                               total_iters=spec.total_iters)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="constant", spec=ConstantSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Constant learning rate, optionally scaled by a factor for the first steps; the "
                "baseline, and enough for adaptive optimizers.",
        reference="PyTorch ConstantLR")]
