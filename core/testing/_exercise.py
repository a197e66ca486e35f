"""Build checks: each backend builds and is used once the way its kind is used."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..registry import Registry, default_registry
from ..specs import Spec
from ..technique import Technique
from ._common import (
    _build,
    _fail,
    _is_layer,
    _is_scaler,
    _lrs,
    _need,
    _normalizer_runtime,
    _numpy_groups,
    _numpy_params,
    _registered,
    _scheduler_optimizer,
    _single_group,
    _step_numpy,
    _step_scheduler,
    _TorchParams,
    built_type,
    init_shapes,
    input_shape,
    output_shape,
)
from ._examples import (
    BATCH,
    NUM_FEATURES,
    example_spec,
)


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
    single = _single_group(technique)
    start = _numpy_params(np.float32)
    if backend == "numpy":
        from ..backends._numpy_optim import NumpyOptimizer

        params = {name: value.copy() for name, value in start.items()}
        optimizer = _build(technique, spec, backend,
                           params=_numpy_groups(params, lr, single=single))
        if not isinstance(optimizer, NumpyOptimizer):
            raise _fail(technique, clause, f"the NumPy builder returned "
                                           f"{type(optimizer).__name__}, not a NumpyOptimizer")
        for step in range(2):
            _step_numpy(optimizer, params, step)
        after = params
    else:
        import torch

        holder = _TorchParams(start)
        optimizer = _build(technique, spec, backend, params=holder.groups(lr, single=single))
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise _fail(technique, clause, f"the torch builder returned "
                                           f"{type(optimizer).__name__}, not a "
                                           f"torch.optim.Optimizer")
        for step in range(2):
            holder.step(optimizer, step)
        after = holder.numpy()
    groups = getattr(optimizer, "param_groups", None)
    expected = 1 if single else 2
    if not isinstance(groups, list) or len(groups) != expected or \
            any("lr" not in g for g in groups):
        raise _fail(technique, clause, f"param_groups must be a list of the {expected} given "
                                       f"group(s), each with an 'lr'")
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
    # A small weight of the first rank the initializer is checked on (some take only 2-D).
    shape = (16, 8, *init_shapes(spec)[0][2:3])
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
    data = rng.standard_normal(input_shape(spec, BATCH, NUM_FEATURES))
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
            for what, value, shape in (("forward", y, output_shape(spec, x.shape)),
                                       ("backward", grad, x.shape)):
                if not isinstance(value, np.ndarray) or value.shape != shape or \
                        value.dtype != dtype:
                    raise _fail(technique, clause, (
                        f"{what} of a {dtype.__name__} {x.shape} input gave "
                        f"{type(value).__name__} {getattr(value, 'dtype', '')} "
                        f"{getattr(value, 'shape', '')}; expected {dtype.__name__} {shape} "
                        f"(the spec's output_shape(input_shape) for a layer that changes "
                        f"the shape)"))
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
    if tuple(out.shape) != output_shape(spec, tuple(tensor.shape)) or \
            out.dtype != tensor.dtype:
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
        single = _single_group(technique)
        runtime["params"] = (_numpy_groups(_numpy_params(), 1e-3, single=single)
                             if backend == "numpy"
                             else _TorchParams(_numpy_params()).groups(1e-3, single=single))
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
    if built_type(again) is not built_type(obj):
        raise _fail(technique, f"build[{backend}]", (
            f"optiplug.build from a config gave {built_type(again).__name__}, the builder "
            f"{built_type(obj).__name__}"))


