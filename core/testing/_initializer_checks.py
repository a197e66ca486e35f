"""Initializer checks: samples have the declared mean and variance."""

from __future__ import annotations

import math

import numpy as np

from ..specs import Spec
from ..technique import Technique
from ._common import (
    SIGMAS,
    Array,
    CheckSkipped,
    _build,
    _fail,
    _need,
    _to_numpy,
    init_shapes,
)
from ._examples import (
    example_spec,
)


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
    """Samples of ``shape`` (one of the spec's ``example_shapes()``) filled on ``backend``.

    A backend refusing a declared shape (``ValueError``) is a failure: where the other backend
    fills that shape, the two disagree on it ("only one backend refuses shape ..."); where both
    refuse it, the spec declares a shape its initializer does not take."""
    try:
        return _fill_samples(technique, spec, backend, shape)
    except ValueError as exc:
        refusal = f"{type(exc).__name__}: {exc}"
        others = [b for b in ("numpy", "torch") if b != backend and b in technique.builders]
        for other in others:
            try:
                _fill_samples(technique, spec, other, shape)
            except ValueError:
                continue
            raise _fail(technique, "numpy vs torch", (
                f"only one backend refuses shape {shape}: {backend} raised {refusal}, "
                f"{other} fills it; both must take the same shapes")) from exc
        raise _fail(technique, f"example shapes[{backend}]", (
            f"{backend} refuses shape {shape}, which the spec's example_shapes() declares "
            f"({refusal}); declare only shapes the initializer takes")) from exc


def _fill_samples(technique: Technique, spec: Spec, backend: str,
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
    for shape in init_shapes(spec):
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


