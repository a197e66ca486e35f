"""The conformance checks: one function per clause of the plugin contract.

Every check takes a :class:`~optiplug.Technique` and raises :class:`ConformanceError` (an
``AssertionError``) naming the technique, the clause and the numbers when the plugin breaks the
contract, or :class:`CheckSkipped` when the clause does not apply (no torch, no declared
variance, a backend the kit cannot exercise). Nothing here imports torch at import time: torch
is imported inside the torch checks only.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import math
import pickle
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from ..config import _hashable
from ..hookspecs import hookimpl
from ..registry import BrokenPlugin, Registry, default_registry
from ..specs import Spec, describe_fields
from ..technique import Technique
from ._examples import (
    BATCH,
    NUM_FEATURES,
    ConformanceError,
    accepts,
    away_from_zero,
    example_config,
    example_spec,
    required_positional,
)
from ._select import select

__all__ = [
    "Check",
    "CheckSkipped",
    "ConformanceError",
    "Report",
    "check_backends_agree",
    "check_build",
    "check_initializer_variance",
    "check_numerical_gradient",
    "check_numpy_without_torch",
    "check_optimizer_lr_from_param_groups",
    "check_optimizer_state_dict",
    "check_optimizer_step_hooks",
    "check_scheduler_state_dict",
    "check_schema",
    "check_spec",
    "check_technique",
    "conformance_checks",
    "example_config",
    "example_spec",
    "exercise",
    "torch_available",
]

Array = NDArray[Any]
KNOWN_BACKENDS: Final = ("numpy", "torch")
STEPS: Final = 20
"""Optimizer and scheduler steps compared between backends."""
INIT_SHAPES: Final[tuple[tuple[int, ...], ...]] = ((256, 512), (64, 32, 3, 3))
"""Weight shapes an initializer's variance is checked on (``(out, in, *kernel)``)."""
SIGMAS: Final = 6.0
"""Statistical checks allow this many standard errors (seeds are fixed: no flakiness)."""
EPS: Final = 1e-6
"""Central-difference step (float64)."""


class CheckSkipped(Exception):
    """A check does not apply to this technique; the message says why."""


# ----------------------------------------------------------------------------- plumbing
def _fail(technique: Technique, clause: str, message: str) -> ConformanceError:
    where = ""
    if technique.origin is not None:
        where = f" ({technique.origin.describe()})"
    return ConformanceError(f"{technique.kind} {technique.name!r}{where} {clause}: {message}")


def torch_available() -> bool:
    """Whether torch can be imported (looked up, not imported)."""
    return "torch" in sys.modules or importlib.util.find_spec("torch") is not None


def _need(technique: Technique, backend: str) -> None:
    if backend not in technique.builders:
        raise CheckSkipped(f"no {backend!r} backend")
    if backend not in KNOWN_BACKENDS:
        raise CheckSkipped(f"the kit exercises only {' and '.join(KNOWN_BACKENDS)}")
    if backend == "torch" and not torch_available():
        raise CheckSkipped("torch is not installed")


def _registered(technique: Technique, registry: Registry) -> bool:
    """Whether ``registry`` resolves the technique's name to this very technique."""
    try:
        return registry.get(technique.kind, technique.name).spec is technique.spec
    except Exception:
        return False


def _close(technique: Technique, clause: str, actual: Any, expected: Any, *, rtol: float,
           atol: float, what: str) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if actual.shape != expected.shape:
        raise _fail(technique, clause, f"{what}: shape {actual.shape} != {expected.shape}")
    bad = ~np.isclose(actual, expected, rtol=rtol, atol=atol, equal_nan=False)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        worst = float(np.max(np.abs(actual - expected)))
        raise _fail(technique, clause, (
            f"{what} differ at {int(bad.sum())} of {bad.size} entries (first at {index}: "
            f"{actual[index]!r} vs {expected[index]!r}; max abs diff {worst:.3g}; "
            f"rtol={rtol:g}, atol={atol:g})"))


def _to_numpy(value: Any) -> Array:
    if isinstance(value, np.ndarray):
        return value
    return np.asarray(value.detach().cpu().numpy())


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


# ------------------------------------------------------------------------ runtime values
def _numpy_params(dtype: Any = np.float64, seed: int = 1) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((6, 5)).astype(dtype),
            "b": rng.standard_normal(5).astype(dtype),
            "v": rng.standard_normal(7).astype(dtype)}


def _numpy_groups(params: Mapping[str, Array], lr: float) -> list[dict[str, Any]]:
    # Two groups, the second with half the lr: every optimizer must honour group overrides.
    return [{"params": {"w": params["w"], "b": params["b"]}},
            {"params": {"v": params["v"]}, "lr": lr * 0.5}]


def _grads(params: Mapping[str, Array], step: int) -> dict[str, Array]:
    """A noisy quadratic bowl's gradient: ``c * p + noise``, the noise fixed by ``step``."""
    rng = np.random.default_rng(1000 + step)
    grads = {}
    for name in sorted(params):
        value = np.asarray(params[name], dtype=np.float64)
        curvature = np.linspace(0.5, 2.0, value.size).reshape(value.shape)
        noise = 0.1 * rng.standard_normal(value.shape)
        grads[name] = (curvature * value + noise).astype(np.asarray(params[name]).dtype)
    return grads


