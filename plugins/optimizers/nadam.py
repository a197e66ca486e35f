"""NAdam: Adam with Nesterov momentum and a momentum schedule.

Applies Nesterov's look-ahead to Adam's first moment: the step mixes the current gradient and
the momentum as they will be after this step, with a momentum coefficient ``mu_t`` that warms
up (``momentum_decay``). Often a little faster than Adam early in training.
``decoupled_weight_decay`` decays the weights directly (NAdamW).

    g = grad (+ weight_decay * p, or p *= 1 - lr * weight_decay when decoupled)
    mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay));  mu_product *= mu_t
    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  d = sqrt(v / (1 - b2^t)) + eps
    p -= lr (1 - mu_t) / (1 - mu_product) g / d + lr mu_{t+1} / (1 - mu_product mu_{t+1}) m / d

``mu_product`` is kept per parameter in float32 as torch keeps it (torch's scalar state dtype
while the default dtype is float32), so both backends give the same numbers.

Reference: Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad
from optiplug.param_groups import StandardOptimizerSpec


class NAdamSpec(StandardOptimizerSpec):
    """NAdam (torch.optim.NAdam's defaults)."""

    name: Literal["nadam"] = "nadam"
    lr: optiplug.PositiveFloat = 2e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment averages."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Weight decay: an L2 penalty added to the gradient, or decoupled (see below)."""
    momentum_decay: optiplug.NonNegativeFloat = 4e-3
    """Speed of the momentum warm-up ``mu_t = b1 (1 - 0.5 * 0.96^(t * momentum_decay))``."""
    decoupled_weight_decay: bool = False
    """Decay the weights directly (``p *= 1 - lr * weight_decay``, NAdamW) instead of adding
    an L2 penalty to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyNAdam(NumpyOptimizer):
    """NAdam on NumPy arrays, step for step equal to ``torch.optim.NAdam`` (same state keys)."""

    state_keys = ("exp_avg", "exp_avg_sq", "mu_product")
    per_tensor = True

    def __init__(self, params: Any, lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                 decoupled_weight_decay: bool = False, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay,
                                  "momentum_decay": momentum_decay,
                                  "decoupled_weight_decay": decoupled_weight_decay,
                                  "maximize": maximize}, **options)

    def state_shape(self, group: Mapping[str, Any], key: str, param: NDArray[Any]
                    ) -> tuple[int, ...]:
        return () if key == "mu_product" else tuple(param.shape)

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        return 1.0 if key == "mu_product" else 0.0

    def update_tensor(self, group: Mapping[str, Any], param: NDArray[Any], grad: NDArray[Any],
                      state: dict[str, Any]) -> None:
        beta1, beta2 = group["betas"]
        lr, decay, step = group["lr"], group["weight_decay"], state["step"]
        exp_avg, exp_avg_sq, mu_product = (state["exp_avg"], state["exp_avg_sq"],
                                           state["mu_product"])
        dtype = param.dtype.type
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * group["momentum_decay"]))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * group["momentum_decay"]))
        product = float(np.float32(mu_product) * np.float32(mu))
        mu_product[...] = product
        if decay and group["decoupled_weight_decay"]:
            np.multiply(param, dtype(1 - lr * decay), out=param)
            decay = 0.0
        grad = effective_grad(param, grad, np.empty_like(param), decay, group["maximize"])
        exp_avg += dtype(1 - beta1) * (grad - exp_avg)
        exp_avg_sq *= dtype(beta2)
        exp_avg_sq += dtype(1 - beta2) * grad * grad
        denom = np.divide(exp_avg_sq, dtype(1 - beta2**step))
        np.sqrt(denom, out=denom)
        denom += dtype(group["eps"])
        param += dtype(-lr * (1.0 - mu) / (1.0 - product)) * grad / denom
        param += dtype(-lr * mu_next / (1.0 - product * mu_next)) * exp_avg / denom


def build_numpy(spec: NAdamSpec, params: Any) -> NumpyNAdam:
    return NumpyNAdam(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: NAdamSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import NAdam

    return NAdam(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="nadam", spec=NAdamSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam with Nesterov momentum and a momentum warm-up schedule; optionally "
                "decoupled weight decay (NAdamW).",
        reference="Dozat 2016")]
