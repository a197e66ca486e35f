"""Cosine annealing with warm restarts (SGDR): cosine cycles that restart at the base rate.

Within a cycle of length ``T_i``, ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur /
T_i)) / 2``, ``T_cur`` the steps since the last restart; at the end of a cycle the rate jumps
back to ``base_lr`` and the next cycle is ``T_mult`` times longer (``T_0, T_0 * T_mult, ...``).
Restarts let a long run explore several minima and leave snapshots at every cycle's end.

Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017;
PyTorch ``CosineAnnealingWarmRestarts``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class CosineRestartsSpec(optiplug.SchedulerSpec):
    """``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``, restarting."""

    name: Literal["cosine_restarts"] = "cosine_restarts"
    T_0: optiplug.PositiveInt
    """Length of the first cycle in steps, > 0."""
    T_mult: optiplug.PositiveInt = 1
    """Factor by which every cycle is longer than the one before, an integer >= 1."""
    eta_min: optiplug.NonNegativeFloat = 0.0
    """Learning rate at the end of every cycle (the same for every group), >= 0."""


class NumpyCosineAnnealingWarmRestarts(NumpyScheduler):
    """NumPy ``CosineAnnealingWarmRestarts``: ``T_cur`` and ``T_i`` advance in :meth:`step`."""

    def __init__(self, optimizer: Any, T_0: int, T_mult: int = 1, eta_min: float = 0.0,
                 last_epoch: int = -1) -> None:
        self.T_0 = T_0
        self.T_i = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [self.eta_min + (base_lr - self.eta_min)
                * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
                for base_lr in self.base_lrs]

    def step(self) -> None:
        """Advance one step, restarting the cosine when the cycle is over.

        Like torch's, this step does not count ``_step_count``.
        """
        if self.last_epoch < 0:
            epoch = 0
            self.T_i = self.T_0
            self.T_cur = 0
        else:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.T_mult
        self.last_epoch = epoch
        groups = self.optimizer.param_groups
        for group, lr in zip(groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in groups]


def build_numpy(spec: CosineRestartsSpec, optimizer: Any) -> NumpyCosineAnnealingWarmRestarts:
    return NumpyCosineAnnealingWarmRestarts(optimizer, T_0=spec.T_0, T_mult=spec.T_mult,
                                            eta_min=spec.eta_min)


def build_torch(spec: CosineRestartsSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        optimizer, T_0=spec.T_0, T_mult=spec.T_mult, eta_min=spec.eta_min)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="cosine_restarts", spec=CosineRestartsSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Cosine annealing with warm restarts (SGDR): cycles of T_0, T_0*T_mult, ... "
                "steps, each back at the base rate.",
        reference="Loshchilov & Hutter 2017 (SGDR); PyTorch CosineAnnealingWarmRestarts")]