class _TorchParams:
    """The same three parameters as torch ``nn.Parameter`` s, in the same two groups."""

    def __init__(self, values: Mapping[str, Array]) -> None:
        import torch

        self.params = {name: torch.nn.Parameter(torch.from_numpy(value.copy()))
                       for name, value in values.items()}

    def groups(self, lr: float) -> list[dict[str, Any]]:
        return [{"params": [self.params["w"], self.params["b"]]},
                {"params": [self.params["v"]], "lr": lr * 0.5}]

    def numpy(self) -> dict[str, Array]:
        return {name: param.detach().numpy().copy() for name, param in self.params.items()}

    def set_grads(self, step: int) -> None:
        import torch

        for name, grad in _grads(self.numpy(), step).items():
            self.params[name].grad = torch.from_numpy(grad)


def _probe_numpy_optimizer(params: Any, lr: float = 0.1) -> Any:
    """A plain-SGD :class:`NumpyOptimizer` for schedulers to drive (not a registered technique)."""
    from ..backends._numpy_optim import NumpyOptimizer

    class ProbeSGD(NumpyOptimizer):
        def __init__(self, params: Any, lr: float) -> None:
            super().__init__(params, {"lr": lr}, threads=1)

        def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
            return -group["lr"]

        def update(self, param: Array, grad: Array, state: Sequence[Array],
                   scratch: Sequence[Array], scalars: Any) -> None:
            np.add(param, scalars * grad, out=param)

    return ProbeSGD(params, lr)


def _scheduler_optimizer(backend: str) -> Any:
    if backend == "numpy":
        return _probe_numpy_optimizer(_numpy_groups(_numpy_params(), 0.1), 0.1)
    import torch

    return torch.optim.SGD(_TorchParams(_numpy_params()).groups(0.1), lr=0.1)


def _normalizer_runtime(builder: Callable[..., Any], backend: str,
                        dtype: Any = np.float64) -> dict[str, Any]:
    runtime: dict[str, Any] = {}
    if accepts(builder, "num_features"):
        runtime["num_features"] = NUM_FEATURES
    if backend == "numpy" and accepts(builder, "dtype"):
        runtime["dtype"] = dtype
    return runtime


def _build(technique: Technique, spec: Spec, backend: str, *, dtype: Any = np.float64,
           **runtime: Any) -> Any:
    builder = technique.builders[backend]
    if technique.kind == "normalizer":
        runtime = {**_normalizer_runtime(builder, backend, dtype), **runtime}
    try:
        return builder(spec, **runtime)
    except CheckSkipped:
        raise
    except Exception as exc:
        raise _fail(technique, f"build[{backend}]", (
            f"the builder raised {type(exc).__name__}: {exc} (spec {spec!r}, runtime "
            f"{sorted(runtime)})")) from exc


def _step_scheduler(scheduler: Any, step: int) -> None:
    if required_positional(scheduler.step):
        # Schedulers that take a metric (reduce-on-plateau): improving, then a plateau.
        scheduler.step(1.0 / (1 + step) if step < 5 else 0.2)
    else:
        scheduler.step()


def _lrs(optimizer: Any) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


def _is_layer(obj: Any) -> bool:
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "backward", None))


def _is_scaler(obj: Any) -> bool:
    return callable(getattr(obj, "fit", None)) and callable(getattr(obj, "transform", None))


# ---------------------------------------------------------------------------- exercise
def exercise(technique: Technique, backend: str, *, spec: Spec | None = None) -> Any:
    """Build ``technique`` for ``backend`` and use it once the way its kind is used.

    Optimizers step twice over float32 params in two groups; schedulers step an optimizer;
    initializers fill float32 and float64 weights; activations and normalizer layers run
    forward and backward in float32 and float64; scalers fit and transform.

    Returns:
        The built object.

    Raises:
        ConformanceError: the object breaks its kind's contract (type, dtype, shape, in-place
            fill, determinism).
    """
    spec = spec or example_spec(technique.spec)
    kinds: dict[str, Callable[[Technique, str, Spec], Any]] = {
        "optimizer": _exercise_optimizer, "scheduler": _exercise_scheduler,
        "initializer": _exercise_initializer, "activation": _exercise_layer,
        "normalizer": _exercise_layer}
    return kinds[technique.kind](technique, backend, spec)


def _exercise_optimizer(technique: Technique, backend: str, spec: Spec) -> Any:
    clause = f"build[{backend}]"
    lr = float(getattr(spec, "lr", 1e-3))
    start = _numpy_params(np.float32)
    if backend == "numpy":
        from ..backends._numpy_optim import NumpyOptimizer

        params = {name: value.copy() for name, value in start.items()}
        optimizer = _build(technique, spec, backend, params=_numpy_groups(params, lr))
        if not isinstance(optimizer, NumpyOptimizer):
            raise _fail(technique, clause, f"the NumPy builder returned "
                                           f"{type(optimizer).__name__}, not a NumpyOptimizer")
        for step in range(2):
            optimizer.step(_grads(params, step))
        after = params
    else:
        import torch

        holder = _TorchParams(start)
        optimizer = _build(technique, spec, backend, params=holder.groups(lr))
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise _fail(technique, clause, f"the torch builder returned "
                                           f"{type(optimizer).__name__}, not a "
                                           f"torch.optim.Optimizer")
        for step in range(2):
            holder.set_grads(step)
            optimizer.step()
        after = holder.numpy()
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or len(groups) != 2 or any("lr" not in g for g in groups):
        raise _fail(technique, clause, "param_groups must be a list of the two given groups, "
                                       "each with an 'lr'")
    for name, value in after.items():
        if value.dtype != np.float32:
            raise _fail(technique, clause, f"a float32 parameter became {value.dtype}")
        if not np.isfinite(value).all():
            raise _fail(technique, clause, f"parameter {name!r} is not finite after 2 steps")
    if all(np.array_equal(after[name], start[name]) for name in start):
        raise _fail(technique, clause, "two steps with nonzero gradients changed no parameter")
    return optimizer


