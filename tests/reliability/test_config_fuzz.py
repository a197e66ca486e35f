"""Property-based fuzzing of configs for every installed technique spec.

For each spec the registry lists, hypothesis generates configs that are valid by its JSON Schema
and configs broken in one place (a wrong type, an out-of-range or non-finite number, a huge or
negative value, an unknown key or name, deep nesting, lone surrogates, very long strings,
dotted import paths). ``optiplug.to_spec`` and ``optiplug.build`` must either succeed (and then
the spec round-trips and builds on both backends) or raise ``optiplug.ConfigError`` whose
issues point at the broken place; never another exception, never a hang.

Deterministic: derandomized, no example database, no deadline. The examples really run are
counted and the last test asserts the total is at least :data:`MIN_TOTAL_EXAMPLES`.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import fractions
import functools
import math
import signal
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import optiplug

MIN_TOTAL_EXAMPLES = 10_000
HANG_SECONDS = 20
"""One example running longer than this is reported as a hang (a guard, not a timing test)."""

_REGISTRY = optiplug.registry()
SPECS: dict[tuple[str, str], type[optiplug.Spec]] = {
    (t.kind, t.name): t.spec for t in _REGISTRY.techniques()}
TECHNIQUES = {(t.kind, t.name): t for t in _REGISTRY.techniques()}
KEYS = sorted(SPECS)
CONFIGS_PER_EXAMPLE = 4
"""Configs checked per hypothesis example: amortizes the engine's per-example overhead."""
# Spread the budget over the specs so the total stays above the minimum however many exist.
EXAMPLES_PER_SPEC = max(40, math.ceil(MIN_TOTAL_EXAMPLES * 1.05 / max(len(KEYS), 1)
                                      / CONFIGS_PER_EXAMPLE))
FUZZ_SETTINGS = settings(max_examples=EXAMPLES_PER_SPEC, deadline=None, derandomize=True,
                         database=None, print_blob=False,
                         suppress_health_check=list(HealthCheck))

_counts: dict[str, int] = {}

# ----------------------------------------------------------------------------- strategies
LONG_STRING = "x" * 1_000_000


def _nested_list(depth: int) -> Any:
    value: Any = 0.1
    for _ in range(depth):
        value = [value]
    return value


def _nested_dict(depth: int) -> Any:
    value: Any = 0.1
    for _ in range(depth):
        value = {"a": value}
    return value


def _self_referencing() -> Any:
    loop: list[Any] = [1.0]
    loop.append(loop)
    return loop


HOSTILE_STRINGS = [
    "", " ", "0.1", "1e-3", "nan", "inf", "-inf", "True", "None", "null", "\x00", "\udcff",
    "\udc80\udcfe", "\ud800", "caf\u00e9\u202e", "os.system", "os:system",
    "__import__('os').system('echo pwned')", "eval('1+1')", "${env:HOME}", "$(rm -rf /)",
    "!!python/object/apply:os.system", "optiplug.plugins.optimizers.adam",
    "optiplug.plugins.optimizers.adam:AdamSpec", "builtins.eval", "../../etc/passwd",
    "a" * 10_000, LONG_STRING,
]
HOSTILE_NUMBERS: list[Any] = [
    math.nan, -math.nan, math.inf, -math.inf, 1e308, -1e308, 1.7976931348623157e308,
    5e-324, -5e-324, 0.0, -0.0, 0, -1, -1.0, 1, 2, 10**20, -(10**20), 2**63, 2**64 + 1,
    10**400, -(10**400), 1e-300, 0.5, 0.9999999999999999, 1.0000000000000002,
]
HOSTILE_OBJECTS: list[Any] = [
    None, True, False, [], {}, (), [1, 2, 3], {"a": 1}, b"\xff\xfe", bytearray(b"x"),
    {1, 2}, frozenset(), complex(1, 2), decimal.Decimal("0.1"), decimal.Decimal("NaN"),
    fractions.Fraction(1, 3), np.float32(0.5), np.float64(0.5), np.int64(3), np.bool_(True),
    np.array(0.5), np.array([0.5, 0.5]), np.float64(np.nan), datetime.date(2020, 1, 1),
    object(), _nested_list(40), _nested_dict(40), _nested_list(5000), _self_referencing(),
    [math.nan, math.inf], {"name": "adam"}, {"kind": "optimizer", "name": "adam"},
]


def _one_of_list(values: list[Any]) -> st.SearchStrategy[Any]:
    # By index: hypothesis shows sampled values in reprs, and some are huge, deep or cyclic.
    return st.integers(0, len(values) - 1).map(lambda index: values[index])


