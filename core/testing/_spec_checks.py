"""Spec and schema checks: validation, strictness, round trips, JSON Schema."""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from ..config import _hashable
from ..registry import Registry, default_registry
from ..specs import Spec, describe_fields
from ..technique import Technique
from ._common import _fail, _registered
from ._examples import (
    example_spec,
)


# --------------------------------------------------------------------------------- spec
def _number_fields(spec_cls: type[Spec]) -> tuple[list[str], list[str]]:
    """Names of the fields taking a float (``number``) and those taking any number."""
    schema = spec_cls.model_json_schema()
    floats, numbers = [], []
    for name, prop in schema.get("properties", {}).items():
        if name in ("kind", "name"):
            continue
        types = {prop.get("type")} | {option.get("type") for option in prop.get("anyOf", ())}
        if "number" in types:
            floats.append(name)
        if types & {"number", "integer"} and "string" not in types:
            numbers.append(name)
    return floats, numbers


def check_spec(technique: Technique, *, registry: Registry | None = None) -> None:
    """The spec is a frozen, strict, documented pydantic model whose example validates and
    round-trips through ``type(spec)(**dump)``, JSON, ``optiplug.to_spec`` and
    ``optiplug.build``-style configs, and which rejects unknown keys, strings for numbers and
    NaN or infinity.
    """
    clause = "spec"
    spec_cls = technique.spec
    describe_fields(spec_cls)
    problems = []
    config = spec_cls.model_config
    for key, wanted in (("frozen", True), ("extra", "forbid"), ("strict", True)):
        if config.get(key) != wanted:
            problems.append(f"model_config[{key!r}] is {config.get(key)!r}, the contract needs "
                            f"{wanted!r} (subclass the kind's base spec and keep its config)")
    properties = spec_cls.model_json_schema().get("properties", {})
    typed_keys = {"type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const"}
    for name, info in spec_cls.model_fields.items():
        if name in ("kind", "name"):
            continue
        # Typed means the exported schema constrains it (an Any with a validator that declares
        # its json_schema_input_type counts).
        if not typed_keys & set(properties.get(info.alias or name, {})):
            problems.append(f"hyperparameter {name!r} has no type (its JSON schema is empty)")
        if not (info.description or "").strip():
            problems.append(f"hyperparameter {name!r} has no description (write a docstring "
                            f"under the field)")
    if problems:
        raise _fail(technique, clause, "; ".join(problems))
    spec = example_spec(spec_cls)
    dumped = spec.model_dump()
    makers: list[tuple[str, Callable[[], Spec]]] = [
        ("type(spec)(**spec.model_dump())", lambda: spec_cls(**dumped)),
        ("model_validate(model_dump())", lambda: spec_cls.model_validate(dumped)),
        ("model_validate_json(model_dump_json())",
         lambda: spec_cls.model_validate_json(spec.model_dump_json()))]
    for how, make in makers:
        try:
            again = make()
        except ValidationError as exc:
            raise _fail(technique, clause, f"{how} does not validate: "
                                           f"{exc.errors(include_url=False)}") from None
        if again != spec:
            raise _fail(technique, clause, f"{how} gives {again!r}, not {spec!r}")
    try:
        hash(spec)
    except TypeError as exc:
        mutable = [name for name in spec_cls.model_fields
                   if not _hashable(getattr(spec, name))]
        raise _fail(technique, clause, (
            f"spec is not hashable ({exc}; fields {mutable}): a frozen spec must hold immutable "
            f"values, tuples rather than lists or dicts")) from None
    registry = registry or default_registry()
    if _registered(technique, registry):
        from ..config import to_spec

        as_file = json.loads(spec.model_dump_json())
        if to_spec(as_file, registry=registry) != spec:
            raise _fail(technique, clause, "optiplug.to_spec(<config as a JSON file gives it>) "
                                           "differs from the spec")
    rejected = {"unknown key": {**dumped, "not_a_hyperparameter": 1},
                "another name": {**dumped, "name": f"{technique.name}_not"}}
    floats, numbers = _number_fields(spec_cls)
    for name in numbers:
        rejected[f"the string '1' for {name!r}"] = {**dumped, name: "1"}
    for name in floats:
        rejected[f"NaN for {name!r}"] = {**dumped, name: math.nan}
        rejected[f"infinity for {name!r}"] = {**dumped, name: math.inf}
    for what, data in rejected.items():
        try:
            spec_cls.model_validate(data)
        except ValidationError:
            continue
        raise _fail(technique, clause, f"accepts {what}; specs must reject it (use the kind's "
                                       f"base spec and optiplug's constrained types)")
    first = next((n for n in spec_cls.model_fields if n not in ("kind", "name")), "name")
    try:
        setattr(spec, first, getattr(spec, first))
    except (ValidationError, TypeError, AttributeError):
        pass
    else:
        raise _fail(technique, clause, f"spec is not frozen: setting {first!r} worked")


def check_schema(technique: Technique, *, registry: Registry | None = None) -> None:
    """The spec exports a JSON Schema (serializable, ``name`` as its constant, every
    hyperparameter described) that the example config validates against (checked with
    ``jsonschema`` when it is installed), and model-level examples all validate."""
    clause = "JSON schema"
    spec_cls = technique.spec
    try:
        schema = spec_cls.model_json_schema()
        text = json.dumps(schema)
    except Exception as exc:
        raise _fail(technique, clause, f"cannot export: {type(exc).__name__}: {exc}") from None
    properties = schema.get("properties", {})
    name_prop = properties.get("name", {})
    if name_prop.get("const") != technique.name and name_prop.get("enum") != [technique.name]:
        raise _fail(technique, clause, f"'name' is not the constant {technique.name!r}: "
                                       f"{name_prop}")
    undocumented = [n for n, p in properties.items()
                    if n not in ("kind", "name") and not p.get("description")]
    if undocumented:
        raise _fail(technique, clause, f"no description for {', '.join(undocumented)}")
    for example in schema.get("examples", ()):
        try:
            spec_cls.model_validate({**example, "name": technique.name})
        except ValidationError as exc:
            raise _fail(technique, clause, f"model-level example {example} does not validate: "
                                           f"{exc.errors(include_url=False)}") from None
    if importlib.util.find_spec("jsonschema") is None:
        return
    jsonschema: Any = importlib.import_module("jsonschema")
    document = json.loads(example_spec(spec_cls).model_dump_json())
    try:
        jsonschema.validate(document, json.loads(text))
    except jsonschema.ValidationError as exc:
        raise _fail(technique, clause, f"the example {document} does not validate against the "
                                       f"exported schema: {exc.message}") from None


