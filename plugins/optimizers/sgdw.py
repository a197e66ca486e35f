"""SGDW: SGD with momentum and decoupled weight decay.

torch.optim.SGD's ``weight_decay`` adds ``wd * p`` to the gradient, so with momentum the decay
is accumulated in the velocity and its strength is tied to the learning rate schedule in a way
that differs from the intended L2 shrinkage. SGDW shrinks the weights directly each step, apart
from the gradient (what AdamW does for Adam). Use it for SGD-with-momentum training of vision
models with weight decay and cosine or step schedules.

    p *= 1 - lr * wd
    momentum = 0:  p -= lr * g
    momentum > 0:  b = g (first step), else b = momentum * b + (1 - dampening) g
                   p -= lr * (g + momentum * b if nesterov else b)

Conventions: pytorch_optimizer's ``SGDW`` (4.1, ``weight_decouple=True``), which shrinks by
``lr * wd`` like AdamW; the paper's Algorithm 1 scales the decay by the schedule multiplier
``eta_t`` only (``p *= 1 - eta_t wd``), which is this rule with ``wd`` divided by the base lr.
The momentum buffer is kept (zeros) also when ``momentum`` is 0.

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019
(arXiv:1711.05101), Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, ValidationInfo, field_validator

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel


class SGDWSpec(optiplug.OptimizerSpec):
    """SGD with momentum and decoupled weight decay."""

    name: Literal["sgdw"] = "sgdw"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    momentum: Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)] = 0.9
    """Momentum factor, ``0 <= momentum < 1``."""
    dampening: optiplug.Probability = 0.0
    """Scales the new gradient by ``1 - dampening`` when added to the velocity."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Decoupled weight decay: ``p *= 1 - lr * weight_decay`` each step."""
    nesterov: bool = False
    """Nesterov momentum: step along ``g + momentum * b`` (needs momentum > 0, dampening 0)."""

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_momentum(cls, value: bool, info: ValidationInfo) -> bool:
        momentum = info.data.get("momentum", 0.0)
        dampening = info.data.get("dampening", 0.0)
        if value and (momentum <= 0 or dampening != 0):
            raise ValueError(f"Nesterov momentum needs momentum > 0 and dampening = 0; got "
                             f"momentum={momentum}, dampening={dampening}")
        return value


class NumpySGDW(NumpyOptimizer):
    """SGDW on NumPy arrays, updated in place block by block."""

    state_keys = ("momentum_buffer",)
    scratch_blocks = 1

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov},
                         **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return sgdw_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        sgdw_kernel(param, grad, state[0], *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        shrink, neg_lr, momentum, undamped, nesterov, first = scalars
        (buf,) = state
        (tmp,) = scratch
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        direction = grad
        if momentum:
            if first:
                np.copyto(buf, grad)
            else:
                np.multiply(buf, momentum, out=buf)
                np.multiply(grad, undamped, out=tmp)
                np.add(buf, tmp, out=buf)
            direction = buf
            if nesterov:
                np.multiply(buf, momentum, out=tmp)
                np.add(tmp, grad, out=tmp)
                direction = tmp
        np.multiply(direction, neg_lr, out=tmp)
        np.add(param, tmp, out=param)


def sgdw_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of :func:`sgdw_kernel` (both backends)."""
    lr = group["lr"]
    return (1 - lr * group["weight_decay"], -lr, group["momentum"], 1 - group["dampening"],
            group["nesterov"], step == 1)


@fused_kernel
def sgdw_kernel(param: NDArray[Any], grad: NDArray[Any], buffer: NDArray[Any], shrink: Any,
                neg_lr: Any, momentum: Any, undamped: Any, nesterov: bool,
                first: bool) -> None:
    """NumpySGDW.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        p = param[i]
        if shrink != 1.0:
            p = p * shrink
        g = grad[i]
        direction = g
        if momentum:
            b = g if first else buffer[i] * momentum + g * undamped
            buffer[i] = b
            direction = b * momentum + g if nesterov else b
        param[i] = p + direction * neg_lr


def build_numpy(spec: SGDWSpec, params: Any) -> NumpySGDW:
    return NumpySGDW(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: SGDWSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.catalogue_torch import SGDW

    return SGDW(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="sgdw", spec=SGDWSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="SGD with momentum whose weight decay shrinks the weights directly "
                "(p *= 1 - lr wd), not through the gradient: AdamW's fix for SGD.",
        reference="Loshchilov & Hutter 2019, arXiv:1711.05101")]