def hostile_values() -> st.SearchStrategy[Any]:
    """Values of the wrong type, out of any range, non-finite, huge, nested or unreadable."""
    return st.one_of(
        _one_of_list(HOSTILE_STRINGS), st.sampled_from(HOSTILE_NUMBERS),
        _one_of_list(HOSTILE_OBJECTS),
        st.text(max_size=20),
        st.floats(allow_nan=True, allow_infinity=True), st.integers(),
        st.integers(min_value=10, max_value=300).map(_nested_list),
        st.lists(st.floats(allow_nan=True), max_size=5),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


def _resolve(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def from_schema(schema: Mapping[str, Any], defs: Mapping[str, Any],
                depth: int = 0) -> st.SearchStrategy[Any]:
    """Values valid for one JSON Schema node (as pydantic writes it), as a YAML file gives them."""
    schema = _resolve(schema, defs)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return st.one_of([from_schema(s, defs, depth) for s in schema[union]])
    kind = schema.get("type")
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        return st.floats(min_value=low, max_value=high,
                         exclude_min="exclusiveMinimum" in schema,
                         exclude_max="exclusiveMaximum" in schema,
                         allow_nan=False, allow_infinity=False)
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is not None and "exclusiveMinimum" in schema:
            low += 1
        if high is not None and "exclusiveMaximum" in schema:
            high -= 1
        # Large enough to be interesting, small enough that a valid step count stays cheap.
        return st.integers(min_value=low if low is not None else -10**6,
                           max_value=high if high is not None else 10**6)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.text(min_size=schema.get("minLength", 0),
                       max_size=min(schema.get("maxLength", 12), 12))
    if kind == "array" and depth < 3:
        if "prefixItems" in schema:
            return st.tuples(*(from_schema(s, defs, depth + 1)
                               for s in schema["prefixItems"])).map(list)
        items = schema.get("items", {})
        low = schema.get("minItems", 0)
        return st.lists(from_schema(items, defs, depth + 1), min_size=low,
                        max_size=max(low, min(schema.get("maxItems", 3), 3)))
    if kind == "object" and depth < 3:
        properties = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: from_schema(v, defs, depth + 1) for k, v in properties.items()
             if k in required},
            optional={k: from_schema(v, defs, depth + 1) for k, v in properties.items()
                      if k not in required})
    return hostile_values()


def _schema_of(spec: type[optiplug.Spec]) -> tuple[dict[str, Any], dict[str, Any]]:
    schema = spec.model_json_schema()
    return schema, schema.get("$defs", {})


