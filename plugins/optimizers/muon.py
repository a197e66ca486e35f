"""Muon: momentum orthogonalized by Newton-Schulz for the matrices, AdamW for the rest.

Each 2-D parameter (a hidden layer's weight) steps along its Nesterov momentum made
(approximately) orthogonal by a few Newton-Schulz iterations, so every direction of the
matrix moves at the same rate. Parameters that are not matrices (biases, norm weights) step
with AdamW, whose hyperparameters sit in the same config; one optimizer steps both::

    {"name": "muon", "lr": 0.02, "adamw": {"lr": 3e-4, "weight_decay": 0.01}}

Muon part (torch.optim.Muon's definition), per matrix ``P`` of shape ``(A, B)``:

    M = mu M + (1 - mu) G;  U = (1 - mu) G + mu M if nesterov else M
    O = NS_k(U / max(||U||_F, eps))   (quintic: X <- a X + (b X X^T + c (X X^T)^2) X)
    P *= 1 - lr weight_decay;  P -= lr sqrt(max(1, A / B)) O
    (adjust_lr_fn="match_rms_adamw": 0.2 lr sqrt(max(A, B)) in place of lr sqrt(max(1, A / B)))

``ns_dtype="bfloat16"`` runs the iteration in bfloat16 as torch does (on NumPy, emulated: float32
arithmetic rounded to bfloat16 after each operation, so it agrees with torch to bfloat16
precision, not bit for bit); ``"param"`` runs it in the parameter's dtype (both backends agree
to float rounding). Param-group rules (``param_groups``) set ``weight_decay`` for both parts
and scale both learning rates by the same factor. Schedulers scale ``lr`` (Muon's) only;
AdamW's is ``adamw_lr`` in each group.

References: Jordan et al., "Muon: An optimizer for hidden layers in neural networks", 2024
(https://kellerjordan.github.io/posts/muon/); Liu et al., "Muon is Scalable for LLM Training",
2025 (``match_rms_adamw``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

import optiplug
from optiplug.backends.numpy import NumpyOptimizer
from optiplug.param_groups import StandardOptimizerSpec

Array = NDArray[Any]


class MuonAdamW(BaseModel):
    """AdamW's hyperparameters for the parameters that are not matrices."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _betas_as_tuple(cls, data: Any) -> Any:
        # Config files give lists; the frozen spec holds tuples.
        if isinstance(data, dict) and isinstance(data.get("betas"), list):
            return {**data, "betas": tuple(data["betas"])}
        return data

    lr: optiplug.PositiveFloat = 1e-3
    """AdamW's learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of AdamW's moment averages."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to AdamW's denominator."""
    weight_decay: optiplug.NonNegativeFloat = 1e-2
    """AdamW's decoupled weight decay."""


class MuonSpec(StandardOptimizerSpec):
    """Muon (torch.optim.Muon's defaults) with AdamW (torch.optim.AdamW's) for non-matrices."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"lr": 0.02, "ns_dtype": "param", "adamw": {"lr": 3e-4}}]})

    # eps only floors the Frobenius norm of an update that is (nearly) zero, so the division is
    # defined; on gradients of ordinary size it has no effect (the conformance kit's workload
    # cannot show it): a guard rather than a hyperparameter of the step.
    policy_fields: ClassVar[frozenset[str]] = StandardOptimizerSpec.policy_fields | {"eps"}

    name: Literal["muon"] = "muon"
    lr: optiplug.PositiveFloat = 1e-3
    """Muon's learning rate (of the matrices)."""
    weight_decay: optiplug.NonNegativeFloat = 0.1
    """Muon's decoupled weight decay: ``P *= 1 - lr * weight_decay``."""
    momentum: optiplug.Beta = 0.95
    """Momentum factor of the matrices."""
    nesterov: bool = True
    """Orthogonalize the Nesterov look-ahead of the momentum instead of the momentum."""
    ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
    """``(a, b, c)`` of the quintic Newton-Schulz iteration."""
    eps: optiplug.PositiveFloat = 1e-7
    """Floor of the Frobenius norm the update is divided by."""
    ns_steps: Annotated[int, Field(ge=1, lt=100)] = 5
    """Newton-Schulz iterations (1-99)."""
    adjust_lr_fn: Literal["original", "match_rms_adamw"] | None = None
    """Per-matrix lr: ``original`` (``None``): ``lr sqrt(max(1, A/B))``; ``match_rms_adamw``:
    ``0.2 lr sqrt(max(A, B))``, to reuse AdamW's lr and weight decay."""
    ns_dtype: Literal["bfloat16", "param"] = "bfloat16"
    """Precision of the Newton-Schulz iteration: ``bfloat16`` (torch's) or ``param`` (the
    parameter's dtype)."""
    adamw: MuonAdamW = MuonAdamW()
    """AdamW for the parameters that are not matrices: ``lr``, ``betas``, ``eps``,
    ``weight_decay`` (torch.optim.AdamW's defaults)."""

    def optimizer_arguments(self) -> dict[str, Any]:
        arguments = super().optimizer_arguments()
        adamw = arguments.pop("adamw")
        arguments.update({f"adamw_{key}": value for key, value in adamw.items()})
        return arguments

    def group_params(self, params: Any) -> Any:
        groups = super().group_params(params)
        if groups is params:  # no rule, default or layer decay made groups
            return groups
        for group in groups:
            if "weight_decay" in group:
                group["adamw_weight_decay"] = group["weight_decay"]
            if "lr" in group:
                group["adamw_lr"] = self.adamw.lr * group["lr"] / self.lr
        return groups


