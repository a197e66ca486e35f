"""The registry: plugin discovery through entry points, lazy loading, conflicts, broken plugins.

Plugins are discovered from the entry-point group ``optiplug.plugins`` on first need (never at
``import optiplug``). Each entry point names one plugin module; its contribution hooks return
:class:`~optiplug.Technique` and :class:`~optiplug.Backend` descriptors. Environment switches,
read when the registry first loads:

``OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD=1``
    Load no entry point except those named by ``OPTIPLUG_PLUGINS``.
``OPTIPLUG_PLUGINS=a,b``
    Allow-list: load only these entry points or distributions (``fnmatch`` patterns allowed);
    ``distribution:entry point`` names one entry point of one distribution.
``OPTIPLUG_DISABLED_PLUGINS=x,y``
    Deny-list, with the same names (``optiplug-extras:optimizer.lion`` disables that entry
    point of that distribution only, where another distribution has one of the same name).
``OPTIPLUG_STRICT_PLUGINS=1``
    Raise :class:`~optiplug.PluginError` for a broken plugin instead of recording it.
``OPTIPLUG_PREFER=optimizer.adam=dist,...``
    Which distribution (or plugin) wins when two claim the same technique.
``OPTIPLUG_CACHE_DIR=path``
    Where :meth:`Registry.catalog` (``optiplug list``, ``show``, ``schema``, ``doctor``) keeps
    its cached catalog (see :mod:`optiplug.catalog`); default: the user cache directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import pluggy

from . import hookspecs
from .errors import ConfigError, ConfigIssue, OptiplugWarning, PluginError
from .specs import KINDS, Spec
from .technique import Backend, PluginInfo, Technique

if TYPE_CHECKING:
    from importlib import metadata

    from .catalog import Catalog

__all__ = ["ENTRY_POINT_GROUP", "BrokenPlugin", "Conflict", "Registry"]

ENTRY_POINT_GROUP: Final = "optiplug.plugins"
_CONTRIBUTION_HOOKS: Final[tuple[tuple[str, str], ...]] = tuple(
    (f"optiplug_{kind}s", kind) for kind in KINDS
)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class BrokenPlugin:
    """A plugin that failed to import, raised in a hook, or returned garbage.

    Attributes:
        plugin: Entry-point (or in-process) name.
        distribution: Distribution that installed it, if known.
        version: That distribution's version.
        phase: Where it failed: ``import``, ``register`` or the hook's name.
        error: ``ExceptionType: message``.
        exception: The exception itself (not compared).
    """

    plugin: str
    distribution: str | None
    version: str | None
    phase: str
    error: str
    exception: BaseException | None = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        """One line naming the distribution and the cause."""
        where = (f"{self.distribution} {self.version}" if self.distribution
                 else "in-process")
        return f"plugin {self.plugin!r} from {where} is broken ({self.phase}): {self.error}"


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two or more plugins claiming the same kind and name."""

    kind: str
    name: str
    techniques: tuple[Technique, ...]

    def describe(self) -> str:
        """One line naming every claimant and how to choose."""
        who = " and ".join(t.origin.describe() if t.origin else "?" for t in self.techniques)
        return (f"{self.kind} {self.name!r} is provided by {len(self.techniques)} plugins: {who}. "
                f"Choose one with OPTIPLUG_PREFER='{self.kind}.{self.name}=<distribution>' "
                f"(or Registry.prefer), or disable one with "
                f"OPTIPLUG_DISABLED_PLUGINS=<distribution>:<entry point>")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _describe_exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _Loaded:
    """Everything discovery produced, committed to the registry in one assignment.

    A published state is never changed: ``register`` and ``unregister`` change a
    :meth:`copy` and publish it with one assignment, so a reader that took ``registry._state``
    iterates a snapshot no other thread touches and sees each registration whole or not at all.
    """

    def __init__(self) -> None:
        self.techniques: dict[tuple[str, str], list[Technique]] = {}
        self.backends: dict[str, Backend] = {}
        self.broken: list[BrokenPlugin] = []
        self.plugins: dict[str, PluginInfo] = {}
        self.entry_point_names: set[str] = set()
        # During discovery, (name, version) of each Distribution object (shared by the entry
        # points it installed): `Distribution.name` and `.version` parse the whole METADATA
        # file, long description included, on every access.
        self.distributions: dict[Any, tuple[str | None, str | None]] = {}

    def copy(self) -> _Loaded:
        """A copy whose containers can change without touching this one's."""
        other = _Loaded()
        other.techniques = {key: list(entries) for key, entries in self.techniques.items()}
        other.backends = dict(self.backends)
        other.broken = list(self.broken)
        other.plugins = dict(self.plugins)
        other.entry_point_names = set(self.entry_point_names)
        return other


