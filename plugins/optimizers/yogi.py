"""Yogi: Adam whose second moment grows or shrinks additively, controlled by the gradient.

Adam's ``v = b2 v + (1 - b2) g^2`` forgets a large past second moment multiplicatively, so a
burst of small gradients can make the effective step size blow up. Yogi moves ``v`` toward
``g^2`` by ``(1 - b2) g^2`` in the direction of the difference: the same fixed point, but ``v``
cannot collapse faster than the gradients allow. Reach for it where Adam is unstable with sparse
or heavy-tailed gradients (NLP, recommendation, GAN training), with a larger ``eps`` (1e-3).

    m = lerp(m, g, 1 - b1);   v = v - (1 - b2) sign(v - g^2) g^2      (m_0 = v_0 = 1e-6)
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    (weight decay: p *= 1 - lr wd first, or with ``decoupled=False`` g += wd p)

Conventions: pytorch_optimizer's ``Yogi`` (4.1, after TensorFlow Addons): both moments start at
``initial_accumulator`` (the paper starts ``m`` at 0; the difference decays as
``1e-6 b1^t``) and the update is bias-corrected like Adam's (the paper's Algorithm 2 is not).
pytorch_optimizer counts steps per group, optiplug per parameter as torch.optim does (they
differ only after steps where some grads were ``None``).

Reference: Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex
Optimization", NeurIPS 2018, Algorithm 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel


class YogiSpec(optiplug.OptimizerSpec):
    """Yogi (pytorch_optimizer's and TensorFlow Addons' defaults)."""

    name: Literal["yogi"] = "yogi"
    lr: optiplug.PositiveFloat = 1e-2
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the gradient average and of the second-moment estimate."""
    eps: optiplug.PositiveFloat = 1e-3
    """Added to the denominator (the paper recommends 1e-3, larger than Adam's)."""
    initial_accumulator: optiplug.NonNegativeFloat = 1e-6
    """Initial value of both moment estimates."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Weight decay, decoupled (``p *= 1 - lr * weight_decay``) unless ``decoupled`` is off."""
    decoupled: bool = True
    """Decoupled weight decay (AdamW's); ``False`` adds ``weight_decay * p`` to the gradient."""


class NumpyYogi(NumpyOptimizer):
    """Yogi on NumPy arrays, updated in place block by block."""

    state_keys = ("exp_avg", "exp_avg_sq")
    scratch_blocks = 3

    def __init__(self, params: Any, lr: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-3, initial_accumulator: float = 1e-6,
                 weight_decay: float = 0.0, decoupled: bool = True, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "initial_accumulator": initial_accumulator,
                                  "weight_decay": weight_decay, "decoupled": decoupled},
                         **options)

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        return float(group["initial_accumulator"])

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return yogi_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        yogi_kernel(param, grad, *state, *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        decay, shrink, weight1, neg_weight2, bc2_sqrt, eps, step_size = scalars
        exp_avg, exp_avg_sq = state
        tmp, square, decayed = scratch
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        if decay:
            np.multiply(param, decay, out=decayed)
            np.add(grad, decayed, out=decayed)
            grad = decayed
        np.subtract(grad, exp_avg, out=tmp)
        np.multiply(tmp, weight1, out=tmp)
        np.add(exp_avg, tmp, out=exp_avg)
        np.multiply(grad, grad, out=square)
        np.subtract(exp_avg_sq, square, out=tmp)
        np.sign(tmp, out=tmp)
        np.multiply(tmp, square, out=tmp)
        np.multiply(tmp, neg_weight2, out=tmp)
        np.add(exp_avg_sq, tmp, out=exp_avg_sq)
        np.sqrt(exp_avg_sq, out=tmp)
        np.divide(tmp, bc2_sqrt, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(exp_avg, tmp, out=tmp)
        np.multiply(tmp, step_size, out=tmp)
        np.add(param, tmp, out=param)


def yogi_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of :func:`yogi_kernel` (both backends)."""
    beta1, beta2 = group["betas"]
    lr, decay = group["lr"], group["weight_decay"]
    decoupled = group["decoupled"]
    return (0.0 if decoupled else decay, 1 - lr * decay if decoupled and decay else 1.0,
            1 - beta1, -(1 - beta2), math.sqrt(1 - beta2**step), group["eps"],
            -lr / (1 - beta1**step))


@fused_kernel
def yogi_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                exp_avg_sq: NDArray[Any], decay: Any, shrink: Any, weight1: Any,
                neg_weight2: Any, bc2_sqrt: Any, eps: Any, step_size: Any) -> None:
    """NumpyYogi.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        p = param[i]
        if shrink != 1.0:
            p = p * shrink
        g = grad[i]
        if decay:
            g = g + p * decay
        m = exp_avg[i]
        m = m + (g - m) * weight1
        square = g * g
        v = exp_avg_sq[i]
        v = v + np.sign(v - square) * square * neg_weight2
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] = p + m / (math.sqrt(v) / bc2_sqrt + eps) * step_size


def build_numpy(spec: YogiSpec, params: Any) -> NumpyYogi:
    return NumpyYogi(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: YogiSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.catalogue_torch import Yogi

    return Yogi(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="yogi", spec=YogiSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam with an additive, sign-controlled second-moment update that cannot "
                "collapse: steadier than Adam with sparse or heavy-tailed gradients.",
        reference="Zaheer et al. 2018, NeurIPS")]