def _bfloat16(x: Array) -> Array:
    """``x`` (float32) rounded to the nearest bfloat16, ties to even, in place."""
    bits = x.view(np.uint32)
    bits += np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    bits &= np.uint32(0xFFFF0000)
    return x


def newton_schulz(update: Array, coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: str) -> Array:
    """The quintic Newton-Schulz iteration of torch.optim.Muon on a NumPy matrix."""
    a, b, c = coefficients
    tall = update.shape[0] > update.shape[1]
    x = update.T if tall else update
    if dtype == "bfloat16":
        x = _bfloat16(x.astype(np.float32))
        norm = _bfloat16(np.array(np.linalg.norm(x), np.float32))
        x = _bfloat16(x / max(norm, _bfloat16(np.array(eps, np.float32))))
        for _ in range(steps):
            gram = _bfloat16(x @ x.T)
            gram_update = _bfloat16(np.float32(b) * gram + np.float32(c) * (gram @ gram))
            x = _bfloat16(np.float32(a) * x + gram_update @ x)
    else:
        x = x / max(float(np.linalg.norm(x)), eps)
        for _ in range(steps):
            gram = x @ x.T
            gram_update = b * gram + c * (gram @ gram)
            x = a * x + gram_update @ x
    return x.T if tall else x


class NumpyMuon(NumpyOptimizer):
    """Muon (matrices) and AdamW (the rest) on NumPy arrays, equal to the torch backend."""

    state_keys = ("momentum_buffer", "exp_avg", "exp_avg_sq")
    per_tensor = True

    def __init__(self, params: Any, lr: float = 1e-3, weight_decay: float = 0.1,
                 momentum: float = 0.95, nesterov: bool = True,
                 ns_coefficients: tuple[float, float, float] = (3.4445, -4.7750, 2.0315),
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None,
                 ns_dtype: str = "bfloat16", adamw_lr: float = 1e-3,
                 adamw_betas: tuple[float, float] = (0.9, 0.999), adamw_eps: float = 1e-8,
                 adamw_weight_decay: float = 1e-2, **options: Any) -> None:
        super().__init__(params, {
            "lr": lr, "weight_decay": weight_decay, "momentum": momentum, "nesterov": nesterov,
            "ns_coefficients": tuple(ns_coefficients), "eps": eps, "ns_steps": ns_steps,
            "adjust_lr_fn": adjust_lr_fn, "ns_dtype": ns_dtype, "adamw_lr": adamw_lr,
            "adamw_betas": tuple(adamw_betas), "adamw_eps": adamw_eps,
            "adamw_weight_decay": adamw_weight_decay}, **options)

    def state_shape(self, group: Mapping[str, Any], key: str, param: Array
                    ) -> tuple[int, ...] | None:
        matrix = param.ndim == 2
        return tuple(param.shape) if matrix == (key == "momentum_buffer") else None

    def update_tensor(self, group: Mapping[str, Any], param: Array, grad: Array,
                      state: dict[str, Any]) -> None:
        dtype = param.dtype.type
        if param.ndim != 2:
            self._adamw(group, param, grad, state)
            return
        lr, momentum = group["lr"], group["momentum"]
        buffer = state["momentum_buffer"]
        # torch.lerp with a weight >= 0.5 computes end - (end - start) * (1 - weight).
        buffer += dtype(1 - momentum) * (grad - buffer)
        update = buffer - (buffer - grad) * dtype(1 - momentum) if group["nesterov"] else buffer
        update = newton_schulz(update, group["ns_coefficients"], group["ns_steps"],
                               group["eps"], group["ns_dtype"])
        rows, cols = param.shape
        ratio = (0.2 * max(rows, cols) ** 0.5 if group["adjust_lr_fn"] == "match_rms_adamw"
                 else max(1.0, rows / cols) ** 0.5)
        np.multiply(param, dtype(1 - lr * group["weight_decay"]), out=param)
        param -= (dtype(lr * ratio) * update).astype(param.dtype, copy=False)

    @staticmethod
    def _adamw(group: Mapping[str, Any], param: Array, grad: Array,
               state: dict[str, Any]) -> None:
        dtype = param.dtype.type
        beta1, beta2 = group["adamw_betas"]
        lr, step = group["adamw_lr"], state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        np.multiply(param, dtype(1 - lr * group["adamw_weight_decay"]), out=param)
        exp_avg += dtype(1 - beta1) * (grad - exp_avg)
        exp_avg_sq *= dtype(beta2)
        exp_avg_sq += dtype(1 - beta2) * grad * grad
        bias_correction2_sqrt = (1 - beta2**step) ** 0.5
        denom = np.sqrt(exp_avg_sq) / dtype(bias_correction2_sqrt) + dtype(group["adamw_eps"])
        param -= dtype(lr / (1 - beta1**step)) * exp_avg / denom


def build_numpy(spec: MuonSpec, params: Any) -> NumpyMuon:
    return NumpyMuon(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: MuonSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import Muon

    return Muon(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="muon", spec=MuonSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Muon: Newton-Schulz-orthogonalized momentum for 2-D weights, AdamW (same "
                "config) for the rest; fast training of hidden layers.",
        reference="Jordan et al. 2024; Liu et al. 2025")]
