"""The conformance checks: one function per clause of the plugin contract.

Every check takes a :class:`~optiplug.Technique` and raises :class:`ConformanceError` (an
``AssertionError``) naming the technique, the clause and the numbers when the plugin breaks the
contract, or :class:`CheckSkipped` when the clause does not apply (no torch, no declared
variance, a backend the kit cannot exercise). Nothing here imports torch at import time: torch
is imported inside the torch checks only.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..registry import BrokenPlugin, Registry, default_registry
from ..technique import Technique
from ._common import KNOWN_BACKENDS, CheckSkipped, torch_available
from ._examples import (
    ConformanceError,
    example_config,
    example_spec,
)
from ._exercise import check_build, exercise
from ._hyperparameter_checks import check_hyperparameters_matter
from ._initializer_checks import check_initializer_variance
from ._isolation import check_numpy_without_torch
from ._layer_checks import check_backends_agree, check_numerical_gradient
from ._optimizer_checks import (
    check_optimizer_gradient_clipping,
    check_optimizer_lr_from_param_groups,
    check_optimizer_missing_gradients,
    check_optimizer_state_dict,
    check_optimizer_step_hooks,
    check_optimizer_trains,
)
from ._scheduler_checks import check_scheduler_state_dict
from ._select import select
from ._spec_checks import check_schema, check_spec

__all__ = [
    "Check",
    "CheckSkipped",
    "ConformanceError",
    "Report",
    "check_backends_agree",
    "check_build",
    "check_hyperparameters_matter",
    "check_initializer_variance",
    "check_numerical_gradient",
    "check_numpy_without_torch",
    "check_optimizer_gradient_clipping",
    "check_optimizer_lr_from_param_groups",
    "check_optimizer_missing_gradients",
    "check_optimizer_state_dict",
    "check_optimizer_step_hooks",
    "check_optimizer_trains",
    "check_scheduler_state_dict",
    "check_schema",
    "check_spec",
    "check_technique",
    "conformance_checks",
    "example_config",
    "example_spec",
    "exercise",
    "torch_available",
]


# ------------------------------------------------------------------------------ checks
@dataclass(frozen=True)
class Check:
    """One conformance check of one technique (or of one broken plugin).

    ``str(check)`` is its test id, ``optimizer.lion::state_dict[numpy]``, so a plugin's own
    tests can ``pytest.mark.parametrize("check", conformance_checks("my-dist"), ids=str)`` and
    call :meth:`run`.
    """

    subject: str
    name: str
    function: Callable[[], None] = field(repr=False, compare=False)
    needs_torch: bool = False
    technique: Technique | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """``subject::name``."""
        return f"{self.subject}::{self.name}"

    def __str__(self) -> str:
        return self.id

    def run(self) -> None:
        """Run the check; a check that does not apply calls ``pytest.skip`` under pytest.

        Raises:
            ConformanceError: the plugin breaks the contract.
            CheckSkipped: the check does not apply (outside pytest).
        """
        try:
            if self.needs_torch and not torch_available():
                raise CheckSkipped("torch is not installed")
            self.function()
        except CheckSkipped as exc:
            if "pytest" in sys.modules:
                import pytest

                pytest.skip(f"{self.id}: {exc}")
            raise


def _checks_for(technique: Technique, registry: Registry,
                batch: Sequence[Technique]) -> list[Check]:
    subject = f"{technique.kind}.{technique.name}"
    t = technique
    checks = [Check(subject, "spec", lambda: check_spec(t, registry=registry), technique=t),
              Check(subject, "schema", lambda: check_schema(t, registry=registry),
                    technique=t)]

    def add(name: str, function: Callable[[], None], backends: Sequence[str]) -> None:
        if all(b in t.builders for b in backends):
            checks.append(Check(subject, name, function, "torch" in backends, technique=t))

    def per_backend(name: str, function: Callable[[Technique, str], None]) -> None:
        for backend in KNOWN_BACKENDS:
            add(f"{name}[{backend}]", functools.partial(function, t, backend), [backend])

    for backend in t.backends:
        checks.append(Check(subject, f"build[{backend}]",
                            functools.partial(check_build, t, backend, registry=registry),
                            backend == "torch", technique=t))
    add("numpy without torch", lambda: check_numpy_without_torch(t, batch), ["numpy"])
    if t.kind == "optimizer":
        per_backend("state_dict", check_optimizer_state_dict)
        per_backend("lr from param_groups", check_optimizer_lr_from_param_groups)
        per_backend("step hooks", check_optimizer_step_hooks)
        per_backend("gradients None on some steps", check_optimizer_missing_gradients)
        per_backend("gradient clipping", check_optimizer_gradient_clipping)
        per_backend("trains in optiplug.training", check_optimizer_trains)
    elif t.kind == "scheduler":
        per_backend("state_dict", check_scheduler_state_dict)
    elif t.kind == "initializer":
        per_backend("variance", check_initializer_variance)
    else:
        add("gradient[numpy]", lambda: check_numerical_gradient(t), ["numpy"])
    if set(t.spec.model_fields) - {"kind", "name"} - t.spec.policy_fields:
        per_backend("every hyperparameter matters", check_hyperparameters_matter)
    add("numpy vs torch", lambda: check_backends_agree(t), list(KNOWN_BACKENDS))
    return checks


def _broken_check(record: BrokenPlugin) -> Check:
    def fail() -> None:
        raise ConformanceError(record.describe())

    return Check(record.plugin, "loads", fail)


def conformance_checks(target: str | Technique | Iterable[Technique], *,
                       registry: Registry | None = None) -> list[Check]:
    """Every check of the techniques ``target`` names, ready to parametrize a test with.

    Args:
        target: A :class:`~optiplug.Technique` (or several), or a name: ``all``, ``builtin``, a
            distribution, an entry point or ``kind.name`` (``fnmatch`` patterns and commas
            allowed). A broken plugin that a name matches gives a check that fails with its
            error.
        registry: Defaults to the process-wide registry.

    Raises:
        LookupError: a name matches nothing installed.
    """
    registry = registry or default_registry()
    if isinstance(target, str):
        selection = select(target, registry)
        techniques: list[Technique] = list(selection.techniques)
        checks = [_broken_check(record) for record in selection.broken]
    elif isinstance(target, Technique):
        techniques, checks = [target], []
    else:
        techniques, checks = list(target), []
    batch = tuple(techniques)
    for technique in techniques:
        checks.extend(_checks_for(technique, registry, batch))
    return checks


@dataclass(frozen=True)
class Report:
    """What :func:`check_technique` ran: check ids that passed and skipped ones with reasons."""

    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def check_technique(target: str | Technique, *, registry: Registry | None = None) -> Report:
    """Run every conformance check of ``target`` (a technique or a name as in
    :func:`conformance_checks`) and raise one error listing every failure.

    Returns:
        Which checks passed and which were skipped (torch not installed, no declared variance).

    Raises:
        ConformanceError: one or more checks failed; the message has one line per failure.
    """
    passed: list[str] = []
    skipped: list[tuple[str, str]] = []
    failures: list[str] = []
    for check in conformance_checks(target, registry=registry):
        try:
            if check.needs_torch and not torch_available():
                raise CheckSkipped("torch is not installed")
            check.function()
        except CheckSkipped as exc:
            skipped.append((check.id, str(exc)))
        except AssertionError as exc:
            failures.append(f"{check.id}: {exc}")
        except Exception as exc:
            failures.append(f"{check.id}: raised {type(exc).__name__}: {exc}")
        else:
            passed.append(check.id)
    if failures:
        raise ConformanceError(f"{len(failures)} conformance check(s) failed:\n" +
                               "\n".join(failures))
    return Report(tuple(passed), tuple(skipped))

