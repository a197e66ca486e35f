"""Adamax: Adam with the infinity norm in place of the second moment.

Scales the (bias-corrected) momentum by an exponentially weighted infinity norm of past
gradients instead of their root mean square, which needs no bias correction and is robust to
rare large gradients (e.g. embeddings).

    g = grad (+ weight_decay * p);  m = b1 m + (1 - b1) g;  u = max(b2 u, |g| + eps)
    p -= lr / (1 - b1^t) * m / u

Reference: Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad
from optiplug.param_groups import StandardOptimizerSpec


class AdamaxSpec(StandardOptimizerSpec):
    """Adamax (torch.optim.Adamax's defaults)."""

    name: Literal["adamax"] = "adamax"
    lr: optiplug.PositiveFloat = 2e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the first moment and of the infinity norm."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to ``|g|`` so the norm is never zero."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyAdamax(NumpyOptimizer):
    """Adamax on NumPy arrays, step for step equal to ``torch.optim.Adamax``."""

    state_keys = ("exp_avg", "exp_inf")

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        beta1, beta2 = group["betas"]
        return (beta1, 1 - beta1, beta2, group["eps"],
                -group["lr"] / (1 - beta1 ** state["step"]), group["weight_decay"],
                group["maximize"])

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        beta1, one_minus_beta1, beta2, eps, scale, decay, maximize = scalars
        exp_avg, exp_inf = state
        tmp = scratch[1]
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        np.multiply(grad, one_minus_beta1, out=tmp)
        np.multiply(exp_avg, beta1, out=exp_avg)
        np.add(exp_avg, tmp, out=exp_avg)
        np.abs(grad, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.multiply(exp_inf, beta2, out=exp_inf)
        np.maximum(exp_inf, tmp, out=exp_inf)
        np.divide(exp_avg, exp_inf, out=tmp)
        np.multiply(tmp, scale, out=tmp)
        np.add(param, tmp, out=param)


def build_numpy(spec: AdamaxSpec, params: Any) -> NumpyAdamax:
    return NumpyAdamax(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdamaxSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import Adamax

    return Adamax(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adamax", spec=AdamaxSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam with an infinity-norm second moment: robust to rare large gradients "
                "(embeddings).",
        reference="Kingma & Ba 2015, section 7.1")]
