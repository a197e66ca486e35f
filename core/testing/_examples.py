"""Example specs and the runtime values the kit builds techniques with (no torch at import)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from ..specs import Spec

__all__ = ["NUM_FEATURES", "ConformanceError", "example_config", "example_spec"]

NUM_FEATURES: Final = 12
"""``num_features`` a normalizer is built with; inputs are ``(8, NUM_FEATURES)``."""
BATCH: Final = 8

Array = NDArray[Any]


class ConformanceError(AssertionError):
    """A plugin breaks the optiplug contract; the message says what, where and how to fix it."""


def _resolve(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in prop:
        prop = defs[str(prop["$ref"]).rsplit("/", 1)[-1]]
    return prop


def _synthesize(prop: Mapping[str, Any], defs: Mapping[str, Any]) -> Any:
    """A value satisfying a JSON-schema property: examples first, then its bounds."""
    prop = _resolve(prop, defs)
    if prop.get("examples"):
        return prop["examples"][0]
    if "const" in prop:
        return prop["const"]
    if prop.get("enum"):
        return prop["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [option for option in prop.get(key, ()) if option.get("type") != "null"]
        if options:
            return _synthesize(options[0], defs)
    kind = prop.get("type")
    if kind in ("number", "integer"):
        low = max((prop[k] for k in ("minimum", "exclusiveMinimum") if k in prop),
                  default=None)
        high = min((prop[k] for k in ("maximum", "exclusiveMaximum") if k in prop),
                   default=None)
        if low is not None and high is not None:
            value: float = (low + high) / 2
        elif low is not None:
            value = low + 3
        elif high is not None:
            value = high - 3
        else:
            value = 3
        return math.floor(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return False
    if kind == "string":
        return "x"
    if kind == "array":
        if "prefixItems" in prop:
            return [_synthesize(item, defs) for item in prop["prefixItems"]]
        count = max(int(prop.get("minItems", 1)), 1)
        return [_synthesize(prop.get("items", {}), defs)] * count
    raise ConformanceError(f"cannot make up a value for schema {dict(prop)}")


def example_config(spec_cls: type[Spec]) -> dict[str, Any]:
    """The config the kit checks a spec class with, as a config file would give it.

    The first model-level example (``model_config = ConfigDict(json_schema_extra={"examples":
    [{...}]})``) if the spec declares one; otherwise the defaults, with each required field
    taken from its ``Field(examples=[...])`` or, failing that, made up from its type and bounds.
    """
    schema = spec_cls.model_json_schema()
    defs = schema.get("$defs", {})
    name = spec_cls.technique_name()
    if schema.get("examples"):
        return {**dict(schema["examples"][0]), "kind": spec_cls.spec_kind, "name": name}
    config: dict[str, Any] = {"kind": spec_cls.spec_kind, "name": name}
    properties = schema.get("properties", {})
    for field_name, info in spec_cls.model_fields.items():
        if field_name in ("kind", "name") or not info.is_required():
            continue
        config[field_name] = _synthesize(properties.get(info.alias or field_name, {}), defs)
    return config


def example_spec(spec_cls: type[Spec]) -> Spec:
    """A valid instance of ``spec_cls`` (see :func:`example_config`).

    Raises:
        ConformanceError: the example does not validate; the message says how to declare one.
    """
    config = example_config(spec_cls)
    try:
        return spec_cls.model_validate(config)
    except ValidationError as exc:
        required = [n for n, f in spec_cls.model_fields.items() if f.is_required()]
        raise ConformanceError(
            f"{spec_cls.__qualname__}: the example config {config} does not validate "
            f"({exc.error_count()} errors: {exc.errors(include_url=False)}). Give every "
            f"required field ({', '.join(required) or 'none'}) Field(examples=[...]), or the "
            f"spec a model-level example: model_config = ConfigDict(json_schema_extra="
            f"{{'examples': [{{...}}]}})") from None


def accepts(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` takes a keyword argument ``name`` (or ``**kwargs``)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                     for p in parameters.values())


def required_positional(function: Callable[..., Any]) -> bool:
    """Whether calling ``function()`` needs a positional argument (``step(metrics)``)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
    return any(p.default is inspect.Parameter.empty
               and p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                              inspect.Parameter.POSITIONAL_OR_KEYWORD)
               for p in parameters.values())


def away_from_zero(rng: np.random.Generator, shape: tuple[int, ...]) -> Array:
    """Normal-ish float64 values with ``|x| >= 0.05``: no finite difference crosses a kink at 0."""
    magnitude = 0.05 + np.abs(rng.standard_normal(shape))
    return np.where(rng.random(shape) < 0.5, -magnitude, magnitude)
