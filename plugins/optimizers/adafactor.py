"""Adafactor: adaptive steps with factored second moments and relative step sizes.

Keeps, for every matrix (the last two axes of an N-D parameter), only the row and column means
of the squared gradients, rebuilt into a rank-1 estimate of the second moment: memory
``rows + cols`` instead of ``rows * cols``. Steps are relative to the parameter's RMS and
clipped by the update's RMS. Chosen to train large models (transformers) when optimizer memory
is the limit.

    beta2_t = 1 - t^beta2_decay;  rho_t = min(lr, 1 / sqrt(t));  a_t = max(eps2, RMS(p)) rho_t
    p *= 1 - lr * weight_decay
    matrix: R = beta2_t R + (1 - beta2_t) mean_cols(g^2);  C likewise over rows;
            V = R C / max(mean_rows(R), eps1);   vector: V = beta2_t V + (1 - beta2_t) g^2
    U = g / sqrt(max(V, eps1^2));  p -= a_t U / max(1, RMS(U) / d)

This is torch.optim.Adafactor's definition (``lr`` caps the relative step and scales the
decoupled weight decay; ``eps1`` guards the final estimate, default the dtype's machine
epsilon), which differs from the paper's in where ``eps1`` enters.

Reference: Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
ICML 2018.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyOptimizer
from optiplug.param_groups import StandardOptimizerSpec


class AdafactorSpec(StandardOptimizerSpec):
    """Adafactor (torch.optim.Adafactor's defaults)."""

    name: Literal["adafactor"] = "adafactor"
    lr: optiplug.PositiveFloat = 1e-2
    """Maximum relative step size ``rho_t``, and the scale of the decoupled weight decay."""
    beta2_decay: Annotated[float, Field(le=0, allow_inf_nan=False)] = -0.8
    """Decay exponent of the second-moment average: ``beta2_t = 1 - t^beta2_decay`` (<= 0)."""
    eps: tuple[optiplug.NonNegativeFloat | None, optiplug.NonNegativeFloat] = (None, 1e-3)
    """``(eps1, eps2)``: floor of the second-moment estimate (``None``: the dtype's machine
    epsilon) and floor of the parameter RMS in the relative step."""
    d: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0
    """Update clipping threshold: the update's RMS is clipped to ``d`` (>= 1)."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Decoupled weight decay: ``p *= 1 - lr * weight_decay``."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


def _lerp(start: NDArray[Any], end: NDArray[Any], weight: float) -> None:
    """``start += weight * (end - start)`` in place, rounded as ``torch.lerp`` rounds."""
    if weight < 0.5:
        start += start.dtype.type(weight) * (end - start)
    else:
        np.subtract(end, (end - start) * start.dtype.type(1 - weight), out=start)


class NumpyAdafactor(NumpyOptimizer):
    """Adafactor on NumPy arrays, step for step equal to ``torch.optim.Adafactor``."""

    state_keys = ("row_var", "col_var", "variance")
    per_tensor = True

    def __init__(self, params: Any, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0,
                 weight_decay: float = 0.0, maximize: bool = False, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "beta2_decay": beta2_decay, "eps": tuple(eps),
                                  "d": d, "weight_decay": weight_decay, "maximize": maximize},
                         **options)

    def state_shape(self, group: Mapping[str, Any], key: str, param: NDArray[Any]
                    ) -> tuple[int, ...] | None:
        shape = tuple(param.shape)
        if len(shape) < 2:
            return shape if key == "variance" else None
        if key == "row_var":
            return (*shape[:-1], 1)
        if key == "col_var":
            return (*shape[:-2], 1, shape[-1])
        return None

    def update_tensor(self, group: Mapping[str, Any], param: NDArray[Any], grad: NDArray[Any],
                      state: dict[str, Any]) -> None:
        lr, decay, step = group["lr"], group["weight_decay"], float(state["step"])
        eps1, eps2 = group["eps"]
        if eps1 is None:
            eps1 = float(np.finfo(param.dtype).eps)
        dtype = param.dtype.type
        one_minus_beta2 = step ** group["beta2_decay"]
        rho = min(lr, 1 / step**0.5)
        alpha = max(eps2, float(np.linalg.norm(param.reshape(-1))) / param.size**0.5) * rho
        if decay:
            np.multiply(param, dtype(1 - lr * decay), out=param)
        if group["maximize"]:
            grad = -grad
        if grad.ndim > 1:
            row_var, col_var = state["row_var"], state["col_var"]
            squared = grad * grad
            _lerp(row_var, squared.mean(axis=-1, keepdims=True), one_minus_beta2)
            _lerp(col_var, squared.mean(axis=-2, keepdims=True), one_minus_beta2)
            estimate = row_var @ col_var
            estimate /= np.maximum(row_var.mean(axis=-2, keepdims=True), dtype(eps1))
        else:
            variance = state["variance"]
            _lerp(variance, grad * grad, one_minus_beta2)
            estimate = variance.copy()
        np.maximum(estimate, dtype(eps1 * eps1), out=estimate)
        np.sqrt(estimate, out=estimate)
        update = np.divide(grad, estimate, out=estimate)
        rms = float(np.linalg.norm(update.reshape(-1))) / (update.size**0.5 * group["d"])
        param += dtype(-alpha / max(1.0, rms)) * update


def build_numpy(spec: AdafactorSpec, params: Any) -> NumpyAdafactor:
    return NumpyAdafactor(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdafactorSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import Adafactor

    return Adafactor(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adafactor", spec=AdafactorSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Factored second moments (row and column means per matrix) and relative, "
                "RMS-clipped steps: Adam-like training with sublinear optimizer memory.",
        reference="Shazeer & Stern 2018 (torch.optim.Adafactor's variant)")]
