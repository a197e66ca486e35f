"""The catalog: what every installed plugin contributes, as plain data, cached on disk.

``optiplug list``, ``show``, ``schema`` and ``doctor`` read the catalog instead of importing
every plugin module. It is built once by a full discovery (the registry imports every plugin,
broken ones included) and stored as JSON in the user cache directory (``OPTIPLUG_CACHE_DIR``,
else ``$XDG_CACHE_HOME/optiplug``, ``~/Library/Caches/optiplug`` or
``%LOCALAPPDATA%/optiplug/Cache``), one file per interpreter and entry-point group.

A stored catalog is used only while its key still holds, so it is never stale:

- the interpreter (version and executable), the catalog format, the entry-point group and the
  plugin switches (``OPTIPLUG_PLUGINS``, ``OPTIPLUG_DISABLED_PLUGINS``,
  ``OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD``);
- ``sys.path``, and in each of its folders the installed distributions: every ``*.dist-info``
  and ``*.egg-info`` by name (name and version) with the modification time of its
  ``entry_points.txt`` (an install, upgrade, reinstall or uninstall changes these);
- the modification time and size of every module file imported while the catalog was built
  that lies outside the interpreter's site and standard-library folders: an editable install's
  sources (optiplug's own core and plugins included) and plugins on ``PYTHONPATH``;
- when a plugin failed to import, the modification times of the ``sys.path`` folders outside
  the site folders, so a module that appears later is found.

Anything else is a miss: the catalog is built again by a full discovery (which finds broken
plugins) and written atomically (a temporary file renamed over the old one), so concurrent
processes each read a whole file; a file that cannot be read or parsed is ignored and replaced.
Schemas (``show``, ``schema``) are computed on first request and added to the stored file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .technique import PluginInfo

if TYPE_CHECKING:
    from .registry import BrokenPlugin, Registry

__all__ = ["Catalog", "CatalogBackend", "CatalogEntry", "cache_dir", "load_catalog"]

FORMAT: Final = 1
_SWITCHES: Final = ("OPTIPLUG_PLUGINS", "OPTIPLUG_DISABLED_PLUGINS",
                    "OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One technique as listed: everything but its spec class and builders.

    Attributes:
        kind: The technique's kind.
        name: Its name.
        backends: The backends it has builders for.
        summary: Its one-line summary.
        reference: Its reference.
        origin: The plugin that contributed it.
        interval: A scheduler's declared stepping interval (``None`` for other kinds).
        interval_text: How ``optiplug show`` words the interval.
    """

    kind: str
    name: str
    backends: tuple[str, ...]
    summary: str
    reference: str
    origin: PluginInfo | None
    interval: str | None = None
    interval_text: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogBackend:
    """A backend as listed: its name, array library and detection priority."""

    name: str
    module: str
    summary: str
    priority: int

    def available(self) -> bool:
        """Whether the array library can be imported (looked up, not imported)."""
        import importlib.util

        return self.module in sys.modules or importlib.util.find_spec(self.module) is not None


@dataclass
class Catalog:
    """What the installed plugins contribute, read from the cache or a live registry.

    Attributes:
        techniques: Every technique (each claimant of a conflict too), sorted by kind, name.
        broken: The plugins that failed.
        backends: The registered backends, highest priority first.
        plugins: The plugins that loaded.
        from_cache: Whether this catalog was read from the stored file.
    """

    techniques: list[CatalogEntry]
    broken: list[BrokenPlugin]
    backends: list[CatalogBackend]
    plugins: list[PluginInfo]
    from_cache: bool = False
    sections: dict[str, Any] = field(default_factory=dict)
    _registry: Registry | None = field(default=None, repr=False)
    _path: Path | None = field(default=None, repr=False)
    _stored: dict[str, Any] | None = field(default=None, repr=False)

    def names(self, kind: str) -> list[str]:
        """Sorted technique names of ``kind`` (a conflicting name once)."""
        return sorted({entry.name for entry in self.techniques if entry.kind == kind})

    def entries(self, kind: str | None = None) -> list[CatalogEntry]:
        """The entries of ``kind`` (all when ``None``)."""
        return [e for e in self.techniques if kind is None or e.kind == kind]

    def conflicts(self) -> list[tuple[str, str, list[CatalogEntry]]]:
        """``(kind, name, claimants)`` for every name claimed by more than one plugin."""
        claims: dict[tuple[str, str], list[CatalogEntry]] = {}
        for entry in self.techniques:
            claims.setdefault((entry.kind, entry.name), []).append(entry)
        return [(k, n, e) for (k, n), e in sorted(claims.items()) if len(e) > 1]

    def section(self, key: str, compute: Callable[[Registry], Any]) -> Any:
        """A derived value (a schema) stored with the catalog: computed once from the registry
        (which then imports the plugins), then read from the cache."""
        if key in self.sections:
            return self.sections[key]
        from .registry import default_registry

        value = compute(self._registry or default_registry())
        self.sections[key] = value
        if self._path is not None and self._stored is not None:
            self._stored["sections"] = self.sections
            _write(self._path, self._stored)
        return value


