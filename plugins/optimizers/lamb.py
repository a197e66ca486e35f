"""LAMB: layer-wise adaptive moments for large batches.

Adam's update plus decoupled weight decay, rescaled per parameter tensor by a trust ratio
``||p|| / ||r||`` so that every layer moves by a step proportional to its own norm. Lets
BERT-scale models train with batches of tens of thousands without per-layer tuning; use it
(or ``lars`` for convnets with SGD) when scaling the batch size up.

    m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2
    r = m_hat / (sqrt(v_hat) + eps) + wd p        (m_hat = m / (1 - b1^t), v_hat likewise)
    p -= lr * phi(||p||) / ||r|| * r              (ratio 1 where either norm is 0)

``phi`` is the identity, or ``min(||p||, max_weight_norm)`` with ``max_weight_norm`` set.

Conventions against pytorch_optimizer's ``Lamb`` (tests match it with the flags in brackets):
it leaves ``v`` uncorrected and divides the step (outside the ratio) by ``1 - b1^t``
[``bias_correction=False`` here, ``adam_debias=True`` there]; its default decay is applied to
``p`` before the ratio instead of inside ``r`` [``weight_decouple=False``]; it adds ``eps`` to
``||r||`` in the ratio and clips ``||p||`` at 10 [``max_weight_norm=10`` here]; it counts steps
per group, not per parameter (they differ only after steps where some grads were ``None``).

Reference: You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
minutes", ICLR 2020 (arXiv:1904.00962), Algorithm 2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel
from optiplug.param_groups import StandardOptimizerSpec


class LambSpec(StandardOptimizerSpec):
    """LAMB (the paper's Algorithm 2)."""

    name: Literal["lamb"] = "lamb"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate (scaled per tensor by the trust ratio)."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment averages."""
    eps: optiplug.PositiveFloat = 1e-6
    """Added to ``sqrt(v_hat)`` for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Decoupled weight decay, added to the Adam direction before the trust ratio."""
    bias_correction: bool = True
    """Divide the moments by ``1 - beta^t`` (the paper); ``False`` uses them raw."""
    max_weight_norm: optiplug.PositiveFloat | None = None
    """Clip ``||p||`` in the trust ratio at this value (``phi`` of the paper); ``None``: no clip."""


class NumpyLamb(NumpyOptimizer):
    """LAMB on NumPy arrays: each parameter is updated whole (its trust ratio needs norms)."""

    state_keys = ("exp_avg", "exp_avg_sq")
    scratch_blocks = 2
    whole_tensors = True

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.0, bias_correction: bool = True,
                 max_weight_norm: float | None = None, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps,
                                  "weight_decay": weight_decay,
                                  "bias_correction": bias_correction,
                                  "max_weight_norm": max_weight_norm}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return lamb_scalars(group, state["step"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        *moments, lr, max_weight_norm = scalars
        flat = param.reshape(-1)
        direction = np.empty_like(flat)
        lamb_direction_kernel(flat, grad.reshape(-1), state[0].reshape(-1),
                              state[1].reshape(-1), direction, *moments)
        ratio = lamb_trust_ratio(float(np.linalg.norm(param)), float(np.linalg.norm(direction)),
                                 max_weight_norm)
        lamb_step_kernel(flat, direction, param.dtype.type(-lr * ratio))

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        weight1, beta2, one_minus_beta2, eps, scale, decay, lr, max_weight_norm = scalars
        exp_avg, exp_avg_sq = state
        tmp, direction = scratch
        np.subtract(grad, exp_avg, out=tmp)
        np.multiply(tmp, weight1, out=tmp)
        np.add(exp_avg, tmp, out=exp_avg)
        np.multiply(exp_avg_sq, beta2, out=exp_avg_sq)
        np.multiply(grad, grad, out=tmp)
        np.multiply(tmp, one_minus_beta2, out=tmp)
        np.add(exp_avg_sq, tmp, out=exp_avg_sq)
        np.sqrt(exp_avg_sq, out=tmp)
        np.add(tmp, eps, out=tmp)
        np.divide(exp_avg, tmp, out=direction)
        if scale != 1.0:
            np.multiply(direction, scale, out=direction)
        if decay:
            np.multiply(param, decay, out=tmp)
            np.add(direction, tmp, out=direction)
        ratio = lamb_trust_ratio(float(np.linalg.norm(param)), float(np.linalg.norm(direction)),
                                 max_weight_norm)
        np.multiply(direction, param.dtype.type(-lr * ratio), out=direction)
        np.add(param, direction, out=param)


_LAMB_BLOCK = 512
"""Elements per block of :func:`lamb_sums_kernel` (its buffer stays in the L1 cache)."""


def lamb_scalars(group: Mapping[str, Any], step: int) -> tuple[Any, ...]:
    """The scalars of the LAMB kernels (both backends), then ``lr`` and ``max_weight_norm``."""
    beta1, beta2 = group["betas"]
    if group["bias_correction"]:
        # m_hat / (sqrt(v_hat) + eps) = m / (sqrt(v) + eps sqrt(bc2)) * sqrt(bc2) / bc1
        bc2_sqrt = math.sqrt(1 - beta2**step)
        scale = bc2_sqrt / (1 - beta1**step)
    else:
        bc2_sqrt, scale = 1.0, 1.0
    return (1 - beta1, beta2, 1 - beta2, group["eps"] * bc2_sqrt, scale,
            group["weight_decay"], group["lr"], group["max_weight_norm"])


def lamb_trust_ratio(weight_norm: float, update_norm: float,
                     max_weight_norm: float | None) -> float:
    """``phi(||p||) / ||r||``, 1 where either norm is 0."""
    if max_weight_norm is not None:
        weight_norm = min(weight_norm, float(max_weight_norm))
    return weight_norm / update_norm if weight_norm > 0 and update_norm > 0 else 1.0


@fused_kernel
def lamb_direction_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                          exp_avg_sq: NDArray[Any], direction: NDArray[Any], weight1: Any,
                          beta2: Any, one_minus_beta2: Any, eps: Any, scale: Any,
                          decay: Any) -> None:
    """The moments and ``r`` of NumpyLamb.update in one pass (``r`` into ``direction``)."""
    for i in range(param.size):
        g = grad[i]
        m = exp_avg[i]
        m = m + (g - m) * weight1
        v = exp_avg_sq[i] * beta2 + g * g * one_minus_beta2
        exp_avg[i] = m
        exp_avg_sq[i] = v
        r = m / (math.sqrt(v) + eps)
        if scale != 1.0:
            r = r * scale
        if decay:
            r = r + param[i] * decay
        direction[i] = r


@fused_kernel
def lamb_step_kernel(param: NDArray[Any], direction: NDArray[Any], step: Any) -> None:
    """``p += step r``: the last line of NumpyLamb.update."""
    for i in range(param.size):
        param[i] = param[i] + direction[i] * step


@fused_kernel(reassociate=True)
def lamb_squares_kernel(values: NDArray[Any]) -> float:
    """``sum values^2`` in float64, the additions in any order (vectorized)."""
    total = 0.0
    for i in range(values.size):
        value = np.float64(values[i])
        total += value * value
    return total


@fused_kernel
def lamb_sums_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                     exp_avg_sq: NDArray[Any], weight1: Any, beta2: Any,
                     one_minus_beta2: Any, eps: Any, scale: Any,
                     decay: Any) -> tuple[float, float]:
    """Without a tensor for ``r``: the moments as :func:`lamb_direction_kernel`, and
    ``(sum p^2, sum r^2)`` in float64 (torch's CPU path, pass 1 of 2).

    Block by block: :func:`lamb_direction_kernel` updates the moments and writes ``r`` to a
    small buffer (no sum in it, so it is vectorized: square roots and divisions several at a
    time), then :func:`lamb_squares_kernel` sums the block of ``p`` and the buffer while they
    are in the L1 cache."""
    buffer = np.empty_like(param[:_LAMB_BLOCK])
    weights = updates = 0.0
    for start in range(0, param.size, _LAMB_BLOCK):
        # Views of the block: the kernels index them from 0, so numba knows no index is
        # negative and leaves out its wraparound branch (which kept the loop scalar, 3x slower).
        p_block = param[start:start + _LAMB_BLOCK]
        g_block = grad[start:start + _LAMB_BLOCK]
        m_block = exp_avg[start:start + _LAMB_BLOCK]
        v_block = exp_avg_sq[start:start + _LAMB_BLOCK]
        r_block = buffer[:p_block.size]
        lamb_direction_kernel(p_block, g_block, m_block, v_block, r_block, weight1, beta2,
                              one_minus_beta2, eps, scale, decay)
        weights += lamb_squares_kernel(p_block)
        updates += lamb_squares_kernel(r_block)
    return weights, updates


