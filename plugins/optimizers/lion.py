"""Lion: evolved sign momentum.

Steps every coordinate by the same magnitude ``lr`` along the sign of an interpolation between
the momentum and the gradient, and keeps a single moment (half of Adam's memory). Use a learning
rate 3-10x smaller and a weight decay 3-10x larger than AdamW's; it shines on large-batch vision
and language training.

    c = b1 m + (1 - b1) g;   p = p (1 - lr wd) - lr sign(c);   m = b2 m + (1 - b2) g

Conventions: the paper's Algorithm 2 exactly (decoupled weight decay scaled by ``lr``,
``sign(0) = 0``); pytorch_optimizer's ``Lion`` with its defaults (``weight_decouple=True``,
``fixed_decay=False``) is the same rule. A NaN or infinite ``c`` (from a bad gradient with
``nonfinite="ignore"``) makes that coordinate's step NaN, so the bad gradient shows in the
parameters; ``torch.sign`` alone would map NaN to 0 and freeze the coordinate silently.

Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023
(arXiv:2302.06675), Algorithm 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel
from optiplug.param_groups import StandardOptimizerSpec


class LionSpec(StandardOptimizerSpec):
    """Lion (the paper's defaults)."""

    name: Literal["lion"] = "lion"
    lr: optiplug.PositiveFloat = 1e-4
    """Learning rate: the size of every coordinate's step."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.99)
    """Interpolation factor of the update direction (b1) and decay of the momentum (b2)."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Decoupled weight decay: each step multiplies the parameters by ``1 - lr * weight_decay``."""


class NumpyLion(NumpyOptimizer):
    """Lion on NumPy arrays, updated in place block by block."""

    state_keys = ("exp_avg",)
    scratch_blocks = 2

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas),
                                  "weight_decay": weight_decay}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return lion_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        lion_kernel(param, grad, state[0], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        weight1, weight2, shrink, neg_lr, zero = scalars
        exp_avg, direction = state[0], scratch[0]
        # c = m + (1 - b1) (g - m), the interpolation torch's lerp computes.
        np.subtract(grad, exp_avg, out=direction)
        np.multiply(direction, weight1, out=direction)
        np.add(direction, exp_avg, out=direction)
        # sign(c) + 0 c: a NaN or infinite c makes the step NaN (as in the torch kernel).
        np.multiply(direction, zero, out=scratch[1])
        np.sign(direction, out=direction)
        np.add(direction, scratch[1], out=direction)
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        np.multiply(direction, neg_lr, out=direction)
        np.add(param, direction, out=param)
        np.subtract(grad, exp_avg, out=direction)
        np.multiply(direction, weight2, out=direction)
        np.add(exp_avg, direction, out=exp_avg)


def lion_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of :func:`lion_kernel` (both backends)."""
    beta1, beta2 = group["betas"]
    lr = group["lr"]
    return 1 - beta1, 1 - beta2, 1 - lr * group["weight_decay"], -lr, 0.0


@fused_kernel
def lion_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any], weight1: Any,
                weight2: Any, shrink: Any, neg_lr: Any, zero: Any) -> None:
    """NumpyLion.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        g = grad[i]
        m = exp_avg[i]
        c = (g - m) * weight1 + m
        direction = np.sign(c) + c * zero
        p = param[i]
        if shrink != 1.0:
            p = p * shrink
        param[i] = p + direction * neg_lr
        exp_avg[i] = m + (g - m) * weight2


def build_numpy(spec: LionSpec, params: Any) -> NumpyLion:
    return NumpyLion(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: LionSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import Lion

    return Lion(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="lion", spec=LionSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Evolved sign momentum: equal-size steps along the sign of interpolated "
                "momentum; half of Adam's memory, for large-batch training.",
        reference="Chen et al. 2023, arXiv:2302.06675")]
