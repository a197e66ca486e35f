"""Shared NumPy machinery of the schedule-free optimizers: not a technique itself.

Both ``schedule_free_adamw`` and ``schedule_free_sgd`` keep the training point ``y`` in the
parameters and the base sequence ``z`` in the state; the average ``x`` is implied,
``y = (1 - beta) z + beta x``. ``eval()`` puts ``x`` into the parameters and ``train()`` puts
``y`` back. The step counter ``k``, ``lr_max`` and ``weight_sum`` belong to the param group (as in
the official implementation): saved and restored with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer
from optiplug.param_groups import StandardOptimizerSpec

__all__ = ["NumpyScheduleFree", "ScheduleFreeSpec", "advance"]

GROUP_STATE = {"k": 0, "weight_sum": 0.0, "lr_max": -1.0, "train_mode": True}
"""Per-group state kept in the param group itself."""


class ScheduleFreeSpec(StandardOptimizerSpec):
    """The options both schedule-free optimizers share."""

    weight_decay: optiplug.NonNegativeFloat = 0.0
    """Weight decay, evaluated at ``y`` and added to the (normalized) gradient."""
    warmup_steps: optiplug.NonNegativeInt = 0
    """Linear warm-up of the learning rate over this many steps (the only schedule needed)."""
    r: optiplug.NonNegativeFloat = 0.0
    """Polynomial weighting ``t^r`` of the average (0: weights ``lr_max^2`` only)."""
    weight_lr_power: optiplug.NonNegativeFloat = 2.0
    """Power of the largest learning rate so far in the averaging weights."""


def advance(group: dict[str, Any], bias_correction_beta: float | None
            ) -> tuple[float, float, float]:
    """Advance a group by one step: ``(lr_t, c_t, 1 - beta2^k)``; updates ``k``, ``lr_max`` and
    ``weight_sum`` in ``group``."""
    k = group["k"] + 1
    warmup = group["warmup_steps"]
    lr = group["lr"] * (k / warmup if k < warmup else 1.0)
    lr_max = group["lr_max"] = max(lr, group["lr_max"])
    weight = k ** group["r"] * lr_max ** group["weight_lr_power"]
    weight_sum = group["weight_sum"] = group["weight_sum"] + weight
    group["k"] = k
    bias_correction = 1.0 if bias_correction_beta is None else 1 - bias_correction_beta**k
    return lr, weight / weight_sum if weight_sum != 0 else 0.0, bias_correction


class NumpyScheduleFree(NumpyOptimizer):
    """Schedule-free base: group scalars per step, ``eval()``/``train()``, the y/z update."""

    bias_correction: ClassVar[bool] = False

    def __init__(self, params: Any, defaults: Mapping[str, Any], **options: Any) -> None:
        super().__init__(params, {**defaults, **GROUP_STATE}, **options)
        self.step_scalars: dict[int, tuple[float, float, float]] = {}

    def momentum(self, group: Mapping[str, Any]) -> float:
        """The interpolation weight ``beta`` of ``y`` between ``z`` and ``x``."""
        raise NotImplementedError

    def step(self, grads: Any = None) -> None:
        """One step (see :meth:`NumpyOptimizer.step`).

        Raises:
            RuntimeError: in evaluation mode (call :meth:`train` first).
        """
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(f"{type(self).__name__} is in evaluation mode: call train() "
                               f"before step()")
        saved = [{key: group[key] for key in ("k", "weight_sum", "lr_max")}
                 for group in self.param_groups]
        for group in self.param_groups:
            beta2 = group["betas"][1] if self.bias_correction else None
            self.step_scalars[id(group)] = advance(group, beta2)
        skipped = self.skipped_steps
        stepped = False
        try:
            super().step(grads)
            stepped = self.skipped_steps == skipped
        finally:
            if not stepped:
                # A skipped or refused step leaves the schedule where it was.
                for group, values in zip(self.param_groups, saved, strict=True):
                    group.update(values)

    def eval(self) -> None:
        """Put the averaged weights ``x = (y - (1 - beta) z) / beta`` into the parameters."""
        self._switch(train=False)

    def train(self) -> None:
        """Put the training weights ``y = (1 - beta) z + beta x`` back into the parameters."""
        self._switch(train=True)

    def _switch(self, train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == train:
                continue
            beta = self.momentum(group)
            for name, param in zip(group["param_names"], group["params"], strict=True):
                state = self.state.get(name)
                if state is None:
                    continue
                z = state["z"]
                if train:
                    # y = x + (1 - beta) (z - x)
                    np.add(param, (1 - beta) * (z - param), out=param)
                else:
                    # x = y + (1 - 1 / beta) (z - y)
                    np.add(param, (1 - 1 / beta) * (z - param), out=param)
            group["train_mode"] = train

    def schedule_free_scalars(self, group: Mapping[str, Any]) -> tuple[float, float, float]:
        """``(lr_t, c_t, bias correction)`` of this step for ``group``."""
        return self.step_scalars[id(group)]


def apply_update(param: NDArray[Any], update: NDArray[Any], z: NDArray[Any],
                 tmp: NDArray[Any], decay: Any, ckp1: Any, coef_y: Any, neg_lr: Any) -> None:
    """``u += wd y;  y += c (z - y);  y += coef_y u;  z -= lr u`` in place (``update`` owned)."""
    if decay:
        np.multiply(param, decay, out=tmp)
        np.add(update, tmp, out=update)
    np.subtract(z, param, out=tmp)
    np.multiply(tmp, ckp1, out=tmp)
    np.add(param, tmp, out=param)
    np.multiply(update, coef_y, out=tmp)
    np.add(param, tmp, out=param)
    np.multiply(update, neg_lr, out=tmp)
    np.add(z, tmp, out=z)

