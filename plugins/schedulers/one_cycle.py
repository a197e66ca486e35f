"""One-cycle policy: warm up to ``max_lr``, then anneal far below the starting rate.

Over ``total_steps`` steps: from ``initial_lr = max_lr / div_factor`` up to ``max_lr`` during
the first ``pct_start`` of the steps, then down to ``min_lr = initial_lr / final_div_factor``
(``three_phase``: back to ``initial_lr`` symmetrically, then down to ``min_lr``), each phase
annealed by ``a(start, end, p) = end + (start - end) * (1 + cos(pi * p)) / 2`` (or linearly),
``p`` the fraction of the phase done. With ``cycle_momentum`` the momentum (or Adam's beta1)
cycles inversely between ``max_momentum`` and ``base_momentum``; it is off by default (torch's
default is on) so that the scheduler changes only ``lr`` and never switches momentum on in
plain SGD, and turning it on needs an optimizer with a non-zero ``momentum`` or ``betas``.
Trains in few epochs with large learning rates ("super-convergence"); needs the training
length in advance. Declared to step per batch.

Reference: Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
Large Learning Rates", 2017; PyTorch ``OneCycleLR`` (fastai's two-phase default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

import optiplug
from optiplug.backends.numpy import NumpyScheduler, check_per_group, checked_param_groups

PerGroup = float | tuple[float, ...]


class OneCycleSpec(optiplug.SchedulerSpec):
    """Warm up from ``max_lr / div_factor`` to ``max_lr``, anneal to ``initial_lr / final_div``."""

    # No default config validates (the schedule length is required): show one that does.
    model_config = ConfigDict(json_schema_extra={"examples": [{"max_lr": 0.1,
                                                                "total_steps": 100}]})

    interval: ClassVar[optiplug.Interval] = "batch"

    name: Literal["one_cycle"] = "one_cycle"
    max_lr: optiplug.PositiveFloat | Annotated[tuple[optiplug.PositiveFloat, ...],
                                               Field(min_length=1)]
    """Peak learning rate, > 0: one for every group, or one per param group."""
    total_steps: optiplug.PositiveInt | None = None
    """Number of steps in the cycle; else ``epochs * steps_per_epoch``."""
    epochs: optiplug.PositiveInt | None = None
    """Number of epochs, with ``steps_per_epoch`` instead of ``total_steps``."""
    steps_per_epoch: optiplug.PositiveInt | None = None
    """Steps (batches) per epoch, with ``epochs`` instead of ``total_steps``."""
    pct_start: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.3
    """Fraction of the steps spent warming up, in [0, 1) (at most 0.5 with ``three_phase``)."""
    anneal_strategy: Literal["cos", "linear"] = "cos"
    """Shape of every phase: cosine or linear."""
    cycle_momentum: bool = False
    """Cycle momentum or beta1 inversely to lr; off by default, unlike torch (see above)."""
    base_momentum: optiplug.Beta | Annotated[tuple[optiplug.Beta, ...], Field(min_length=1)] = 0.85
    """Momentum at the learning-rate peak, in [0, 1), for all or per group."""
    max_momentum: optiplug.Beta | Annotated[tuple[optiplug.Beta, ...], Field(min_length=1)] = 0.95
    """Momentum at the start and end of the cycle, in [0, 1), for all or per group."""
    div_factor: optiplug.PositiveFloat = 25.0
    """``initial_lr = max_lr / div_factor``, > 0."""
    final_div_factor: optiplug.PositiveFloat = 1e4
    """``min_lr = initial_lr / final_div_factor``, > 0."""
    three_phase: bool = False
    """Anneal back to ``initial_lr`` symmetrically before the final decay (the paper's form)."""

    @model_validator(mode="after")
    def _consistent_steps(self) -> OneCycleSpec:
        steps = self.steps()
        if self.three_phase and self.pct_start > 0.5:
            raise ValueError(f"pct_start={self.pct_start} > 0.5 with three_phase: the two "
                             f"symmetric phases would not fit in the cycle")
        ends = phase_ends(steps, self.pct_start, self.three_phase)
        # torch divides by each phase's length; these are the phases a step can land in.
        if ends[0] == 0.0:
            raise ValueError(f"pct_start * total_steps = {self.pct_start} * {steps} is 1: the "
                             f"warm-up phase would have length 0 (torch divides by zero)")
        if ends[-1] == ends[-2]:
            raise ValueError(f"pct_start={self.pct_start} leaves a last phase of length 0 "
                             f"over {steps} steps (torch divides by zero at the last step)")
        return self

    def steps(self) -> int:
        """The cycle length: ``total_steps``, or ``epochs * steps_per_epoch``.

        Raises:
            ValueError: neither is given, or both are and disagree.
        """
        by_epochs = (self.epochs * self.steps_per_epoch
                     if self.epochs is not None and self.steps_per_epoch is not None else None)
        if self.total_steps is not None:
            if ((self.epochs is not None or self.steps_per_epoch is not None)
                    and by_epochs != self.total_steps):
                raise ValueError(f"give total_steps or epochs and steps_per_epoch, not both "
                                 f"(total_steps={self.total_steps}, epochs={self.epochs}, "
                                 f"steps_per_epoch={self.steps_per_epoch})")
            return self.total_steps
        if by_epochs is None:
            raise ValueError("give total_steps, or both epochs and steps_per_epoch")
        return by_epochs


def phase_ends(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
    """The last step of every phase, computed exactly as torch's ``OneCycleLR`` does."""
    if three_phase:
        return [float(pct_start * total_steps) - 1, float(2 * pct_start * total_steps) - 2,
                total_steps - 1]
    return [float(pct_start * total_steps) - 1, total_steps - 1]


def _per_group(name: str, value: PerGroup, count: int) -> list[float]:
    if isinstance(value, (list, tuple)):
        if len(value) != count:
            raise ValueError(f"{name} must have the same length as optimizer.param_groups. "
                             f"{name} has {len(value)} values, param_groups has {count}.")
        return list(value)
    return [value] * count


class NumpyOneCycleLR(NumpyScheduler):
    """NumPy ``OneCycleLR``: closed form per step; keeps ``max_lr``/``min_lr`` in the groups."""

    def __init__(self, optimizer: Any, max_lr: PerGroup, total_steps: int,
                 pct_start: float = 0.3, anneal_strategy: str = "cos",
                 cycle_momentum: bool = False, base_momentum: PerGroup = 0.85,
                 max_momentum: PerGroup = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False,
                 last_epoch: int = -1) -> None:
        groups = checked_param_groups(optimizer)
        self.total_steps = total_steps
        names = (["initial_lr", "max_lr", "initial_lr", "min_lr"] if three_phase
                 else ["initial_lr", "max_lr", "min_lr"])
        momenta = (["max_momentum", "base_momentum", "max_momentum", "max_momentum"]
                   if three_phase else ["max_momentum", "base_momentum", "max_momentum"])
        self._schedule_phases: list[dict[str, Any]] = [
            {"end_step": end, "start_lr": names[i], "end_lr": names[i + 1],
             "start_momentum": momenta[i], "end_momentum": momenta[i + 1]}
            for i, end in enumerate(phase_ends(total_steps, pct_start, three_phase))]
        self._anneal_func_type = anneal_strategy
        max_lrs = _per_group("max_lr", max_lr, len(groups))
        if last_epoch == -1:
            for peak, group in zip(max_lrs, groups, strict=True):
                group["initial_lr"] = peak / div_factor
                group["max_lr"] = peak
                group["min_lr"] = group["initial_lr"] / final_div_factor
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            defaults = getattr(optimizer, "defaults", None)
            hyper = defaults if isinstance(defaults, Mapping) else groups[0]
            if "momentum" not in hyper and "betas" not in hyper:
                raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` "
                                 "option enabled (or set cycle_momentum=False)")
            self.use_beta1 = "betas" in hyper
            max_momenta = _per_group("max_momentum", max_momentum, len(groups))
            base_momenta = _per_group("base_momentum", base_momentum, len(groups))
            if last_epoch == -1:
                for high, low, group in zip(max_momenta, base_momenta, groups, strict=True):
                    self._set_momentum(group, high)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)

    def _set_momentum(self, group: dict[str, Any], momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self._anneal_func_type == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def get_lr(self) -> list[float]:
        step = self.last_epoch
        if step > self.total_steps:
            raise ValueError(f"Tried to step {step} times. The specified number of total steps "
                             f"is {self.total_steps}")
        lrs = []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == last:
                    pct = (step - start_step) / (end_step - start_step)
                    lrs.append(self._anneal(group[phase["start_lr"]], group[phase["end_lr"]],
                                            pct))
                    if self.cycle_momentum:
                        self._set_momentum(group, self._anneal(
                            group[phase["start_momentum"]], group[phase["end_momentum"]], pct))
                    break
                start_step = end_step
        return lrs


def build_numpy(spec: OneCycleSpec, optimizer: Any) -> NumpyOneCycleLR:
    return NumpyOneCycleLR(optimizer, **_arguments(spec, optimizer))


def build_torch(spec: OneCycleSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.OneCycleLR(optimizer, **_arguments(spec, optimizer))


def _arguments(spec: OneCycleSpec, optimizer: Any) -> dict[str, Any]:
    if spec.cycle_momentum and not all(
            "betas" in group or group.get("momentum", 0) != 0
            for group in checked_param_groups(optimizer)):
        # torch would accept SGD's momentum=0 and silently turn plain SGD into heavy ball.
        raise optiplug.ConfigError([optiplug.ConfigIssue("cycle_momentum", (
            "cycle_momentum=True needs an optimizer whose every param group has momentum != 0 "
            "or betas (momentum, nesterov, adam, ...); set cycle_momentum=False for this one"))])
    check_per_group(optimizer, max_lr=spec.max_lr, **(
        {"base_momentum": spec.base_momentum, "max_momentum": spec.max_momentum}
        if spec.cycle_momentum else {}))
    arguments = spec.hyperparameters()
    del arguments["epochs"], arguments["steps_per_epoch"]
    arguments["total_steps"] = spec.steps()
    return arguments


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="one_cycle", spec=OneCycleSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="One-cycle policy: warm up to max_lr, then anneal far below the start; fast "
                "training with large learning rates when the step count is known.",
        reference="Smith & Topin 2017; PyTorch OneCycleLR")]
