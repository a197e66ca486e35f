"""ASGD: averaged stochastic gradient descent.

SGD with a slowly decaying step size, plus a running (Polyak-Ruppert) average ``ax`` of the
iterates that starts after ``t0`` steps; the average converges at the optimal rate for convex
problems. Evaluate with ``state[...]["ax"]`` as the weights to get the averaged model.

    g = grad (+ weight_decay * p);  p *= 1 - lambd eta_t;  p -= eta_t g
    ax = p while mu_t = 1, else ax += mu_t (p - ax)
    eta_{t+1} = lr / (1 + lambd lr t)^alpha;  mu_{t+1} = 1 / max(1, t - t0)

``eta`` and ``mu`` are kept per parameter in float32 as torch keeps them (torch's scalar state
dtype while the default dtype is float32), so both backends give the same numbers.

Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
Control Optim. 1992.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, effective_grad
from optiplug.param_groups import StandardOptimizerSpec


class ASGDSpec(StandardOptimizerSpec):
    """ASGD (torch.optim.ASGD's defaults)."""

    # t0 only sets when the running average (state 'ax') starts; it never changes the
    # parameters themselves, so moving it cannot show in the parameters the conformance kit
    # compares (and the default 1e6 lies far beyond any short workload anyway).
    policy_fields: ClassVar[frozenset[str]] = StandardOptimizerSpec.policy_fields | {"t0"}

    name: Literal["asgd"] = "asgd"
    lr: optiplug.PositiveFloat = 1e-2
    """Learning rate (the first step size)."""
    lambd: optiplug.NonNegativeFloat = 1e-4
    """Decay term of the step size (and of the weights)."""
    alpha: optiplug.NonNegativeFloat = 0.75
    """Power of the step-size decay."""
    t0: optiplug.NonNegativeFloat = 1e6
    """Step after which averaging starts."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 penalty added to the gradient."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


def _float32(value: float) -> float:
    return float(np.float32(value))


class NumpyASGD(NumpyOptimizer):
    """ASGD on NumPy arrays, step for step equal to ``torch.optim.ASGD`` (same state keys)."""

    state_keys = ("eta", "mu", "ax")
    per_tensor = True

    def __init__(self, params: Any, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, maximize: bool = False,
                 **options: Any) -> None:
        super().__init__(params, {"lr": lr, "lambd": lambd, "alpha": alpha, "t0": t0,
                                  "weight_decay": weight_decay, "maximize": maximize},
                         **options)

    def state_shape(self, group: Mapping[str, Any], key: str, param: NDArray[Any]
                    ) -> tuple[int, ...]:
        return tuple(param.shape) if key == "ax" else ()

    def initial_state_value(self, group: Mapping[str, Any], key: str) -> float:
        return {"eta": _float32(group["lr"]), "mu": 1.0}.get(key, 0.0)

    def update_tensor(self, group: Mapping[str, Any], param: NDArray[Any], grad: NDArray[Any],
                      state: dict[str, Any]) -> None:
        lr, lambd, step = group["lr"], group["lambd"], state["step"]
        eta, mu, ax = float(state["eta"]), float(state["mu"]), state["ax"]
        dtype = param.dtype.type
        grad = effective_grad(param, grad, np.empty_like(param), group["weight_decay"],
                              group["maximize"])
        np.multiply(param, dtype(1 - lambd * eta), out=param)
        param -= dtype(eta) * grad
        if mu != 1:
            ax += (param - ax) * dtype(mu)
        else:
            np.copyto(ax, param)
        state["eta"][...] = _float32(lr / ((1 + lambd * lr * step) ** group["alpha"]))
        state["mu"][...] = _float32(1 / max(1, step - group["t0"]))


def build_numpy(spec: ASGDSpec, params: Any) -> NumpyASGD:
    return NumpyASGD(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: ASGDSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.torch_classes import ASGD

    return ASGD(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="asgd", spec=ASGDSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="SGD with a decaying step size and a Polyak-Ruppert average of the iterates "
                "(state 'ax') after t0 steps.",
        reference="Polyak & Juditsky 1992")]