# ------------------------------------------------------------------------------- location
def cache_dir() -> Path:
    """Where catalogs are stored: ``OPTIPLUG_CACHE_DIR`` or the platform's user cache dir."""
    configured = os.environ.get("OPTIPLUG_CACHE_DIR")
    if configured:
        return Path(configured)
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
        return base / "optiplug" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "optiplug"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "optiplug"


def _cache_file(group: str) -> Path:
    digest = hashlib.sha256(f"{sys.executable}\0{group}".encode()).hexdigest()[:16]
    return cache_dir() / f"catalog-{digest}.json"


# ------------------------------------------------------------------------------------ key
def _site_roots() -> tuple[str, ...]:
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = {paths.get(k, "") for k in ("purelib", "platlib", "stdlib", "platstdlib")}
    with contextlib.suppress(AttributeError):
        roots.update(site.getsitepackages())
    roots.add(sys.base_prefix)
    roots.add(sys.prefix)
    found = {os.path.join(os.path.abspath(r), "") for r in roots if r} | {
        os.path.join(os.path.realpath(r), "") for r in roots if r}
    return tuple(sorted(found))


def _key(group: str, autoload: bool | None) -> dict[str, Any]:
    entries = []
    for entry in sys.path:
        folder = entry or os.getcwd()
        found: list[tuple[str, int | None]] = []
        try:
            with os.scandir(folder) as scan:
                for item in scan:
                    if item.name.endswith((".dist-info", ".egg-info")):
                        try:
                            stamp: int | None = os.stat(
                                os.path.join(item.path, "entry_points.txt")).st_mtime_ns
                        except OSError:
                            stamp = None
                        found.append((item.name, stamp))
        except OSError:
            entries.append([folder, None])
            continue
        entries.append([folder, [list(item) for item in sorted(found)]])  # type: ignore[list-item]
    return {"format": FORMAT, "python": sys.version, "executable": sys.executable,
            "group": group, "autoload": autoload,
            "switches": {name: os.environ.get(name, "") for name in _SWITCHES},
            "path": entries}


def _watched(broken: bool) -> list[list[Any]]:
    """Stamps of the module files outside the site folders (editable and path plugins)."""
    roots = _site_roots()
    stamps: dict[str, list[Any]] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        # Not resolved: a site folder's entries may be links into another environment.
        if os.path.abspath(file).startswith(roots):
            continue
        with contextlib.suppress(OSError):
            status = os.stat(file)
            stamps[file] = [file, status.st_mtime_ns, status.st_size]
    if broken:
        for entry in sys.path:
            folder = os.path.abspath(entry or os.getcwd())
            if not folder.startswith(roots):
                with contextlib.suppress(OSError):
                    stamps[folder] = [folder, os.stat(folder).st_mtime_ns, None]
    return sorted(stamps.values())


def _still_valid(watched: Iterable[list[Any]]) -> bool:
    for path, mtime, size in watched:
        try:
            status = os.stat(path)
        except OSError:
            return False
        if status.st_mtime_ns != mtime or (size is not None and status.st_size != size):
            return False
    return True


