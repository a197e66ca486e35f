"""EMA: an exponential moving average of the weights, kept next to any optimizer, for evaluation.

Wraps a base optimizer (any registered one, from config) and after its steps updates a Polyak
average of the parameters with exponential weights. Evaluating the averaged weights usually
scores better and fluctuates less than the last iterate (image classifiers, diffusion models,
GANs); training itself is unchanged. Costs one copy of the parameters::

    {"name": "ema", "base": {"name": "adamw", "lr": 1e-3}, "decay": 0.999}

    every ``every``-th step n:  average = p (the first time),  else  average = decay average
                                 + (1 - decay) p

``opt.eval()`` swaps the average into the parameters for evaluation and ``opt.train()`` swaps
the training weights back before the next step. The first update copies the parameters, as
``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn(decay)`` does (no bias
toward the initial weights); a step the base optimizer skips (``nonfinite="skip"``) is not
counted.

Reference: Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
Control Optim. 1992; the exponential form as in ``torch.optim.swa_utils.get_ema_multi_avg_fn``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.plugins.optimizers.wrapping import NumpyWrapper, WrapperSpec, build_base


class EmaSpec(WrapperSpec):
    """A weight EMA around any registered optimizer."""

    # The average never changes the training steps: these choose what eval() swaps in.
    policy_fields: ClassVar[frozenset[str]] = WrapperSpec.policy_fields | {"decay", "every"}

    name: Literal["ema"] = "ema"
    decay: optiplug.Beta = 0.999
    """Weight of the previous average at each update (the average spans ~1/(1-decay) updates)."""
    every: optiplug.PositiveInt = 1
    """Update the average every this many steps of the base optimizer."""


class NumpyEma(NumpyWrapper):
    """A weight EMA on NumPy arrays next to a NumPy optimizer."""

    arrays = ("average",)
    eval_array = "average"

    def after_base_step(self, params: Sequence[NDArray[Any]],
                        arrays: Mapping[str, Sequence[NDArray[Any]]]) -> None:
        every = self.options["every"]
        if self.steps % every:
            return
        weight = 1 - self.options["decay"]
        for param, average in zip(params, arrays["average"], strict=True):
            if self.steps == every:
                np.copyto(average, param)
                continue
            delta = param - average
            np.multiply(delta, param.dtype.type(weight), out=delta)
            np.add(average, delta, out=average)


def _options(spec: EmaSpec) -> dict[str, Any]:
    return {"decay": spec.decay, "every": spec.every}


def build_numpy(spec: EmaSpec, params: Any) -> NumpyEma:
    return NumpyEma(build_base(spec, "numpy", params), _options(spec))


def build_torch(spec: EmaSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.wrapping_torch import Ema

    return Ema(build_base(spec, "torch", params), _options(spec), spec.nonfinite)


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="ema", spec=EmaSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Wraps any optimizer with an exponential moving average of the weights, swapped "
                "in by eval() for evaluation: steadier, usually better scores.",
        reference="Polyak & Juditsky 1992; torch.optim.swa_utils EMA")]