@fused_kernel
def lamb_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                exp_avg_sq: NDArray[Any], eps: Any, scale: Any, decay: Any, step: Any) -> None:
    """``p += step r`` with ``r`` recomputed from the updated moments (pass 2 of 2)."""
    for i in range(param.size):
        p = param[i]
        r = exp_avg[i] / (math.sqrt(exp_avg_sq[i]) + eps)
        if scale != 1.0:
            r = r * scale
        if decay:
            r = r + p * decay
        param[i] = p + r * step


@fused_kernel
def lamb_tensor_kernel(param: NDArray[Any], grad: NDArray[Any], exp_avg: NDArray[Any],
                       exp_avg_sq: NDArray[Any], weight1: Any, beta2: Any,
                       one_minus_beta2: Any, eps: Any, scale: Any, decay: Any, lr: float,
                       max_weight_norm: float) -> None:
    """LAMB on one whole tensor: :func:`lamb_sums_kernel`, the trust ratio
    (:func:`lamb_trust_ratio`'s formula, in float64; ``max_weight_norm`` infinite for none)
    and :func:`lamb_kernel`, which finds the tensor still in the cache."""
    weights, updates = lamb_sums_kernel(param, grad, exp_avg, exp_avg_sq, weight1, beta2,
                                        one_minus_beta2, eps, scale, decay)
    weight_norm = min(np.sqrt(weights), max_weight_norm)
    update_norm = np.sqrt(updates)
    ratio = weight_norm / update_norm if weight_norm > 0 and update_norm > 0 else 1.0
    lamb_kernel(param, grad, exp_avg, exp_avg_sq, eps, scale, decay,
                param.dtype.type(-lr * ratio))


def build_numpy(spec: LambSpec, params: Any) -> NumpyLamb:
    return NumpyLamb(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: LambSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import Lamb

    return Lamb(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="lamb", spec=LambSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam with decoupled decay, rescaled per tensor by the trust ratio "
                "norm(p)/norm(r): large-batch training (BERT) without per-layer tuning.",
        reference="You et al. 2020, arXiv:1904.00962")]
