"""AdaBelief: Adam with the step size adapted by the belief in the gradient.

Replaces Adam's second moment of the gradient by the variance of the gradient around its
running mean, ``s = EMA((g - m)^2)``: large steps where the gradient agrees with its prediction,
small ones where it does not. Generalizes like SGD and trains as fast as Adam on vision,
language and GAN tasks; weight decay is decoupled (AdamW's) by default.

    m = lerp(m, g, 1 - b1);   s = b2 s + (1 - b2) (g - m)^2 + eps
    p -= lr / (1 - b1^t) * m / (sqrt(s / (1 - b2^t)) + eps)
    (weight decay: p *= 1 - lr wd first, or with ``decoupled=False`` g += wd p)

Conventions: the official implementation (adabelief-pytorch 0.2) without rectification:
``eps`` is added inside ``s`` every step and again to the denominator. pytorch_optimizer's
``AdaBelief`` with its defaults (``rectify=False``, ``weight_decouple=True``) is the same rule
but counts steps per group, not per parameter (they differ only after steps where some grads
were ``None``).

Reference: Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed
Gradients", NeurIPS 2020 (arXiv:2010.07468), Algorithm 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel
from optiplug.param_groups import StandardOptimizerSpec


class AdabeliefSpec(StandardOptimizerSpec):
    """AdaBelief (the official implementation's defaults)."""

    name: Literal["adabelief"] = "adabelief"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the gradient average and of the belief (variance) average."""
    eps: optiplug.PositiveFloat = 1e-16
    """Added to the belief average each step and to the denominator."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Weight decay, decoupled (``p *= 1 - lr * weight_decay``) unless ``decoupled`` is off."""
    decoupled: bool = True
    """Decoupled weight decay (AdamW's); ``False`` adds ``weight_decay * p`` to the gradient."""


class NumpyAdabelief(NumpyOptimizer):
    """AdaBelief on NumPy arrays, updated in place block by block."""

    state_keys = ("exp_avg", "exp_avg_var")
    scratch_blocks = 3

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16, weight_decay: float = 0.0, decoupled: bool = True,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "decoupled": decoupled},
                         **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return adabelief_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        adabelief_kernel(param, grad, *state, *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        decay, shrink, weight1, beta2, one_minus_beta2, eps, denom_eps, step_size = scalars
        exp_avg, exp_avg_var = state
        tmp, residual, decayed = scratch
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        if decay:
            np.multiply(param, decay, out=decayed)
            np.add(grad, decayed, out=decayed)
            grad = decayed
        np.subtract(grad, exp_avg, out=tmp)
        np.multiply(tmp, weight1, out=tmp)
        np.add(exp_avg, tmp, out=exp_avg)
        np.subtract(grad, exp_avg, out=residual)
        np.multiply(residual, residual, out=residual)
        np.multiply(residual, one_minus_beta2, out=residual)
        np.multiply(exp_avg_var, beta2, out=exp_avg_var)
        np.add(exp_avg_var, residual, out=exp_avg_var)
        np.add(exp_avg_var, eps, out=exp_avg_var)
        np.sqrt(exp_avg_var, out=tmp)
        np.add(tmp, denom_eps, out=tmp)
        np.divide(exp_avg, tmp, out=tmp)
        np.multiply(tmp, step_size, out=tmp)
        np.add(param, tmp, out=param)


def adabelief_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of :func:`adabelief_kernel` (both backends)."""
    beta1, beta2 = group["betas"]
    lr, decay, eps = group["lr"], group["weight_decay"], group["eps"]
    decoupled = group["decoupled"]
    bc2_sqrt = math.sqrt(1 - beta2**step)
    return (0.0 if decoupled else decay, 1 - lr * decay if decoupled and decay else 1.0,
            1 - beta1, beta2, 1 - beta2, eps, eps * bc2_sqrt, -lr * bc2_sqrt / (1 - beta1**step))


@fused_kernel
def adabelief_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                     exp_avg_var: NDArray[Any], decay: Any, shrink: Any, weight1: Any,
                     beta2: Any, one_minus_beta2: Any, eps: Any, denom_eps: Any,
                     step_size: Any) -> None:
    """NumpyAdabelief.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        p = param[i]
        if shrink != 1.0:
            p = p * shrink
        g = grad[i]
        if decay:
            g = g + p * decay
        m = exp_avg[i]
        m = m + (g - m) * weight1
        residual = g - m
        s = exp_avg_var[i] * beta2 + residual * residual * one_minus_beta2
        s = s + eps
        exp_avg[i] = m
        exp_avg_var[i] = s
        param[i] = p + m / (math.sqrt(s) + denom_eps) * step_size


def build_numpy(spec: AdabeliefSpec, params: Any) -> NumpyAdabelief:
    return NumpyAdabelief(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdabeliefSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import Adabelief

    return Adabelief(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adabelief", spec=AdabeliefSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam with the second moment replaced by the gradient's variance around its "
                "mean (the belief): Adam's speed with SGD-like generalization.",
        reference="Zhuang et al. 2020, arXiv:2010.07468")]
