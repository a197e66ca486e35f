"""Multi-step decay: multiply the learning rate by ``gamma`` at each milestone.

``lr_t = base_lr * gamma ** (number of milestones <= t)``. Step decay with hand-placed decay
points, e.g. at 50% and 75% of training (the CIFAR ResNet and Wide-ResNet recipes).

Reference: He et al., "Deep Residual Learning for Image Recognition", 2016; PyTorch
``MultiStepLR``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable
from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class MultiStepSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * gamma ** #{m in milestones : m <= t}``."""

    name: Literal["multistep"] = "multistep"
    milestones: Annotated[tuple[optiplug.PositiveInt, ...], Field(min_length=1)]
    """Steps at which the learning rate decays: positive, strictly increasing."""
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 0.1
    """Multiplicative decay factor at each milestone, in (0, 1]."""

    @field_validator("milestones")
    @classmethod
    def _strictly_increasing(cls, milestones: tuple[int, ...]) -> tuple[int, ...]:
        for before, after in pairwise(milestones):
            if after <= before:
                raise ValueError(f"milestones must be strictly increasing, got {after} after "
                                 f"{before}")
        return milestones


class NumpyMultiStepLR(NumpyScheduler):
    """NumPy ``MultiStepLR`` (chainable: multiplies the current lr by ``gamma`` at milestones)."""

    def __init__(self, optimizer: Any, milestones: Iterable[int], gamma: float = 0.1,
                 last_epoch: int = -1) -> None:
        self.milestones = Counter(milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        if self.last_epoch not in self.milestones:
            return self.group_lrs()
        return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self.group_lrs()]

    def closed_form_lr(self) -> list[float]:
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch)
                for base_lr in self.base_lrs]


def build_numpy(spec: MultiStepSpec, optimizer: Any) -> NumpyMultiStepLR:
    return NumpyMultiStepLR(optimizer, milestones=spec.milestones, gamma=spec.gamma)


def build_torch(spec: MultiStepSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(spec.milestones),
                                                gamma=spec.gamma)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="multistep", spec=MultiStepSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Multi-step decay: multiply the learning rate by gamma at each milestone step; "
                "step decay at hand-placed points.",
        reference="He et al. 2016; PyTorch MultiStepLR")]
