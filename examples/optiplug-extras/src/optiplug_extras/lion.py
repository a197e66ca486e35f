"""Lion: evolved sign momentum.

Steps every coordinate by the same magnitude ``lr``, in the direction of the sign of an
interpolation between the momentum and the gradient, and keeps a single moment (half of
Adam's memory). Use a learning rate 3-10x smaller and a weight decay 3-10x larger than AdamW's;
it shines on large-batch vision and language training.

    c = b1 m + (1 - b1) g;   p = p (1 - lr wd) - lr sign(c);   m = b2 m + (1 - b2) g

Reference: Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023
(arXiv:2302.06675), Algorithm 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import optiplug
from numpy.typing import NDArray
from optiplug.backends.numpy import NumpyOptimizer


class LionSpec(optiplug.OptimizerSpec):
    """Lion (the paper's defaults); ``param_groups`` and ``nonfinite`` come from the base."""

    name: Literal["lion_extras"] = "lion_extras"
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
        beta1, beta2 = group["betas"]
        return group["lr"], 1 - group["lr"] * group["weight_decay"], beta1, beta2

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        lr, shrink, beta1, beta2 = scalars
        exp_avg = state[0]
        direction, scaled_grad = scratch[0], scratch[1]
        np.multiply(exp_avg, beta1, out=direction)
        np.multiply(grad, 1 - beta1, out=scaled_grad)
        np.add(direction, scaled_grad, out=direction)
        np.sign(direction, out=direction)
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        np.multiply(direction, lr, out=direction)
        np.subtract(param, direction, out=param)
        np.multiply(exp_avg, beta2, out=exp_avg)
        np.multiply(grad, 1 - beta2, out=scaled_grad)
        np.add(exp_avg, scaled_grad, out=exp_avg)


def build_numpy(spec: LionSpec, params: Any) -> NumpyLion:
    return NumpyLion(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: LionSpec, params: Any) -> Any:
    from optiplug_extras._torch_lion import NamedLion

    return NamedLion(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="lion_extras", spec=LionSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Evolved sign momentum: equal-size steps along the sign of interpolated "
                "momentum; half of Adam's memory, for large-batch training.",
        reference="Chen et al. 2023, arXiv:2302.06675")]
