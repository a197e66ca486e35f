"""Adam: adaptive moment estimation, with optional AMSGrad.

Keeps exponential moving averages of the gradient (``m``) and of its square (``v``) and steps
by their bias-corrected ratio, so every coordinate gets its own step size. The default choice
for most deep networks; prefer ``adamw`` when using weight decay.

    g = grad (+ weight_decay * p);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v / (1 - b2^t)) + eps)   (AMSGrad: v -> max over steps)

Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015; AMSGrad:
Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad, fused_kernel
from optiplug.param_groups import KernelChoiceSpec


class AdamSpec(KernelChoiceSpec):
    """Adam (torch.optim.Adam's defaults)."""

    name: Literal["adam"] = "adam"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment averages."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient (coupled); use ``adamw`` for decoupled decay."""
    amsgrad: bool = False
    """Use the maximum of all second-moment averages so far (AMSGrad)."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyAdam(NumpyOptimizer):
    """Adam on NumPy arrays, step for step equal to ``torch.optim.Adam``."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False,
                 maximize: bool = False, decoupled_weight_decay: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "amsgrad": amsgrad,
                                  "maximize": maximize,
                                  "decoupled_weight_decay": decoupled_weight_decay}, **options)

    def state_keys_for(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        if group["amsgrad"]:
            return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
        return ("exp_avg", "exp_avg_sq")

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        beta1, beta2 = group["betas"]
        lr, step, decay = group["lr"], state["step"], group["weight_decay"]
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        # p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps), folded to one scale and one shift.
        scale = -lr / (1 - beta1**step) * bias_correction2_sqrt
        decoupled = group["decoupled_weight_decay"]
        return (beta1, 1 - beta1, beta2, 1 - beta2, group["eps"] * bias_correction2_sqrt, scale,
                0.0 if decoupled else decay, 1 - lr * decay if decoupled and decay else 1.0,
                group["maximize"], group["amsgrad"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        _adam_kernel(param, grad, state[0], state[1], state[-1], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        beta1, one_minus_beta1, beta2, one_minus_beta2, eps, scale, decay, shrink, maximize, \
            amsgrad = scalars
        exp_avg, exp_avg_sq = state[0], state[1]
        tmp = scratch[1]
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        np.multiply(grad, one_minus_beta1, out=tmp)
        np.multiply(exp_avg, beta1, out=exp_avg)
        np.add(exp_avg, tmp, out=exp_avg)
        np.multiply(grad, one_minus_beta2, out=tmp)
        np.multiply(tmp, grad, out=tmp)
        np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
        np.add(exp_avg_sq, tmp, out=exp_avg_sq)
        if amsgrad:
            np.maximum(state[2], exp_avg_sq, out=state[2])
            exp_avg_sq = state[2]
        np.sqrt(exp_avg_sq, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(exp_avg, tmp, out=tmp)
        np.multiply(tmp, scale, out=tmp)
        np.add(param, tmp, out=param)


@fused_kernel
def _adam_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                 exp_avg_sq: NDArray[Any], max_exp_avg_sq: NDArray[Any], beta1: Any,
                 one_minus_beta1: Any, beta2: Any, one_minus_beta2: Any, eps: Any, scale: Any,
                 decay: Any, shrink: Any, maximize: bool, amsgrad: bool) -> None:
    # NumpyAdam.update in one pass: the same operations in the same order.
    for i in range(param.size):
        p = param[i]
        if shrink != 1.0:
            p = p * shrink
        g = grad[i]
        if decay:
            g = p * decay - g if maximize else p * decay + g
        elif maximize:
            g = -g
        m = exp_avg[i] * beta1 + g * one_minus_beta1
        v = exp_avg_sq[i] * beta2 + g * one_minus_beta2 * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if amsgrad:
            largest = max_exp_avg_sq[i]
            if largest < v or v != v:  # np.maximum: NaN wins
                largest = v
            max_exp_avg_sq[i] = largest
            v = largest
        param[i] = p + m / (math.sqrt(v) + eps) * scale


def build_numpy(spec: AdamSpec, params: Any) -> NumpyAdam:
    return NumpyAdam(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdamSpec, params: Any) -> Any:
    from optiplug.backends.torch import Adam

    return Adam(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adam", spec=AdamSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adaptive moment estimation: per-coordinate steps from bias-corrected gradient "
                "moments; the default for most deep networks.",
        reference="Kingma & Ba 2015; AMSGrad: Reddi et al. 2018")]
