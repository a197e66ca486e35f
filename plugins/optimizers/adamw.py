"""AdamW: Adam with decoupled weight decay.

Shrinks the weights by ``lr * weight_decay`` directly instead of adding an L2 term to the
gradient, so the decay is not rescaled by Adam's adaptive step. The usual choice for
transformers and whenever weight decay matters.

    p *= 1 - lr * weight_decay;  then the Adam step (see ``adam``) with the raw gradient

Reference: Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
"""

from __future__ import annotations

from typing import Any, Literal

import optiplug
from optiplug.plugins.optimizers.adam import NumpyAdam


class AdamWSpec(optiplug.OptimizerSpec):
    """AdamW (torch.optim.AdamW's defaults)."""

    name: Literal["adamw"] = "adamw"
    lr: optiplug.PositiveFloat = 1e-3
    """Learning rate."""
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Decay rates of the first and second moment averages."""
    eps: optiplug.PositiveFloat = 1e-8
    """Added to the denominator for numerical stability."""
    weight_decay: optiplug.NonNegativeFloat = 1e-2
    """Decoupled decay: each step multiplies the weights by ``1 - lr * weight_decay``."""
    amsgrad: bool = False
    """Use the maximum of all second-moment averages so far (AMSGrad)."""
    maximize: bool = False
    """Maximize the objective instead of minimizing it."""


class NumpyAdamW(NumpyAdam):
    """AdamW on NumPy arrays, step for step equal to ``torch.optim.AdamW``."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False,
                 maximize: bool = False, **options: Any) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True,
                         **options)


def build_numpy(spec: AdamWSpec, params: Any) -> NumpyAdamW:
    return NumpyAdamW(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: AdamWSpec, params: Any) -> Any:
    from optiplug.backends.torch import AdamW

    return AdamW(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="adamw", spec=AdamWSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Adam with decoupled weight decay: the usual choice for transformers and "
                "whenever weight decay matters.",
        reference="Loshchilov & Hutter 2019")]
