"""Linear decay: the learning rate goes linearly from one fraction of its base to another.

``lr_t = base_lr * (s + (e - s) * min(t, T) / T)`` with start factor ``s``, end factor ``e``
and ``T`` steps (computed recursively, as torch does, so other changes to ``lr`` compose); then
it stays at ``e * base_lr``. The default decays to 0, the schedule of BERT-style fine-tuning;
``s < e`` is a warm-up (see ``linear_warmup``).

Reference: Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", 2019; PyTorch ``LinearLR``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyScheduler


class LinearSpec(optiplug.SchedulerSpec):
    """``lr_t = base_lr * (start_factor + (end_factor - start_factor) * min(t, T) / T)``."""

    name: Literal["linear"] = "linear"
    total_iters: optiplug.PositiveInt
    """Number of steps ``T`` from the start to the end factor, > 0."""
    start_factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] = 1.0
    """Fraction of ``base_lr`` at step 0, in (0, 1]."""
    end_factor: optiplug.Probability = 0.0
    """Fraction of ``base_lr`` from step ``T`` on, in [0, 1]."""


def build_numpy(spec: LinearSpec, optimizer: Any) -> NumpyScheduler:
    # linear_warmup's NumPy class is torch's LinearLR in full (any start and end factor).
    from optiplug.plugins.schedulers.linear_warmup import NumpyLinearWarmup

    return NumpyLinearWarmup(optimizer, start_factor=spec.start_factor,
                             end_factor=spec.end_factor, total_iters=spec.total_iters)


def build_torch(spec: LinearSpec, optimizer: Any) -> Any:
    import torch

    return torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=spec.start_factor,
                                             end_factor=spec.end_factor,
                                             total_iters=spec.total_iters)


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="scheduler", name="linear", spec=LinearSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Linear change of the learning rate from start_factor to end_factor (default: "
                "decay to 0) over total_iters steps.",
        reference="Devlin et al. 2019 (BERT); PyTorch LinearLR")]
