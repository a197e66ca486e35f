"""Configs: files to mappings, mappings to validated specs, specs to live objects, JSON Schema.

A technique config is a mapping with ``kind``, ``name`` and hyperparameters::

    {"kind": "optimizer", "name": "adam", "lr": 0.001, "betas": [0.9, 0.999]}

Under a key that names a kind (``optimizer: {name: adam}``) ``kind`` may be left out. Nothing
in a config is imported, called or evaluated: a name can only select a registered technique,
YAML is read with a safe loader that refuses duplicate keys, and every bad value is reported
with its path in one :class:`~optiplug.ConfigError`.
"""

from __future__ import annotations

import functools
import os
import reprlib
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from .errors import ConfigError, ConfigIssue
from .registry import Registry, default_registry
from .specs import KINDS, Spec, describe_fields

__all__ = ["Built", "apply_overrides", "build", "json_schema", "load_config", "parse_yaml_value",
           "plain_config", "to_spec", "validate_config", "yaml_dumper", "yaml_loader"]

CONFIG_SUFFIXES: Final = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}
MAX_CONFIG_BYTES: Final = 1024 * 1024
"""Largest config file read. Configs are kilobytes; PyYAML's safe loader parses about
a megabyte in a few seconds, so this also bounds how long loading can take."""
MAX_CONFIG_DEPTH: Final = 32
"""Deepest nesting of mappings and lists a config may have."""
MAX_CONFIG_VALUES: Final = 1_000_000
"""Most values a config may hold once YAML aliases are expanded (stops "billion laughs")."""



def _bounded_repr() -> reprlib.Repr:
    shown = reprlib.Repr()
    shown.maxlevel = 3
    shown.maxtuple = shown.maxlist = shown.maxarray = shown.maxdict = 4
    shown.maxset = shown.maxfrozenset = shown.maxdeque = 4
    shown.maxstring, shown.maxlong, shown.maxother = 60, 40, 60
    return shown


_REPR: Final = _bounded_repr()


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file into a dict, safely.

    Raises:
        ConfigError: unreadable, too large, malformed, duplicate keys, or not a mapping.
    """
    file = Path(path)
    source = str(file)
    fmt = CONFIG_SUFFIXES.get(file.suffix.lower())
    if fmt is None:
        raise ConfigError(f"unsupported config file type {file.suffix!r}; use one of "
                          f"{', '.join(sorted(CONFIG_SUFFIXES))}", source=source)
    try:
        status = file.stat()
        # A FIFO or device would block or never end: only regular files are read.
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError("not a regular file", source=source)
        if status.st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"file is {status.st_size} bytes; a config may be at most "
                              f"{MAX_CONFIG_BYTES} bytes", source=source)
        with file.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"file is larger than {MAX_CONFIG_BYTES} bytes, the most a "
                              f"config may be", source=source)
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", source=source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"file is not UTF-8 (byte {exc.start})", source=source) from None
    data = _parse(text, fmt, source)
    if not isinstance(data, dict):
        raise ConfigError(f"the top level must be a mapping, got {type(data).__name__}",
                          source=source)
    _check_shape(data, source)
    return data


def _check_shape(config: Any, source: str | None) -> None:
    """Reject configs nested too deeply, cyclic, or too large before anything recurses on them.

    Iterative, so a hostile config cannot exhaust the stack here; validation and error messages
    that recurse afterwards only ever see bounded configs.
    """
    stack: list[tuple[Any, str, int]] = [(config, "", 0)]
    count = 0
    while stack:
        value, path, depth = stack.pop()
        count += 1
        if count > MAX_CONFIG_VALUES:
            raise ConfigError([ConfigIssue(path, f"config holds more than {MAX_CONFIG_VALUES} "
                                                 f"values (expanded YAML aliases?)")],
                              source=source)
        children: Any
        if isinstance(value, Mapping):
            children = value.items()
        elif isinstance(value, (list, tuple)):
            children = enumerate(value)
        else:
            continue
        if depth >= MAX_CONFIG_DEPTH:
            raise ConfigError([ConfigIssue(path, f"nested more than {MAX_CONFIG_DEPTH} levels "
                                                 f"deep (or refers to itself)")], source=source)
        for key, child in children:
            name = _short_key(key) if isinstance(key, (str, int)) else _short(key)
            stack.append((child, f"{path}.{name}" if path else name, depth + 1))


def _short_key(key: object, limit: int = 80) -> str:
    """A path component: ``str(key)`` cut to ``limit`` characters (a pasted blob as a key)."""
    text = key if isinstance(key, str) else str(key)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _short(value: object, limit: int = 60) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` characters, never the full ``repr`` of a
    large value (a long string, a big list): one bad value gives one readable line."""
    try:
        shown = _REPR.repr(value)
    except RecursionError:
        shown = f"<deeply nested {type(value).__name__}>"
    except Exception:  # a user object whose __repr__ fails
        shown = f"<{type(value).__name__}>"
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _parse(text: str, fmt: str, source: str) -> Any:
    if fmt == "toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"malformed TOML: {_cut(str(exc))}", source=source) from None
        except ValueError as exc:  # integers beyond Python's digit limit
            raise ConfigError(f"malformed TOML: {_cut(str(exc))}", source=source) from None
        except RecursionError:
            raise ConfigError("malformed TOML: nested too deeply", source=source) from None
    if fmt == "json":
        import json

        try:
            return json.loads(text, object_pairs_hook=_unique_pairs,
                              parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"malformed JSON: {_cut(str(exc))}", source=source) from None
        except ValueError as exc:
            raise ConfigError(_cut(str(exc)), source=source) from None
        except RecursionError:
            raise ConfigError("malformed JSON: nested too deeply", source=source) from None
    return _load_yaml(text, source)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {_short(key)}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# ------------------------------------------------------------------------------------- YAML
