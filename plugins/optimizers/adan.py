"""Adan: adaptive Nesterov momentum.

Adam-like, with Nesterov momentum estimated without an extra gradient evaluation: it also
averages the difference of consecutive gradients and preconditions by the second moment of the
extrapolated gradient ``g + b2 (g - g_prev)``. Converges faster than AdamW on vision
transformers, language models and RL with the same hyperparameters; weight decay is the
proximal form.

    d = g - g_prev (0 on the first step);   m = lerp(m, g, 1 - b1);   v = lerp(v, d, 1 - b2)
    n = b3 n + (1 - b3) (g + b2 d)^2;       denom = sqrt(n / (1 - b3^t)) + eps
    p = (p - lr (m / (1 - b1^t) + b2 v / (1 - b2^t)) / denom) / (1 + lr wd)

The betas are the official implementation's (``0.98, 0.92, 0.99``): the paper's ``beta_i`` is
``1 - b_i`` here.

Conventions: the official implementation's rule, bias corrections included; pytorch_optimizer's
``Adan`` (``weight_decouple=False``, ``max_grad_norm=0``) is the same rule but counts steps per
group, not per parameter (they differ only after steps where some grads were ``None``).

Reference: Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
Models", IEEE TPAMI 2024 (arXiv:2208.06677), Algorithm 1.
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


class AdanSpec(StandardOptimizerSpec):
    """Adan (the official implementation's defaults)."""

    name: Literal["adan"] = "adan"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta, optiplug.Beta] = (0.98, 0.92, 0.99)
    """Decay rates of the gradient, gradient-difference and second-moment averages."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Proximal weight decay: each step divides the parameters by ``1 + lr * weight_decay``."""


class NumpyAdan(NumpyOptimizer):
    """Adan on NumPy arrays, updated in place block by block."""

    state_keys = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "previous_grad")
    scratch_blocks = 2

    def __init__(self, params: Any, lr: float = 1e-3,
                 betas: tuple[float, float, float] = (0.98, 0.92, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return adan_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        adan_kernel(param, grad, *state, *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        first, weight1, weight2, beta2, beta3, one_minus_beta3, bc3_sqrt, eps, step1, step2, \
            shrink = scalars
        exp_avg, exp_avg_diff, exp_avg_sq, previous = state
        diff, tmp = scratch
        if first:
            np.copyto(previous, grad)
        np.subtract(grad, previous, out=diff)
        np.subtract(grad, exp_avg, out=tmp)
        np.multiply(tmp, weight1, out=tmp)
        np.add(exp_avg, tmp, out=exp_avg)
        np.subtract(diff, exp_avg_diff, out=tmp)
        np.multiply(tmp, weight2, out=tmp)
        np.add(exp_avg_diff, tmp, out=exp_avg_diff)
        np.multiply(diff, beta2, out=diff)
        np.add(diff, grad, out=diff)
        np.multiply(exp_avg_sq, beta3, out=exp_avg_sq)
        np.multiply(diff, diff, out=diff)
        np.multiply(diff, one_minus_beta3, out=diff)
        np.add(exp_avg_sq, diff, out=exp_avg_sq)
        np.sqrt(exp_avg_sq, out=diff)
        np.divide(diff, bc3_sqrt, out=diff)
        np.add(diff, eps, out=diff)
        np.divide(exp_avg, diff, out=tmp)
        np.multiply(tmp, step1, out=tmp)
        np.add(param, tmp, out=param)
        np.divide(exp_avg_diff, diff, out=tmp)
        np.multiply(tmp, step2, out=tmp)
        np.add(param, tmp, out=param)
        if shrink != 1.0:
            np.divide(param, shrink, out=param)
        np.copyto(previous, grad)


def adan_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of :func:`adan_kernel` (both backends)."""
    beta1, beta2, beta3 = group["betas"]
    lr = group["lr"]
    return (step == 1, 1 - beta1, 1 - beta2, beta2, beta3, 1 - beta3,
            math.sqrt(1 - beta3**step), group["eps"], -lr / (1 - beta1**step),
            -lr * beta2 / (1 - beta2**step), 1 + lr * group["weight_decay"])


@fused_kernel
def adan_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                exp_avg_diff: NDArray[Any], exp_avg_sq: NDArray[Any], previous: NDArray[Any],
                first: bool, weight1: Any, weight2: Any, beta2: Any, beta3: Any,
                one_minus_beta3: Any, bc3_sqrt: Any, eps: Any, step1: Any, step2: Any,
                shrink: Any) -> None:
    """NumpyAdan.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        g = grad[i]
        diff = g - (g if first else previous[i])
        m = exp_avg[i]
        m = m + (g - m) * weight1
        m_diff = exp_avg_diff[i]
        m_diff = m_diff + (diff - m_diff) * weight2
        x = diff * beta2 + g
        n = exp_avg_sq[i] * beta3 + x * x * one_minus_beta3
        denominator = math.sqrt(n) / bc3_sqrt + eps
        p = param[i] + m / denominator * step1
        p = p + m_diff / denominator * step2
        if shrink != 1.0:
            p = p / shrink
        param[i] = p
        exp_avg[i] = m
        exp_avg_diff[i] = m_diff
        exp_avg_sq[i] = n
        previous[i] = g


def build_numpy(spec: AdanSpec, params: Any) -> NumpyAdan:
    return NumpyAdan(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdanSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import Adan

    return Adan(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adan", spec=AdanSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adaptive Nesterov momentum: Adam-like moments of the gradient, its difference "
                "and the extrapolated gradient; faster than AdamW on ViTs and LMs.",
        reference="Xie et al. 2024, arXiv:2208.06677")]
