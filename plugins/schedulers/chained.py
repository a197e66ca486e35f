"""Chained schedules: step several registered schedulers together, multiplying their effects.

Every step runs each child in order on the learning rate the previous one left, so chainable
(multiplicative) schedules multiply: ``exponential`` chained with ``step`` decays by both. A
closed-form child (``cosine_restarts``, ``cyclic``, ``one_cycle``, ``inverse_sqrt``,
``warmup_stable_decay``) sets the rate outright and overrides the children before it. Each child
is any registered scheduler given as a nested config. It steps per batch if any child does,
else per epoch.

Reference: PyTorch ``ChainedScheduler`` (whose semantics both backends follow to the bit).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field

import optiplug
from optiplug.backends.numpy import NumpyChainedScheduler


def _steps_without_metric(child: optiplug.SchedulerSpec) -> optiplug.SchedulerSpec:
    if child.steps_on_metric:
        raise ValueError(f"{child.name} steps on a validation metric and cannot be chained")
    return child


Child = Annotated[optiplug.SchedulerConfig, AfterValidator(_steps_without_metric)]


class ChainedSpec(optiplug.SchedulerSpec):
    """Every step, each child steps on the lr the previous one set."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "schedulers": [{"name": "exponential", "gamma": 0.99},
                       {"name": "step", "step_size": 30, "gamma": 0.5}]}]})

    name: Literal["chained"] = "chained"
    schedulers: Annotated[tuple[Child, ...], Field(min_length=1)]
    """The schedulers, stepped in this order, each a nested config (``{name: step, ...}``)."""

    def step_interval(self) -> optiplug.Interval:
        """Per batch if any child steps per batch, else per epoch."""
        intervals = {child.step_interval() for child in self.schedulers}
        return "batch" if "batch" in intervals else "epoch"


def build_numpy(spec: ChainedSpec, optimizer: Any) -> NumpyChainedScheduler:
    children = [optiplug.build(child, backend="numpy", optimizer=optimizer)
                for child in spec.schedulers]
    return NumpyChainedScheduler(optimizer, children)


def build_torch(spec: ChainedSpec, optimizer: Any) -> Any:
    import torch

    children = [optiplug.build(child, backend="torch", optimizer=optimizer)
                for child in spec.schedulers]
    return torch.optim.lr_scheduler.ChainedScheduler(children, optimizer=optimizer)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="chained", spec=ChainedSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Registered schedulers stepped together, each on the lr the previous one left "
                "(chainable decays multiply).",
        reference="PyTorch ChainedScheduler")]