def _exercise_scheduler(technique: Technique, backend: str, spec: Spec) -> Any:
    optimizer = _scheduler_optimizer(backend)
    scheduler = _build(technique, spec, backend, optimizer=optimizer)
    for step in range(3):
        optimizer.step()
        _step_scheduler(scheduler, step)
    lrs = _lrs(optimizer)
    if not all(math.isfinite(lr) and lr >= 0 for lr in lrs):
        raise _fail(technique, f"build[{backend}]", f"learning rates {lrs} after 3 steps are "
                                                    f"not finite and non-negative")
    return scheduler


def _exercise_initializer(technique: Technique, backend: str, spec: Spec) -> Any:
    clause = f"build[{backend}]"
    fill = _build(technique, spec, backend)
    shape = (16, 8)
    if backend == "numpy":
        for dtype in (np.float32, np.float64):
            first = fill(shape, dtype=np.dtype(dtype), rng=np.random.default_rng(0))
            again = fill(shape, dtype=np.dtype(dtype), rng=np.random.default_rng(0))
            if not isinstance(first, np.ndarray) or first.shape != shape or \
                    first.dtype != dtype:
                raise _fail(technique, clause, (
                    f"fill({shape}, dtype={np.dtype(dtype)}) returned "
                    f"{type(first).__name__} {getattr(first, 'shape', '')} "
                    f"{getattr(first, 'dtype', '')}"))
            if not np.isfinite(first).all() or not np.array_equal(first, again):
                raise _fail(technique, clause, "fills are not finite, or differ for the same "
                                               "rng seed")
        return fill
    import torch

    def filled(seed: int) -> Any:
        tensor = torch.empty(shape, requires_grad=True)
        result = fill(tensor, generator=torch.Generator().manual_seed(seed))
        if result is not tensor:
            raise _fail(technique, clause, "the torch fill must fill the tensor in place and "
                                           "return it")
        if tensor.grad_fn is not None or not tensor.requires_grad:
            raise _fail(technique, clause, "the torch fill recorded autograd history or "
                                           "dropped requires_grad (fill under torch.no_grad)")
        return tensor.detach().clone()

    first, again = filled(0), filled(0)
    if not torch.isfinite(first).all() or not torch.equal(first, again):
        raise _fail(technique, clause, "fills are not finite, or differ for the same generator "
                                       "seed")
    return fill


def _exercise_layer(technique: Technique, backend: str, spec: Spec) -> Any:
    clause = f"build[{backend}]"
    obj = _build(technique, spec, backend)
    rng = np.random.default_rng(3)
    data = rng.standard_normal((BATCH, NUM_FEATURES))
    if backend == "numpy":
        if technique.kind == "normalizer" and not _is_layer(obj):
            if not _is_scaler(obj):
                raise _fail(technique, clause, "a NumPy normalizer must be a layer (forward, "
                                               "backward) or a scaler (fit, transform)")
            out = obj.fit(data).transform(data)
            if np.shape(out) != data.shape or not np.isfinite(out).all():
                raise _fail(technique, clause, f"transform gave shape {np.shape(out)} or "
                                               f"non-finite values")
            return obj
        if not _is_layer(obj):
            raise _fail(technique, clause, f"the NumPy builder returned {type(obj).__name__}, "
                                           f"which has no forward and backward")
        for dtype in (np.float32, np.float64):
            obj = _build(technique, spec, backend, dtype=dtype)
            x = data.astype(dtype)
            y = obj.forward(x)
            grad = obj.backward(np.ones_like(y))
            for what, value, like in (("forward", y, x), ("backward", grad, x)):
                if not isinstance(value, np.ndarray) or value.shape != like.shape or \
                        value.dtype != dtype:
                    raise _fail(technique, clause, (
                        f"{what} of a {dtype.__name__} {like.shape} input gave "
                        f"{type(value).__name__} {getattr(value, 'dtype', '')} "
                        f"{getattr(value, 'shape', '')}; shape and dtype must be kept"))
        return obj
    import torch

    tensor = torch.from_numpy(data.astype(np.float32))
    if technique.kind == "normalizer" and not isinstance(obj, torch.nn.Module):
        if not _is_scaler(obj):
            raise _fail(technique, clause, "a torch normalizer must be an nn.Module or a scaler "
                                           "(fit, transform)")
        out = obj.fit(tensor).transform(tensor)
    else:
        if not isinstance(obj, torch.nn.Module):
            raise _fail(technique, clause, f"the torch builder returned {type(obj).__name__}, "
                                           f"not an nn.Module")
        out = obj(tensor)
    if tuple(out.shape) != tuple(tensor.shape) or out.dtype != tensor.dtype:
        raise _fail(technique, clause, f"output {tuple(out.shape)} {out.dtype} for input "
                                       f"{tuple(tensor.shape)} {tensor.dtype}")
    return obj


