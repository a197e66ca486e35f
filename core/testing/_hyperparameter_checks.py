"""Hyperparameter check: every hyperparameter of a spec changes what the technique computes.

A field that the builder ignores is a defect users cannot see: the config validates, the run
trains, and the number they set does nothing. Each field is moved (booleans flipped, numbers
moved inside their bounds, choices switched, each element of a tuple on its own) and the
technique's result on a fixed workload compared with the example's. A field that matters only
together with another (``a`` of ``he_normal`` needs ``nonlinearity: leaky_relu``) passes when
moving it changes the result with some other single field moved too. Fields that choose a
policy rather than the computation (``nonfinite``, ``param_groups``: ``Spec.policy_fields``) and
fields whose values the kit cannot make up (free strings, nested models) are not checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
from pydantic import ValidationError

from ..specs import Spec
from ..technique import Technique
from ._common import (
    Array,
    CheckSkipped,
    _build,
    _fail,
    _is_layer,
    _lrs,
    _need,
    _numpy_params,
    _scheduler_optimizer,
    _step_numpy,
    _to_numpy,
    _TorchParams,
    init_shapes,
    input_shape,
)
from ._examples import BATCH, NUM_FEATURES, example_spec, required_positional
from ._initializer_checks import _init_samples
from ._optimizer_checks import _optimizer

__all__ = ["check_hyperparameters_matter", "variants"]

# Gradient scales of the optimizer workload: a large first gradient, then smaller and larger
# ones, so running maxima (AMSGrad), dampening and decays all show.
_GRADIENT_SCALES: Final = (10.0, 0.1, 1.0, 0.05, 3.0, 0.01, 1.0, 0.3)


def _numbers(value: float | int) -> list[Any]:
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2, value + 2]
    if value == 0:
        return [0.1, 0.5, 1e-3, -0.1, 2.0]
    return [value * 1.5, value * 0.5, value * 1.1, value * 0.9, -value, value + 0.1]


def _choices(prop: dict[str, Any], defs: dict[str, Any]) -> list[Any]:
    while "$ref" in prop:
        prop = defs[str(prop["$ref"]).rsplit("/", 1)[-1]]
    found = list(prop.get("enum", ()))
    if "const" in prop:
        found.append(prop["const"])
    for key in ("anyOf", "oneOf"):
        for option in prop.get(key, ()):
            found.extend(_choices(option, defs))
    return found


def _candidates(value: Any, prop: dict[str, Any], defs: dict[str, Any]) -> Iterator[
        tuple[str, Any]]:
    """``(label, new value)`` for the field: whole-value moves, then one per tuple element."""
    if isinstance(value, (bool, int, float)):
        for candidate in _numbers(value):
            yield "", candidate
    elif isinstance(value, str) or value is None:
        for candidate in _choices(prop, defs):
            if candidate != value:
                yield "", candidate
        if value is None:
            from ._examples import _synthesize

            try:
                yield "", _synthesize(prop, defs)
            except AssertionError:
                return
    elif isinstance(value, tuple) and value and all(
            isinstance(item, (int, float)) and not isinstance(item, bool) for item in value):
        for index, item in enumerate(value):
            for candidate in _numbers(item):
                yield f"[{index}]", (*value[:index], candidate, *value[index + 1:])


def variants(spec: Spec, every: bool = False) -> list[tuple[str, Spec]]:
    """One valid spec per checked field (and per tuple element), each differing from ``spec``
    in that field only; ``(field label, spec)``. With ``every``, all the valid moves the kit
    tries for each field, in order (the first per label is the one returned without it)."""
    cls = type(spec)
    schema = cls.model_json_schema()
    props, defs = schema.get("properties", {}), schema.get("$defs", {})
    policy: frozenset[str] = cls.policy_fields
    dump = spec.model_dump()
    found: list[tuple[str, Spec]] = []
    for name in cls.model_fields:
        if name in ("kind", "name") or name in policy:
            continue
        seen: set[str] = set()
        for label, candidate in _candidates(getattr(spec, name), props.get(name, {}), defs):
            if label in seen and not every:
                continue
            try:
                moved = cls.model_validate({**dump, name: candidate})
            except (ValidationError, ValueError, TypeError):
                continue
            if moved != spec:
                seen.add(label)
                found.append((f"{name}{label}", moved))
    return found


def _optimizer_outcome(technique: Technique, spec: Spec, backend: str) -> list[Array]:
    optimizer, params = _optimizer(technique, spec, backend, _numpy_params())
    for step, scale in enumerate(_GRADIENT_SCALES):
        if backend == "numpy":
            _step_numpy(optimizer, params, step, scale=scale)
        else:
            params.step(optimizer, step, scale=scale)
    values = params if backend == "numpy" else params.numpy()
    return [np.array(values[name]) for name in sorted(values)]


def _layer_inputs(spec: Spec, dtype: Any) -> list[Array]:
    rng = np.random.default_rng(11)
    batches = []
    for _ in range(4):
        x = rng.standard_normal(input_shape(spec, BATCH, NUM_FEATURES)) * 2 + 0.5
        x.reshape(-1)[:3] = (25.0, -25.0, 60.0)  # beyond thresholds (softplus), saturations
        batches.append(x.astype(dtype))
    return batches


def _layer_outcome(technique: Technique, spec: Spec, backend: str) -> list[Array]:
    batches = _layer_inputs(spec, np.float64)
    results: list[Array] = []
    if backend == "numpy":
        layer = _build(technique, spec, backend, dtype=np.float64)
        if not _is_layer(layer):
            return [np.asarray(layer.fit(batches[0]).transform(batches[1]))]
        for x in batches[:3]:
            y = layer.forward(x)
            results += [np.asarray(y), np.asarray(layer.backward(np.cos(y)))]
            results += [np.asarray(g) for _, g in sorted(getattr(layer, "grads", {}).items())]
        if hasattr(layer, "eval"):
            layer.eval()
            results.append(np.asarray(layer.forward(batches[3])))
        return results
    import torch

    module = _build(technique, spec, backend)
    if isinstance(module, torch.nn.Module):
        module = module.double()
    else:
        fitted = module.fit(torch.from_numpy(batches[0]))
        return [_to_numpy(fitted.transform(torch.from_numpy(batches[1])))]
    for x in batches[:3]:
        tx = torch.from_numpy(x.copy()).requires_grad_(True)
        y = module(tx)
        y.backward(torch.cos(y.detach()))
        results += [_to_numpy(y), _to_numpy(tx.grad)]
        results += [_to_numpy(p.grad) for p in module.parameters() if p.grad is not None]
    module.eval()
    with torch.no_grad():
        results.append(_to_numpy(module(torch.from_numpy(batches[3]))))
    return results


# A metric for schedulers that step on one (reduce-on-plateau): improving, flat for 9 steps,
# then one step better by a relative 1.2e-4 (an improvement for threshold 1e-4 in 'rel' mode,
# not for 1.5e-4 nor in 'abs' mode, where the flat run then reaches the patience), flat again,
# a clear improvement and a long plateau (a second reduction, where cooldown shows).
_METRICS: Final = (1.0, 0.5, 0.25, *[0.25] * 9, 0.24997, *[0.24997] * 4, 0.2, *[0.2] * 14,
                   *[0.1 / (1 + step) for step in range(8)])


def _momentum_optimizer(backend: str) -> Any:
    """The kit's scheduler optimizer with SGD momentum, so momentum schedules show too."""
    optimizer = _scheduler_optimizer(backend)
    if backend == "numpy":
        optimizer.defaults = {**optimizer.defaults, "momentum": 0.9}
        for group in optimizer.param_groups:
            group["momentum"] = 0.9
        return optimizer
    import torch

    return torch.optim.SGD(_TorchParams(_numpy_params()).groups(0.1), lr=0.1, momentum=0.9)