# YAML 1.2 core schema for plain scalars: PyYAML follows YAML 1.1, where `1e-3` (no dot) and
# `5E-4` are strings and `yes`/`on` are booleans. People write numbers as Python and JSON do.
_DIGITS: Final = r"[0-9](?:_?[0-9])*"
_YAML_INT: Final = (rf"^(?:[-+]?{_DIGITS}|[-+]?0x[0-9a-fA-F](?:_?[0-9a-fA-F])*"
                    rf"|[-+]?0o[0-7](?:_?[0-7])*|[-+]?0b[01](?:_?[01])*)$")
_YAML_FLOAT: Final = (rf"^(?:[-+]?(?:{_DIGITS}\.(?:{_DIGITS})?|\.{_DIGITS}|{_DIGITS})"
                      rf"(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")
_YAML_BOOL: Final = r"^(?:true|True|TRUE|false|False|FALSE)$"
MAX_EXPANDED_CHARS: Final = 4 * MAX_CONFIG_BYTES
"""Most characters of scalar text a YAML config may hold once its aliases are expanded."""


@functools.cache
def yaml_loader() -> type[Any]:
    """The YAML loader of every config: PyYAML's ``SafeLoader`` with YAML 1.2 core scalars.

    Plain (unquoted) scalars resolve as YAML 1.2 and Python write them: ``1e-3``, ``5E-4``,
    ``.5``, ``1_000``, ``+1e3`` and ``-2.5e-4`` are numbers; only ``true``/``false`` are
    booleans (``yes``, ``on`` stay strings); quoted scalars are always strings. Duplicate keys
    are refused. Nothing is constructed but plain data.
    """
    import yaml

    # libyaml's parser when PyYAML has it (about ten times faster; nesting bounded in C).
    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class ConfigLoader(base):  # type: ignore[valid-type,misc]
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                except TypeError:
                    duplicate = False
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {_short(key)}", key_node.start_mark)
                seen.add(key) if _hashable(key) else None
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            return mapping

        def construct_yaml_int(self, node: Any) -> int:
            text = str(self.construct_scalar(node)).replace("_", "")
            sign = -1 if text.startswith("-") else 1
            text = text.lstrip("+-")
            for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
                if text.startswith(prefix):
                    return sign * int(text[2:], base)
            return sign * int(text, 10)

        def construct_yaml_float(self, node: Any) -> float:
            text = str(self.construct_scalar(node)).lower()
            if text.endswith((".inf", ".nan")):
                return float(text.replace(".", ""))
            return float(text)

    _use_yaml_1_2_scalars(ConfigLoader, base)
    ConfigLoader.add_constructor("tag:yaml.org,2002:int", ConfigLoader.construct_yaml_int)
    ConfigLoader.add_constructor("tag:yaml.org,2002:float", ConfigLoader.construct_yaml_float)
    return ConfigLoader