# ------------------------------------------------------------------------------- storage
def _write(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` atomically; a cache that cannot be written is simply not written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(data, stream, separators=(",", ":"))
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError:
        return


def _read(path: Path) -> dict[str, Any] | None:
    try:
        with path.open(encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------- conversion
def interval_text(spec: type[Any]) -> str | None:
    """A scheduler's declared stepping interval, as ``optiplug show`` prints it."""
    import inspect

    from .specs import SchedulerSpec

    if not (isinstance(spec, type) and issubclass(spec, SchedulerSpec)):
        return None
    if spec.steps_on_metric:
        return f"per {spec.interval}, with the monitored (validation) metric"
    text = f"per {spec.interval}"
    if spec.step_interval is not SchedulerSpec.step_interval:
        rule = (inspect.getdoc(spec.step_interval) or "").split("\n")[0].rstrip(".")
        text = rule[:1].lower() + rule[1:] if rule else f"{text} by default"
    return f"{text} (train.scheduler_interval overrides it)"


def _live(registry: Registry) -> Catalog:
    from .specs import SchedulerSpec

    entries = []
    for technique in registry.techniques():
        spec = technique.spec
        scheduler = issubclass(spec, SchedulerSpec)
        entries.append(CatalogEntry(
            technique.kind, technique.name, tuple(technique.backends), technique.summary,
            technique.reference, technique.origin,
            getattr(spec, "interval", None) if scheduler else None,
            interval_text(spec) if scheduler else None))
    backends = [CatalogBackend(b.name, b.module, b.summary, b.priority)
                for b in registry.backends()]
    return Catalog(entries, registry.broken(), backends, registry.plugins(),
                   _registry=registry)


def _origin(data: Any) -> PluginInfo | None:
    return PluginInfo(**data) if isinstance(data, dict) else None


def _to_json(catalog: Catalog) -> dict[str, Any]:
    def origin(info: PluginInfo | None) -> dict[str, Any] | None:
        return None if info is None else {"plugin": info.plugin, "distribution":
                                          info.distribution, "version": info.version,
                                          "module": info.module}

    return {
        "techniques": [{"kind": e.kind, "name": e.name, "backends": list(e.backends),
                        "summary": e.summary, "reference": e.reference,
                        "origin": origin(e.origin), "interval": e.interval,
                        "interval_text": e.interval_text} for e in catalog.techniques],
        "broken": [{"plugin": b.plugin, "distribution": b.distribution, "version": b.version,
                    "phase": b.phase, "error": b.error} for b in catalog.broken],
        "backends": [{"name": b.name, "module": b.module, "summary": b.summary,
                      "priority": b.priority} for b in catalog.backends],
        "plugins": [origin(p) for p in catalog.plugins],
        "sections": catalog.sections,
    }


def _from_json(data: dict[str, Any]) -> Catalog:
    from .registry import BrokenPlugin

    entries = [CatalogEntry(e["kind"], e["name"], tuple(e["backends"]), e["summary"],
                            e["reference"], _origin(e["origin"]), e["interval"],
                            e["interval_text"]) for e in data["techniques"]]
    broken = [BrokenPlugin(**b) for b in data["broken"]]
    backends = [CatalogBackend(**b) for b in data["backends"]]
    plugins = [info for info in map(_origin, data["plugins"]) if info is not None]
    sections = data.get("sections") or {}
    if not isinstance(sections, dict):
        raise TypeError("sections")
    return Catalog(entries, broken, backends, plugins, from_cache=True, sections=sections)


# ---------------------------------------------------------------------------------- entry
def load_catalog(registry: Registry) -> Catalog:
    """The catalog of ``registry``: live when it has already discovered its plugins (or holds
    in-process registrations), else from the stored file when its key holds, else built by a
    full discovery and stored.

    Raises:
        PluginError: strict mode (``OPTIPLUG_STRICT_PLUGINS``) and a plugin is broken.
    """
    from .errors import PluginError

    if registry._state is not None:
        return _live(registry)
    path = _cache_file(registry.group)
    key = _key(registry.group, registry._autoload)
    stored = _read(path)
    if stored is not None and stored.get("key") == key and _still_valid(
            stored.get("watched", [["", 0, 0]])):
        try:
            catalog = _from_json(stored)
        except (KeyError, TypeError, ValueError):
            catalog = None
        if catalog is not None:
            if catalog.broken and registry.strict:
                first = catalog.broken[0]
                raise PluginError(first.describe(), plugin=first.plugin,
                                  distribution=first.distribution)
            catalog._registry, catalog._path, catalog._stored = registry, path, stored
            return catalog
    catalog = _live(registry)
    data = {"key": key, "watched": _watched(bool(catalog.broken)), **_to_json(catalog)}
    _write(path, data)
    catalog._path, catalog._stored = path, data
    return catalog
