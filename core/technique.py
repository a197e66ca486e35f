"""Descriptors: what a plugin contributes, read without running any array code."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .specs import KINDS, Spec

__all__ = ["Backend", "Builder", "PluginInfo", "Technique"]

Builder = Callable[..., Any]
"""``builder(spec, **runtime) -> object``: makes the live object for one backend.

Runtime arguments by kind: optimizer ``params``; scheduler ``optimizer``; initializer,
activation and normalizer none (an initializer builder returns the fill function).
"""


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """Where a technique or backend came from.

    Attributes:
        plugin: Entry-point name (``optimizer.adam``) or the in-process registration name.
        distribution: Installed distribution providing it; ``None`` for in-process registration.
        version: That distribution's version.
        module: The plugin module or object's qualified name.
    """

    plugin: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None

    def describe(self) -> str:
        """``dist 1.0 (entry point optimizer.adam)`` or ``in-process plugin NAME``."""
        if self.distribution is None:
            return f"in-process plugin {self.plugin!r}"
        return f"{self.distribution} {self.version} (entry point {self.plugin!r})"


@dataclass(frozen=True, slots=True)
class Technique:
    """One named technique of a kind, as a plugin contributes it.

    Attributes:
        kind: One of ``optimizer``, ``initializer``, ``activation``, ``normalizer``,
            ``scheduler``.
        name: The technique's name, equal to its spec's ``name`` literal.
        spec: The frozen pydantic spec class (subclass of the kind's base spec).
        builders: One builder per backend name (``"numpy"``, ``"torch"``, ...).
        summary: One or two sentences: what it is and when to use it.
        reference: Paper or documentation the implementation follows.
        origin: Filled in by the registry: which plugin contributed it.
    """

    kind: str
    name: str
    spec: type[Spec]
    builders: Mapping[str, Builder]
    summary: str
    reference: str = ""
    origin: PluginInfo | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        spec: object = self.spec  # descriptors come from plugins: check, don't trust the types
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if not (isinstance(spec, type) and issubclass(spec, Spec)):
            problems.append(f"spec must be a Spec subclass, got {spec!r}")
        else:
            if getattr(self.spec, "spec_kind", None) != self.kind:
                problems.append(f"spec {self.spec.__qualname__} is not a {self.kind} spec")
            try:
                spec_name = self.spec.technique_name()
            except TypeError as exc:
                problems.append(str(exc))
            else:
                if spec_name != self.name:
                    problems.append(f"spec name {spec_name!r} differs from technique name "
                                    f"{self.name!r}")
        if not isinstance(self.builders, Mapping) or not self.builders:
            problems.append("builders must map at least one backend name to a builder")
        elif not all(isinstance(k, str) and callable(v) for k, v in self.builders.items()):
            problems.append("builders must map backend names (str) to callables")
        if not isinstance(self.summary, str) or not self.summary.strip():
            problems.append("summary must be a non-empty string")
        if problems:
            raise TypeError(f"invalid Technique {self.kind}.{self.name}: " + "; ".join(problems))
        object.__setattr__(self, "builders", MappingProxyType(dict(self.builders)))

    @property
    def backends(self) -> tuple[str, ...]:
        """The backend names this technique can build for."""
        return tuple(self.builders)


@dataclass(frozen=True, slots=True)
class Backend:
    """An array backend (``numpy``, ``torch``, ...), contributed by ``optiplug_backends``.

    Attributes:
        name: The backend's name, used in configs and ``backend=`` arguments.
        module: The import name of the array library (checked for availability, never imported
            to list or detect).
        owns: ``owns(value) -> bool``: whether a leaf value (an array, tensor, module) belongs to
            this backend. Must not import the array library.
        summary: One line for ``optiplug list``.
        priority: Higher is tried first when detecting a backend from values.
    """

    name: str
    module: str
    owns: Callable[[Any], bool]
    summary: str = ""
    priority: int = 0
    origin: PluginInfo | None = field(default=None, compare=False)

    def available(self) -> bool:
        """Whether the array library can be imported (looked up, not imported)."""
        import importlib.util
        import sys

        return self.module in sys.modules or importlib.util.find_spec(self.module) is not None