@functools.cache
def yaml_dumper() -> type[Any]:
    """PyYAML's ``SafeDumper`` that quotes exactly the strings :func:`yaml_loader` would read
    as something else (``"1e-3"``), so every file optiplug writes reads back the same."""
    import yaml

    class ConfigDumper(yaml.SafeDumper):
        pass

    _use_yaml_1_2_scalars(ConfigDumper, yaml.SafeDumper)
    return ConfigDumper


def _use_yaml_1_2_scalars(cls: Any, base: Any) -> None:
    import re

    replaced = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    cls.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag not in replaced]
        for first, resolvers in base.yaml_implicit_resolvers.items()}
    cls.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(_YAML_BOOL), list("tTfF"))
    cls.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(_YAML_INT),
                              list("-+0123456789"))
    cls.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(_YAML_FLOAT),
                              list("-+0123456789."))


def parse_yaml_value(text: str) -> Any:
    """One YAML value (a command-line override, a ``--vary`` setting) by the config rules.

    Raises:
        ConfigError: malformed YAML (the message quotes at most a short excerpt).
    """
    return _load_yaml(text, None)


def _load_yaml(text: str, source: str | None) -> Any:
    import yaml

    loader = None
    try:
        loader = yaml_loader()(text)
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, source)
        return loader.construct_document(node)
    except ConfigError:
        raise
    except yaml.MarkedYAMLError as exc:
        if "maximum nesting depth" in str(exc.problem):
            raise ConfigError("malformed YAML: nested too deeply", source=source) from None
        raise ConfigError(f"malformed YAML{_yaml_position(exc)}", source=source) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {_cut(str(exc))}", source=source) from None
    except (ValueError, OverflowError) as exc:  # a huge integer, an impossible date
        raise ConfigError(f"malformed YAML: {_cut(str(exc))}", source=source) from None
    except RecursionError:
        raise ConfigError("malformed YAML: nested too deeply", source=source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_position(exc: Any) -> str:
    """Where and what, without the source line PyYAML would quote (it may be a secret)."""
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    what = " ".join(_quoted_excerpts(part) for part in (exc.context, exc.problem) if part)
    near = ""
    if mark is not None and mark.buffer is not None and 0 <= mark.pointer < len(mark.buffer):
        token = str(mark.buffer[mark.pointer:mark.pointer + 40]).split()
        if token:
            shown = token[0].rstrip("\x00")
            near = f" near {(shown if len(shown) <= 10 else shown[:7] + '...')!r}"
    return f"{where}: {_cut(what) or 'cannot parse'}{near}"


def _quoted_excerpts(text: str, limit: int = 10) -> str:
    """``text`` with every quoted token (an alias, a tag, a key) cut to ``limit`` characters."""
    import re

    def cut(match: re.Match[str]) -> str:
        token = match.group(2).removeprefix("tag:yaml.org,2002:")
        shown = token if len(token) <= limit else token[:limit - 3] + "..."
        return f"{match.group(1)}{shown}{match.group(1)}"

    return re.sub(r"(['\"])([^'\"]*)\1", cut, text[:1000])


def _cut(text: str, limit: int = 120) -> str:
    """One line of at most ``limit`` characters."""
    line = " ".join(text[:limit * 4].split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _check_expanded_size(root: Any, source: str | None) -> None:
    """Refuse a YAML node graph whose aliases expand past the value or character limits.

    Sizes are summed over the graph with each node computed once, so the check costs the size
    of the file, not of its expansion ("billion laughs" and aliases to one long string alike).
    """
    import yaml

    sizes: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finish = stack.pop()
        key = id(node)
        if finish:
            open_nodes.discard(key)
            if isinstance(node, yaml.ScalarNode):
                count, chars = 1, len(node.value)
            else:
                children = [c for pair in node.value for c in pair] \
                    if isinstance(node, yaml.MappingNode) else node.value
                # A child still open is a recursive alias: the depth check reports it later.
                count = 1 + sum(sizes.get(id(child), (1, 0))[0] for child in children)
                chars = sum(sizes.get(id(child), (1, 0))[1] for child in children)
            if count > MAX_CONFIG_VALUES:
                raise ConfigError(f"config holds more than {MAX_CONFIG_VALUES} values once its "
                                  f"YAML aliases are expanded", source=source)
            if chars > MAX_EXPANDED_CHARS:
                raise ConfigError(f"config holds more than {MAX_EXPANDED_CHARS} characters once "
                                  f"its YAML aliases are expanded", source=source)
            sizes[key] = (count, chars)
            continue
        if key in sizes or key in open_nodes:
            continue
        open_nodes.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack.extend((child, False) for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, False) for child in node.value)


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def to_spec(config: Spec | Mapping[str, Any] | str | os.PathLike[str], *,
            kind: str | None = None, registry: Registry | None = None) -> Spec:
    """Validate a technique config into its frozen spec.

    Args:
        config: A spec (returned as is), a mapping, or a path to a YAML, TOML or JSON file.
        kind: The kind implied by where the config sits; ``kind`` in the mapping must agree.
        registry: Defaults to the process-wide registry.

    Raises:
        ConfigError: with every offending path.
    """
    if isinstance(config, Spec):
        if kind is not None and config.kind != kind:
            raise ConfigError([ConfigIssue("kind", f"expected a {kind}, got a {config.kind}")])
        return config
    source = None
    config = plain_config(config)
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        config = load_config(config)
        if kind is None and "name" not in config and len(config) == 1:
            (only_key, only_value), = config.items()
            if only_key in KINDS and isinstance(only_value, Mapping):
                kind, config = only_key, only_value
    if not isinstance(config, Mapping):
        raise ConfigError(f"a technique config must be a mapping with 'kind' and 'name', got "
                          f"{type(config).__name__}", source=source)
    _check_shape(config, source)
    registry = registry or default_registry()
    issues: list[ConfigIssue] = []
    config_kind = config.get("kind", kind)
    if config_kind is None:
        issues.append(ConfigIssue("kind", f"missing; one of: {', '.join(KINDS)}"))
    elif not isinstance(config_kind, str) or config_kind not in KINDS:
        # Type checked before comparing: an array's == is not a bool.
        issues.append(ConfigIssue("kind", f"unknown kind {_short(config_kind)}; one of: "
                                          f"{', '.join(KINDS)}"))
    elif kind is not None and config_kind != kind:
        issues.append(ConfigIssue("kind", f"{_short(config_kind)} given where a {kind} is "
                                          f"expected"))
    name = config.get("name")
    if name is None:
        issues.append(ConfigIssue("name", "missing: which technique to use"))
    elif not isinstance(name, str):
        issues.append(ConfigIssue("name", f"must be a string, got {type(name).__name__}"))
    if issues:
        raise ConfigError(issues, source=source)
    assert isinstance(config_kind, str) and isinstance(name, str)
    try:
        technique = registry.get(config_kind, name)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=source) from None
    data = dict(config)
    data["kind"] = config_kind
    try:
        return technique.spec.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_issues_from(exc, technique.spec), source=source) from None


