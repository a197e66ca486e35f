"""ADOPT: Adam that converges for any beta2.

Normalizes the gradient by the second-moment estimate of the *previous* step (so the current
gradient is not in its own denominator) before the momentum, and clips the normalized gradient.
That removes Adam's dependence on a problem-specific ``beta2`` for convergence. The first step
only initializes ``v``; parameters move from the second step on. A drop-in for Adam.

    step 1:  v = g^2                                   (no parameter change)
    step t:  u = clip(g / max(sqrt(v), eps), (t - 1)^clip_exponent)
             m = lerp(m, u, 1 - b1);   p -= lr m;   v = b2 v + (1 - b2) g^2

``weight_decay`` is added to the gradient (L2), or with ``decoupled`` multiplies ``p`` by
``1 - lr wd`` from the second step on.

Conventions: the paper's Algorithm 2 with the official implementation's clip and decay. Against
pytorch_optimizer's ``ADOPT``: its default clip is ``t^0.25`` with ``t`` counting the
initializing step (tests pass it ``clip_lambda=lambda t: (t - 1) ** 0.25``), its decoupled
decay also shrinks ``p`` on the first step, and it counts steps per group, not per parameter.

Reference: Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the Optimal
Rate", NeurIPS 2024 (arXiv:2411.02853), Algorithm 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel
from optiplug.param_groups import StandardOptimizerSpec


class AdoptSpec(StandardOptimizerSpec):
    """ADOPT (the official implementation's defaults)."""

    # eps is the floor of max(sqrt(v), eps): a safeguard that only acts where v is (nearly)
    # zero, never at the conformance kit's gradient sizes.
    policy_fields: ClassVar[frozenset[str]] = StandardOptimizerSpec.policy_fields | {"eps"}
    initializing_steps: ClassVar[int] = 1
    """A parameter's first step with a gradient only sets ``v = g^2`` (the algorithm's step
    0): it does not move the parameter (read by the conformance kit)."""

    name: Literal["adopt"] = "adopt"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.9999)
    """Decay rates of the momentum and of the second-moment average."""
    eps: optiplug.PositiveFloat = 1e-6
    """Lower bound of ``sqrt(v)`` in the normalization."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Weight decay: L2 added to the gradient, or decoupled with ``decoupled``."""
    decoupled: bool = False
    """Decoupled weight decay (``p *= 1 - lr * weight_decay``) instead of L2."""
    clip_exponent: optiplug.NonNegativeFloat | None = 0.25
    """Clip the normalized gradient to ``(t - 1)^clip_exponent``; ``None``: no clipping."""


class NumpyAdopt(NumpyOptimizer):
    """ADOPT on NumPy arrays, updated in place block by block."""

    state_keys = ("exp_avg", "exp_avg_sq")
    scratch_blocks = 3

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999),
                 eps: float = 1e-6, weight_decay: float = 0.0, decoupled: bool = False,
                 clip_exponent: float | None = 0.25, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay, "decoupled": decoupled,
                                  "clip_exponent": clip_exponent}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return adopt_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        adopt_kernel(param, grad, *state, *scalars)

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        first, decay, shrink, eps, clip, weight1, beta2, one_minus_beta2, neg_lr = scalars
        exp_avg, exp_avg_sq = state
        tmp, normed, decayed = scratch
        if decay:
            np.multiply(param, decay, out=decayed)
            np.add(grad, decayed, out=decayed)
            grad = decayed
        if first:
            np.multiply(grad, grad, out=tmp)
            np.add(exp_avg_sq, tmp, out=exp_avg_sq)
            return
        if shrink != 1.0:
            np.multiply(param, shrink, out=param)
        np.sqrt(exp_avg_sq, out=tmp)
        np.maximum(tmp, eps, out=tmp)
        np.divide(grad, tmp, out=normed)
        if clip is not None:
            np.clip(normed, -clip, clip, out=normed)
        np.subtract(normed, exp_avg, out=normed)
        np.multiply(normed, weight1, out=normed)
        np.add(exp_avg, normed, out=exp_avg)
        np.multiply(exp_avg, neg_lr, out=tmp)
        np.add(param, tmp, out=param)
        np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
        np.multiply(grad, grad, out=tmp)
        np.multiply(tmp, one_minus_beta2, out=tmp)
        np.add(exp_avg_sq, tmp, out=exp_avg_sq)


def adopt_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of :func:`adopt_kernel` (both backends)."""
    beta1, beta2 = group["betas"]
    lr, decay = group["lr"], group["weight_decay"]
    exponent = group["clip_exponent"]
    clip = None if exponent is None or step == 1 else float((step - 1) ** exponent)
    decoupled = group["decoupled"]
    return (step == 1, 0.0 if decoupled else decay,
            1 - lr * decay if decoupled and decay else 1.0, group["eps"], clip,
            1 - beta1, beta2, 1 - beta2, -lr)


@fused_kernel
def adopt_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                 exp_avg_sq: NDArray[Any], first: bool, decay: Any, shrink: Any, eps: Any,
                 clip: Any, weight1: Any, beta2: Any, one_minus_beta2: Any,
                 neg_lr: Any) -> None:
    """NumpyAdopt.update in one pass: the same operations in the same order."""
    for i in range(param.size):
        p = param[i]
        g = grad[i]
        if decay:
            g = g + p * decay
        v = exp_avg_sq[i]
        if first:
            exp_avg_sq[i] = v + g * g
            continue
        if shrink != 1.0:
            p = p * shrink
        denominator = math.sqrt(v)
        if denominator < eps:  # np.maximum: a NaN stays NaN
            denominator = eps
        normed = g / denominator
        if clip is not None:
            if normed < -clip:
                normed = -clip
            elif normed > clip:
                normed = clip
        m = exp_avg[i]
        m = m + (normed - m) * weight1
        exp_avg[i] = m
        param[i] = p + m * neg_lr
        exp_avg_sq[i] = v * beta2 + g * g * one_minus_beta2


def build_numpy(spec: AdoptSpec, params: Any) -> NumpyAdopt:
    return NumpyAdopt(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdoptSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import Adopt

    return Adopt(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adopt", spec=AdoptSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam variant normalizing by the previous step's second moment, then clipping: "
                "converges for any beta2; a drop-in for Adam.",
        reference="Taniguchi et al. 2024, arXiv:2411.02853")]
