"""The conformance kit: check a plugin against the optiplug contract.

One command checks installed plugins (the pytest plugin ships through the ``pytest11`` entry
point)::

    pytest --optiplug-conformance=optiplug-extras        # a distribution
    pytest --optiplug-conformance=optimizer.lion         # kind.name or an entry point
    pytest --optiplug-conformance=builtin                # every builtin (or: all)

and a plugin's own tests reuse the same checks::

    import pytest
    from optiplug.testing import check_technique, conformance_checks

    @pytest.mark.parametrize("check", conformance_checks("optiplug-extras"), ids=str)
    def test_conformance(check):
        check.run()

    def test_lion_conforms():
        check_technique("optimizer.lion")     # raises ConformanceError listing every failure

The checks: the spec validates its example, is frozen, strict and documented, round-trips and
exports a JSON Schema; every declared backend builds and works once; building for NumPy does
not import torch (in a fresh interpreter); an optimizer's ``state_dict`` round-trips and
continues identically, its steps read ``lr`` from ``param_groups`` and it fires the step
hooks; a scheduler's ``state_dict`` round-trips; an initializer's samples have the variance
its spec declares (``expected_variance(shape)``); an activation's or normalizer layer's NumPy
``backward`` matches a numerical gradient; NumPy and torch agree; an optimizer trains a few
epochs in :mod:`optiplug.training`'s own loop and handles gradients that are ``None`` on some
steps; moving any hyperparameter changes the result. Torch checks are skipped when torch is not
installed.

Importing this package is cheap: the checks load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._examples import NUM_FEATURES, example_config, example_spec
    from ._kit import (
        Check,
        CheckSkipped,
        ConformanceError,
        Report,
        check_backends_agree,
        check_build,
        check_hyperparameters_matter,
        check_initializer_variance,
        check_numerical_gradient,
        check_numpy_without_torch,
        check_optimizer_gradient_clipping,
        check_optimizer_lr_from_param_groups,
        check_optimizer_missing_gradients,
        check_optimizer_state_dict,
        check_optimizer_step_hooks,
        check_optimizer_trains,
        check_scheduler_state_dict,
        check_schema,
        check_spec,
        check_technique,
        conformance_checks,
        exercise,
        torch_available,
    )
    from ._select import Selection, select

__all__ = [
    "NUM_FEATURES",
    "Check",
    "CheckSkipped",
    "ConformanceError",
    "Report",
    "Selection",
    "check_backends_agree",
    "check_build",
    "check_initializer_variance",
    "check_optimizer_trains",
    "check_optimizer_missing_gradients",
    "check_hyperparameters_matter",
    "check_numerical_gradient",
    "check_numpy_without_torch",
    "check_optimizer_gradient_clipping",
    "check_optimizer_lr_from_param_groups",
    "check_optimizer_state_dict",
    "check_optimizer_step_hooks",
    "check_scheduler_state_dict",
    "check_schema",
    "check_spec",
    "check_technique",
    "conformance_checks",
    "example_config",
    "example_spec",
    "exercise",
    "select",
    "torch_available",
]

_HOMES = {"NUM_FEATURES": "_examples", "example_config": "_examples",
          "example_spec": "_examples", "Selection": "_select", "select": "_select"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_HOMES.get(name, '_kit')}")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