def _scheduler_outcome(technique: Technique, spec: Spec, backend: str) -> list[list[float]]:
    optimizer = _momentum_optimizer(backend)
    scheduler = _build(technique, spec, backend, optimizer=optimizer)

    def values() -> list[float]:
        return [*_lrs(optimizer), *(float(g.get("momentum", 0.0))
                                    for g in optimizer.param_groups)]

    seen = [values()]
    for metric in _METRICS:
        optimizer.step()
        if required_positional(scheduler.step):
            scheduler.step(metric)
        else:
            scheduler.step()
        seen.append(values())
    return seen


def outcome(technique: Technique, spec: Spec, backend: str) -> list[Array]:
    """What the technique computes on the kit's fixed workload for ``spec``."""
    if technique.kind == "optimizer":
        return _optimizer_outcome(technique, spec, backend)
    if technique.kind == "scheduler":
        return [np.asarray(_scheduler_outcome(technique, spec, backend), dtype=np.float64)]
    if technique.kind == "initializer":
        return [_init_samples(technique, spec, backend, shape) for shape in init_shapes(spec)]
    return _layer_outcome(technique, spec, backend)


def _same(a: list[Array], b: list[Array]) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b,
                                                                                   strict=True))


def check_hyperparameters_matter(technique: Technique, backend: str) -> None:
    """Moving any hyperparameter of the spec (within its bounds) changes the result on
    ``backend``: a hyperparameter the builder ignores is a defect."""
    _need(technique, backend)
    clause = f"every hyperparameter matters[{backend}]"
    spec = example_spec(technique.spec)
    moved = variants(spec)
    if not moved:
        raise CheckSkipped("no hyperparameter the kit can move")
    base = outcome(technique, spec, backend)
    ignored = []
    for label, variant in moved:
        try:
            result = outcome(technique, variant, backend)
        except AssertionError:
            continue        # this setting cannot run on the kit's workload (a build refuses it)
        if not _same(result, base) or _other_move_matters(technique, backend, spec, label,
                                                          variant, base):
            continue
        field_name = label.split("[")[0]
        if not _matters_with_another(technique, backend, spec, field_name, variant, base):
            ignored.append(f"{label} ({getattr(spec, field_name)!r} -> "
                           f"{getattr(variant, field_name)!r})")
    if ignored:
        raise _fail(technique, clause, (
            f"moving {', '.join(ignored)} did not change the result at all. The builder must "
            f"pass every hyperparameter on; a field that only selects a policy (not the "
            f"numbers) belongs in the spec's policy_fields"))