def check_build(technique: Technique, backend: str, *, registry: Registry | None = None) -> None:
    """The technique builds for ``backend`` and its object works once (see :func:`exercise`);
    when registered, ``optiplug.build(spec.model_dump(), backend=...)`` builds the same type."""
    _need(technique, backend)
    spec = example_spec(technique.spec)
    obj = exercise(technique, backend, spec=spec)
    registry = registry or default_registry()
    if not _registered(technique, registry):
        return
    from ..config import build

    runtime: dict[str, Any] = {}
    if technique.kind == "optimizer":
        runtime["params"] = (_numpy_groups(_numpy_params(), 1e-3) if backend == "numpy"
                             else _TorchParams(_numpy_params()).groups(1e-3))
    elif technique.kind == "scheduler":
        runtime["optimizer"] = _scheduler_optimizer(backend)
    elif technique.kind == "normalizer":
        runtime = _normalizer_runtime(technique.builders[backend], backend)
    config = json.loads(spec.model_dump_json())
    try:
        again = build(config, backend=backend, registry=registry, **runtime)
    except Exception as exc:
        raise _fail(technique, f"build[{backend}]", (
            f"optiplug.build({config}, backend={backend!r}) raised {type(exc).__name__}: "
            f"{exc}")) from exc
    if type(again) is not type(obj):
        raise _fail(technique, f"build[{backend}]", (
            f"optiplug.build from a config gave {type(again).__name__}, the builder "
            f"{type(obj).__name__}"))


# --------------------------------------------------------------------------- optimizers
def _run_numpy(optimizer: Any, params: dict[str, Array], steps: Iterable[int]) -> None:
    for step in steps:
        optimizer.step(_grads(params, step))


def _run_torch(optimizer: Any, holder: _TorchParams, steps: Iterable[int]) -> None:
    for step in steps:
        holder.set_grads(step)
        optimizer.step()


def _optimizer(technique: Technique, spec: Spec, backend: str,
               start: Mapping[str, Array]) -> tuple[Any, Any]:
    """A fresh optimizer over a copy of ``start`` and its params holder."""
    lr = float(getattr(spec, "lr", 1e-3))
    if backend == "numpy":
        params = {name: value.copy() for name, value in start.items()}
        return _build(technique, spec, backend, params=_numpy_groups(params, lr)), params
    holder = _TorchParams(start)
    return _build(technique, spec, backend, params=holder.groups(lr)), holder


def _run(backend: str, optimizer: Any, params: Any, steps: Iterable[int]) -> dict[str, Array]:
    if backend == "numpy":
        _run_numpy(optimizer, params, steps)
        return {name: value.copy() for name, value in params.items()}
    _run_torch(optimizer, params, steps)
    result: dict[str, Array] = params.numpy()
    return result


def check_optimizer_state_dict(technique: Technique, backend: str) -> None:
    """``state_dict()`` survives pickling, loads into a new optimizer over copies of the current
    params, and both continue bit-for-bit identically."""
    _need(technique, backend)
    clause = f"state_dict[{backend}]"
    spec = example_spec(technique.spec)
    first, first_params = _optimizer(technique, spec, backend, _numpy_params())
    current = _run(backend, first, first_params, range(3))
    try:
        saved = pickle.loads(pickle.dumps(first.state_dict()))
    except Exception as exc:
        raise _fail(technique, clause, f"state_dict() does not pickle: "
                                       f"{type(exc).__name__}: {exc}") from None
    second, second_params = _optimizer(technique, spec, backend, current)
    try:
        second.load_state_dict(saved)
    except Exception as exc:
        raise _fail(technique, clause, f"load_state_dict(state_dict()) raised "
                                       f"{type(exc).__name__}: {exc}") from None
    expected = _run(backend, first, first_params, range(3, 8))
    resumed = _run(backend, second, second_params, range(3, 8))
    for name in expected:
        if not np.array_equal(expected[name], resumed[name]):
            diff = float(np.max(np.abs(expected[name] - resumed[name])))
            raise _fail(technique, clause, (
                f"after loading the state dict, 5 more steps differ from the original run "
                f"(parameter {name!r}, max abs diff {diff:.3g}); state_dict() must hold every "
                f"piece of state"))


def check_optimizer_lr_from_param_groups(technique: Technique, backend: str) -> None:
    """Every step reads ``lr`` from ``param_groups`` (what schedulers rely on): quartering each
    group's ``lr`` after construction runs exactly as building with a quarter of the lr."""
    _need(technique, backend)
    clause = f"lr from param_groups[{backend}]"
    spec = example_spec(technique.spec)
    if not hasattr(spec, "lr"):
        raise CheckSkipped("the spec has no lr")
    edited, edited_params = _optimizer(technique, spec, backend, _numpy_params())
    for group in edited.param_groups:
        group["lr"] = group["lr"] * 0.25
    quarter = type(spec).model_validate({**spec.model_dump(), "lr": spec.lr * 0.25})
    built, built_params = _optimizer(technique, quarter, backend, _numpy_params())
    a = _run(backend, edited, edited_params, range(5))
    b = _run(backend, built, built_params, range(5))
    for name in a:
        _close(technique, clause, a[name], b[name], rtol=1e-12, atol=0.0,
               what=f"parameter {name!r} after editing param_groups lr vs building with it")


class _StepCounter:
    """An in-process plugin counting the lifecycle hooks it receives."""

    def __init__(self) -> None:
        self.built: list[Any] = []
        self.before: list[Any] = []
        self.after: list[Any] = []

    @hookimpl
    def optiplug_built(self, technique: Technique, spec: Spec, backend: str, obj: Any) -> None:
        self.built.append(obj)

    @hookimpl
    def optiplug_before_step(self, optimizer: Any, backend: str) -> None:
        self.before.append(optimizer)

    @hookimpl
    def optiplug_after_step(self, optimizer: Any, backend: str) -> None:
        self.after.append(optimizer)


