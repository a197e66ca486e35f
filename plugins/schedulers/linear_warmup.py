"""Linear warm-up: ramp the learning rate linearly up to its base value, then hold it.

``lr_t = base_lr * (s + (1 - s) * min(t, W) / W)`` with start factor ``s`` and ``W`` warm-up
steps. Large learning rates and large batches diverge in the first steps while Adam's moment
estimates and the batch-norm statistics settle; a short ramp avoids it. ``W = 0`` is a constant
learning rate. Declared to step per batch (the ramp counts optimizer steps).

Reference: Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", 2017;
PyTorch ``LinearLR``.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class LinearWarmupSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * (start_factor + (1 - start_factor) * min(t, W) / W)``."""

    interval: ClassVar[optiplug.Interval] = "batch"

    name: Literal["linear_warmup"] = "linear_warmup"
    warmup_steps: optiplug.NonNegativeInt = 5
    """Number of steps ``W`` of the ramp, >= 0; the learning rate is ``base_lr`` from step W."""
    start_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0 / 3
    """Fraction of ``base_lr`` at step 0, in (0, 1]; ignored when ``warmup_steps=0``."""


class NumpyLinearWarmup(NumpyScheduler):
    """NumPy ``LinearLR``: the factor goes linearly from ``start_factor`` to ``end_factor``.

    Chainable like torch's: each step multiplies the current lr by the ratio of consecutive
    factors, so the sequence equals torch's bit for bit.
    """

    def __init__(self, optimizer: Any, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
                 total_iters: int = 5, last_epoch: int = -1) -> None:
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch == 0:
            return [lr * self.start_factor for lr in self.group_lrs()]
        if self._is_initial or self.last_epoch > self.total_iters:
            return self.group_lrs()
        ratio = 1.0 + (self.end_factor - self.start_factor) / (
            self.total_iters * self.start_factor
            + (self.last_epoch - 1) * (self.end_factor - self.start_factor))
        return [lr * ratio for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        return [base_lr * (self.start_factor + (self.end_factor - self.start_factor)
                           * min(self.total_iters, self.last_epoch) / self.total_iters)
                for base_lr in self.base_lrs]


def warmup_arguments(warmup_steps: int, start_factor: float) -> dict[str, Any]:
    """``LinearLR`` arguments for a warm-up; without steps the factor is 1 (no warm-up)."""
    if warmup_steps == 0:
        # LinearLR with total_iters=0 would keep start_factor forever.
        return {"start_factor": 1.0, "end_factor": 1.0, "total_iters": 0}
    return {"start_factor": start_factor, "end_factor": 1.0, "total_iters": warmup_steps}


def build_numpy(spec: LinearWarmupSpec, optimizer: Any) -> NumpyLinearWarmup:
    return NumpyLinearWarmup(optimizer, **warmup_arguments(spec.warmup_steps, spec.start_factor))


def build_torch(spec: LinearWarmupSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.LinearLR(
        optimizer, **warmup_arguments(spec.warmup_steps, spec.start_factor))


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="linear_warmup", spec=LinearWarmupSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Linear warm-up from start_factor * lr to lr over warmup_steps, then constant; "
                "keeps large learning rates and batches from diverging early.",
        reference="Goyal et al. 2017; PyTorch LinearLR")]
