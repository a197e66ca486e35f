"""Schedule-free AdamW: AdamW without a learning-rate schedule, by averaging the iterates.

Replaces the decaying schedule (cosine, linear) by an online average of the iterates, with the
gradient taken at an interpolation between the average and the base sequence. Matches or beats
tuned cosine schedules without knowing the number of steps in advance; only a warm-up is kept.

    y = (1 - b1) z + b1 x                      (the parameters while training)
    v = b2 v + (1 - b2) g^2;   u = g / (sqrt(v / (1 - b2^k)) + eps) + wd y      (g at y)
    z = z - lr_k u;   x = (1 - c) x + c z,   c = w_k / sum(w),  w_k = k^r lr_max^weight_lr_power
    lr_k = lr min(1, k / warmup_steps)

Evaluate the average: call ``opt.eval()`` before evaluating (or saving the model for inference)
and ``opt.train()`` before the next step; a step in evaluation mode raises. Networks with
BatchNorm need their running statistics recomputed at ``x`` (a few forward passes in train mode
after ``opt.eval()``), as the paper notes.

Conventions: the official ``schedulefree.AdamWScheduleFree`` (its y/z form, bias correction in
the denominator, group-level step ``k``, ``lr_max`` and ``weight_sum``); pytorch_optimizer's
``ScheduleFreeAdamW`` with its defaults is the same rule. The step count is the group's
(parameters whose grad is ``None`` skip the update, but ``k`` advances), as in both.

Reference: Defazio et al., "The Road Less Scheduled", NeurIPS 2024 (arXiv:2405.15682),
Algorithm 1.
"""

from __future__ import annotations

import math
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


class ScheduleFreeAdamWSpec(ScheduleFreeSpec):
    """Schedule-free AdamW (the official defaults)."""

    name: Literal["schedule_free_adamw"] = "schedule_free_adamw"
    lr: optiplug.PositiveFloat = 2.5e-3
    """Learning rate (constant after the warm-up)."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Interpolation ``b1`` of ``y`` between ``x`` and ``z``, and the second-moment decay."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""


class NumpyScheduleFreeAdamW(NumpyScheduleFree):
    """Schedule-free AdamW on NumPy arrays, updated in place block by block."""

    state_keys = ("z", "exp_avg_sq")
    scratch_blocks = 2
    bias_correction = True

    def __init__(self, params: Any, lr: float = 2.5e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "warmup_steps": warmup_steps,
                                  "r": r, "weight_lr_power": weight_lr_power}, **options)

    def momentum(self, group: Mapping[str, Any]) -> float:
        return float(group["betas"][0])

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return schedule_free_adamw_scalars(group, state["step"],
                                           self.schedule_free_scalars(group))

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        schedule_free_adamw_kernel(param, grad, state[0], state[1], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        first, beta2, one_minus_beta2, bias_correction2, eps, decay, ckp1, coef_y, neg_lr = \
            scalars
        z, exp_avg_sq = state
        tmp, update = scratch
        if first:
            np.copyto(z, param)
        np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
        np.multiply(grad, grad, out=tmp)
        np.multiply(tmp, one_minus_beta2, out=tmp)
        np.add(exp_avg_sq, tmp, out=exp_avg_sq)
        np.divide(exp_avg_sq, bias_correction2, out=tmp)
        np.sqrt(tmp, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(grad, tmp, out=update)
        apply_update(param, update, z, tmp, decay, ckp1, coef_y, neg_lr)


def schedule_free_adamw_scalars(group: Mapping[str, Any], step: int,
                                schedule: tuple[float, float, float]) -> tuple[Any, ...]:
    """The scalars of :func:`schedule_free_adamw_kernel` (both backends), from the group's
    ``(lr_t, c_t, bias correction)`` of this step."""
    beta1, beta2 = group["betas"]
    lr, ckp1, bias_correction2 = schedule
    return (step == 1, beta2, 1 - beta2, bias_correction2, group["eps"],
            group["weight_decay"], ckp1, lr * (beta1 * (1 - ckp1) - 1), -lr)


@fused_kernel
def schedule_free_adamw_kernel(param: NDArray[Any], grad: NDArray[Any], z: NDArray[Any],
                               exp_avg_sq: NDArray[Any], first: bool, beta2: Any,
                               one_minus_beta2: Any, bias_correction2: Any, eps: Any,
                               decay: Any, ckp1: Any, coef_y: Any, neg_lr: Any) -> None:
    """NumpyScheduleFreeAdamW.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        p = param[i]
        zi = p if first else z[i]
        g = grad[i]
        v = exp_avg_sq[i] * beta2 + g * g * one_minus_beta2
        exp_avg_sq[i] = v
        u = g / (math.sqrt(v / bias_correction2) + eps)
        if decay:
            u = u + p * decay
        p = p + (zi - p) * ckp1
        param[i] = p + u * coef_y
        z[i] = zi + u * neg_lr


def build_numpy(spec: ScheduleFreeAdamWSpec, params: Any) -> NumpyScheduleFreeAdamW:
    return NumpyScheduleFreeAdamW(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: ScheduleFreeAdamWSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import ScheduleFreeAdamW

    return ScheduleFreeAdamW(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="schedule_free_adamw", spec=ScheduleFreeAdamWSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="AdamW without a schedule: iterate averaging replaces the lr decay, no step "
                "count needed; call eval()/train() around evaluation.",
        reference="Defazio et al. 2024, arXiv:2405.15682")]