class Registry:
    """Techniques and backends by kind and name, discovered from plugins on first need.

    Safe to share between threads: queries read an immutable snapshot, and registrations are
    serialized by a lock and published whole (copy on write), so a host listing or building
    while a plugin thread registers never sees a half-registered plugin.

    Args:
        group: Entry-point group to discover (``optiplug.plugins``).
        autoload: Load entry points at all. ``None`` reads ``OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD``.
        strict: Raise on a broken plugin. ``None`` reads ``OPTIPLUG_STRICT_PLUGINS``.
    """

    def __init__(self, *, group: str = ENTRY_POINT_GROUP, autoload: bool | None = None,
                 strict: bool | None = None) -> None:
        self.group = group
        self._autoload = autoload
        self._strict = strict
        self._lock = threading.RLock()
        self._state: _Loaded | None = None
        self._discovering = False
        self._preferences: dict[tuple[str, str], str] = {}
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)

    # ----------------------------------------------------------------------------- queries
    @property
    def strict(self) -> bool:
        """Whether broken plugins raise instead of being recorded."""
        if self._strict is not None:
            return self._strict
        return os.environ.get("OPTIPLUG_STRICT_PLUGINS", "").lower() in _TRUE

    def kinds(self) -> tuple[str, ...]:
        """The technique kinds, in canonical order."""
        return KINDS

    def names(self, kind: str) -> list[str]:
        """Sorted names of the techniques of ``kind`` (conflicting names included once)."""
        self._check_kind(kind)
        state = self._loaded()
        return sorted(name for (k, name) in state.techniques if k == kind)

    def techniques(self, kind: str | None = None) -> list[Technique]:
        """Every registered technique descriptor (each claimant of a conflict too)."""
        if kind is not None:
            self._check_kind(kind)
        state = self._loaded()
        return [t for (k, _), entries in sorted(state.techniques.items())
                if kind is None or k == kind for t in entries]

    def get(self, kind: str, name: str) -> Technique:
        """The technique ``kind``/``name``.

        Raises:
            ConfigError: unknown kind or name (with close-match suggestions).
            PluginError: the name is claimed by several plugins and no preference chooses, or
                the plugin that would provide it is broken.
        """
        self._check_kind(kind)
        state = self._loaded()
        entries = state.techniques.get((kind, name))
        if not entries:
            raise self._unknown(state, kind, name)
        if len(entries) == 1:
            return entries[0]
        return self._choose(kind, name, entries)

    def broken(self) -> list[BrokenPlugin]:
        """Plugins that failed, with their distribution and error."""
        return list(self._loaded().broken)

    def conflicts(self) -> list[Conflict]:
        """Technique names claimed by more than one plugin (preferences not applied)."""
        state = self._loaded()
        return [Conflict(k, n, tuple(entries))
                for (k, n), entries in sorted(state.techniques.items()) if len(entries) > 1]

    def plugins(self) -> list[PluginInfo]:
        """The plugins that loaded, in load order."""
        return list(self._loaded().plugins.values())

    def catalog(self) -> Catalog:
        """What the plugins contribute as plain data (no spec classes, no builders), read
        from the on-disk cache without importing any plugin when nothing installed changed.

        ``optiplug list``, ``show``, ``schema`` and ``doctor`` use it; see
        :mod:`optiplug.catalog` for the cache key. A registry that has already discovered
        (or holds in-process registrations) answers from its live state.
        """
        from .catalog import load_catalog

        return load_catalog(self)

    def backends(self) -> list[Backend]:
        """Registered backends, highest detection priority first."""
        return sorted(self._loaded().backends.values(), key=lambda b: -b.priority)

    def backend(self, name: str) -> Backend:
        """The backend called ``name``.

        Raises:
            ConfigError: no such backend (with suggestions).
        """
        state = self._loaded()
        try:
            return state.backends[name]
        except KeyError:
            raise ConfigError([ConfigIssue("backend", _unknown_message(
                "backend", name, state.backends))]) from None

    def detect_backend(self, *values: Any) -> str | None:
        """The name of the backend owning the first array-like leaf in ``values``, if any.

        An object may declare its backend with an ``optiplug_backend`` attribute (NumPy
        optimizers and layers do); otherwise each backend's ``owns`` is asked, by priority.
        """
        from .backends import first_leaf

        backends = self.backends()
        for value in values:
            leaf = first_leaf(value)
            if leaf is None:
                continue
            declared = getattr(leaf, "optiplug_backend", None)
            if isinstance(declared, str):
                return declared
            for backend in backends:
                if backend.owns(leaf):
                    return backend.name
        return None

    # ------------------------------------------------------------------------ registration
    def register(self, obj: Any, name: str | None = None, *, override: bool = False) -> Any:
        """Register a technique, a backend or a plugin object in-process (notebooks, tests).

        Args:
            obj: A :class:`~optiplug.Technique`, a :class:`~optiplug.Backend`, or a module/object
                implementing hooks with :data:`optiplug.hookimpl`.
            name: Plugin name; defaults to ``kind.name``, the backend name, or the module name.
            override: Replace techniques of the same kind and name instead of raising.

        Returns:
            ``obj`` unchanged, so ``register`` also works as a class decorator.

        Raises:
            PluginError: the object is invalid or its techniques clash with registered ones.
        """
        with self._lock:
            state = self._loaded().copy()
            if isinstance(obj, Technique):
                info = PluginInfo(plugin=name or f"{obj.kind}.{obj.name}")
                contributed: list[Technique | Backend] = [replace(obj, origin=info)]
            elif isinstance(obj, Backend):
                info = PluginInfo(plugin=name or obj.name)
                contributed = [replace(obj, origin=info)]
            else:
                plugin_name = name or getattr(obj, "__name__", None) or type(obj).__qualname__
                info = PluginInfo(plugin=plugin_name, module=getattr(obj, "__name__", None))
                try:
                    self.pm.register(obj, name=plugin_name)
                    self._validate_hooks(obj)
                    contributed = self._contributions(obj, info)
                except Exception as exc:
                    if self.pm.is_registered(obj):
                        self.pm.unregister(obj)
                    raise PluginError(f"cannot register plugin {plugin_name!r}: "
                                      f"{_describe_exception(exc)}", plugin=plugin_name) from exc
            clashes = [item for item in contributed if isinstance(item, Technique)
                       and (item.kind, item.name) in state.techniques]
            if clashes and not override:
                if not isinstance(obj, (Technique, Backend)):
                    self.pm.unregister(obj)
                item = clashes[0]
                others = ", ".join(t.origin.describe() for t in state.techniques[
                    (item.kind, item.name)] if t.origin)
                raise PluginError(f"{item.kind} {item.name!r} is already provided by {others}; "
                                  f"pass override=True to replace it", plugin=info.plugin)
            self._commit(state, contributed, replace_existing=True)
            state.plugins[info.plugin] = info
            self._state = state
        return obj

    def unregister(self, name: str) -> None:
        """Remove the in-process or discovered plugin ``name`` and everything it contributed."""
        with self._lock:
            state = self._loaded().copy()
            state.plugins.pop(name, None)
            plugin = self.pm.get_plugin(name)
            if plugin is not None:
                self.pm.unregister(plugin)
            for key, entries in list(state.techniques.items()):
                kept = [t for t in entries if not (t.origin and t.origin.plugin == name)]
                if kept:
                    state.techniques[key] = kept
                else:
                    del state.techniques[key]
            for backend_name, backend in list(state.backends.items()):
                if backend.origin and backend.origin.plugin == name:
                    del state.backends[backend_name]
            self._state = state

    def prefer(self, kind: str, name: str, provider: str) -> None:
        """Resolve a conflict: ``provider`` (a distribution or plugin name) wins for kind/name."""
        self._check_kind(kind)
        self._preferences[(kind, name)] = provider

    def reload(self) -> None:
        """Forget everything discovered and discover again on next use."""
        with self._lock:
            for plugin in list(self.pm.get_plugins()):
                self.pm.unregister(plugin)
            self._state = None

    @property
    def hook(self) -> Any:
        """The pluggy hook relay (``registry.hook.optiplug_built(...)``)."""
        return self.pm.hook

    # ---------------------------------------------------------------------------- building
    def build(self, spec: Spec, *, backend: str | None = None, **runtime: Any) -> Any:
        """Build the live object for a validated ``spec`` and call the lifecycle hooks.

        The backend is ``backend`` if given, else detected from the runtime values (params, an
        optimizer), else ``numpy`` when the technique has it, else its first backend.

        Raises:
            ConfigError: the technique has no builder for the backend.
            PluginError: the backend's array library is not installed.
        """
        technique = self.get(spec.kind, spec.name)
        # Generators (model.parameters()) are read once: detection must not consume them.
        runtime = {key: list(value) if isinstance(value, Iterator) else value
                   for key, value in runtime.items()}
        if backend is None:
            backend = self.detect_backend(*runtime.values()) if runtime else None
            if backend is None:
                backend = "numpy" if "numpy" in technique.builders else technique.backends[0]
        builder = technique.builders.get(backend)
        if builder is None:
            raise ConfigError([ConfigIssue("backend", (
                f"{spec.kind} {spec.name!r} has no {backend!r} backend; "
                f"it has: {', '.join(technique.backends)}"))])
        self._require_backend(backend)
        if spec.kind == "optimizer" and runtime.get("params") is not None:
            from .param_groups import holds_params, normalize_params

            # The builder contract (hookspecs.optiplug_optimizers): one form of params. A value
            # holding no array, tensor or model is left to the builder to refuse in its words.
            if holds_params(runtime["params"]):
                runtime["params"] = normalize_params(runtime["params"], backend)
        obj = builder(spec, **runtime)
        self._after_build(technique, spec, backend, obj)
        return obj

    def _require_backend(self, name: str) -> None:
        backend = self._loaded().backends.get(name)
        if backend is not None and not backend.available():
            extra = f"pip install 'optiplug[{name}]'" if name == "torch" else \
                f"install {backend.module!r}"
            raise PluginError(f"backend {name!r} needs the {backend.module!r} package, which is "
                              f"not installed: {extra}", plugin=name)

    def _after_build(self, technique: Technique, spec: Spec, backend: str, obj: Any) -> None:
        hook = self.pm.hook
        if hook.optiplug_built.get_hookimpls():
            hook.optiplug_built(technique=technique, spec=spec, backend=backend, obj=obj)
        if technique.kind != "optimizer":
            return
        # Recorded in state dicts, so that one technique's state never loads into another's
        # even where both build the same optimizer class.
        with contextlib.suppress(AttributeError, TypeError):
            obj.optiplug_technique = technique.name
        # Checked once per optimizer: with no implementation nothing is attached to step().
        if hook.optiplug_before_step.get_hookimpls():
            def before(optimizer: Any, args: Any, kwargs: Any) -> None:
                hook.optiplug_before_step(optimizer=optimizer, backend=backend)
            obj.register_step_pre_hook(before)
        if hook.optiplug_after_step.get_hookimpls():
            def after(optimizer: Any, args: Any, kwargs: Any) -> None:
                hook.optiplug_after_step(optimizer=optimizer, backend=backend)
            obj.register_step_post_hook(after)

    # --------------------------------------------------------------------------- discovery
    def _loaded(self) -> _Loaded:
        state = self._state
        if state is not None:
            return state
        with self._lock:
            if self._state is None:
                if self._discovering:
                    # Only the discovering thread gets here (the lock is re-entrant): a plugin
                    # asked the registry for something while it was being imported.
                    raise PluginError("a plugin used the optiplug registry while plugins were "
                                      "being discovered (at import or in a contribution hook); "
                                      "look techniques up in builders, not at import time")
                self._discovering = True
                try:
                    self._state = self._discover()
                finally:
                    self._discovering = False
            return self._state

    def _discover(self) -> _Loaded:
        from . import backends as builtin_backends

        state = _Loaded()
        essential = PluginInfo(plugin="optiplug.backends", distribution="optiplug",
                               version=_version_of("optiplug"), module=builtin_backends.__name__)
        if not self.pm.is_registered(builtin_backends):
            self.pm.register(builtin_backends, name=essential.plugin)
        self._commit(state, self._contributions(builtin_backends, essential))
        state.plugins[essential.plugin] = essential
        registered: list[Any] = [builtin_backends]
        try:
            for entry_point in self._selected_entry_points(state):
                plugin = self._load_entry_point(entry_point, state)
                if plugin is not None:
                    registered.append(plugin)
            self._check_builders(state)
            state.distributions.clear()
        except BaseException:
            for plugin in registered:
                if self.pm.is_registered(plugin):
                    self.pm.unregister(plugin)
            raise
        return state

    def _check_builders(self, state: _Loaded) -> None:
        """Record techniques whose builders name a backend no plugin provides as broken.

        Checked after every plugin is loaded, since a backend may come from a later plugin. A
        misspelt backend (``"pytorch"``) would otherwise be silently never used.
        """
        for key, entries in list(state.techniques.items()):
            kept = []
            for technique in entries:
                unknown = sorted(set(technique.builders) - set(state.backends))
                origin = technique.origin
                if not unknown or origin is None or origin.distribution is None:
                    kept.append(technique)
                    continue
                error = TypeError(
                    f"{technique.kind} {technique.name!r} has builders for "
                    f"{', '.join(map(repr, unknown))}, which no plugin provides as a backend "
                    f"(backends: {', '.join(sorted(state.backends))})")
                record = BrokenPlugin(plugin=origin.plugin, distribution=origin.distribution,
                                      version=origin.version,
                                      phase=f"optiplug_{technique.kind}s",
                                      error=_describe_exception(error), exception=error)
                if self.strict:
                    raise PluginError(record.describe(), plugin=origin.plugin,
                                      distribution=origin.distribution) from error
                state.broken.append(record)
            if kept:
                state.techniques[key] = kept
            else:
                del state.techniques[key]

    def _selected_entry_points(self, state: _Loaded) -> list[metadata.EntryPoint]:
        from importlib import metadata  # lazily: it costs ~10 ms, paid at discovery only

        seen: set[tuple[str, str]] = set()
        found: list[metadata.EntryPoint] = []
        for entry_point in metadata.entry_points(group=self.group):
            dist = _distribution(entry_point, state)[0] or ""
            key = (_normalize(dist), entry_point.name)
            if key not in seen:
                seen.add(key)
                found.append(entry_point)
        state.entry_point_names = {ep.name for ep in found}

        def matches(pattern: str, ep: metadata.EntryPoint) -> bool:
            dist = _distribution(ep, state)[0] or ""
            if ":" in pattern:
                # distribution:entry point, both parts patterns.
                dist_pattern, _, ep_pattern = pattern.partition(":")
                return (bool(dist) and fnmatch.fnmatchcase(_normalize(dist),
                                                           _normalize(dist_pattern))
                        and fnmatch.fnmatchcase(ep.name, ep_pattern.strip()))
            # Distribution names compare normalized (PEP 503), patterns included.
            return (fnmatch.fnmatchcase(ep.name, pattern)
                    or (bool(dist) and fnmatch.fnmatchcase(_normalize(dist),
                                                           _normalize(pattern))))

        autoload = self._autoload
        if autoload is None:
            autoload = os.environ.get("OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in _TRUE
        allowed = _split(os.environ.get("OPTIPLUG_PLUGINS"))
        denied = _split(os.environ.get("OPTIPLUG_DISABLED_PLUGINS"))
        for variable, names in (("OPTIPLUG_PLUGINS", allowed),
                                ("OPTIPLUG_DISABLED_PLUGINS", denied)):
            for pattern in names:
                if not any(matches(pattern, ep) for ep in found):
                    warnings.warn(f"{variable} names {pattern!r}, which matches no entry point "
                                  f"or distribution in group {self.group!r}",
                                  OptiplugWarning, stacklevel=4)
        selected = []
        for ep in found:
            if (allowed or not autoload) and not any(matches(p, ep) for p in allowed):
                continue
            if any(matches(p, ep) for p in denied):
                continue
            selected.append(ep)
        return selected

    def _load_entry_point(self, entry_point: metadata.EntryPoint, state: _Loaded) -> Any:
        dist, version = _distribution(entry_point, state)
        info = PluginInfo(plugin=entry_point.name, distribution=dist, version=version,
                          module=entry_point.value)
        phase = "import"
        plugin: Any = None
        try:
            plugin = entry_point.load()
            phase = "register"
            if self.pm.is_registered(plugin):
                return None
            plugin_name = entry_point.name
            if self.pm.get_plugin(plugin_name) is not None:
                plugin_name = f"{dist}:{entry_point.name}"
            self.pm.register(plugin, name=plugin_name)
            self._validate_hooks(plugin)
            phase = "hooks"
            contributed = self._contributions(plugin, info)
        except (Exception, SystemExit) as exc:
            # SystemExit too: a plugin calling sys.exit() at import must not end the program.
            if plugin is not None and self.pm.is_registered(plugin):
                self.pm.unregister(plugin)
            record = BrokenPlugin(plugin=entry_point.name, distribution=dist, version=version,
                                  phase=getattr(exc, "_optiplug_phase", phase),
                                  error=_describe_exception(exc), exception=exc)
            if self.strict:
                raise PluginError(record.describe(), plugin=entry_point.name,
                                  distribution=dist) from exc
            state.broken.append(record)
            return None
        self._commit(state, contributed)
        state.plugins[info.plugin] = info
        return plugin

    def _validate_hooks(self, plugin: Any) -> None:
        for caller in self.pm.get_hookcallers(plugin) or ():
            if not caller.has_spec():
                known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("optiplug_")))
                raise TypeError(f"unknown hook {caller.name!r}; the hooks are: {known}")

    def _contributions(self, plugin: Any, info: PluginInfo) -> list[Technique | Backend]:
        contributed: list[Technique | Backend] = []
        hooks: Iterable[tuple[str, str | None]] = (*_CONTRIBUTION_HOOKS,
                                                   ("optiplug_backends", None))
        for hook_name, kind in hooks:
            caller = getattr(self.pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    result = impl.function()
                    contributed.extend(_checked(result, hook_name, kind, info))
                except (Exception, SystemExit) as exc:
                    exc._optiplug_phase = hook_name  # type: ignore[union-attr]
                    raise
        return contributed

    @staticmethod
    def _commit(state: _Loaded, items: Iterable[Technique | Backend],
                replace_existing: bool = False) -> None:
        for item in items:
            if isinstance(item, Backend):
                state.backends[item.name] = item
            elif replace_existing:
                state.techniques[(item.kind, item.name)] = [item]
            else:
                state.techniques.setdefault((item.kind, item.name), []).append(item)

    # ------------------------------------------------------------------------------ errors
    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ConfigError([ConfigIssue("kind", _unknown_message("kind", kind, KINDS))])

    def _unknown(self, state: _Loaded, kind: str, name: str) -> Exception:
        hint = f"{kind}.{name}"
        for record in state.broken:
            if record.plugin == hint:
                return PluginError(f"{kind} {name!r} is unavailable: {record.describe()}",
                                   plugin=record.plugin, distribution=record.distribution)
        message = _unknown_message(kind, name, [n for (k, n) in state.techniques if k == kind])
        if hint in state.entry_point_names:
            message += (f" (entry point {hint!r} is installed but disabled by "
                        f"OPTIPLUG_PLUGINS / OPTIPLUG_DISABLED_PLUGINS)")
        return ConfigError([ConfigIssue("name", message)])

    def _choose(self, kind: str, name: str, entries: list[Technique]) -> Technique:
        preferred = self._preferences.get((kind, name))
        if preferred is None:
            for item in _split(os.environ.get("OPTIPLUG_PREFER")):
                key, _, provider = item.partition("=")
                if key.strip() == f"{kind}.{name}":
                    preferred = provider.strip()
        if preferred is not None:
            for technique in entries:
                origin = technique.origin
                if origin and (origin.plugin == preferred or (
                        origin.distribution
                        and _normalize(origin.distribution) == _normalize(preferred))):
                    return technique
        conflict = Conflict(kind, name, tuple(entries))
        raise PluginError(conflict.describe(), plugin=", ".join(
            t.origin.plugin for t in entries if t.origin))


def _unknown_message(what: str, name: object, known: Iterable[str]) -> str:
    import difflib

    known = sorted(set(known))
    shown = repr(name)
    if len(shown) > 80:  # a pasted blob must still give one readable line
        shown = shown[:77] + "..."
    message = f"unknown {what} {shown}"
    close = difflib.get_close_matches(str(name)[:100], known, n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    if known:
        message += f"{'' if close else '.'} Known: {', '.join(known)}"
    else:
        message += " (none is installed)"
    return message


def _checked(result: Any, hook_name: str, kind: str | None,
             info: PluginInfo) -> list[Technique | Backend]:
    expected: type[Technique] | type[Backend] = Backend if kind is None else Technique
    if not isinstance(result, (list, tuple)):
        raise TypeError(f"{hook_name} must return a list of {expected.__name__}, "
                        f"got {type(result).__name__}")
    checked: list[Technique | Backend] = []
    for item in result:
        if not isinstance(item, expected):
            raise TypeError(f"{hook_name} must return a list of {expected.__name__}, "
                            f"got an item of type {type(item).__name__}")
        if isinstance(item, Technique) and item.kind != kind:
            raise TypeError(f"{hook_name} returned {item.kind} {item.name!r}; "
                            f"it may only return {kind}s")
        checked.append(replace(item, origin=info))
    return checked


def _distribution(entry_point: metadata.EntryPoint, state: _Loaded
                  ) -> tuple[str | None, str | None]:
    """The name and version of the distribution that installed ``entry_point`` (read once)."""
    dist = entry_point.dist
    if dist is None:
        return None, None
    known = state.distributions.get(dist)
    if known is None:
        fields = dist.metadata  # one parse for both fields
        known = state.distributions[dist] = (fields["Name"], fields["Version"])
    return known


def _version_of(distribution: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


_default: Registry | None = None
_default_lock = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry that ``optiplug.build`` and the CLI use."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = Registry()
    return _default


