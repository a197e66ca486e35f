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
from .config import build, json_schema, load_config, to_spec, validate_config
from .errors import ConfigError, ConfigIssue, OptiplugError, OptiplugWarning, PluginError
from .hookspecs import hookimpl
from .registry import ENTRY_POINT_GROUP, BrokenPlugin, Conflict, Registry
from .specs import (
    KINDS,
    ActivationSpec,
    Beta,
    InitializerSpec,
    NonNegativeFloat,
    NonNegativeInt,
    NormalizerSpec,
    OptimizerSpec,
    PositiveFloat,
    PositiveInt,
    Probability,
    SchedulerSpec,
    Spec,
)
from .technique import Backend, PluginInfo, Technique

__version__ = "0.1.0"

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "ActivationSpec",
    "Backend",
    "Beta",
    "BrokenPlugin",
    "ConfigError",
    "ConfigIssue",
    "Conflict",
    "Initializer",
    "InitializerSpec",
    "NonNegativeFloat",
    "NonNegativeInt",
    "NormalizerSpec",
    "OptimizerSpec",
    "OptiplugError",
    "OptiplugWarning",
    "PluginError",
    "PluginInfo",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Registry",
    "SchedulerSpec",
    "Spec",
    "Technique",
    "__version__",
    "activation",
    "build",
    "hookimpl",
    "initializer",
    "json_schema",
    "load_config",
    "normalizer",
    "optimizer",
    "registry",
    "scheduler",
    "spec",
    "to_spec",
    "validate_config",
]
