"""Warmup-stable-decay (WSD): warm up, hold the peak rate, then decay in a short final phase.

With ``W`` warm-up, ``S`` stable and ``D`` decay steps and floor ratio ``m``, ``lr_t = base_lr *
f(t)`` where ``f`` rises from ``m`` to 1 over the warm-up (``p = t / W``: linear ``p``, cosine
``(1 - cos(pi p)) / 2``, sqrt ``1 - sqrt(1 - p)``, each mapped to ``m + (1 - m) * shape``), is 1
for ``S`` steps, falls from 1 to ``m`` over the decay (``p = (t - W - S) / D``: linear ``1 - p``,
cosine ``(1 + cos(pi p)) / 2``, sqrt ``1 - sqrt(p)``) and stays at ``m``. The long plateau
needs no training length in advance: decaying from any checkpoint of it gives a finished model,
so one run serves several budgets. Stepped per batch.

Reference: Hu et al., "MiniCPM: Unveiling the Potential of Small Language Models with Scalable
Training Strategies", 2024; Hägele et al., "Scaling Laws and Compute-Optimal Training Beyond
Fixed Training Durations", 2024 (the 1 - sqrt decay); defined as Hugging Face transformers'
``get_wsd_schedule``, which torch lacks (built on torch's ``LambdaLR``).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, model_validator

import optiplug
from optiplug.backends.numpy import NumpyLambdaScheduler

Shape = Literal["linear", "cosine", "sqrt"]


class WarmupStableDecaySpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * f(t)``: warm-up from ``min_lr_ratio`` to 1, plateau, decay back."""

    # No default config validates (the phase lengths are required): show one that does, with
    # phases short enough that the conformance kit's few dozen steps reach the decay's end (so
    # moving any phase length or shape shows).
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"warmup_steps": 5, "stable_steps": 10, "decay_steps": 20}]})
    interval: ClassVar[optiplug.Interval] = "batch"

    name: Literal["warmup_stable_decay"] = "warmup_stable_decay"
    warmup_steps: optiplug.NonNegativeInt = 0
    """Steps ``W`` of the warm-up, >= 0."""
    decay_steps: optiplug.PositiveInt
    """Steps ``D`` of the final decay, > 0."""
    stable_steps: optiplug.NonNegativeInt | None = None
    """Steps ``S`` at the peak rate, >= 0; else ``total_steps - W - D``."""
    total_steps: optiplug.PositiveInt | None = None
    """All steps ``W + S + D``, instead of (or agreeing with) ``stable_steps``."""
    warmup_shape: Shape = "linear"
    """Shape of the warm-up: ``linear``, ``cosine`` or ``sqrt`` (``1 - sqrt(1 - p)``)."""
    decay_shape: Shape = "cosine"
    """Shape of the decay: ``linear``, ``cosine`` or ``sqrt`` (``1 - sqrt(p)``)."""
    min_lr_ratio: optiplug.Probability = 0.0
    """Fraction ``m`` of ``base_lr`` at the start of the warm-up and after the decay, in [0, 1]."""

    @model_validator(mode="after")
    def _consistent_steps(self) -> WarmupStableDecaySpec:
        self.plateau()
        return self

    def plateau(self) -> int:
        """The stable phase's length ``S``, from ``stable_steps`` or ``total_steps``.

        Raises:
            ValueError: neither is given, they disagree, or ``total_steps`` is too short.
        """
        phases = self.warmup_steps + self.decay_steps
        if self.total_steps is not None:
            if self.total_steps < phases:
                raise ValueError(f"total_steps={self.total_steps} is shorter than warmup_steps "
                                 f"+ decay_steps = {phases}")
            if self.stable_steps is not None and phases + self.stable_steps != self.total_steps:
                raise ValueError(f"warmup_steps + stable_steps + decay_steps = "
                                 f"{phases + self.stable_steps} but total_steps="
                                 f"{self.total_steps}: give one of stable_steps and total_steps")
            return self.total_steps - phases
        if self.stable_steps is None:
            raise ValueError("give stable_steps or total_steps")
        return self.stable_steps


class WarmupStableDecayFactor:
    """The factor ``f(t)`` of the learning rate; a callable object, so state dicts hold it."""

    def __init__(self, warmup_steps: int, stable_steps: int, decay_steps: int,
                 warmup_shape: str, decay_shape: str, min_lr_ratio: float) -> None:
        self.warmup_steps = warmup_steps
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        self.warmup_shape = warmup_shape
        self.decay_shape = decay_shape
        self.min_lr_ratio = min_lr_ratio

    def __call__(self, step: int) -> float:
        warmup, stable, decay = self.warmup_steps, self.stable_steps, self.decay_steps
        if step < warmup:
            progress = float(step) / float(max(1, warmup))
            if self.warmup_shape == "linear":
                factor = progress
            elif self.warmup_shape == "cosine":
                factor = 0.5 * (1.0 - math.cos(math.pi * progress))
            else:
                factor = 1.0 - math.sqrt(1.0 - progress)
            return max(0.0, factor * (1.0 - self.min_lr_ratio) + self.min_lr_ratio)
        if step < warmup + stable:
            return 1.0
        if step < warmup + stable + decay:
            progress = float(step - warmup - stable) / float(max(1, decay))
            if self.decay_shape == "linear":
                factor = 1.0 - progress
            elif self.decay_shape == "cosine":
                factor = 0.5 * (1.0 + math.cos(math.pi * progress))
            else:
                factor = 1.0 - math.sqrt(progress)
            return max(0.0, factor * (1.0 - self.min_lr_ratio) + self.min_lr_ratio)
        return self.min_lr_ratio


def _factor(spec: WarmupStableDecaySpec) -> WarmupStableDecayFactor:
    return WarmupStableDecayFactor(spec.warmup_steps, spec.plateau(), spec.decay_steps,
                                   spec.warmup_shape, spec.decay_shape, spec.min_lr_ratio)


def build_numpy(spec: WarmupStableDecaySpec, optimizer: Any) -> NumpyLambdaScheduler:
    return NumpyLambdaScheduler(optimizer, _factor(spec))


def build_torch(spec: WarmupStableDecaySpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, _factor(spec))


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="warmup_stable_decay", spec=WarmupStableDecaySpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Warmup-stable-decay (WSD): warm up, hold the peak for most of the run, decay "
                "(linear, cosine or 1-sqrt) at the end.",
        reference="Hu et al. 2024 (MiniCPM); transformers get_wsd_schedule")]