@functools.cache
def valid_configs(kind: str, name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Configs that satisfy the spec's JSON Schema (cross-field rules may still reject them)."""
    schema, defs = _schema_of(SPECS[kind, name])
    properties = {k: v for k, v in schema.get("properties", {}).items()
                  if k not in ("kind", "name")}
    required = set(schema.get("required", ())) - {"kind", "name"}
    return st.fixed_dictionaries(
        {"kind": st.just(kind), "name": st.just(name),
         **{k: from_schema(v, defs) for k, v in properties.items() if k in required}},
        optional={k: from_schema(v, defs) for k, v in properties.items()
                  if k not in required})


OTHER_NAMES = sorted({name for _, name in KEYS} | {"adam ", "ADAM", "adam\x00", "relu.py",
                                                   "optimizer.adam", "torch.optim.Adam"})


@st.composite
def broken_configs(draw: st.DrawFn, kind: str, name: str) -> tuple[dict[str, Any], str | None]:
    """A valid config broken in one place; returns it and the path that must be reported.

    The path is ``None`` when the change may happen to be valid (a hostile value that fits).
    """
    config = dict(draw(valid_configs(kind, name)))
    fields = [k for k in SPECS[kind, name].model_fields if k not in ("kind", "name")]
    how = draw(st.sampled_from(["value", "value", "value", "unknown_key", "name", "kind",
                                "drop_name", "junk_key"]))
    if how == "value" and fields:
        field = draw(st.sampled_from(fields))
        config[field] = draw(hostile_values())
        return config, None if _may_be_valid(config[field]) else field
    if how == "unknown_key" or (how == "value" and not fields):
        key = draw(st.one_of(st.sampled_from(["_target_", "__class__", "__import__", "_partial_",
                                              "os.system", "lr ", "LR", "params", "backend",
                                              "x" * 5000]),
                             st.text(min_size=1, max_size=10)))
        if key in fields or key in ("kind", "name"):
            return config, None
        config[key] = draw(hostile_values())
        return config, key
    if how == "name":
        new = draw(st.one_of(st.sampled_from(OTHER_NAMES), _one_of_list(HOSTILE_STRINGS),
                             hostile_values()))
        config["name"] = new
        known = isinstance(new, str) and (kind, new) in SPECS
        return config, None if known else "name"
    if how == "kind":
        new = draw(st.one_of(st.sampled_from([*optiplug.KINDS, "optimizers", "Optimizer", ""]),
                             hostile_values()))
        config["kind"] = new
        if isinstance(new, str) and (new == kind or (new, name) in SPECS):
            return config, None
        # Under another real kind the name is what no longer exists.
        return config, "kind|name" if isinstance(new, str) and new in optiplug.KINDS else "kind"
    if how == "drop_name":
        del config["name"]
        return config, "name"
    junk: Any = draw(st.integers() | st.tuples(st.integers()) | st.just(None))
    config[junk] = 1.0
    return config, None


def _may_be_valid(value: Any) -> bool:
    # Anything could be valid for some field; only values no spec field may take are certain.
    if isinstance(value, float) and not math.isfinite(value):
        return False
    # Decimal, Fraction and 0-d arrays convert to float exactly, so they may be valid.
    return not isinstance(value, (bytes, bytearray, set, frozenset, complex, datetime.date)) \
        and type(value) is not object


# ---------------------------------------------------------------------------- the checks
class _Hang(BaseException):
    """Raised by the alarm when one example runs for :data:`HANG_SECONDS`."""


@contextlib.contextmanager
def _hang_guard() -> Iterator[None]:
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def alarm(signum: int, frame: Any) -> None:
        raise _Hang(f"one config took more than {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _runtime(kind: str, backend: str) -> dict[str, Any]:
    """What a builder of ``kind`` needs besides its spec, for ``backend``."""
    if kind == "optimizer":
        # float64 on both backends: whether a huge value fits float32 is the model's business.
        if backend == "numpy":
            return {"params": {"w": np.zeros((2, 3)), "b": np.zeros(3)}}
        import torch

        return {"params": [torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64)),
                           torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))]}
    if kind == "scheduler":
        return {"optimizer": optiplug.build(
            {"kind": "optimizer", "name": _PLAIN_OPTIMIZER, "lr": 0.1}, backend=backend,
            **_runtime("optimizer", backend))}
    if kind == "normalizer":
        return {"num_features": 4}
    return {}


_PLAIN_OPTIMIZER = next((n for n in ("sgd", "momentum", "adam") if ("optimizer", n) in SPECS),
                        next((n for k, n in KEYS if k == "optimizer"), "sgd"))


def check_config(config: Any, kind: str, name: str, expected_path: str | None) -> None:
    """The property: success that round-trips and builds, or a ConfigError at the right path."""
    with _hang_guard():
        try:
            spec = optiplug.to_spec(config)
        except optiplug.ConfigError as exc:
            _check_error(exc, expected_path)
            return
        except optiplug.PluginError as exc:
            # Only a name that a broken plugin would provide may give a PluginError here.
            assert any(record.plugin == f"{config.get('kind')}.{config.get('name')}"
                       for record in _REGISTRY.broken()), exc
            return
        assert expected_path is None, f"accepted a config broken at {expected_path!r}: {config!r}"
        kind, name = spec.kind, spec.name  # a renamed config may select another technique
        assert isinstance(spec, SPECS[kind, name])
        assert optiplug.to_spec(spec.model_dump()) == spec
        technique = TECHNIQUES[kind, name]
        for backend in technique.backends:
            if backend == "torch" and not _torch_available():
                continue
            try:
                obj = optiplug.build(config, backend=backend, **_runtime(kind, backend))
            except optiplug.ConfigError as exc:
                # Rules that depend on the runtime values (group counts, feature sizes).
                _check_error(exc, None)
                continue
            assert obj is not None


def _check_error(exc: optiplug.ConfigError, expected_path: str | None) -> None:
    assert exc.issues, "a ConfigError must list at least one issue"
    for issue in exc.issues:
        assert isinstance(issue.path, str) and isinstance(issue.message, str)
        assert issue.message.strip(), f"empty message at {issue.path!r}"
        assert len(str(issue)) < 2000, f"an issue is {len(str(issue))} characters long"
    assert str(exc).startswith("invalid config")
    if expected_path is not None:
        # Paths cut long keys short: compare the start of the key.
        heads = [head[:60] for head in expected_path.split("|")]
        assert any(issue.path.startswith(head) or (not issue.path and head in issue.message)
                   for issue in exc.issues for head in heads), (
            f"no issue points at {expected_path[:80]!r}: {[str(i)[:200] for i in exc.issues]}")


_torch_state: dict[str, bool] = {}


