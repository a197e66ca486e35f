"""SGD: (stochastic) gradient descent, with torch's SGD options.

Steps against the gradient by a fixed learning rate. Batch, mini-batch and stochastic
gradient descent are this optimizer with different batch sizes in the training loop. Use it as
a baseline, for convex problems, or with a well-tuned schedule. It takes torch.optim.SGD's
vocabulary (``momentum``, ``dampening``, ``nesterov``) for users coming from torch; the named
techniques ``momentum`` and ``nesterov`` are the same updates with momentum on by default.

    g = grad (+ weight_decay * p)
    momentum = 0:  p -= lr * g
    momentum > 0:  b = g (first step), else b = momentum * b + (1 - dampening) g
                   p -= lr * (g + momentum * b if nesterov else b)

Reference: Robbins & Monro, "A Stochastic Approximation Method", 1951; Polyak 1964 (momentum);
Sutskever et al., ICML 2013 (Nesterov).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, ValidationInfo, field_validator

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad, fused_kernel


class SGDSpec(optiplug.OptimizerSpec):
    """Gradient descent with torch.optim.SGD's options (plain by default)."""

    name: Literal["sgd"] = "sgd"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.0
    """Momentum factor, ``0 <= momentum < 1`` (0: plain gradient descent)."""
    dampening: optiplug.Probability = 0.0
    """Scales the new gradient by ``1 - dampening`` when added to the velocity."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    nesterov: bool = False
    """Nesterov momentum: step along ``g + momentum * b`` (needs momentum > 0, dampening 0)."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, value: bool, info: ValidationInfo) -> bool:
        momentum = info.data.get("momentum", 0.0)
        dampening = info.data.get("dampening", 0.0)
        if value and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum needs momentum > 0 and dampening = 0 (as in "
                             f"torch.optim.SGD); got momentum={momentum}, dampening={dampening}")
        return value


class NumpySGD(NumpyOptimizer):
    """Gradient descent on NumPy arrays, step for step equal to ``torch.optim.SGD``."""

    scratch_blocks = 2
    pack_limit = 1024  # two ufunc calls per parameter: packing only pays for tiny ones

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov,
                                  "maximize": maximize}, **options)

    def state_keys_for(self, group: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return (-group["lr"], group["momentum"], 1 - group["dampening"], group["nesterov"],
                state["step"] == 1, group["weight_decay"], group["maximize"],
                group["momentum"] != 0)

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        # Without momentum the kernel never touches the gradient standing in for the buffer.
        sgd_kernel(param, grad, state[0] if state else grad, *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        neg_lr, momentum, undamped, nesterov, first, decay, maximize, buffered = scalars
        grad = effective_grad(param, grad, scratch[0], decay, maximize)
        tmp = scratch[1]
        if buffered:
            buf = state[0]
            if first:
                np.copyto(buf, grad)
            else:
                np.multiply(buf, momentum, out=buf)
                if undamped != 1:
                    np.multiply(grad, undamped, out=tmp)
                    np.add(buf, tmp, out=buf)
                else:
                    np.add(buf, grad, out=buf)
            if nesterov:
                np.multiply(buf, momentum, out=tmp)
                np.add(tmp, grad, out=tmp)
                np.multiply(tmp, neg_lr, out=tmp)
                np.add(param, tmp, out=param)
                return
            grad = buf
        np.multiply(grad, neg_lr, out=tmp)
        np.add(param, tmp, out=param)


@fused_kernel
def sgd_kernel(param: NDArray[Any], grad: NDArray[Any], buf: NDArray[Any], neg_lr: Any,
               momentum: Any, undamped: Any, nesterov: bool, first: bool, decay: Any,
               maximize: bool, buffered: bool) -> None:
    """NumpySGD.update in one pass: the same operations in the same order; ``buffered``: keep
    a momentum buffer (``momentum != 0``). momentum and nesterov run it too."""
    for i in range(param.size):
        p = param[i]
        g = grad[i]
        if decay:
            g = p * decay - g if maximize else p * decay + g
        elif maximize:
            g = -g
        if buffered:
            if first:
                b = g
            elif undamped != 1:
                b = buf[i] * momentum + g * undamped
            else:
                b = buf[i] * momentum + g
            buf[i] = b
            g = b * momentum + g if nesterov else b
        param[i] = p + g * neg_lr


def build_numpy(spec: SGDSpec, params: Any) -> NumpySGD:
    return NumpySGD(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: SGDSpec, params: Any) -> Any:
    from optiplug.backends.torch import SGD

    # torch's foreach kernel: beats its fused one without momentum, and handles parameters whose
    # first gradient comes late (a momentum buffer missing for some) with momentum.
    return SGD(spec.group_params(params), **spec.optimizer_arguments(), foreach=True)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="sgd", spec=SGDSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Plain gradient descent p -= lr * grad; batch, mini-batch and stochastic are "
                "batch sizes. A baseline and for convex problems.",
        reference="Robbins & Monro 1951")]