def _issues_from(exc: ValidationError, model: type[Any] | None = None) -> list[ConfigIssue]:
    """One issue per pydantic error: its path, a short message, at most a short excerpt of the
    bad value, and for an unknown key the closest known one (``model`` gives the fields)."""
    issues = []
    for error in exc.errors(include_url=False):
        path = ".".join(_short_key(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (not a hyperparameter of this technique)"
            message += suggest_key(model, error["loc"])
        elif "input" in error and error["type"] not in ("missing",):
            message = f"{message.removeprefix('Value error, ')} (got {_short(error['input'])})"
        issues.append(ConfigIssue(path, message))
    return issues


def suggest_key(model: type[Any] | None, loc: tuple[int | str, ...]) -> str:
    """``"; did you mean 'weight_decay'?"`` for the unknown key at ``loc`` of ``model``, or ``""``.

    Walks ``loc`` through the fields of ``model`` (nested models, tuples and lists of them) to
    the model that owns the unknown key, and suggests its closest field name.
    """
    import difflib
    import typing

    from pydantic import BaseModel

    if model is None or not loc:
        return ""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return ""
        annotation = fields[part].annotation
        candidates = [annotation, *typing.get_args(annotation)]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        for candidate in candidates:
            nested.extend(c for c in typing.get_args(candidate)
                          if isinstance(c, type) and issubclass(c, BaseModel))
        if not nested:
            return ""
        current = nested[0]
    fields = getattr(current, "model_fields", None) or {}
    names = [name for name in fields if name not in ("kind", "name")]
    key = loc[-1]
    if not isinstance(key, str) or not names:
        return ""
    close = difflib.get_close_matches(key[:100], names, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True, slots=True)
class Built:
    """What :func:`build` returns for a sectioned config (``optimizer:`` and ``scheduler:``).

    Attributes:
        optimizer: The optimizer, built over the ``params`` given to :func:`build`.
        scheduler: The learning-rate scheduler driving :attr:`optimizer`, or ``None`` when the
            config has no ``scheduler`` section.
        specs: Every validated spec of the document, in document order (sections that need
            more than the optimizer, such as ``initializer`` or ``activation``, are validated
            and given here; build them with :func:`optiplug.initializer` and friends).
    """

    optimizer: Any
    scheduler: Any | None
    specs: tuple[Spec, ...]

    def spec(self, kind: str) -> Spec | None:
        """The spec of the ``kind`` section, or ``None`` when there is none."""
        return next((spec for spec in self.specs if spec.kind == kind), None)


def build(config: Spec | Mapping[str, Any] | str | os.PathLike[str], /, *,
          backend: str | None = None, registry: Registry | None = None,
          **runtime: Any) -> Any:
    """Validate a config and build its live objects.

    A config holding one technique (a spec, ``{"kind": "optimizer", "name": "adam", ...}``, or a
    file with one section such as ``optimizer: {...}``) builds that technique. A config with
    several sections (``optimizer:`` and ``scheduler:``, say) builds the optimizer over
    ``params`` and the scheduler on that optimizer, and returns them as one :class:`Built`.

    Args:
        config: A spec, a mapping (an OmegaConf ``DictConfig`` too: interpolations resolved),
            or a path to a YAML, TOML or JSON file.
        backend: ``"numpy"``, ``"torch"`` or another registered backend; by default detected
            from the runtime values, else NumPy.
        registry: Defaults to the process-wide registry.
        **runtime: What the builder needs besides hyperparameters: ``params`` for an optimizer
            (anything :func:`optiplug.optimizer` takes, a :func:`optiplug.param_groups` result
            too), ``optimizer`` for a scheduler, layer sizes for a normalizer.

    Returns:
        The object the technique's builder returns for that backend, or a :class:`Built`.

    Raises:
        ConfigError: the config is invalid (every bad path listed), names no technique, or a
            runtime keyword is one the technique's builder does not take.
        PluginError: the technique's plugin is broken or in conflict, or the backend's library
            is missing.
    """
    registry = registry or default_registry()
    source = None
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        config = load_config(config)
    config = plain_config(config)
    runtime = _runtime_arguments(runtime)
    section = ""
    if isinstance(config, Mapping) and "name" not in config and "kind" not in config:
        if len(config) > 1:
            return _build_sections(config, source, backend, registry, runtime)
        if len(config) == 1:
            (key, value), = config.items()
            if key in KINDS and isinstance(value, Mapping):
                section, config = key, value
    try:
        spec = to_spec(config, kind=section or None, registry=registry)
    except ConfigError as exc:
        raise ConfigError(exc.prefixed(section).issues, source=source or exc.source) from None
    _check_runtime(spec, backend, registry, runtime)
    return registry.build(spec, backend=backend, **runtime)


def _runtime_arguments(runtime: dict[str, Any]) -> dict[str, Any]:
    from .param_groups import ParamGroups

    params = runtime.get("params")
    if isinstance(params, ParamGroups):  # param_groups(...) as it is: its groups are the params
        runtime = {**runtime, "params": params.groups}
    return runtime


def _check_runtime(spec: Spec, backend: str | None, registry: Registry,
                   runtime: Mapping[str, Any]) -> None:
    """A ConfigError naming any runtime keyword the builders do not take, or a missing one."""
    technique = registry.get(spec.kind, spec.name)
    builders = [technique.builders[backend]] if backend is not None and \
        backend in technique.builders else list(technique.builders.values())
    accepted: set[str] = set()
    required: set[str] | None = None
    for builder in builders:
        signature = _builder_keywords(builder)
        if signature is None:
            return
        names, needed = signature
        accepted |= names
        required = set(needed) if required is None else required & needed
    if accepted.issuperset(runtime) and (required is None or required.issubset(runtime)):
        return
    takes = ", ".join(sorted(accepted | {"backend", "registry"}))
    issues = [ConfigIssue(_short_key(key), f"build() got an unknown keyword {_short_key(key)!r} "
                                           f"for {spec.kind} {spec.name!r}; it takes: {takes}")
              for key in runtime if key not in accepted]
    issues += [ConfigIssue(key, f"{spec.kind} {spec.name!r} needs {key}=... to be built")
               for key in sorted(required or ()) if key not in runtime]
    if issues:
        raise ConfigError(issues)


@functools.lru_cache(maxsize=1024)
def _builder_keywords(builder: Any) -> tuple[frozenset[str], frozenset[str]] | None:
    """The keywords a builder takes after the spec, and those it requires; ``None`` when it
    takes any (``**kwargs``) or has no readable signature. Cached: read once per builder."""
    import inspect

    try:
        parameters = list(inspect.signature(builder).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    names = frozenset(p.name for p in parameters if p.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY))
    needed = frozenset(p.name for p in parameters
                       if p.default is inspect.Parameter.empty and p.name in names)
    return names, needed


def _build_sections(config: Mapping[str, Any], source: str | None, backend: str | None,
                    registry: Registry, runtime: dict[str, Any]) -> Built:
    try:
        specs = validate_config(config, registry=registry)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=source) from None
    issues: list[ConfigIssue] = []
    for kind in ("optimizer", "scheduler"):
        value = config.get(kind)
        if isinstance(value, list):
            issues.append(ConfigIssue(kind, f"build() makes one {kind}; this section lists "
                                             f"{len(value)}"))
    if "optimizer" not in config:
        issues.append(ConfigIssue("optimizer", "missing: a sectioned config builds an optimizer "
                                               "(and its scheduler); add an optimizer section"))
    unknown = sorted(set(runtime) - {"params"})
    if unknown:
        issues.append(ConfigIssue(_short_key(unknown[0]), (
            f"build() got an unknown keyword {_short_key(unknown[0])!r} for a sectioned config; "
            f"it takes: backend, params, registry")))
    elif "params" not in runtime:
        issues.append(ConfigIssue("params", "build() needs params=... to build the optimizer"))
    if issues:
        raise ConfigError(issues, source=source)
    optimizer_spec = next(spec for spec in specs if spec.kind == "optimizer")
    scheduler_spec = next((spec for spec in specs if spec.kind == "scheduler"), None)
    try:
        optimizer = registry.build(optimizer_spec, backend=backend, params=runtime["params"])
        scheduler = None if scheduler_spec is None else registry.build(
            scheduler_spec, optimizer=optimizer)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=source or exc.source) from None
    return Built(optimizer=optimizer, scheduler=scheduler, specs=tuple(specs))


