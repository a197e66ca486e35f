"""Layer checks: numerical gradients, and NumPy against torch for every kind."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ..specs import Spec
from ..technique import Technique
from ._common import (
    EPS,
    KNOWN_BACKENDS,
    SIGMAS,
    STEPS,
    Array,
    CheckSkipped,
    _build,
    _close,
    _fail,
    _is_layer,
    _need,
    _to_numpy,
    init_shapes,
    input_shape,
    output_shape,
)
from ._examples import (
    BATCH,
    NUM_FEATURES,
    away_from_zero,
    example_spec,
)
from ._initializer_checks import _init_samples, _moments
from ._optimizer_checks import _optimizer_trajectory
from ._scheduler_checks import _scheduler_run


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
    x = away_from_zero(rng, input_shape(spec, BATCH, NUM_FEATURES))
    if hasattr(module, "train"):
        module.train()
    weights = rng.standard_normal(output_shape(spec, x.shape))
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
    20 steps, or the spec's ``agreement_steps``), scheduler learning rates, initializer sample
    moments, and layer outputs, input gradients and eval-mode outputs after training steps
    (float64 and float32)."""
    for backend in KNOWN_BACKENDS:
        _need(technique, backend)
    spec = example_spec(technique.spec)
    clause = "numpy vs torch"
    if technique.kind == "optimizer":
        steps = getattr(technique.spec, "agreement_steps", None) or STEPS
        numpy_run = _optimizer_trajectory(technique, spec, "numpy", steps)
        torch_run = _optimizer_trajectory(technique, spec, "torch", steps)
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
    for shape in init_shapes(spec):
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
    shape = input_shape(spec, BATCH, NUM_FEATURES)
    batches = [rng.standard_normal(shape) * 2 + 0.5 for _ in range(4)]
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