def _other_move_matters(technique: Technique, backend: str, spec: Spec, label: str,
                        first: Spec, base: list[Array]) -> bool:
    """Whether another move of the same field (element) changes the result: a first move can
    land on an equivalent setting (``warmup_steps`` 0 -> 1 warms up over no step, ``None`` ->
    ``"original"`` names the default) while a further one shows the builder passes it on."""
    for other_label, other in variants(spec, every=True):
        if other_label != label or other == first:
            continue
        try:
            if not _same(outcome(technique, other, backend), base):
                return True
        except AssertionError:
            continue
    return False


def _matters_with_another(technique: Technique, backend: str, spec: Spec, field_name: str,
                          variant: Spec, base: list[Array]) -> bool:
    """Whether moving ``field_name`` changes the result once some other field is moved too:
    against the same spec with ``field_name`` put back, or against the example when putting it
    back is not a valid spec (``factor`` needs ``total_iters``)."""
    original = getattr(spec, field_name)
    for label, both in variants(variant, every=True):
        if label.split("[")[0] == field_name:
            continue
        try:
            reset = type(spec).model_validate({**both.model_dump(), field_name: original})
        except (ValidationError, ValueError, TypeError):
            reset = None
        try:
            moved = outcome(technique, both, backend)
            if not _same(moved, base if reset is None else outcome(technique, reset, backend)):
                return True
        except AssertionError:
            continue
    return False