def check_optimizer_step_hooks(technique: Technique, backend: str) -> None:
    """Lifecycle hooks reach the optimizer: ``optiplug_built`` once, ``optiplug_before_step``
    and ``optiplug_after_step`` once per step (the optimizer must support torch's
    ``register_step_pre_hook`` / ``register_step_post_hook``)."""
    _need(technique, backend)
    clause = f"step hooks[{backend}]"
    registry = Registry(autoload=False)
    registry.register(technique, override=True)
    counter = _StepCounter()
    registry.register(counter, name="optiplug-conformance-step-counter")
    spec = example_spec(technique.spec)
    lr = float(getattr(spec, "lr", 1e-3))
    if backend == "numpy":
        params = _numpy_params()
        optimizer = registry.build(spec, backend=backend, params=_numpy_groups(params, lr))
        _run_numpy(optimizer, params, range(2))
    else:
        holder = _TorchParams(_numpy_params())
        optimizer = registry.build(spec, backend=backend, params=holder.groups(lr))
        _run_torch(optimizer, holder, range(2))
    calls = (len(counter.built), len(counter.before), len(counter.after))
    if calls != (1, 2, 2) or any(o is not optimizer for o in counter.before + counter.after):
        raise _fail(technique, clause, (
            f"(built, before_step, after_step) hooks were called {calls} times for one build "
            f"and two steps, expected (1, 2, 2)"))


def _optimizer_trajectory(technique: Technique, spec: Spec, backend: str) -> list[dict[str, Array]]:
    optimizer, params = _optimizer(technique, spec, backend, _numpy_params())
    return [_run(backend, optimizer, params, [step]) for step in range(STEPS)]


# --------------------------------------------------------------------------- schedulers
def _scheduler_run(technique: Technique, spec: Spec, backend: str, steps: int,
                   resume_at: int | None = None) -> list[list[float]]:
    optimizer = _scheduler_optimizer(backend)
    scheduler = _build(technique, spec, backend, optimizer=optimizer)
    lrs = []
    for step in range(steps):
        if step == resume_at:
            saved = pickle.loads(pickle.dumps((optimizer.state_dict(),
                                               scheduler.state_dict())))
            optimizer = _scheduler_optimizer(backend)
            scheduler = _build(technique, spec, backend, optimizer=optimizer)
            optimizer.load_state_dict(saved[0])
            scheduler.load_state_dict(saved[1])
        optimizer.step()
        _step_scheduler(scheduler, step)
        lrs.append(_lrs(optimizer))
    return lrs


def check_scheduler_state_dict(technique: Technique, backend: str) -> None:
    """A scheduler's ``state_dict()`` (with its optimizer's) pickles and loads into a new pair
    that continues with exactly the learning rates of the uninterrupted run."""
    _need(technique, backend)
    clause = f"state_dict[{backend}]"
    spec = example_spec(technique.spec)
    straight = _scheduler_run(technique, spec, backend, STEPS)
    try:
        resumed = _scheduler_run(technique, spec, backend, STEPS, resume_at=7)
    except ConformanceError:  # a builder failure, already explained
        raise
    except Exception as exc:
        raise _fail(technique, clause, f"saving and loading after 7 steps raised "
                                       f"{type(exc).__name__}: {exc}") from None
    if straight != resumed:
        step = next(i for i, (a, b) in enumerate(zip(straight, resumed, strict=True)) if a != b)
        raise _fail(technique, clause, (
            f"after loading the state at step 7, step {step} gives lr {resumed[step]}, the "
            f"uninterrupted run {straight[step]}"))


# ------------------------------------------------------------------------- initializers
def _moments(values: Array) -> tuple[int, float, float, float, float]:
    """``n``, mean, variance, and the standard errors of mean and variance."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    mean = float(x.mean())
    centered = x - mean
    variance = float(np.mean(centered**2))
    fourth = float(np.mean(centered**4))
    return (n, mean, variance, math.sqrt(variance / n),
            math.sqrt(max(fourth - variance**2, 0.0) / n))


def _init_samples(technique: Technique, spec: Spec, backend: str,
                  shape: tuple[int, ...]) -> Array:
    fill = _build(technique, spec, backend)
    if backend == "numpy":
        return np.asarray(fill(shape, dtype=np.dtype(np.float64), rng=np.random.default_rng(7)))
    import torch

    tensor = torch.empty(shape, dtype=torch.float64)
    fill(tensor, generator=torch.Generator().manual_seed(7))
    return _to_numpy(tensor)


def check_initializer_variance(technique: Technique, backend: str) -> None:
    """Samples on ``(256, 512)`` and ``(64, 32, 3, 3)`` weights have the variance (and mean,
    where declared) that the spec's ``expected_variance(shape)`` (``expected_mean(shape)``)
    returns, within 6 standard errors estimated from the sample's own fourth moment."""
    _need(technique, backend)
    clause = f"variance[{backend}]"
    spec = example_spec(technique.spec)
    expected_variance = getattr(spec, "expected_variance", None)
    if not callable(expected_variance):
        raise CheckSkipped("the spec declares no expected_variance(shape)")
    expected_mean = getattr(spec, "expected_mean", None)
    checked = 0
    for shape in INIT_SHAPES:
        variance_wanted = expected_variance(shape)
        if variance_wanted is None:
            continue
        checked += 1
        n, mean, variance, se_mean, se_variance = _moments(
            _init_samples(technique, spec, backend, shape))
        tolerance = SIGMAS * se_variance + 1e-12 * max(1.0, variance_wanted)
        if abs(variance - variance_wanted) > tolerance:
            raise _fail(technique, clause, (
                f"{n} samples of shape {shape} have variance {variance:.6g}, the spec declares "
                f"{variance_wanted:.6g} (allowed +-{tolerance:.3g}, {SIGMAS:g} standard "
                f"errors)"))
        mean_wanted = expected_mean(shape) if callable(expected_mean) else None
        if mean_wanted is not None:
            tolerance = SIGMAS * se_mean + 1e-12 * max(1.0, abs(mean_wanted))
            if abs(mean - mean_wanted) > tolerance:
                raise _fail(technique, clause, (
                    f"{n} samples of shape {shape} have mean {mean:.6g}, the spec declares "
                    f"{mean_wanted:.6g} (allowed +-{tolerance:.3g})"))
    if not checked:
        raise CheckSkipped("expected_variance(shape) returned None for every checked shape")


