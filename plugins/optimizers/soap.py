"""SOAP: Adam in the eigenbasis of Shampoo's preconditioner.

For each matrix (and each axis of a higher-order tensor) keeps Shampoo's Kronecker factors
``L = EMA(G G^T)`` and ``R = EMA(G^T G)`` and runs Adam on the gradient rotated into their
eigenbases ``Q_L``, ``Q_R``; the bases are refreshed every ``precondition_frequency`` steps by
one step of power iteration and a QR decomposition. Faster per step count than AdamW and
Shampoo on language-model pre-training, at the cost of ``d x d`` matrices per axis (axes longer
than ``max_precondition_dim`` and, unless ``precondition_1d``, vectors stay in the identity
basis, i.e. plain Adam). Reach for it on transformer-sized matrices, with a tuned lr.

    L = lerp(L, G G^T, 1 - b_s);  R = lerp(R, G^T G, 1 - b_s)   (b_s = shampoo_beta or b2)
    first step of a parameter: Q = eigenvectors of L, R (largest first); no update
    G' = Q_L^T G Q_R;  m = lerp(m, G, 1 - b1);  v = lerp(v, G'^2, 1 - b2)
    p -= lr sqrt(1 - b2^t) / (1 - b1^t) * Q_L (Q_L^T m Q_R / (sqrt(v) + eps)) Q_R^T
    p *= 1 - lr wd;  then L, R updated with G; every f-th step:
    Q <- qr(L Q[:, order]) with order sorting diag(Q^T L Q) descending (v's axis permuted alike)

``t`` counts the parameter's updates (its first step only builds the preconditioner). The
eigen and QR decompositions run in float64 whatever the parameter dtype.

Conventions: the paper's reference implementation (nikhilvyas/SOAP) without ``merge_dims``,
``normalize_grads`` or ``data_format`` (tensors of up to 4 dimensions, each axis its own
factor). pytorch_optimizer's ``SOAP`` (4.1) is the same rule but counts steps per group (its
first group step updates nothing; they agree when every grad is present), computes the
eigenbases in the parameter's dtype and the QR refresh in float32 (so in float64 it agrees to
about 1e-6 after a refresh and to rounding before one). Eigenvectors are unique only up to
sign and, for a repeated eigenvalue, rotation within its eigenspace: the update does not depend
on signs, but it does depend on the basis chosen for a repeated eigenvalue (e.g. the null space
of a rank-deficient first ``G G^T``), where backends may choose differently.

Reference: Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson & Kakade, "SOAP: Improving and
Stabilizing Shampoo using Adam", ICLR 2025 (arXiv:2409.11321), Algorithm 3 and its reference
implementation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import ConfigDict

import optiplug
from optiplug.backends.numpy import NumpyOptimizer

Array = NDArray[Any]
MAX_DIMS = 4
"""Tensors of up to this many dimensions are preconditioned axis by axis."""
FACTORS = tuple(f"GG{axis}" for axis in range(MAX_DIMS))
BASES = tuple(f"Q{axis}" for axis in range(MAX_DIMS))


class SoapSpec(optiplug.OptimizerSpec):
    """SOAP (the reference implementation's defaults)."""

    # The example refreshes the bases within a few steps and leaves one axis of a 6 x 5
    # matrix unpreconditioned, so every field shows in a short run.
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"lr": 3e-3, "precondition_frequency": 2, "max_precondition_dim": 5}]})

    initializing_steps: ClassVar[int] = 1
    """A parameter's first step with a gradient only builds its factors and eigenbases: it
    does not move the parameter (read by the conformance kit)."""

    name: Literal["soap"] = "soap"
    lr: optiplug.PositiveFloat = 3e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.95, 0.95)
    """Decay rates of Adam's moments (in the rotated basis for the second)."""
    shampoo_beta: optiplug.Beta | None = None
    """Decay rate of the Kronecker factors ``L``, ``R`` (``None``: ``betas[1]``)."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator."""
    weight_decay: optiplug.NonNegativeFloat = 0.01
    """Decoupled weight decay, ``p *= 1 - lr * weight_decay`` after the update."""
    precondition_frequency: optiplug.PositiveInt = 10
    """Updates between refreshes of the eigenbases (power iteration + QR)."""
    max_precondition_dim: optiplug.PositiveInt = 10000
    """Axes longer than this keep the identity basis (no ``d x d`` factor)."""
    precondition_1d: bool = False
    """Precondition vectors too (a ``d x d`` factor per bias); else they get plain Adam."""
    correct_bias: bool = True
    """Adam's bias correction of the step size."""


def preconditioned_axes(shape: tuple[int, ...], max_dim: int, precondition_1d: bool,
                        ) -> list[bool]:
    """Which axes of a tensor of ``shape`` get a factor and an eigenbasis.

    Raises:
        ValueError: more than :data:`MAX_DIMS` dimensions.
    """
    if len(shape) > MAX_DIMS:
        raise ValueError(f"SOAP preconditions tensors of at most {MAX_DIMS} dimensions, got "
                         f"shape {shape}")
    if len(shape) == 1 and not precondition_1d:
        return [False]
    return [size <= max_dim for size in shape]


