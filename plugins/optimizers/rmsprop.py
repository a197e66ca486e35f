"""RMSprop: steps scaled by a moving average of squared gradients.

Divides the gradient by the root of a decaying average of its square, so step sizes adapt per
coordinate without Adagrad's stall. ``centered`` subtracts the squared mean gradient (a
variance estimate); ``momentum`` adds a velocity. A good default for recurrent networks and
reinforcement learning.

    g = grad (+ weight_decay * p);  v = alpha v + (1 - alpha) g^2
    centered: a = alpha a + (1 - alpha) g,  d = sqrt(v - a^2) + eps;  else d = sqrt(v) + eps
    momentum: b = momentum b + g / d,  p -= lr b;  else p -= lr g / d

Reference: Hinton, Srivastava & Swersky, Neural Networks for Machine Learning, lecture 6e
(2012); centered: Graves, "Generating Sequences With Recurrent Neural Networks", 2013.
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


class RMSpropSpec(ForeachChoiceSpec):
    """RMSprop (torch.optim.RMSprop's defaults)."""

    name: Literal["rmsprop"] = "rmsprop"
    lr: optiplug.PositiveFloat = 1e-2
    """Learning rate."""
    alpha: optiplug.Beta = 0.99
    """Decay rate of the squared-gradient average."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    momentum: optiplug.Beta = 0.0
    """Momentum factor (``0``: none)."""
    centered: bool = False
    """Normalize by the estimated variance (subtract the squared mean gradient)."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyRMSprop(NumpyOptimizer):
    """RMSprop on NumPy arrays, step for step equal to ``torch.optim.RMSprop``."""

    def __init__(self, params: Any, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps,
                                  "weight_decay": weight_decay, "momentum": momentum,
                                  "centered": centered, "maximize": maximize}, **options)

    def state_keys_for(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return ("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ()) + (
            ("grad_avg",) if group["centered"] else ())

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return (group["alpha"], 1 - group["alpha"], group["eps"], -group["lr"],
                group["momentum"], group["centered"], group["weight_decay"], group["maximize"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        # Without momentum or centering the kernel never touches the arrays standing in.
        _rmsprop_kernel(param, grad, state[0], state[1] if len(state) > 1 else state[0],
                        state[-1], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        alpha, one_minus_alpha, eps, neg_lr, momentum, centered, decay, maximize = scalars
        square_avg, tmp = state[0], scratch[1]
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        np.multiply(square_avg, alpha, out=square_avg)
        np.multiply(grad, one_minus_alpha, out=tmp)
        np.multiply(tmp, grad, out=tmp)
        np.add(square_avg, tmp, out=square_avg)
        if centered:
            grad_avg = state[-1]
            np.subtract(grad, grad_avg, out=tmp)
            np.multiply(tmp, one_minus_alpha, out=tmp)
            np.add(grad_avg, tmp, out=grad_avg)
            np.multiply(grad_avg, grad_avg, out=tmp)
            np.subtract(square_avg, tmp, out=tmp)
            np.sqrt(tmp, out=tmp)
        else:
            np.sqrt(square_avg, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(grad, tmp, out=tmp)
        if momentum > 0:
            buf = state[1]
            np.multiply(buf, momentum, out=buf)
            np.add(buf, tmp, out=buf)
            np.multiply(buf, neg_lr, out=tmp)
        else:
            np.multiply(tmp, neg_lr, out=tmp)
        np.add(param, tmp, out=param)


@fused_kernel
def _rmsprop_kernel(param: NDArray[Any], grad: NDArray[Any], square_avg: NDArray[Any],
                    buf: NDArray[Any], grad_avg: NDArray[Any], alpha: Any,
                    one_minus_alpha: Any, eps: Any, neg_lr: Any, momentum: Any, centered: bool,
                    decay: Any, maximize: bool) -> None:
    # NumpyRMSprop.update in one pass: the same operations in the same order.
    for i in range(param.size):
        p = param[i]
        g = grad[i]
        if decay:
            g = p * decay - g if maximize else p * decay + g
        elif maximize:
            g = -g
        v = square_avg[i] * alpha + g * one_minus_alpha * g
        square_avg[i] = v
        if centered:
            mean = grad_avg[i] + (g - grad_avg[i]) * one_minus_alpha
            grad_avg[i] = mean
            v = v - mean * mean
        step = g / (math.sqrt(v) + eps)
        if momentum > 0:
            step = buf[i] * momentum + step
            buf[i] = step
        param[i] = p + step * neg_lr


def build_numpy(spec: RMSpropSpec, params: Any) -> NumpyRMSprop:
    return NumpyRMSprop(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: RMSpropSpec, params: Any) -> Any:
    from optiplug.backends.torch import RMSprop

    return RMSprop(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="rmsprop", spec=RMSpropSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Steps scaled by a moving average of squared gradients (optionally centered, "
                "with momentum); good for recurrent nets and RL.",
        reference="Hinton 2012 (lecture 6e); centered: Graves 2013")]