# ------------------------------------------------------------------- layers: gradients
def _randomize(module: Any, rng: np.random.Generator) -> None:
    # Perturb parameters off their (often symmetric) initial values, so their gradients and
    # the input gradient are checked at a generic point.
    for value in getattr(module, "params", {}).values():
        value += 0.3 * rng.standard_normal(value.shape).astype(value.dtype)


def _numerical(loss: Callable[[], float], value: Array) -> Array:
    gradient = np.zeros(value.shape, dtype=np.float64)
    for index in np.ndindex(value.shape):
        original = value[index]
        value[index] = original + EPS
        plus = loss()
        value[index] = original - EPS
        minus = loss()
        value[index] = original
        gradient[index] = (plus - minus) / (2 * EPS)
    return gradient


def check_numerical_gradient(technique: Technique) -> None:
    """An activation's or normalizer layer's NumPy ``backward`` matches central differences of
    ``sum(w * forward(x))`` in float64, for the input and for every parameter in ``params``."""
    _need(technique, "numpy")
    clause = "gradient[numpy]"
    spec = example_spec(technique.spec)
    module = _build(technique, spec, "numpy")
    if not _is_layer(module):
        raise CheckSkipped("not a layer (a scaler has no backward)")
    rng = np.random.default_rng(11)
    _randomize(module, rng)
    x = away_from_zero(rng, (BATCH, NUM_FEATURES))
    if hasattr(module, "train"):
        module.train()
    weights = rng.standard_normal(x.shape)
    module.forward(x)
    if callable(getattr(module, "zero_grad", None)):
        module.zero_grad()
    grad_x = np.array(module.backward(weights), dtype=np.float64)
    grads = {name: np.array(g, dtype=np.float64)
             for name, g in getattr(module, "grads", {}).items()}

    def loss() -> float:
        return float(np.sum(weights * module.forward(x)))

    _close(technique, clause, grad_x, _numerical(loss, x), rtol=1e-5, atol=1e-7,
           what="backward() and the numerical input gradient")
    for name, value in getattr(module, "params", {}).items():
        if name not in grads:
            raise _fail(technique, clause, f"backward() left no gradient for parameter "
                                           f"{name!r} in grads")
        _close(technique, clause, grads[name], _numerical(loss, value), rtol=1e-5, atol=1e-7,
               what=f"grads[{name!r}] and its numerical gradient")


# -------------------------------------------------------------------- backends agree
def check_backends_agree(technique: Technique) -> None:
    """NumPy and torch give the same numbers: optimizer trajectories (float64, two param groups,
    20 steps), scheduler learning rates, initializer sample moments, and layer outputs,
    input gradients and eval-mode outputs after training steps (float64 and float32)."""
    for backend in KNOWN_BACKENDS:
        _need(technique, backend)
    spec = example_spec(technique.spec)
    clause = "numpy vs torch"
    if technique.kind == "optimizer":
        numpy_run = _optimizer_trajectory(technique, spec, "numpy")
        torch_run = _optimizer_trajectory(technique, spec, "torch")
        for step, (a, b) in enumerate(zip(numpy_run, torch_run, strict=True)):
            for name in a:
                _close(technique, clause, a[name], b[name], rtol=1e-9, atol=1e-12,
                       what=f"float64 parameter {name!r} after step {step + 1}")
    elif technique.kind == "scheduler":
        a_lrs = _scheduler_run(technique, spec, "numpy", STEPS)
        b_lrs = _scheduler_run(technique, spec, "torch", STEPS)
        _close(technique, clause, a_lrs, b_lrs, rtol=1e-12, atol=1e-15,
               what=f"learning rates of {STEPS} steps")
    elif technique.kind == "initializer":
        _initializers_agree(technique, spec)
    else:
        _layers_agree(technique, spec)


def _initializers_agree(technique: Technique, spec: Spec) -> None:
    for shape in INIT_SHAPES:
        a = _init_samples(technique, spec, "numpy", shape)
        b = _init_samples(technique, spec, "torch", shape)
        _, mean_a, var_a, se_mean_a, se_var_a = _moments(a)
        _, mean_b, var_b, se_mean_b, se_var_b = _moments(b)
        for what, x, y, se in (
                ("mean", mean_a, mean_b, math.hypot(se_mean_a, se_mean_b)),
                ("variance", var_a, var_b, math.hypot(se_var_a, se_var_b))):
            tolerance = SIGMAS * se + 1e-12 * max(1.0, abs(x))
            if abs(x - y) > tolerance:
                raise _fail(technique, "numpy vs torch", (
                    f"sample {what} on shape {shape}: NumPy {x:.6g}, torch {y:.6g} (allowed "
                    f"+-{tolerance:.3g}, {SIGMAS:g} standard errors)"))


