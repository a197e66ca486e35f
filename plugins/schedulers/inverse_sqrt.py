"""Inverse square-root decay after a linear warm-up: the original Transformer's schedule.

``f(t) = t / W`` for ``t < W`` (from 0), then ``f(t) = 1 / sqrt((t + tau - W) / tau)``, and
``lr_t = base_lr * f(t)``, with ``W`` warm-up steps and time scale ``tau`` (``W`` by default, so
``f(t) = sqrt(W / t)`` after the warm-up, continuous at ``W``). It never needs the training
length, so a run can go on for as long as wanted; stepped per batch.

Reference: Vaswani et al., "Attention Is All You Need", 2017 (and fairseq's
``inverse_sqrt``); defined as Hugging Face transformers' ``get_inverse_sqrt_schedule``, which
torch lacks (built on torch's ``LambdaLR``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import optiplug
from optiplug.backends.numpy import NumpyLambdaScheduler


class InverseSqrtSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * t / W`` for ``t < W``, then ``base_lr / sqrt((t + tau - W) / tau)``."""

    interval: ClassVar[optiplug.Interval] = "batch"

    name: Literal["inverse_sqrt"] = "inverse_sqrt"
    warmup_steps: optiplug.NonNegativeInt
    """Steps ``W`` of the linear warm-up from 0, >= 0."""
    timescale: optiplug.PositiveInt | None = None
    """Time scale ``tau`` of the decay, > 0; ``null``: ``warmup_steps``, or 10000 without one."""


class InverseSqrtFactor:
    """The factor ``f(t)`` of the learning rate; a callable object, so state dicts hold it."""

    def __init__(self, warmup_steps: int, timescale: int) -> None:
        self.warmup_steps = warmup_steps
        self.timescale = timescale

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return float(step) / float(max(1, self.warmup_steps))
        shift = self.timescale - self.warmup_steps
        return 1.0 / math.sqrt((step + shift) / self.timescale)


def _factor(spec: InverseSqrtSpec) -> InverseSqrtFactor:
    timescale = spec.timescale if spec.timescale is not None else spec.warmup_steps or 10_000
    return InverseSqrtFactor(spec.warmup_steps, timescale)


def build_numpy(spec: InverseSqrtSpec, optimizer: Any) -> NumpyLambdaScheduler:
    return NumpyLambdaScheduler(optimizer, _factor(spec))


def build_torch(spec: InverseSqrtSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, _factor(spec))


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="inverse_sqrt", spec=InverseSqrtSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Linear warm-up from 0, then decay as 1/sqrt(step): the original Transformer "
                "schedule; needs no training length.",
        reference="Vaswani et al. 2017; transformers get_inverse_sqrt_schedule")]
