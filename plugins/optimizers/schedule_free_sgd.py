"""Schedule-free SGD: momentum SGD without a learning-rate schedule, by averaging the iterates.

The SGD form of the schedule-free method: the gradient is taken at an interpolation ``y``
between the running average ``x`` and the plain SGD sequence ``z``, and the average replaces
the schedule. Use it where momentum SGD with a step or cosine schedule would be used (vision
convnets) when the training length is not known in advance.

    y = (1 - m) z + m x                       (the parameters while training; m = momentum)
    u = g + wd y   (g at y);   z = z - lr_k u
    x = (1 - c) x + c z,   c = w_k / sum(w),  w_k = k^r lr_max^weight_lr_power
    lr_k = lr min(1, k / warmup_steps)

Evaluate the average: call ``opt.eval()`` before evaluating and ``opt.train()`` before the next
step (a step in evaluation mode raises); see ``schedule_free_adamw`` for BatchNorm.

Conventions: the official ``schedulefree.SGDScheduleFree`` (y/z form, group-level step ``k``);
pytorch_optimizer's ``ScheduleFreeSGD`` with its defaults is the same rule.

Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import fused_kernel
from optiplug.plugins.optimizers.schedule_free import (
    NumpyScheduleFree,
    ScheduleFreeSpec,
    apply_update,
)


class ScheduleFreeSGDSpec(ScheduleFreeSpec):
    """Schedule-free SGD (the official defaults)."""

    name: Literal["schedule_free_sgd"] = "schedule_free_sgd"
    lr: optiplug.PositiveFloat = 1.0
    """Learning rate (constant after the warm-up)."""
    momentum: optiplug.Beta = 0.9
    """Interpolation of ``y`` between ``x`` and ``z`` (plays the role of momentum)."""


class NumpyScheduleFreeSGD(NumpyScheduleFree):
    """Schedule-free SGD on NumPy arrays, updated in place block by block."""

    state_keys = ("z",)
    scratch_blocks = 2

    def __init__(self, params: Any, lr: float = 1.0, momentum: float = 0.9,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "warmup_steps": warmup_steps, "r": r,
                                  "weight_lr_power": weight_lr_power}, **options)

    def momentum(self, group: Mapping[str, Any]) -> float:
        return float(group["momentum"])

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return schedule_free_sgd_scalars(group, state["step"], self.schedule_free_scalars(group))

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        schedule_free_sgd_kernel(param, grad, state[0], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        first, decay, ckp1, coef_y, neg_lr = scalars
        (z,) = state
        tmp, update = scratch
        if first:
            np.copyto(z, param)
        np.copyto(update, grad)
        apply_update(param, update, z, tmp, decay, ckp1, coef_y, neg_lr)


def schedule_free_sgd_scalars(group: Mapping[str, Any], step: int,
                              schedule: tuple[float, float, float]) -> tuple[Any, ...]:
    """The scalars of :func:`schedule_free_sgd_kernel` (both backends), from the group's
    ``(lr_t, c_t, bias correction)`` of this step."""
    lr, ckp1, _ = schedule
    return (step == 1, group["weight_decay"], ckp1, lr * (group["momentum"] * (1 - ckp1) - 1),
            -lr)


@fused_kernel
def schedule_free_sgd_kernel(param: NDArray[Any], grad: NDArray[Any], z: NDArray[Any],
                             first: bool, decay: Any, ckp1: Any, coef_y: Any,
                             neg_lr: Any) -> None:
    """NumpyScheduleFreeSGD.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        p = param[i]
        zi = p if first else z[i]
        u = grad[i]
        if decay:
            u = u + p * decay
        p = p + (zi - p) * ckp1
        param[i] = p + u * coef_y
        z[i] = zi + u * neg_lr


def build_numpy(spec: ScheduleFreeSGDSpec, params: Any) -> NumpyScheduleFreeSGD:
    return NumpyScheduleFreeSGD(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: ScheduleFreeSGDSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import ScheduleFreeSGD

    return ScheduleFreeSGD(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="schedule_free_sgd", spec=ScheduleFreeSGDSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Momentum SGD without a schedule: iterate averaging replaces the lr decay; call "
                "eval()/train() around evaluation.",
        reference="Defazio et al. 2024, arXiv:2405.15682")]
