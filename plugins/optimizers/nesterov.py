"""Nesterov: gradient descent with Nesterov momentum.

Like heavy-ball momentum, but steps along the gradient plus the look-ahead velocity
``grad + momentum * b``, which corrects the velocity sooner. Often converges a little faster
and more stably than plain momentum at the same settings.

    g = grad (+ weight_decay * p);  b = g (first step), else b = momentum * b + g
    p -= lr * (g + momentum * b)

Reference: Nesterov, "A method for solving the convex programming problem with convergence rate
O(1/k^2)", 1983; Sutskever et al., "On the importance of initialization and momentum in deep
learning", ICML 2013.
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


class NesterovSpec(KernelChoiceSpec):
    """SGD with Nesterov momentum (torch.optim.SGD with ``nesterov=True``)."""

    name: Literal["nesterov"] = "nesterov"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    momentum: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 0.9
    """Momentum factor, ``0 < momentum < 1``."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyNesterov(NumpyOptimizer):
    """Nesterov momentum on NumPy arrays, step for step equal to ``torch.optim.SGD``."""

    state_keys = ("momentum_buffer",)
    scratch_blocks = 2

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "maximize": maximize}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        # 1.0: SGD's undamped factor (no dampening), a float so it takes the arrays' dtype.
        return (-group["lr"], group["momentum"], 1.0, state["step"] == 1, group["weight_decay"],
                group["maximize"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, momentum, undamped, first, decay, maximize = scalars
        sgd_kernel(param, grad, state[0], neg_lr, momentum, undamped, True, first, decay,
                   maximize, True)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, momentum, _, first, decay, maximize = scalars
        buf, tmp = state[0], scratch[1]
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        if first:
            np.copyto(buf, grad)
        else:
            np.multiply(buf, momentum, out=buf)
            np.add(buf, grad, out=buf)
        np.multiply(buf, momentum, out=tmp)
        np.add(tmp, grad, out=tmp)
        np.multiply(tmp, neg_lr, out=tmp)
        np.add(param, tmp, out=param)


def build_numpy(spec: NesterovSpec, params: Any) -> NumpyNesterov:
    return NumpyNesterov(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: NesterovSpec, params: Any) -> Any:
    from optiplug.backends.torch import SGD

    return SGD(spec.group_params(params), **spec.optimizer_arguments(), nesterov=True)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="nesterov", spec=NesterovSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="SGD with Nesterov momentum: steps along gradient plus look-ahead velocity; "
                "often a little faster and steadier than heavy ball.",
        reference="Nesterov 1983; Sutskever et al. 2013")]
