"""Cyclical learning rates: the rate goes back and forth between a lower and an upper bound.

A cycle is ``step_size_up`` steps up from ``base_lr`` to ``max_lr`` and ``step_size_down`` steps
back, each linear; the amplitude ``max_lr - base_lr`` is scaled by 1 (``triangular``), halved
every cycle (``triangular2``: ``1 / 2 ** (cycle - 1)``) or by ``gamma ** t`` (``exp_range``).
Needs little tuning of the learning rate (a range test gives both bounds) and is stepped per
batch. ``cycle_momentum`` cycles momentum (or Adam's beta1) inversely to lr; it is off by
default (torch's default is on) so that the scheduler changes only ``lr`` and never switches
momentum on in plain SGD, and turning it on needs an optimizer with a non-zero ``momentum`` or
``betas`` in every group.

Reference: Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017;
PyTorch ``CyclicLR``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler, check_per_group, checked_param_groups

PerGroup = float | tuple[float, ...]
Lr = optiplug.PositiveFloat | Annotated[tuple[optiplug.PositiveFloat, ...], Field(min_length=1)]
Momentum = optiplug.Beta | Annotated[tuple[optiplug.Beta, ...], Field(min_length=1)]


class CyclicSpec(optiplug.SchedulerSpec):
    """``lr = base_lr + (max_lr - base_lr) * triangle(t) * scale``, triangle in [0, 1]."""

    # Short cycles, so the conformance kit's few dozen steps cover several of them and the
    # per-cycle amplitude (``mode``, ``gamma``) shows.
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"max_lr": 1.0, "step_size_up": 4, "step_size_down": 6}]})
    interval: ClassVar[optiplug.Interval] = "batch"

    name: Literal["cyclic"] = "cyclic"
    max_lr: Lr
    """Upper bound of the cycle, > 0: one for every group, or one per param group."""
    base_lr: Lr | None = None
    """Lower bound of the cycle, > 0, for all or per group; ``null``: each group's own lr."""
    step_size_up: optiplug.PositiveInt = 2000
    """Steps from the lower to the upper bound, > 0."""
    step_size_down: optiplug.PositiveInt | None = None
    """Steps from the upper bound back down, > 0; ``null``: ``step_size_up``."""
    mode: Literal["triangular", "triangular2", "exp_range"] = "triangular"
    """Amplitude per cycle: constant, halved every cycle, or times ``gamma ** step``."""
    gamma: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    """Decay of the amplitude per step in ``exp_range`` mode, in (0, 1]."""
    cycle_momentum: bool = False
    """Cycle momentum or beta1 inversely to lr; off by default, unlike torch (see above)."""
    base_momentum: Momentum = 0.8
    """Momentum at the learning-rate peak, in [0, 1), for all or per group."""
    max_momentum: Momentum = 0.9
    """Momentum at the lower bound of lr, in [0, 1), for all or per group."""


def _per_group(value: PerGroup, count: int) -> list[float]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * count


class NumpyCyclicLR(NumpyScheduler):
    """NumPy ``CyclicLR`` (closed form per step; sets the groups' lr to ``base_lr`` first)."""

    def __init__(self, optimizer: Any, base_lr: PerGroup, max_lr: PerGroup,
                 step_size_up: int = 2000, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0, cycle_momentum: bool = False,
                 base_momentum: PerGroup = 0.8, max_momentum: PerGroup = 0.9,
                 last_epoch: int = -1) -> None:
        groups = checked_param_groups(optimizer)
        self.optimizer = optimizer
        base_lrs = _per_group(base_lr, len(groups))
        if last_epoch == -1:
            for lr, group in zip(base_lrs, groups, strict=True):
                group["lr"] = lr
        self.max_lrs = _per_group(max_lr, len(groups))
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = mode
        self.gamma = gamma
        # torch's key for a custom scale function, which a config cannot give.
        self._scale_fn_custom = None
        self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            defaults = getattr(optimizer, "defaults", None)
            hyper = defaults if isinstance(defaults, Mapping) else groups[0]
            if "momentum" not in hyper and "betas" not in hyper:
                raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` "
                                 "option enabled")
            self.use_beta1 = "betas" in hyper
            self.base_momentums = _per_group(base_momentum, len(groups))
            self.max_momentums = _per_group(max_momentum, len(groups))
            if last_epoch == -1:
                for high, low, group in zip(self.max_momentums, self.base_momentums, groups,
                                            strict=True):
                    self._set_momentum(group, high)
                    group["max_momentum"] = high
                    group["base_momentum"] = low
        super().__init__(optimizer, last_epoch)
        self.base_lrs = base_lrs

    def _set_momentum(self, group: dict[str, Any], momentum: float) -> None:
        if self.use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def scale_fn(self, x: float) -> float:
        """The amplitude scale of cycle ``x`` (or of step ``x`` in ``exp_range`` mode)."""
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        return float(self.gamma ** x)

    def get_lr(self) -> list[float]:
        cycle = math.floor(1 + self.last_epoch / self.total_size)
        x = 1.0 + self.last_epoch / self.total_size - cycle
        if x <= self.step_ratio:
            scale_factor = x / self.step_ratio
        else:
            scale_factor = (x - 1) / (self.step_ratio - 1)
        scale = self.scale_fn(cycle if self.scale_mode == "cycle" else self.last_epoch)
        lrs = [base_lr + (max_lr - base_lr) * scale_factor * scale
               for base_lr, max_lr in zip(self.base_lrs, self.max_lrs, strict=True)]
        if self.cycle_momentum:
            for group, low, high in zip(self.optimizer.param_groups, self.base_momentums,
                                        self.max_momentums, strict=True):
                self._set_momentum(group, high - (high - low) * scale_factor * scale)
        return lrs


def _arguments(spec: CyclicSpec, optimizer: Any) -> dict[str, Any]:
    groups = checked_param_groups(optimizer)
    if spec.cycle_momentum and not all(
            "betas" in group or group.get("momentum", 0) != 0 for group in groups):
        # torch would accept SGD's momentum=0 and silently turn plain SGD into heavy ball.
        raise optiplug.ConfigError([optiplug.ConfigIssue("cycle_momentum", (
            "cycle_momentum=True needs an optimizer whose every param group has momentum != 0 "
            "or betas (momentum, nesterov, adam, ...); set cycle_momentum=False for this one"))])
    check_per_group(optimizer, max_lr=spec.max_lr, base_lr=spec.base_lr, **(
        {"base_momentum": spec.base_momentum, "max_momentum": spec.max_momentum}
        if spec.cycle_momentum else {}))
    arguments = spec.hyperparameters()
    if arguments["base_lr"] is None:
        arguments["base_lr"] = [group["lr"] for group in groups]
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in arguments.items()}


def build_numpy(spec: CyclicSpec, optimizer: Any) -> NumpyCyclicLR:
    return NumpyCyclicLR(optimizer, **_arguments(spec, optimizer))


def build_torch(spec: CyclicSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.CyclicLR(optimizer, **_arguments(spec, optimizer))


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="cyclic", spec=CyclicSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Cyclical learning rate between base_lr and max_lr (triangular, triangular2, "
                "exp_range), stepped per batch.",
        reference="Smith 2017 (CLR); PyTorch CyclicLR")]
