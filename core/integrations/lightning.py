"""PyTorch Lightning: ``configure_optimizers`` from an optiplug config.

::

    import lightning as L
    from optiplug.integrations.lightning import configure_optimizers

    class Model(L.LightningModule):
        def configure_optimizers(self):
            return configure_optimizers("train.yaml", self)

The scheduler's ``interval`` is the one the scheduler declares (``"batch"`` becomes Lightning's
``"step"``); a scheduler that steps on a metric (``reduce_on_plateau``) gets ``monitor``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..registry import Registry
from ._common import build_training

__all__ = ["configure_optimizers"]


def configure_optimizers(config: Mapping[str, Any] | str | os.PathLike[str] | Any, model: Any,
                         *, monitor: str = "val_loss", frequency: int = 1,
                         registry: Registry | None = None) -> dict[str, Any]:
    """What ``LightningModule.configure_optimizers`` returns, built from ``config``.

    Args:
        config: A file, dict or ``DictConfig``: one optimizer, or ``optimizer:`` and
            ``scheduler:`` sections (see :func:`optiplug.integrations.build_training`).
        model: The ``LightningModule`` (or any ``nn.Module``) whose parameters are optimized.
        monitor: The logged metric a plateau scheduler steps on.
        frequency: Scheduler steps every ``frequency`` intervals.
        registry: Defaults to the process-wide registry.

    Returns:
        ``{"optimizer": opt}``, plus ``"lr_scheduler": {"scheduler", "interval",
        "frequency"[, "monitor"]}`` when the config has a scheduler.

    Raises:
        ConfigError: the config is invalid (nothing is built then).
    """
    import torch

    built = build_training(config, model, backend="torch", registry=registry)
    if built.scheduler is None:
        return {"optimizer": built.optimizer}
    scheduler: dict[str, Any] = {
        "scheduler": built.scheduler,
        "interval": "step" if built.interval == "batch" else "epoch",
        "frequency": frequency,
    }
    if isinstance(built.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler["monitor"] = monitor
    return {"optimizer": built.optimizer, "lr_scheduler": scheduler}
