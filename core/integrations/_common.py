"""One config -> a validated optimizer and scheduler, shared by the framework adapters."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..config import load_config, plain_config, validate_config
from ..errors import ConfigError, ConfigIssue
from ..registry import Registry, default_registry
from ..specs import OptimizerSpec, SchedulerSpec, Spec

__all__ = ["Training", "build_training", "scheduler_interval"]

Interval = Literal["batch", "epoch"]


@dataclass(frozen=True)
class Training:
    """What :func:`build_training` returns.

    Attributes:
        optimizer: The live optimizer.
        scheduler: The live scheduler, or ``None`` when the config has none.
        optimizer_spec: The optimizer's validated spec.
        scheduler_spec: The scheduler's validated spec, or ``None``.
        interval: ``"batch"`` or ``"epoch"``: how often the scheduler steps, as it declares
            (``None`` without a scheduler).
    """

    optimizer: Any
    scheduler: Any
    optimizer_spec: OptimizerSpec
    scheduler_spec: SchedulerSpec | None
    interval: Interval | None


def scheduler_interval(spec: SchedulerSpec) -> Interval:
    """How often the scheduler of ``spec`` steps, as it declares (a composite: as its
    children do)."""
    return spec.step_interval()


def build_training(config: Mapping[str, Any] | str | os.PathLike[str] | Any, params: Any, *,
                   backend: str | None = None, registry: Registry | None = None) -> Training:
    """Validate ``config`` whole, then build its optimizer over ``params`` and its scheduler.

    Args:
        config: A path to a YAML/TOML/JSON file, a dict or an OmegaConf ``DictConfig``: either
            one optimizer (``{"name": "adamw", "lr": 1e-3}``, ``kind`` optional) or sections
            ``optimizer:`` and optionally ``scheduler:``.
        params: What the optimizer's builder takes (an ``nn.Module``, ``named_parameters()``,
            param groups, NumPy arrays, ...).
        backend: Inferred from ``params`` when left out.
        registry: Defaults to the process-wide registry.

    Returns:
        The live optimizer and scheduler with their specs and the scheduler's interval.

    Raises:
        ConfigError: the config is invalid (every bad path listed, nothing built), has no
            optimizer, or has more than one optimizer or scheduler.
    """
    registry = registry or default_registry()
    source = None
    if isinstance(config, (str, os.PathLike)):
        source = os.fspath(config)
        document = load_config(source)
    else:
        document = plain_config(config)
    if isinstance(document, Mapping) and "name" in document and "kind" not in document:
        document = {"kind": "optimizer", **document}
    specs = validate_config(document, registry=registry)
    by_kind: dict[str, list[Spec]] = {}
    for spec in specs:
        by_kind.setdefault(spec.kind, []).append(spec)
    issues = [ConfigIssue(kind, f"expected at most one {kind}, got {len(found)}")
              for kind, found in by_kind.items() if len(found) > 1]
    issues += [ConfigIssue(kind, f"a {kind} section is not used here: give 'optimizer' and "
                                 f"optionally 'scheduler'")
               for kind in by_kind if kind not in ("optimizer", "scheduler")]
    if "optimizer" not in by_kind:
        issues.append(ConfigIssue("optimizer", "missing: give an 'optimizer' section or one "
                                               "optimizer config"))
    if issues:
        raise ConfigError(issues, source=source)
    optimizer_spec = by_kind["optimizer"][0]
    assert isinstance(optimizer_spec, OptimizerSpec)
    optimizer = registry.build(optimizer_spec, backend=backend, params=params)
    scheduler_spec = by_kind.get("scheduler", [None])[0]
    if scheduler_spec is None:
        return Training(optimizer, None, optimizer_spec, None, None)
    assert isinstance(scheduler_spec, SchedulerSpec)
    scheduler = registry.build(scheduler_spec, backend=backend, optimizer=optimizer)
    return Training(optimizer, scheduler, optimizer_spec, scheduler_spec,
                    scheduler_interval(scheduler_spec))
