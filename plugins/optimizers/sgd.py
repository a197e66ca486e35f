"""SGD: plain (stochastic) gradient descent.

Steps against the gradient by a fixed learning rate. Batch, mini-batch and stochastic
gradient descent are this optimizer with different batch sizes in the training loop. Use it as
a baseline, for convex problems, or with a well-tuned schedule; add ``momentum`` or
``nesterov`` for faster progress along ravines.

    g = grad (+ weight_decay * p);  p -= lr * g

Reference: Robbins & Monro, "A Stochastic Approximation Method", 1951.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad


class SGDSpec(optiplug.OptimizerSpec):
    """Plain gradient descent (torch.optim.SGD without momentum)."""

    name: Literal["sgd"] = "sgd"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpySGD(NumpyOptimizer):
    """Gradient descent on NumPy arrays, step for step equal to ``torch.optim.SGD``."""

    scratch_blocks = 2
    pack_limit = 1024  # two ufunc calls per parameter: packing only pays for tiny ones

    def __init__(self, params: Any, lr: float = 1e-3, weight_decay: float = 0.0,
                 maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "maximize": maximize},
                         **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return -group["lr"], group["weight_decay"], group["maximize"]

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, decay, maximize = scalars
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        np.multiply(grad, neg_lr, out=scratch[1])
        np.add(param, scratch[1], out=param)


def build_numpy(spec: SGDSpec, params: Any) -> NumpySGD:
    return NumpySGD(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: SGDSpec, params: Any) -> Any:
    from optiplug.backends.torch import SGD

    # Without momentum the update is one pass; torch's foreach kernel beats its fused one.
    return SGD(spec.group_params(params), **spec.optimizer_arguments(), foreach=True)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="sgd", spec=SGDSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Plain gradient descent p -= lr * grad; batch, mini-batch and stochastic are "
                "batch sizes. A baseline and for convex problems.",
        reference="Robbins & Monro 1951")]
