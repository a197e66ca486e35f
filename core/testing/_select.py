"""Which techniques a conformance target names: ``all``, ``builtin``, a distribution, an entry
point or ``kind.name`` (``fnmatch`` patterns allowed), comma-separated."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ..registry import BrokenPlugin, Registry
from ..technique import Technique

__all__ = ["Selection", "select"]

BUILTIN_DISTRIBUTION = "optiplug"


@dataclass(frozen=True, slots=True)
class Selection:
    """What a target selected: working techniques and broken plugins (which fail the kit)."""

    techniques: tuple[Technique, ...]
    broken: tuple[BrokenPlugin, ...]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _technique_matches(pattern: str, technique: Technique) -> bool:
    origin = technique.origin
    if fnmatch.fnmatchcase(f"{technique.kind}.{technique.name}", pattern):
        return True
    if origin is None:
        return False
    if fnmatch.fnmatchcase(origin.plugin, pattern):
        return True
    return origin.distribution is not None and (
        _normalize(origin.distribution) == _normalize(pattern))


def _broken_matches(pattern: str, record: BrokenPlugin) -> bool:
    return fnmatch.fnmatchcase(record.plugin, pattern) or (
        record.distribution is not None
        and _normalize(record.distribution) == _normalize(pattern))


def select(target: str, registry: Registry) -> Selection:
    """The techniques and broken plugins ``target`` names.

    Args:
        target: Comma-separated names, each ``all`` (everything installed), ``builtin``
            (optiplug's own plugins), a distribution (``optiplug-extras``), an entry point
            (``optimizer.adam``, ``extras.lion``) or ``kind.name``; ``fnmatch`` patterns such as
            ``optimizer.*`` are allowed.
        registry: Where to look.

    Raises:
        LookupError: a name matches nothing (the message lists what is installed).
    """
    techniques = registry.techniques()
    broken = registry.broken()
    chosen: dict[int, Technique] = {}
    chosen_broken: dict[int, BrokenPlugin] = {}
    for pattern in (part.strip() for part in target.split(",")):
        if not pattern:
            continue
        if pattern == "all":
            hits = list(techniques)
            broken_hits = list(broken)
        elif pattern == "builtin":
            hits = [t for t in techniques if t.origin is not None and t.origin.distribution
                    and _normalize(t.origin.distribution) == BUILTIN_DISTRIBUTION]
            broken_hits = [b for b in broken if b.distribution
                           and _normalize(b.distribution) == BUILTIN_DISTRIBUTION]
        else:
            hits = [t for t in techniques if _technique_matches(pattern, t)]
            broken_hits = [b for b in broken if _broken_matches(pattern, b)]
        if not hits and not broken_hits:
            distributions = sorted({t.origin.distribution for t in techniques
                                    if t.origin and t.origin.distribution})
            names = sorted(f"{t.kind}.{t.name}" for t in techniques)
            raise LookupError(
                f"{pattern!r} names no installed technique, entry point or distribution; "
                f"distributions: {', '.join(distributions) or 'none'}; techniques: "
                f"{', '.join(names) or 'none'}")
        for technique in hits:
            chosen.setdefault(id(technique), technique)
        for record in broken_hits:
            chosen_broken.setdefault(id(record), record)
    ordered = sorted(chosen.values(), key=lambda t: (t.kind, t.name))
    return Selection(tuple(ordered), tuple(chosen_broken.values()))
