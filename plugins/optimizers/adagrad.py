"""Adagrad: per-coordinate step sizes from the sum of all past squared gradients.

Coordinates with rare, small gradients keep large steps; frequent ones shrink. Suited to
sparse features (embeddings, NLP, recommendation); the ever-growing sum makes it stall on long
non-convex runs (use ``rmsprop`` or ``adam`` there).

    g = grad (+ weight_decay * p);  s += g^2
    p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps)

Reference: Duchi, Hazan & Singer, "Adaptive Subgradient Methods for Online Learning and
Stochastic Optimization", JMLR 2011.
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


class AdagradSpec(KernelChoiceSpec):
    """Adagrad (torch.optim.Adagrad's defaults)."""

    name: Literal["adagrad"] = "adagrad"
    lr: optiplug.PositiveFloat = 1e-2
    """Learning rate."""
    lr_decay: optiplug.NonNegativeFloat = 0.0
    """Step ``t`` uses ``lr / (1 + (t - 1) * lr_decay)``."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    initial_accumulator_value: optiplug.NonNegativeFloat = 0.0
    """Starting value of the sum of squared gradients."""
    eps: optiplug.PositiveFloat = 1e-10
    """Added to the denominator for numerical stability."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyAdagrad(NumpyOptimizer):
    """Adagrad on NumPy arrays, step for step equal to ``torch.optim.Adagrad``."""

    state_keys = ("sum",)
    scratch_blocks = 2

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, initial_accumulator_value: float = 0.0,
                 eps: float = 1e-10, maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value,
                                  "eps": eps, "maximize": maximize}, **options)

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        return float(group["initial_accumulator_value"])

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        return -clr, group["eps"], group["weight_decay"], group["maximize"]

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        _adagrad_kernel(param, grad, state[0], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_clr, eps, decay, maximize = scalars
        total, tmp = state[0], scratch[1]
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        np.multiply(grad, grad, out=tmp)
        np.add(total, tmp, out=total)
        np.sqrt(total, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(grad, tmp, out=tmp)
        np.multiply(tmp, neg_clr, out=tmp)
        np.add(param, tmp, out=param)


@fused_kernel
def _adagrad_kernel(param: NDArray[Any], grad: NDArray[Any], total: NDArray[Any], neg_clr: Any,
                    eps: Any, decay: Any, maximize: bool) -> None:
    # NumpyAdagrad.update in one pass: the same operations in the same order.
    for i in range(param.size):
        p = param[i]
        g = grad[i]
        if decay:
            g = p * decay - g if maximize else p * decay + g
        elif maximize:
            g = -g
        s = total[i] + g * g
        total[i] = s
        param[i] = p + g / (math.sqrt(s) + eps) * neg_clr


def build_numpy(spec: AdagradSpec, params: Any) -> NumpyAdagrad:
    return NumpyAdagrad(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdagradSpec, params: Any) -> Any:
    from optiplug.backends.torch import Adagrad

    return Adagrad(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adagrad", spec=AdagradSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Per-coordinate steps scaled by the root of all past squared gradients; for "
                "sparse features, stalls on long non-convex runs.",
        reference="Duchi, Hazan & Singer 2011")]
