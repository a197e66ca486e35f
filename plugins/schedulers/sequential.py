"""Sequential schedules: run registered schedulers one after another, switching at milestones.

``schedulers: [A, B, C]`` with ``milestones: [m1, m2]`` runs A for steps ``0 .. m1 - 1``, then B
restarted at its own step 0 until ``m2``, then C; each child is any registered scheduler given
as a nested config. The usual use is a warm-up followed by a decay
(``{name: sequential, schedulers: [{name: linear_warmup, warmup_steps: 5}, {name: cosine,
T_max: 95}], milestones: [5]}``). It steps per batch if any child does, else per epoch.

Reference: PyTorch ``SequentialLR`` (whose semantics both backends follow to the bit).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, field_validator

import optiplug
from optiplug.backends.numpy import NumpySequentialScheduler

COMPOSITES = ("sequential", "chained")


def _steps_without_metric(child: optiplug.SchedulerSpec) -> optiplug.SchedulerSpec:
    if child.steps_on_metric:
        raise ValueError(f"{child.name} steps on a validation metric and cannot be part of a "
                         f"sequence")
    return child


Child = Annotated[optiplug.SchedulerConfig, AfterValidator(_steps_without_metric)]


class SequentialSpec(optiplug.SchedulerSpec):
    """Child ``i`` runs from ``milestones[i - 1]`` (restarted at its step 0) to the next."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "schedulers": [{"name": "linear_warmup", "warmup_steps": 5},
                       {"name": "cosine", "T_max": 95}], "milestones": [5]}]})

    name: Literal["sequential"] = "sequential"
    schedulers: Annotated[tuple[Child, ...], Field(min_length=1)]
    """The schedulers, in order, each a nested config (``{name: cosine, T_max: 90}``)."""
    milestones: Annotated[tuple[optiplug.PositiveInt, ...], Field(validate_default=True)] = ()
    """Steps at which the next scheduler takes over: one fewer than ``schedulers``, increasing."""

    @field_validator("schedulers")
    @classmethod
    def _sequenceable(cls, schedulers: tuple[optiplug.SchedulerSpec, ...]
                      ) -> tuple[optiplug.SchedulerSpec, ...]:
        for index, child in enumerate(schedulers):
            if index > 0 and child.name in COMPOSITES:
                raise ValueError(f"schedulers.{index} ({child.name}) is itself a composite: "
                                 f"only the first scheduler of a sequence may be one (torch's "
                                 f"SequentialLR cannot restart it at a milestone)")
        return schedulers

    @field_validator("milestones")
    @classmethod
    def _one_per_switch(cls, milestones: tuple[int, ...],
                        info: ValidationInfo) -> tuple[int, ...]:
        for before, after in pairwise(milestones):
            if after <= before:
                raise ValueError(f"milestones must be strictly increasing, got {after} after "
                                 f"{before}")
        schedulers = info.data.get("schedulers")
        if schedulers is not None and len(milestones) != len(schedulers) - 1:
            raise ValueError(f"{len(schedulers)} schedulers need {len(schedulers) - 1} "
                             f"milestone(s), got {len(milestones)}")
        return milestones

    def step_interval(self) -> optiplug.Interval:
        """Per batch if any child steps per batch (its steps count batches), else per epoch."""
        intervals = {child.step_interval() for child in self.schedulers}
        return "batch" if "batch" in intervals else "epoch"


def build_numpy(spec: SequentialSpec, optimizer: Any) -> NumpySequentialScheduler:
    children = [optiplug.build(child, backend="numpy", optimizer=optimizer)
                for child in spec.schedulers]
    return NumpySequentialScheduler(optimizer, children, milestones=list(spec.milestones))


def build_torch(spec: SequentialSpec, optimizer: Any) -> Any:
    import torch

    children = [optiplug.build(child, backend="torch", optimizer=optimizer)
                for child in spec.schedulers]
    return torch.optim.lr_scheduler.SequentialLR(optimizer, children,
                                                 milestones=list(spec.milestones))


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="sequential", spec=SequentialSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Registered schedulers one after another, switching at milestones (e.g. a "
                "warm-up, then a cosine decay).",
        reference="PyTorch SequentialLR")]
