"""Rprop: resilient backpropagation, steps from gradient signs only.

Each coordinate keeps its own step size, grown by ``etaplus`` while the gradient keeps its
sign and shrunk by ``etaminus`` when it flips (then that coordinate waits one step). Only the
sign of the gradient is used, so it suits full-batch training of small networks; it does not
work well with mini-batches.

    s = sign(g * g_prev);  step_size = clip(step_size * {etaplus if s > 0, etaminus if s < 0,
    1 otherwise}, step_sizes);  g = 0 where s < 0;  p -= sign(g) * step_size;  g_prev = g

Reference: Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation Learning:
The RPROP Algorithm", ICNN 1993.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import field_validator

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad
from optiplug.param_groups import StandardOptimizerSpec


class RpropSpec(StandardOptimizerSpec):
    """Rprop (torch.optim.Rprop's defaults)."""

    # step_sizes only clamps step sizes that have grown or shrunk by many factors of etas: on
    # a short run (the conformance kit's 8 steps take 1e-2 at most to 1e-2 * 1.2**8 ~ 0.043
    # and at least to 1e-2 * 0.5**8 ~ 4e-5) the default bounds (1e-6, 50) are never reached.
    policy_fields: ClassVar[frozenset[str]] = StandardOptimizerSpec.policy_fields | {
        "step_sizes"}

    name: Literal["rprop"] = "rprop"
    lr: optiplug.PositiveFloat = 1e-2
    """Initial step size of every coordinate."""
    etas: tuple[optiplug.PositiveFloat, optiplug.PositiveFloat] = (0.5, 1.2)
    """``(etaminus, etaplus)``: step-size factors on a sign flip and on a kept sign;
    ``0 < etaminus < 1 < etaplus``."""
    step_sizes: tuple[optiplug.PositiveFloat, optiplug.PositiveFloat] = (1e-6, 50.0)
    """``(min, max)`` bounds of the step sizes."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""

    @field_validator("etas")
    @classmethod
    def _etas_around_one(cls, etas: tuple[float, float]) -> tuple[float, float]:
        if not 0.0 < etas[0] < 1.0 < etas[1]:
            raise ValueError(f"need 0 < etaminus < 1 < etaplus, got etas={etas}")
        return etas

    @field_validator("step_sizes")
    @classmethod
    def _ordered_bounds(cls, step_sizes: tuple[float, float]) -> tuple[float, float]:
        if step_sizes[0] > step_sizes[1]:
            raise ValueError(f"need min <= max, got step_sizes={step_sizes}")
        return step_sizes


class NumpyRprop(NumpyOptimizer):
    """Rprop on NumPy arrays, step for step equal to ``torch.optim.Rprop``."""

    state_keys = ("prev", "step_size")

    def __init__(self, params: Any, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "etas": tuple(etas),
                                  "step_sizes": tuple(step_sizes), "maximize": maximize},
                         **options)

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        # torch starts every step size at the group's lr when the state is created.
        return float(group["lr"]) if key == "step_size" else 0.0

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        etaminus, etaplus = group["etas"]
        low, high = group["step_sizes"]
        return (etaminus, etaplus, low, high, group["maximize"])

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        etaminus, etaplus, low, high, maximize = scalars
        prev, step_size = state
        sign, factor = scratch[1], scratch[2]
        grad = effective_grad(param, grad, scratch[0], 0.0, maximize)
        np.multiply(grad, prev, out=sign)
        flipped = sign < 0
        factor.fill(1)
        np.copyto(factor, etaplus, where=sign > 0)
        np.copyto(factor, etaminus, where=flipped)
        np.multiply(step_size, factor, out=step_size)
        np.clip(step_size, low, high, out=step_size)
        np.copyto(prev, grad)
        np.copyto(prev, 0, where=flipped)
        np.sign(prev, out=factor)
        np.nan_to_num(factor, copy=False)  # torch's sign(NaN) is 0: a NaN gradient moves nothing
        np.multiply(factor, step_size, out=factor)
        np.subtract(param, factor, out=param)


def build_numpy(spec: RpropSpec, params: Any) -> NumpyRprop:
    return NumpyRprop(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: RpropSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import Rprop

    return Rprop(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="rprop", spec=RpropSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Resilient backprop: per-coordinate step sizes adapted from gradient sign "
                "agreement; for full-batch training.",
        reference="Riedmiller & Braun 1993")]
