"""Hugging Face transformers: the ``optimizers=`` argument of ``Trainer`` from an optiplug config.

::

    from transformers import Trainer
    from optiplug.integrations.transformers import trainer_optimizers

    trainer = Trainer(model=model, args=args, train_dataset=data,
                      optimizers=trainer_optimizers("train.yaml", model))

``Trainer`` steps the scheduler after every optimizer step, so lengths in the scheduler's config
(``T_max``, ``step_size``, warm-up) count optimizer steps. Without a ``scheduler:`` section the
second element is ``None`` and ``Trainer`` makes its own from its ``TrainingArguments``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError, ConfigIssue
from ..registry import Registry
from ._common import build_training

__all__ = ["trainer_optimizers"]


def trainer_optimizers(config: Mapping[str, Any] | str | os.PathLike[str] | Any, model: Any, *,
                       registry: Registry | None = None) -> tuple[Any, Any]:
    """``(optimizer, scheduler)`` for ``transformers.Trainer(optimizers=...)``.

    Args:
        config: A file, dict or ``DictConfig``: one optimizer, or ``optimizer:`` and
            ``scheduler:`` sections (see :func:`optiplug.integrations.build_training`).
        model: The ``PreTrainedModel`` (any ``nn.Module``) whose parameters are optimized.
        registry: Defaults to the process-wide registry.

    Returns:
        The torch optimizer and its ``LRScheduler`` (or ``None``).

    Raises:
        ConfigError: the config is invalid, or its scheduler steps on a metric (``Trainer``
            calls ``step()`` without one).
    """
    import torch

    built = build_training(config, model, backend="torch", registry=registry)
    if isinstance(built.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        assert built.scheduler_spec is not None
        raise ConfigError([ConfigIssue("scheduler", (
            f"{built.scheduler_spec.name!r} steps on a metric, but transformers.Trainer steps "
            f"its scheduler without one after every optimizer step; choose a scheduler that "
            f"follows the step count"))])
    return built.optimizer, built.scheduler
