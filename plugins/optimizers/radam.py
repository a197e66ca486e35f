"""RAdam: Adam with the variance of the adaptive learning rate rectified.

Early in training Adam's second-moment estimate rests on few samples, so its step size has a
large variance; RAdam steps with plain (bias-corrected) momentum until the estimate is
reliable, then with Adam's step scaled by a rectification factor ``r_t``. It removes the need
for a learning-rate warm-up. ``decoupled_weight_decay`` gives RAdamW (the authors' code).

    g = grad (+ weight_decay * p, or p *= 1 - lr * weight_decay when decoupled)
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    rho_t > 5:  p -= lr m / (1 - b1^t) * r_t sqrt(1 - b2^t) / (sqrt(v) + eps)
                r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    else:       p -= lr m / (1 - b1^t)

Reference: Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad
from optiplug.param_groups import StandardOptimizerSpec


class RAdamSpec(StandardOptimizerSpec):
    """RAdam (torch.optim.RAdam's defaults)."""

    name: Literal["radam"] = "radam"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment averages."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Weight decay: an L2 penalty added to the gradient, or decoupled (see below)."""
    decoupled_weight_decay: bool = False
    """Decay the weights directly (``p *= 1 - lr * weight_decay``, RAdamW) instead of adding
    an L2 penalty to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyRAdam(NumpyOptimizer):
    """RAdam on NumPy arrays, step for step equal to ``torch.optim.RAdam``."""

    state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled_weight_decay: bool = False, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        beta1, beta2 = group["betas"]
        lr, step, decay = group["lr"], state["step"], group["weight_decay"]
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        rho_inf = 2 / (1 - beta2) - 1
        rho_t = rho_inf - 2 * step * beta2**step / bias_correction2
        if rho_t > 5:
            rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf
                             / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            # p -= lr/bc1 * r * m * sqrt(bc2) / (sqrt(v) + eps)
            adaptive_scale = -lr / bias_correction1 * rect * math.sqrt(bias_correction2)
            plain_scale = 0.0
        else:
            adaptive_scale, plain_scale = 0.0, -lr / bias_correction1
        decoupled = group["decoupled_weight_decay"]
        return (beta1, 1 - beta1, beta2, 1 - beta2, group["eps"], adaptive_scale, plain_scale,
                0.0 if decoupled else decay, 1 - lr * decay if decoupled and decay else 1.0,
                group["maximize"])

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        beta1, one_minus_beta1, beta2, one_minus_beta2, eps, adaptive_scale, plain_scale, \
            decay, shrink, maximize = scalars
        exp_avg, exp_avg_sq = state
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
        if adaptive_scale:
            np.sqrt(exp_avg_sq, out=tmp)
            np.add(tmp, eps, out=tmp)
            np.divide(exp_avg, tmp, out=tmp)
            np.multiply(tmp, adaptive_scale, out=tmp)
        else:
            np.multiply(exp_avg, plain_scale, out=tmp)
        np.add(param, tmp, out=param)


def build_numpy(spec: RAdamSpec, params: Any) -> NumpyRAdam:
    return NumpyRAdam(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: RAdamSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import RAdam

    return RAdam(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="radam", spec=RAdamSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Rectified Adam: momentum SGD until the second-moment estimate is reliable, "
                "then Adam with a variance rectification; no warm-up needed.",
        reference="Liu et al. 2020")]