def _layers_agree(technique: Technique, spec: Spec) -> None:
    import torch

    clause = "numpy vs torch"
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((BATCH, NUM_FEATURES)) * 2 + 0.5 for _ in range(4)]
    for dtype, rtol, atol in ((np.float64, 1e-6, 1e-8), (np.float32, 1e-5, 1e-6)):
        ours = _build(technique, spec, "numpy", dtype=dtype)
        theirs = _build(technique, spec, "torch")
        torch_dtype = torch.float64 if dtype == np.float64 else torch.float32
        if isinstance(theirs, torch.nn.Module):
            theirs = theirs.to(torch_dtype)
        if not _is_layer(ours):
            x, later = batches[0].astype(dtype), batches[1].astype(dtype)
            a = ours.fit(x).transform(later)
            b = _to_numpy(theirs.fit(torch.from_numpy(x)).transform(torch.from_numpy(later)))
            _close(technique, clause, a, b, rtol=rtol, atol=atol,
                   what=f"{dtype.__name__} transform after fit")
            for name, obj, data in (("NumPy", ours, later), ("torch", theirs, later)):
                inverse = getattr(obj, "inverse_transform", None)
                if callable(inverse):
                    value = data if name == "NumPy" else torch.from_numpy(data)
                    _close(technique, clause, _to_numpy(inverse(obj.transform(value))), data,
                           rtol=rtol, atol=atol,
                           what=f"{name} inverse_transform(transform(x)) and x")
            continue
        for index, batch in enumerate(batches[:3]):
            x = batch.astype(dtype)
            y = ours.forward(x)
            w = np.cos(np.arange(y.size, dtype=dtype)).reshape(y.shape)
            grad = ours.backward(w)
            tx = torch.from_numpy(x.copy()).requires_grad_(True)
            ty = theirs(tx)
            ty.backward(torch.from_numpy(w))
            if y.dtype != dtype:
                raise _fail(technique, clause, f"NumPy forward turned {dtype.__name__} into "
                                               f"{y.dtype}")
            _close(technique, clause, y, _to_numpy(ty), rtol=rtol, atol=atol,
                   what=f"{dtype.__name__} outputs of training batch {index}")
            _close(technique, clause, grad, _to_numpy(tx.grad), rtol=rtol, atol=atol,
                   what=f"{dtype.__name__} input gradients of training batch {index}")
        if hasattr(ours, "eval"):
            ours.eval()
            theirs.eval()
            x = batches[3].astype(dtype)
            with torch.no_grad():
                expected = _to_numpy(theirs(torch.from_numpy(x)))
            _close(technique, clause, ours.forward(x), expected, rtol=rtol, atol=atol,
                   what=f"{dtype.__name__} eval-mode outputs after 3 training batches")


# ------------------------------------------------------------- no torch for NumPy builds
_PROBE_SCRIPT: Final = """
import importlib, json, sys
import optiplug
from optiplug.testing import _kit
registry = optiplug.registry()
results = {}
for key, kind, name, module, in_process in json.loads(sys.argv[1]):
    try:
        if in_process:
            try:
                registry.register(importlib.import_module(module), override=True)
                technique = registry.get(kind, name)
            except Exception as exc:
                results[key] = f"skip: not installed, and its module {module!r} does not "\\
                    f"register it in a new process ({type(exc).__name__}: {exc})"
                continue
        else:
            technique = registry.get(kind, name)
        _kit.exercise(technique, "numpy")
        results[key] = "torch" if "torch" in sys.modules else "ok"
    except Exception as exc:
        results[key] = f"error: {type(exc).__name__}: {exc}"
    if "torch" in sys.modules:
        break
print(json.dumps(results))
"""
_probe_results: dict[str, str] = {}


def _probe_key(technique: Technique) -> str:
    return f"{technique.kind}.{technique.name}:{technique.spec.__module__}." \
           f"{technique.spec.__qualname__}"


def _probe(techniques: Sequence[Technique]) -> None:
    """Exercise NumPy builds in fresh interpreters, recording for each whether torch got
    imported (one process for all, a new one after each culprit)."""
    import os
    import subprocess

    todo = [t for t in techniques if _probe_key(t) not in _probe_results
            and "numpy" in t.builders]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    while todo:
        payload = json.dumps([[_probe_key(t), t.kind, t.name, t.spec.__module__,
                               t.origin is None or t.origin.distribution is None]
                              for t in todo])
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT, payload],
                              capture_output=True, text=True, env=environment, timeout=300,
                              check=False)
        lines = done.stdout.strip().splitlines()
        try:
            results: dict[str, str] = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            results = {}
        if not results:
            message = f"error: the probe process failed: {done.stderr.strip()[-2000:]}"
            results = {_probe_key(t): message for t in todo}
        _probe_results.update(results)
        todo = [t for t in todo if _probe_key(t) not in _probe_results]


def check_numpy_without_torch(technique: Technique,
                              batch: Sequence[Technique] = ()) -> None:
    """Building and using the technique on NumPy in a fresh interpreter does not import torch.

    Args:
        batch: Other techniques to probe in the same subprocess (results are cached), so a
            session checking many plugins starts one interpreter, not one each.
    """
    _need(technique, "numpy")
    _probe([technique, *batch])
    result = _probe_results.get(_probe_key(technique), "error: not probed")
    if result == "ok":
        return
    if result.startswith("skip: "):
        raise CheckSkipped(result[len("skip: "):])
    if result == "torch":
        raise _fail(technique, "numpy without torch", (
            "building and using it on NumPy imported torch; import torch only inside the torch "
            "builder (or a module imported from there)"))
    raise _fail(technique, "numpy without torch", f"in a fresh interpreter: {result}")


