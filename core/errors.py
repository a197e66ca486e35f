"""The error types of optiplug: one per failure class, each pointing at the place to fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["CheckpointError", "ConfigError", "ConfigIssue", "NonfiniteGradientError",
           "OptiplugError", "OptiplugWarning", "PluginError"]


class OptiplugError(Exception):
    """Base class of every error optiplug raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One bad place in a config.

    Attributes:
        path: Dotted path to the offending value, e.g. ``optimizer.betas.1`` (empty for the root).
        message: What is wrong there and, where possible, how to fix it.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(OptiplugError, ValueError):
    """A config (dict, file or keyword arguments) is invalid.

    Every offending path is collected in :attr:`issues`, so one error reports them all.
    """

    def __init__(self, issues: Sequence[ConfigIssue] | str, *, source: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        self.issues: tuple[ConfigIssue, ...] = tuple(issues)
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        where = f" in {self.source}" if self.source else ""
        if len(self.issues) == 1:
            return f"invalid config{where}: {self.issues[0]}"
        lines = "\n".join(f"  {issue}" for issue in self.issues)
        return f"invalid config{where} ({len(self.issues)} problems):\n{lines}"

    def prefixed(self, prefix: str) -> ConfigError:
        """Return the same error with ``prefix`` put before every path."""
        if not prefix:
            return self
        issues = [ConfigIssue(f"{prefix}.{i.path}" if i.path else prefix, i.message)
                  for i in self.issues]
        return ConfigError(issues, source=self.source)


class PluginError(OptiplugError, RuntimeError):
    """A plugin failed to load, misbehaved, or two plugins claim the same technique.

    Attributes:
        plugin: The entry-point (or in-process) name of the plugin, when known.
        distribution: The distribution that installed the plugin, when known.
    """

    def __init__(self, message: str, *, plugin: str | None = None,
                 distribution: str | None = None) -> None:
        super().__init__(message)
        self.plugin = plugin
        self.distribution = distribution


class NonfiniteGradientError(OptiplugError, FloatingPointError):
    """A gradient holds NaN or infinity and the optimizer's ``nonfinite`` policy is ``raise``."""


class CheckpointError(OptiplugError, RuntimeError):
    """A checkpoint cannot be read, is corrupt, or does not fit the run it is loaded into."""


class OptiplugWarning(UserWarning):
    """Warnings about the plugin environment (unknown names in switches, broken plugins)."""