def plain_config(config: Any) -> Any:
    """An OmegaConf ``DictConfig``/``ListConfig`` as plain containers (interpolations resolved);
    anything else unchanged. OmegaConf is recognised by its module, never imported here.

    Raises:
        ConfigError: an interpolation cannot be resolved or a mandatory value is missing.
    """
    kind = type(config)
    if not (kind.__module__.startswith("omegaconf") and kind.__name__ in ("DictConfig",
                                                                           "ListConfig")):
        return config
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        plain = OmegaConf.to_container(config, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        path = str(getattr(exc, "full_key", "") or "")
        message = _cut(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise ConfigError([ConfigIssue(path, message)]) from None
    # `build(cfg.optimizer)`: a node under a key named after a kind has that kind.
    key = getattr(config, "_key", lambda: None)()
    if isinstance(plain, dict) and "name" in plain and "kind" not in plain and key in KINDS:
        plain = {"kind": key, **plain}
    return plain


def apply_overrides(config: Mapping[str, Any], overrides: Sequence[str], *,
                    source: str | None = None) -> dict[str, Any]:
    """``config`` with command-line overrides applied: ``optimizer.lr=3e-4 train.epochs=5``.

    Each override is ``dotted.path=value``: keys of mappings (created when missing) and indices
    of lists (``model.layers.0.units=64``); the value is read as YAML by the config rules
    (``3e-4`` is a number, ``[0.9, 0.99]`` a list, ``null`` none, ``adam`` a string). The result
    is a new mapping; ``config`` is not changed. Validate it as the file would be.

    Raises:
        ConfigError: a malformed override, or a path through a value that is not a mapping or
            list (every bad override listed, by its path).
    """
    import copy

    result: dict[str, Any] = copy.deepcopy(dict(config))
    issues: list[ConfigIssue] = []
    for override in overrides:
        dotted, sep, text = override.partition("=")
        dotted = dotted.strip()
        parts = dotted.split(".")
        if not sep or not dotted or not all(parts):
            issues.append(ConfigIssue("", f"override {_short(override)}: expected "
                                          f"dotted.path=value, e.g. optimizer.lr=3e-4"))
            continue
        try:
            value = parse_yaml_value(text)
        except ConfigError as exc:
            issues.append(ConfigIssue(dotted, exc.issues[0].message))
            continue
        problem = _set_path(result, parts, value)
        if problem:
            issues.append(ConfigIssue(dotted, problem))
    if issues:
        raise ConfigError(issues, source=source)
    return result


def _set_path(data: dict[str, Any], parts: list[str], value: Any) -> str | None:
    target: Any = data
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        where = ".".join(parts[:depth]) or "the top level"
        if isinstance(target, list):
            if not part.lstrip("-").isdigit():
                return f"{where} is a list: index it by number, not {part!r}"
            index = int(part)
            if not -len(target) <= index < len(target):
                return f"index {index} is out of range: {where} has {len(target)} items"
            if last:
                target[index] = value
                return None
            target = target[index]
        elif isinstance(target, dict):
            if last:
                target[part] = value
                return None
            if target.get(part) is None:
                target[part] = {}
            target = target[part]
        else:
            return (f"{where} is {_short(target)}, not a mapping; set {where}=... as a whole "
                    f"or write it as a mapping in the file")
    return None


def validate_config(config: Mapping[str, Any] | str | os.PathLike[str], *,
                    registry: Registry | None = None) -> list[Spec]:
    """Validate a whole config document without building anything.

    A document is one technique config, a mapping whose keys are kinds (``optimizer: {...}``,
    ``scheduler: {...}``), each value a technique config or a list of them, or a training
    recipe (it has ``model``, ``data``, ``train`` or ``param_groups``: see
    :mod:`optiplug.training.recipe`). Every bad path is collected before raising.

    Returns:
        The validated specs, in document order.

    Raises:
        ConfigError: listing every bad path.
    """
    source = None
    config = plain_config(config)
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        config = load_config(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a mapping of sections or one technique, got "
                          f"{type(config).__name__}", source=source)
    _check_shape(config, source)
    if {"model", "data", "train", "param_groups"} & set(config):
        from .training.recipe import parse_recipe, technique_entries

        return [spec for _, spec in technique_entries(parse_recipe(config, source=source))]
    registry = registry or default_registry()
    if "name" in config or "kind" in config:
        try:
            return [to_spec(config, registry=registry)]
        except ConfigError as exc:
            raise ConfigError(exc.issues, source=source) from None
    specs: list[Spec] = []
    issues: list[ConfigIssue] = []
    if not config:
        issues.append(ConfigIssue("", "empty config: give a technique (kind, name) or sections "
                                      f"named after kinds ({', '.join(KINDS)})"))
    for key, value in config.items():
        if not isinstance(key, str) or key not in KINDS:
            issues.append(ConfigIssue(_short_key(key), _section_message(key)))
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            path = f"{key}.{index}" if isinstance(value, list) else str(key)
            try:
                specs.append(to_spec(item, kind=key, registry=registry))
            except ConfigError as exc:
                issues.extend(exc.prefixed(path).issues)
    if issues:
        raise ConfigError(issues, source=source)
    return specs


def _section_message(key: object) -> str:
    import difflib

    message = f"unknown section {_short(key)}"
    close = difflib.get_close_matches(str(key)[:100], KINDS, n=1)
    if close:
        message += f"; did you mean {close[0]!r}?"
    return message + f" Sections: {', '.join(KINDS)}"


def json_schema(kind: str | None = None, *, registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema for technique configs, for editors and external validation.

    Args:
        kind: Only this kind: the schema of one technique config of that kind (a union over its
            techniques, discriminated by ``name``). ``None``: a whole config document with one
            optional section per kind.

    Raises:
        ConfigError: unknown kind.
    """
    from typing import Annotated, Optional, Union

    from pydantic import Field, TypeAdapter, create_model

    registry = registry or default_registry()
    kinds = [kind] if kind is not None else list(KINDS)
    unions: dict[str, Any] = {}
    for k in kinds:
        spec_classes = sorted({t.spec for t in registry.techniques(k)},
                              key=lambda s: (s.__name__, s.__module__))
        if not spec_classes:
            continue
        for spec_class in spec_classes:
            describe_fields(spec_class)
        unions[k] = (spec_classes[0] if len(spec_classes) == 1 else
                     Annotated[Union[tuple(spec_classes)],  # noqa: UP007
                               Field(discriminator="name")])
    header = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
    if kind is not None:
        if kind not in unions:
            return {**header, "title": f"optiplug {kind}", "not": {},
                    "description": f"no {kind} is installed"}
        schema = TypeAdapter(unions[kind]).json_schema()
        return {**header, "title": f"optiplug {kind}", **schema}
    # One model for the whole document, so pydantic names every spec uniquely in $defs.
    fields: dict[str, Any] = {
        k: (Optional[union], Field(default=None,  # noqa: UP045
                                   description=f"One {k}: 'name' selects the technique."))
        for k, union in unions.items()}
    document = create_model("OptiplugConfig", **fields)
    schema = TypeAdapter(document).json_schema()
    schema["additionalProperties"] = True
    schema["title"] = "optiplug config"
    return {**header, **schema}
