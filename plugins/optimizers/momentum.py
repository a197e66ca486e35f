"""Momentum: gradient descent with heavy-ball momentum.

Accumulates a velocity, an exponentially decaying sum of past gradients, and steps along it:
faster progress along consistent directions and damped oscillation across ravines. The
workhorse for convolutional networks (with a step or cosine schedule).

    g = grad (+ weight_decay * p);  b = g (first step), else b = momentum * b + (1 - dampening) g
    p -= lr * b

Reference: Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad
from optiplug.param_groups import KernelChoiceSpec
from optiplug.plugins.optimizers.sgd import sgd_kernel


class MomentumSpec(KernelChoiceSpec):
    """SGD with heavy-ball momentum (torch.optim.SGD with ``momentum > 0``)."""

    name: Literal["momentum"] = "momentum"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    momentum: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.9
    """Momentum factor, ``0 < momentum < 1``."""
    dampening: optiplug.Probability = 0.0
    """Scales the new gradient by ``1 - dampening`` when added to the velocity."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyMomentum(NumpyOptimizer):
    """Heavy-ball momentum on NumPy arrays, step for step equal to ``torch.optim.SGD``."""

    state_keys = ("momentum_buffer",)
    scratch_blocks = 2

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9,
                 dampening: float = 0.0, weight_decay: float = 0.0, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "maximize": maximize}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return (-group["lr"], group["momentum"], 1 - group["dampening"], state["step"] == 1,
                group["weight_decay"], group["maximize"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, momentum, undamped, first, decay, maximize = scalars
        sgd_kernel(param, grad, state[0], neg_lr, momentum, undamped, False, first, decay,
                   maximize, True)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, momentum, undamped, first, decay, maximize = scalars
        buf, tmp = state[0], scratch[1]
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        if first:
            np.copyto(buf, grad)
        else:
            np.multiply(buf, momentum, out=buf)
            if undamped != 1:
                np.multiply(grad, undamped, out=tmp)
                grad = tmp
            np.add(buf, grad, out=buf)
        np.multiply(buf, neg_lr, out=tmp)
        np.add(param, tmp, out=param)


def build_numpy(spec: MomentumSpec, params: Any) -> NumpyMomentum:
    return NumpyMomentum(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: MomentumSpec, params: Any) -> Any:
    from optiplug.backends.torch import SGD

    return SGD(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="momentum", spec=MomentumSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="SGD with heavy-ball momentum: steps along a decaying sum of gradients; the "
                "workhorse for convolutional networks.",
        reference="Polyak 1964")]
