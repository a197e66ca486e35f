"""Reduce on plateau: cut the learning rate when a monitored metric stops improving.

After more than ``patience`` steps without improving on the best metric (by ``threshold``,
relative or absolute), ``lr <- max(lr * factor, min_lr)``, then wait ``cooldown`` steps. Call
``step(metric)`` once per evaluation (usually per epoch, with the validation loss). Adapts to
the run without knowing its length; reacts late, since it waits for evidence.

Reference: PyTorch ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (after Keras'
``ReduceLROnPlateau`` callback).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, SupportsFloat

from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler, check_per_group, checked_param_groups


class ReduceOnPlateauSpec(optiplug.SchedulerSpec):
    """``lr <- max(lr * factor, min_lr)`` after ``patience`` steps without improvement."""

    steps_on_metric: ClassVar[bool] = True

    name: Literal["reduce_on_plateau"] = "reduce_on_plateau"
    mode: Literal["min", "max"] = "min"
    """``min``: the metric should decrease (a loss); ``max``: increase (an accuracy)."""
    factor: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.1
    """Multiplier of the learning rate at each reduction, in (0, 1)."""
    patience: optiplug.NonNegativeInt = 10
    """Steps without improvement tolerated; the lr drops at the next one, >= 0."""
    threshold: optiplug.NonNegativeFloat = 1e-4
    """Smallest change that counts as an improvement, >= 0."""
    threshold_mode: Literal["rel", "abs"] = "rel"
    """``rel``: better than ``best * (1 -/+ threshold)``; ``abs``: than ``best -/+ threshold``."""
    cooldown: optiplug.NonNegativeInt = 0
    """Steps after a reduction during which bad steps are not counted, >= 0."""
    min_lr: optiplug.NonNegativeFloat | Annotated[tuple[optiplug.NonNegativeFloat, ...],
                                                  Field(min_length=1)] = 0.0
    """Lower bound of the learning rate, >= 0: one for every group, or one per group."""
    eps: optiplug.NonNegativeFloat = 1e-8
    """A reduction smaller than this is skipped, >= 0."""

    # eps only guards against reductions below float resolution: no workload shows it.
    policy_fields = frozenset({"eps"})


class NumpyReduceLROnPlateau(NumpyScheduler):
    """NumPy ``ReduceLROnPlateau``: ``step(metric)`` after each evaluation."""

    steps_on_metric = True

    def __init__(self, optimizer: Any, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | tuple[float, ...] = 0.0,
                 eps: float = 1e-8) -> None:
        # Like torch's, it does not make an initial step and leaves initial_lr alone.
        groups = checked_param_groups(optimizer)
        self.factor = factor
        self.optimizer = optimizer
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != len(groups):
                raise ValueError(f"expected {len(groups)} min_lrs, got {len(min_lr)}")
            self.default_min_lr: float | None = None
            self.min_lrs = list(min_lr)
        else:
            self.default_min_lr = min_lr
            self.min_lrs = [min_lr] * len(groups)
        self.patience = patience
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self._last_lr = self.group_lrs()
        self.mode = mode
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.mode_worse = math.inf if mode == "min" else -math.inf
        self.best = self.mode_worse
        self.cooldown_counter = 0
        self.num_bad_epochs = 0

    def step(self, metrics: SupportsFloat) -> None:  # type: ignore[override]
        """Record one evaluation of the monitored metric; reduce the lr on a plateau."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = self.group_lrs()

    def _reduce_lr(self) -> None:
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(f"the optimizer has {len(groups)} param groups but min_lr "
                                   f"was given for {len(self.min_lrs)}")
            self.min_lrs = [self.default_min_lr] * len(groups)
        for group, min_lr in zip(groups, self.min_lrs, strict=True):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    def _is_better(self, current: float, best: float) -> bool:
        if self.mode == "min" and self.threshold_mode == "rel":
            return current < best * (1.0 - self.threshold)
        if self.mode == "min":
            return current < best - self.threshold
        if self.threshold_mode == "rel":
            return current > best * (self.threshold + 1.0)
        return current > best + self.threshold

    def get_lr(self) -> list[float]:
        return self.group_lrs()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        mode, threshold_mode = state_dict.get("mode"), state_dict.get("threshold_mode")
        if mode not in ("min", "max") or threshold_mode not in ("rel", "abs"):
            raise ValueError(f"bad mode {mode!r} or threshold_mode {threshold_mode!r} in the "
                             f"state dict")
        super().load_state_dict(state_dict)


def build_numpy(spec: ReduceOnPlateauSpec, optimizer: Any) -> NumpyReduceLROnPlateau:
    check_per_group(optimizer, min_lr=spec.min_lr)
    return NumpyReduceLROnPlateau(optimizer, **spec.hyperparameters())


def build_torch(spec: ReduceOnPlateauSpec, optimizer: Any) -> Any:
    import torch

    check_per_group(optimizer, min_lr=spec.min_lr)
    hyper = spec.hyperparameters()
    if isinstance(hyper["min_lr"], tuple):
        hyper["min_lr"] = list(hyper["min_lr"])
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, **hyper)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="reduce_on_plateau", spec=ReduceOnPlateauSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Reduce the learning rate by a factor when a monitored metric (validation loss) "
                "stops improving; step(metric) once per evaluation.",
        reference="PyTorch ReduceLROnPlateau")]
