"""Configs: files to mappings, mappings to validated specs, specs to live objects, JSON Schema.

A technique config is a mapping with ``kind``, ``name`` and hyperparameters::

    {"kind": "optimizer", "name": "adam", "lr": 0.001, "betas": [0.9, 0.999]}

Under a key that names a kind (``optimizer: {name: adam}``) ``kind`` may be left out. Nothing
in a config is imported, called or evaluated: a name can only select a registered technique,
YAML is read with a safe loader that refuses duplicate keys, and every bad value is reported
with its path in one :class:`~optiplug.ConfigError`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from .errors import ConfigError, ConfigIssue
from .registry import Registry, default_registry
from .specs import KINDS, Spec, describe_fields

__all__ = ["build", "json_schema", "load_config", "to_spec", "validate_config"]

CONFIG_SUFFIXES: Final = {".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json"}
MAX_CONFIG_BYTES: Final = 1024 * 1024
"""Largest config file read. Configs are kilobytes; PyYAML's safe loader parses about
a megabyte in a few seconds, so this also bounds how long loading can take."""
MAX_CONFIG_DEPTH: Final = 32
"""Deepest nesting of mappings and lists a config may have."""
MAX_CONFIG_VALUES: Final = 1_000_000
"""Most values a config may hold once YAML aliases are expanded (stops "billion laughs")."""


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
    """``repr(value)`` cut to ``limit`` characters, so one bad value gives one readable line."""
    try:
        shown = repr(value)
    except RecursionError:
        shown = f"<deeply nested {type(value).__name__}>"
    return shown if len(shown) <= limit else shown[:limit - 3] + "..."


def _parse(text: str, fmt: str, source: str) -> Any:
    if fmt == "toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"malformed TOML: {exc}", source=source) from None
        except ValueError as exc:  # integers beyond Python's digit limit
            raise ConfigError(f"malformed TOML: {exc}", source=source) from None
        except RecursionError:
            raise ConfigError("malformed TOML: nested too deeply", source=source) from None
    if fmt == "json":
        import json

        try:
            return json.loads(text, object_pairs_hook=_unique_pairs,
                              parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"malformed JSON: {exc}", source=source) from None
        except ValueError as exc:
            raise ConfigError(str(exc), source=source) from None
        except RecursionError:
            raise ConfigError("malformed JSON: nested too deeply", source=source) from None
    return _load_yaml(text, source)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _load_yaml(text: str, source: str) -> Any:
    import yaml

    class UniqueKeySafeLoader(yaml.SafeLoader):
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
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key) if _hashable(key) else None
            return super().construct_mapping(node, deep=deep)

    try:
        return yaml.load(text, Loader=UniqueKeySafeLoader)
    except yaml.YAMLError as exc:
        first_line = " ".join(str(exc).split())
        raise ConfigError(f"malformed YAML: {first_line}", source=source) from None
    except (ValueError, OverflowError) as exc:  # a huge integer, an impossible date
        raise ConfigError(f"malformed YAML: {' '.join(str(exc).split())}",
                          source=source) from None
    except RecursionError:
        raise ConfigError("malformed YAML: nested too deeply", source=source) from None


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
        raise ConfigError(_issues_from(exc), source=source) from None


def _issues_from(exc: ValidationError) -> list[ConfigIssue]:
    issues = []
    for error in exc.errors(include_url=False):
        path = ".".join(_short_key(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key (not a hyperparameter of this technique)"
        elif "input" in error and error["type"] not in ("missing",):
            shown = repr(error["input"])
            if len(shown) > 60:
                shown = shown[:57] + "..."
            message = f"{message} (got {shown})"
        issues.append(ConfigIssue(path, message))
    return issues


def build(config: Spec | Mapping[str, Any] | str | os.PathLike[str], /, *,
          backend: str | None = None, registry: Registry | None = None,
          **runtime: Any) -> Any:
    """Validate a technique config and build its live object.

    Args:
        config: A spec, a technique mapping (``{"kind": "optimizer", "name": "adam", ...}``), or
            a path to a YAML, TOML or JSON file holding one.
        backend: ``"numpy"``, ``"torch"`` or another registered backend; by default detected
            from the runtime values, else NumPy.
        registry: Defaults to the process-wide registry.
        **runtime: What the builder needs besides hyperparameters: ``params`` for an optimizer,
            ``optimizer`` for a scheduler, layer sizes for a normalizer.

    Returns:
        The object the technique's builder returns for that backend.

    Raises:
        ConfigError: the config is invalid (every bad path listed) or names no technique.
        PluginError: the technique's plugin is broken or in conflict, or the backend's library
            is missing.
    """
    registry = registry or default_registry()
    spec = to_spec(config, registry=registry)
    return registry.build(spec, backend=backend, **runtime)


def validate_config(config: Mapping[str, Any] | str | os.PathLike[str], *,
                    registry: Registry | None = None) -> list[Spec]:
    """Validate a whole config document without building anything.

    A document is either one technique config, or a mapping whose keys are kinds
    (``optimizer: {...}``, ``scheduler: {...}``), each value a technique config or a list of
    them. Every bad path is collected before raising.

    Returns:
        The validated specs, in document order.

    Raises:
        ConfigError: listing every bad path.
    """
    source = None
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        config = load_config(config)
    if not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a mapping of sections or one technique, got "
                          f"{type(config).__name__}", source=source)
    _check_shape(config, source)
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