def refuse_high_rank(param_groups: list[dict[str, Any]]) -> None:
    """Drop the last group and raise if one of its parameters has more than :data:`MAX_DIMS`
    dimensions.

    Raises:
        ValueError: such a parameter.
    """
    for param in param_groups[-1]["params"]:
        if len(param.shape) > MAX_DIMS:
            param_groups.pop()
            raise ValueError(f"SOAP preconditions tensors of at most {MAX_DIMS} dimensions, "
                             f"got a parameter of shape {tuple(param.shape)}")


def _project(x: Array, bases: list[Array | None], forward: bool) -> Array:
    for basis in bases:
        if basis is None:
            x = np.moveaxis(x, 0, -1)
        else:
            x = np.tensordot(x, basis, axes=([0], [0 if forward else 1]))
    return x


def _lerp(start: Array, end: Array, weight: float) -> None:
    start += start.dtype.type(weight) * (end - start)


class NumpySoap(NumpyOptimizer):
    """SOAP on NumPy arrays, one whole tensor at a time."""

    state_keys = ("exp_avg", "exp_avg_sq", *FACTORS, *BASES)
    per_tensor = True

    def __init__(self, params: Any, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95),
                 shampoo_beta: float | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.01, precondition_frequency: int = 10,
                 max_precondition_dim: int = 10000, precondition_1d: bool = False,
                 correct_bias: bool = True, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "shampoo_beta": shampoo_beta,
                                  "eps": eps, "weight_decay": weight_decay,
                                  "precondition_frequency": precondition_frequency,
                                  "max_precondition_dim": max_precondition_dim,
                                  "precondition_1d": precondition_1d,
                                  "correct_bias": correct_bias}, **options)

    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group (see :class:`NumpyOptimizer`); nothing is added if a parameter has more
        than :data:`MAX_DIMS` dimensions.

        Raises:
            ValueError: a parameter of more than :data:`MAX_DIMS` dimensions.
        """
        super().add_param_group(param_group)
        refuse_high_rank(self.param_groups)

    def state_shape(self, group: Mapping[str, Any], key: str, param: Array
                    ) -> tuple[int, ...] | None:
        if key in ("exp_avg", "exp_avg_sq"):
            return tuple(param.shape)
        axis = int(key[-1])
        axes = preconditioned_axes(tuple(param.shape), group["max_precondition_dim"],
                                   group["precondition_1d"])
        if axis >= len(axes) or not axes[axis]:
            return None
        return (param.shape[axis], param.shape[axis])

    def update_tensor(self, group: Mapping[str, Any], param: Array, grad: Array,
                      state: dict[str, Any]) -> None:
        axes = preconditioned_axes(tuple(param.shape), group["max_precondition_dim"],
                                   group["precondition_1d"])
        if state["step"] == 1:
            self._update_factors(group, grad, state, axes, updates=0)
            return
        updates = state["step"] - 1
        beta1, beta2 = group["betas"]
        dtype = param.dtype.type
        bases = [state[f"Q{axis}"] if used else None for axis, used in enumerate(axes)]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        projected = _project(grad, bases, forward=True)
        _lerp(exp_avg, grad, 1 - beta1)
        _lerp(exp_avg_sq, projected * projected, 1 - beta2)
        denominator = np.sqrt(exp_avg_sq) + dtype(group["eps"])
        direction = _project(_project(exp_avg, bases, forward=True) / denominator, bases,
                             forward=False)
        step_size = group["lr"]
        if group["correct_bias"]:
            step_size *= math.sqrt(1 - beta2**updates) / (1 - beta1**updates)
        param -= dtype(step_size) * direction
        if group["weight_decay"]:
            param *= dtype(1 - group["lr"] * group["weight_decay"])
        self._update_factors(group, grad, state, axes, updates)

    @staticmethod
    def _update_factors(group: Mapping[str, Any], grad: Array, state: dict[str, Any],
                        axes: list[bool], updates: int) -> None:
        shampoo_beta = group["shampoo_beta"]
        if shampoo_beta is None:
            shampoo_beta = group["betas"][1]
        for axis, used in enumerate(axes):
            if used:
                others = [a for a in range(grad.ndim) if a != axis]
                _lerp(state[f"GG{axis}"], np.tensordot(grad, grad, axes=(others, others)),
                      1 - shampoo_beta)
        if updates == 0:
            for axis, used in enumerate(axes):
                if used:
                    factor = state[f"GG{axis}"].astype(np.float64)
                    _, vectors = np.linalg.eigh(factor + 1e-30 * np.eye(len(factor)))
                    state[f"Q{axis}"][...] = vectors[:, ::-1]
        elif updates % group["precondition_frequency"] == 0:
            exp_avg_sq = state["exp_avg_sq"]
            for axis, used in enumerate(axes):
                if not used:
                    continue
                factor = state[f"GG{axis}"].astype(np.float64)
                basis = state[f"Q{axis}"].astype(np.float64)
                product = factor @ basis
                order = np.argsort(-(basis * product).sum(axis=0), kind="stable")
                exp_avg_sq[...] = np.take(exp_avg_sq, order, axis=axis)
                state[f"Q{axis}"][...] = np.linalg.qr(product[:, order])[0]


def build_numpy(spec: SoapSpec, params: Any) -> NumpySoap:
    return NumpySoap(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: SoapSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.catalogue_torch import Soap

    return Soap(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="soap", spec=SoapSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam run in the eigenbasis of Shampoo's Kronecker factors, refreshed by "
                "power iteration + QR: fewer steps than AdamW on large matrices.",
        reference="Vyas et al. 2024, arXiv:2409.11321")]
