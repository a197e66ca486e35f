"""Cosine annealing, with an optional linear warm-up.

``lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2`` for ``0 <= t <= T_max``
(computed recursively, as torch does, so other changes to ``lr`` compose); past ``T_max`` the
cosine continues and the rate climbs back. With ``warmup_steps = W > 0`` the first ``W`` steps
are a linear warm-up from ``warmup_start_factor * base_lr`` and the cosine starts at step ``W``.
The default decay for transformers and modern vision models: no decay points to tune.

Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017;
PyTorch ``CosineAnnealingLR`` (and ``SequentialLR`` with ``LinearLR`` for the warm-up).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler, NumpySequentialScheduler


class CosineSpec(optiplug.SchedulerSpec):
    """``lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * (t - W) / T_max)) / 2`` after W."""

    name: Literal["cosine"] = "cosine"
    T_max: optiplug.PositiveInt
    """Length of the cosine half-period in steps (after the warm-up), > 0."""
    eta_min: optiplug.NonNegativeFloat = 0.0
    """Learning rate at the end of the cosine (the same for every group), >= 0."""
    warmup_steps: optiplug.NonNegativeInt = 0
    """Linear warm-up steps before the cosine starts, >= 0 (0: no warm-up)."""
    warmup_start_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0 / 3
    """Fraction of ``base_lr`` at step 0 of the warm-up, in (0, 1]."""


class NumpyCosineAnnealingLR(NumpyScheduler):
    """NumPy ``CosineAnnealingLR``, with torch's recursive form and its special cases."""

    def __init__(self, optimizer: Any, T_max: int, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self._is_initial:
            return self.group_lrs()
        if self._step_count == 1 and self.last_epoch > 0:
            return self.closed_form_lr()
        if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
            # At the trough the recursive ratio is 0/0; torch adds the first step's increment.
            return [lr + (base_lr - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2
                    for base_lr, lr in zip(self.base_lrs, self.group_lrs(), strict=True)]
        ratio = ((1 + math.cos(math.pi * self.last_epoch / self.T_max))
                 / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max)))
        return [ratio * (lr - self.eta_min) + self.eta_min for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


def build_numpy(spec: CosineSpec, optimizer: Any) -> NumpyScheduler:
    if spec.warmup_steps == 0:
        return NumpyCosineAnnealingLR(optimizer, T_max=spec.T_max, eta_min=spec.eta_min)
    from optiplug.plugins.schedulers.linear_warmup import NumpyLinearWarmup

    warmup = NumpyLinearWarmup(optimizer, start_factor=spec.warmup_start_factor,
                               end_factor=1.0, total_iters=spec.warmup_steps)
    cosine = NumpyCosineAnnealingLR(optimizer, T_max=spec.T_max, eta_min=spec.eta_min)
    return NumpySequentialScheduler(optimizer, [warmup, cosine],
                                    milestones=[spec.warmup_steps])


def build_torch(spec: CosineSpec, optimizer: Any) -> Any:
    from torch.optim import lr_scheduler

    if spec.warmup_steps == 0:
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.T_max, eta_min=spec.eta_min)
    warmup = lr_scheduler.LinearLR(optimizer, start_factor=spec.warmup_start_factor,
                                   end_factor=1.0, total_iters=spec.warmup_steps)
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=spec.T_max, eta_min=spec.eta_min)
    return lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[spec.warmup_steps])


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="cosine", spec=CosineSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Cosine annealing from lr to eta_min over T_max steps, with an optional linear "
                "warm-up; the default decay for transformers.",
        reference="Loshchilov & Hutter 2017 (SGDR); PyTorch CosineAnnealingLR")]
