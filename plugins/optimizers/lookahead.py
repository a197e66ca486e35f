"""Lookahead: k steps forward with any optimizer, then one step back toward slow weights.

Wraps a base optimizer (any registered one, from config). The base optimizer updates the
("fast") parameters as usual; every ``k`` steps, slow weights move a fraction ``alpha`` toward
the fast weights and the fast weights restart from them. Reduces the variance of the base
optimizer and makes it less sensitive to its hyperparameters, at the cost of one copy of the
parameters::

    {"name": "lookahead", "base": {"name": "adamw", "lr": 1e-3}, "k": 5, "alpha": 0.5}

    every k-th step:  slow = slow + alpha (p - slow);   p = slow      (slow_0 = p_0)

``opt.eval()`` swaps the slow weights into the parameters for evaluation and ``opt.train()``
swaps the fast weights back. Every parameter is synchronized (also those whose grad was ``None``
at the synchronizing step; pytorch_optimizer's ``Lookahead`` leaves those out). A step the base
optimizer skips (``nonfinite="skip"``) does not count toward ``k``.

Reference: Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
NeurIPS 2019 (arXiv:1907.08610), Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.plugins.optimizers.wrapping import NumpyWrapper, WrapperSpec, build_base


class LookaheadSpec(WrapperSpec):
    """Lookahead around any registered optimizer (the paper's defaults)."""

    name: Literal["lookahead"] = "lookahead"
    k: optiplug.PositiveInt = 5
    """Base optimizer steps between synchronizations."""
    alpha: optiplug.Probability = 0.5
    """Fraction of the way the slow weights move toward the fast weights."""


class NumpyLookahead(NumpyWrapper):
    """Lookahead on NumPy arrays around a NumPy optimizer."""

    arrays = ("slow",)
    eval_array = "slow"
    stepped_only = True

    def after_base_step(self, params: Sequence[NDArray[Any]],
                        arrays: Mapping[str, Sequence[NDArray[Any]]]) -> None:
        if self.steps % self.options["k"]:
            return
        alpha = self.options["alpha"]
        for param, slow in zip(params, arrays["slow"], strict=True):
            np.subtract(param, slow, out=param)
            np.multiply(param, param.dtype.type(alpha), out=param)
            np.add(slow, param, out=slow)
            np.copyto(param, slow)


def _options(spec: LookaheadSpec) -> dict[str, Any]:
    return {"k": spec.k, "alpha": spec.alpha}


def build_numpy(spec: LookaheadSpec, params: Any) -> NumpyLookahead:
    return NumpyLookahead(build_base(spec, "numpy", params), _options(spec))


def build_torch(spec: LookaheadSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.wrapping_torch import Lookahead

    return Lookahead(build_base(spec, "torch", params), _options(spec), spec.nonfinite)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="lookahead", spec=LookaheadSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Wraps any optimizer: every k steps, slow weights move alpha toward the fast "
                "ones and the fast restart there; steadier, less hyperparameter-sensitive.",
        reference="Zhang et al. 2019, arXiv:1907.08610")]
