"""optiplug: a plugin-based registry of deep-learning optimization techniques.

Optimizers, weight initializers, activations, normalizers and learning-rate schedulers are
plugins discovered through the ``optiplug.plugins`` entry-point group, configured by frozen
pydantic specs and built for NumPy or PyTorch::

    import optiplug
    opt = optiplug.optimizer("adam", model.parameters(), lr=1e-3)
    opt = optiplug.build({"kind": "optimizer", "name": "adam", "lr": 1e-3}, params=params)

``import optiplug`` loads no plugin and never imports torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .api import (
    Initializer,
    activation,
    initializer,
    normalizer,
    optimizer,
    registry,
    scheduler,
    spec,
)
from .config import Built, build, json_schema, load_config, to_spec, validate_config
from .errors import (
    CheckpointError,
    ConfigError,
    ConfigIssue,
    NonfiniteGradientError,
    OptiplugError,
    OptiplugWarning,
    PluginError,
)
from .hookspecs import hookimpl
from .param_groups import param_groups
from .registry import ENTRY_POINT_GROUP, BrokenPlugin, Conflict, Registry
from .specs import (
    KINDS,
    ActivationSpec,
    Beta,
    InitializerSpec,
    Interval,
    Nonfinite,
    NonNegativeFloat,
    NonNegativeInt,
    NormalizerSpec,
    OptimizerSpec,
    ParamGroupRule,
    PositiveFloat,
    PositiveInt,
    Probability,
    Role,
    SchedulerConfig,
    SchedulerSpec,
    Spec,
)
from .technique import Backend, PluginInfo, Technique

if TYPE_CHECKING:
    from . import testing as testing
    from . import training as training
    from . import transforms
    from .backends._state import convert_state as convert_state

__version__ = "0.1.0"

# Submodules with heavier imports, loaded on first attribute access (`optiplug.transforms`).
_LAZY_SUBMODULES = frozenset({"transforms", "training", "testing"})


def __getattr__(name: str) -> Any:
    if name in _LAZY_SUBMODULES:
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    if name == "convert_state":
        # Loaded on first use: ``import optiplug`` imports no backend module.
        from .backends._state import convert_state

        return convert_state
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "ActivationSpec",
    "Backend",
    "Beta",
    "BrokenPlugin",
    "Built",
    "CheckpointError",
    "ConfigError",
    "ConfigIssue",
    "Conflict",
    "Initializer",
    "InitializerSpec",
    "Interval",
    "NonNegativeFloat",
    "NonNegativeInt",
    "NonfiniteGradientError",
    "Nonfinite",
    "NormalizerSpec",
    "OptimizerSpec",
    "OptiplugError",
    "OptiplugWarning",
    "ParamGroupRule",
    "PluginError",
    "PluginInfo",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Registry",
    "Role",
    "SchedulerConfig",
    "SchedulerSpec",
    "Spec",
    "Technique",
    "__version__",
    "activation",
    "build",
    "convert_state",
    "hookimpl",
    "initializer",
    "json_schema",
    "load_config",
    "normalizer",
    "optimizer",
    "param_groups",
    "registry",
    "scheduler",
    "spec",
    "to_spec",
    "transforms",
    "validate_config",
]