# ------------------------------------------------------------------------------ checks
@dataclass(frozen=True)
class Check:
    """One conformance check of one technique (or of one broken plugin).

    ``str(check)`` is its test id, ``optimizer.lion::state_dict[numpy]``, so a plugin's own
    tests can ``pytest.mark.parametrize("check", conformance_checks("my-dist"), ids=str)`` and
    call :meth:`run`.
    """

    subject: str
    name: str
    function: Callable[[], None] = field(repr=False, compare=False)
    needs_torch: bool = False
    technique: Technique | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        """``subject::name``."""
        return f"{self.subject}::{self.name}"

    def __str__(self) -> str:
        return self.id

    def run(self) -> None:
        """Run the check; a check that does not apply calls ``pytest.skip`` under pytest.

        Raises:
            ConformanceError: the plugin breaks the contract.
            CheckSkipped: the check does not apply (outside pytest).
        """
        try:
            if self.needs_torch and not torch_available():
                raise CheckSkipped("torch is not installed")
            self.function()
        except CheckSkipped as exc:
            if "pytest" in sys.modules:
                import pytest

                pytest.skip(f"{self.id}: {exc}")
            raise


def _checks_for(technique: Technique, registry: Registry,
                batch: Sequence[Technique]) -> list[Check]:
    subject = f"{technique.kind}.{technique.name}"
    t = technique
    checks = [Check(subject, "spec", lambda: check_spec(t, registry=registry), technique=t),
              Check(subject, "schema", lambda: check_schema(t, registry=registry),
                    technique=t)]

    def add(name: str, function: Callable[[], None], backends: Sequence[str]) -> None:
        if all(b in t.builders for b in backends):
            checks.append(Check(subject, name, function, "torch" in backends, technique=t))

    def per_backend(name: str, function: Callable[[Technique, str], None]) -> None:
        for backend in KNOWN_BACKENDS:
            add(f"{name}[{backend}]", functools.partial(function, t, backend), [backend])

    for backend in t.backends:
        checks.append(Check(subject, f"build[{backend}]",
                            functools.partial(check_build, t, backend, registry=registry),
                            backend == "torch", technique=t))
    add("numpy without torch", lambda: check_numpy_without_torch(t, batch), ["numpy"])
    if t.kind == "optimizer" and getattr(t.spec, "closure_driven", False):
        # step(closure) over one param group (L-BFGS): the kit's runs step two groups without
        # a closure, so they do not apply; the technique's own tests cover these clauses.
        return checks[:2]
    if t.kind == "optimizer":
        per_backend("state_dict", check_optimizer_state_dict)
        per_backend("lr from param_groups", check_optimizer_lr_from_param_groups)
        per_backend("step hooks", check_optimizer_step_hooks)
    elif t.kind == "scheduler":
        per_backend("state_dict", check_scheduler_state_dict)
    elif t.kind == "initializer":
        per_backend("variance", check_initializer_variance)
    else:
        add("gradient[numpy]", lambda: check_numerical_gradient(t), ["numpy"])
    add("numpy vs torch", lambda: check_backends_agree(t), list(KNOWN_BACKENDS))
    return checks


def _broken_check(record: BrokenPlugin) -> Check:
    def fail() -> None:
        raise ConformanceError(record.describe())

    return Check(record.plugin, "loads", fail)


def conformance_checks(target: str | Technique | Iterable[Technique], *,
                       registry: Registry | None = None) -> list[Check]:
    """Every check of the techniques ``target`` names, ready to parametrize a test with.

    Args:
        target: A :class:`~optiplug.Technique` (or several), or a name: ``all``, ``builtin``, a
            distribution, an entry point or ``kind.name`` (``fnmatch`` patterns and commas
            allowed). A broken plugin that a name matches gives a check that fails with its
            error.
        registry: Defaults to the process-wide registry.

    Raises:
        LookupError: a name matches nothing installed.
    """
    registry = registry or default_registry()
    if isinstance(target, str):
        selection = select(target, registry)
        techniques: list[Technique] = list(selection.techniques)
        checks = [_broken_check(record) for record in selection.broken]
    elif isinstance(target, Technique):
        techniques, checks = [target], []
    else:
        techniques, checks = list(target), []
    batch = tuple(techniques)
    for technique in techniques:
        checks.extend(_checks_for(technique, registry, batch))
    return checks


@dataclass(frozen=True)
class Report:
    """What :func:`check_technique` ran: check ids that passed and skipped ones with reasons."""

    passed: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def check_technique(target: str | Technique, *, registry: Registry | None = None) -> Report:
    """Run every conformance check of ``target`` (a technique or a name as in
    :func:`conformance_checks`) and raise one error listing every failure.

    Returns:
        Which checks passed and which were skipped (torch not installed, no declared variance).

    Raises:
        ConformanceError: one or more checks failed; the message has one line per failure.
    """
    passed: list[str] = []
    skipped: list[tuple[str, str]] = []
    failures: list[str] = []
    for check in conformance_checks(target, registry=registry):
        try:
            if check.needs_torch and not torch_available():
                raise CheckSkipped("torch is not installed")
            check.function()
        except CheckSkipped as exc:
            skipped.append((check.id, str(exc)))
        except AssertionError as exc:
            failures.append(f"{check.id}: {exc}")
        except Exception as exc:
            failures.append(f"{check.id}: raised {type(exc).__name__}: {exc}")
        else:
            passed.append(check.id)
    if failures:
        raise ConformanceError(f"{len(failures)} conformance check(s) failed:\n" +
                               "\n".join(failures))
    return Report(tuple(passed), tuple(skipped))