def _torch_available() -> bool:
    if "ok" not in _torch_state:
        try:
            import torch  # noqa: F401
        except ImportError:
            _torch_state["ok"] = False
        else:
            _torch_state["ok"] = True
    return _torch_state["ok"]


def _count(test: str) -> None:
    _counts[test] = _counts.get(test, 0) + 1


# ------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize(("kind", "name"), KEYS, ids=[f"{k}.{n}" for k, n in KEYS])
def test_config_either_builds_or_names_the_offending_path(kind: str, name: str) -> None:
    case = st.one_of(valid_configs(kind, name).map(lambda c: (c, None)),
                     broken_configs(kind, name))

    @FUZZ_SETTINGS
    @given(st.lists(case, min_size=CONFIGS_PER_EXAMPLE, max_size=CONFIGS_PER_EXAMPLE))
    def run(cases: list[tuple[dict[str, Any], str | None]]) -> None:
        for config, path in cases:
            _count(f"{kind}.{name}")
            check_config(config, kind, name, path)

    run()


@pytest.mark.parametrize("kind", optiplug.KINDS)
def test_unknown_or_garbage_names_and_non_mappings_raise_config_error(kind: str) -> None:
    @settings(FUZZ_SETTINGS, max_examples=100)
    @given(st.one_of(
        st.fixed_dictionaries({"kind": st.just(kind), "name": hostile_values()}),
        st.fixed_dictionaries({"kind": hostile_values(), "name": st.sampled_from(OTHER_NAMES)}),
        hostile_values().filter(lambda v: not isinstance(v, Mapping))))
    def run(config: Any) -> None:
        _count(f"names.{kind}")
        with _hang_guard():
            try:
                spec = optiplug.to_spec(config)
            except optiplug.ConfigError as exc:
                _check_error(exc, None)
            except optiplug.PluginError:
                assert any(record.plugin == f"{config.get('kind')}.{config.get('name')}"
                           for record in _REGISTRY.broken())
            else:
                assert (spec.kind, spec.name) in SPECS

    run()


def test_whole_documents_report_every_bad_section() -> None:
    sections = st.dictionaries(
        st.one_of(st.sampled_from(optiplug.KINDS), st.text(max_size=8)),
        st.one_of(
            st.sampled_from(KEYS).flatmap(lambda key: valid_configs(*key).map(
                lambda c: {k: v for k, v in c.items() if k != "kind"})),
            st.lists(st.sampled_from(KEYS).flatmap(lambda key: valid_configs(*key)), max_size=3),
            hostile_values()),
        max_size=4)

    @settings(FUZZ_SETTINGS, max_examples=200)
    @given(sections)
    def run(document: dict[Any, Any]) -> None:
        _count("documents")
        with _hang_guard():
            try:
                specs = optiplug.validate_config(document)
            except optiplug.ConfigError as exc:
                _check_error(exc, None)
            except optiplug.PluginError:
                assert _REGISTRY.broken()
            else:
                assert all(isinstance(s, optiplug.Spec) for s in specs)

    run()


def test_no_spec_field_can_hold_code_or_import_paths() -> None:
    """Nothing in a config is imported or called: no spec field is typed to accept code."""
    import collections.abc
    import typing

    def walk(annotation: Any) -> Iterator[Any]:
        yield annotation
        for arg in typing.get_args(annotation):
            yield from walk(arg)

    from pydantic.functional_validators import PlainValidator, WrapValidator

    code_types = (type, object, collections.abc.Callable)
    for (kind, name), spec in SPECS.items():
        for field_name, field in spec.model_fields.items():
            # Any is fine only when a validator of the spec's own decides what is accepted.
            own_validator = any(isinstance(m, (PlainValidator, WrapValidator))
                                for m in field.metadata)
            for part in walk(field.annotation):
                origin = typing.get_origin(part) or part
                assert part is not typing.Any or own_validator, (
                    f"{kind}.{name}.{field_name} accepts Any")
                assert origin not in code_types, (
                    f"{kind}.{name}.{field_name} is typed {field.annotation!r}")
                assert "ImportString" not in repr(part), (
                    f"{kind}.{name}.{field_name} imports what the config names")


def test_at_least_ten_thousand_configs_were_fuzzed() -> None:
    fuzz_keys = [f"{k}.{n}" for k, n in KEYS]
    if not all(key in _counts for key in fuzz_keys):
        pytest.skip("only part of the fuzz tests ran (selection); the total is not meaningful")
    total = sum(_counts.values())
    print(f"\nfuzzed {total} configs over {len(KEYS)} specs", file=sys.stderr)
    assert total >= MIN_TOTAL_EXAMPLES, _counts
