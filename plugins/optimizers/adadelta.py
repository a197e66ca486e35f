"""Adadelta: Adagrad's adaptivity without a global step size to tune.

Scales each step by the ratio of the root mean square of past updates to that of past
gradients, both as decaying averages, so the units of the update match the parameter's and
``lr`` (default 1) rarely needs tuning.

    g = grad (+ weight_decay * p);  v = rho v + (1 - rho) g^2
    d = sqrt(u + eps) / sqrt(v + eps) * g;  u = rho u + (1 - rho) d^2;  p -= lr d

Reference: Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad, fused_kernel
from optiplug.param_groups import ForeachChoiceSpec


class AdadeltaSpec(ForeachChoiceSpec):
    """Adadelta (torch.optim.Adadelta's defaults)."""

    name: Literal["adadelta"] = "adadelta"
    lr: optiplug.PositiveFloat = 1.0
    """Scale of the update (1: Zeiler's method as published)."""
    rho: optiplug.Beta = 0.9
    """Decay rate of the squared-gradient and squared-update averages."""
    eps: optiplug.PositiveFloat = 1e-6
    """Added inside both square roots for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyAdadelta(NumpyOptimizer):
    """Adadelta on NumPy arrays, step for step equal to ``torch.optim.Adadelta``."""

    state_keys = ("square_avg", "acc_delta")

    def __init__(self, params: Any, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "rho": rho, "eps": eps,
                                  "weight_decay": weight_decay, "maximize": maximize}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return (group["rho"], 1 - group["rho"], group["eps"], -group["lr"],
                group["weight_decay"], group["maximize"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        _adadelta_kernel(param, grad, state[0], state[1], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        rho, one_minus_rho, eps, neg_lr, decay, maximize = scalars
        square_avg, acc_delta = state
        std, delta = scratch[1], scratch[2]
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        np.multiply(square_avg, rho, out=square_avg)
        np.multiply(grad, one_minus_rho, out=std)
        np.multiply(std, grad, out=std)
        np.add(square_avg, std, out=square_avg)
        np.add(square_avg, eps, out=std)
        np.sqrt(std, out=std)
        np.add(acc_delta, eps, out=delta)
        np.sqrt(delta, out=delta)
        np.divide(delta, std, out=delta)
        np.multiply(delta, grad, out=delta)
        np.multiply(acc_delta, rho, out=acc_delta)
        np.multiply(delta, one_minus_rho, out=std)
        np.multiply(std, delta, out=std)
        np.add(acc_delta, std, out=acc_delta)
        np.multiply(delta, neg_lr, out=delta)
        np.add(param, delta, out=param)


@fused_kernel
def _adadelta_kernel(param: NDArray[Any], grad: NDArray[Any], square_avg: NDArray[Any],
                     acc_delta: NDArray[Any], rho: Any, one_minus_rho: Any, eps: Any,
                     neg_lr: Any, decay: Any, maximize: bool) -> None:
    # NumpyAdadelta.update in one pass: the same operations in the same order.
    for i in range(param.size):
        p = param[i]
        g = grad[i]
        if decay:
            g = p * decay - g if maximize else p * decay + g
        elif maximize:
            g = -g
        v = square_avg[i] * rho + g * one_minus_rho * g
        square_avg[i] = v
        delta = math.sqrt(acc_delta[i] + eps) / math.sqrt(v + eps) * g
        acc_delta[i] = acc_delta[i] * rho + delta * one_minus_rho * delta
        param[i] = p + delta * neg_lr


def build_numpy(spec: AdadeltaSpec, params: Any) -> NumpyAdadelta:
    return NumpyAdadelta(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdadeltaSpec, params: Any) -> Any:
    from optiplug.backends.torch import Adadelta

    return Adadelta(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adadelta", spec=AdadeltaSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Steps scaled by RMS of past updates over RMS of past gradients; adaptive with "
                "little lr tuning.",
        reference="Zeiler 2012")]
