"""Shared plumbing of the conformance checks: errors, tolerances, parameters and builds."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..registry import Registry
from ..specs import Spec
from ..technique import Technique
from ._examples import (
    NUM_FEATURES,
    ConformanceError,
    accepts,
    required_positional,
)

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


# ------------------------------------------------------------------------ runtime values
def _numpy_params(dtype: Any = np.float64, seed: int = 1) -> dict[str, Array]:
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((6, 5)).astype(dtype),
            "b": rng.standard_normal(5).astype(dtype),
            "v": rng.standard_normal(7).astype(dtype)}


def _numpy_groups(params: Mapping[str, Array], lr: float, *, single: bool = False
                  ) -> list[dict[str, Any]]:
    # Two groups, the second with half the lr: every optimizer must honour group overrides
    # (one group for an optimizer that takes only one: its spec's ``single_group``).
    if single:
        return [{"params": dict(params), "lr": lr}]
    return [{"params": {"w": params["w"], "b": params["b"]}},
            {"params": {"v": params["v"]}, "lr": lr * 0.5}]


def _single_group(technique: Technique) -> bool:
    return bool(getattr(technique.spec, "single_group", False))


def _bowl(params: Mapping[str, Any], step: int, *, loss: bool = True
          ) -> tuple[float, dict[str, Array]]:
    """The kit's objective at ``params``: a noisy quadratic bowl ``sum(c p^2 / 2 + noise p)``,
    the noise fixed by ``step`` and each parameter's name. Returns the loss (``nan`` when not
    asked for) and the gradients ``c * p + noise`` (each in its parameter's dtype)."""
    total = 0.0 if loss else math.nan
    grads = {}
    for name in sorted(params):
        value = np.asarray(params[name], dtype=np.float64)
        rng = np.random.default_rng([1000 + step, zlib.crc32(name.encode())])
        curvature = np.linspace(0.5, 2.0, value.size).reshape(value.shape)
        noise = 0.1 * rng.standard_normal(value.shape)
        if loss:
            with np.errstate(over="ignore", invalid="ignore"):  # a diverged run: loss inf/nan
                total += float(np.sum(0.5 * curvature * value * value + noise * value))
        grads[name] = (curvature * value + noise).astype(np.asarray(params[name]).dtype)
    return total, grads


def _grads(params: Mapping[str, Array], step: int) -> dict[str, Array]:
    """The gradients of :func:`_bowl` at ``params``."""
    return _bowl(params, step, loss=False)[1]


def _step_numpy(optimizer: Any, params: Mapping[str, Array], step: int, *, scale: float = 1.0,
                absent: Collection[str] = ()) -> None:
    """One step of a NumPy optimizer on :func:`_bowl` (times ``scale``): the gradients at the
    current values, or for a closure-driven optimizer (``requires_closure``) a closure that
    computes loss and gradients wherever the optimizer evaluates it. Parameters in ``absent``
    get no gradient."""

    closure = bool(getattr(optimizer, "requires_closure", False))

    def evaluate() -> tuple[float, dict[str, Array]]:
        loss, grads = _bowl(params, step, loss=closure)
        return loss * scale, {name: grad * scale if scale != 1.0 else grad
                              for name, grad in grads.items() if name not in absent}

    if closure:
        optimizer.step(evaluate)
    else:
        optimizer.step(evaluate()[1])


class _TorchParams:
    """The same three parameters as torch ``nn.Parameter`` s, in the same two groups."""

    def __init__(self, values: Mapping[str, Array]) -> None:
        import torch

        self.params = {name: torch.nn.Parameter(torch.from_numpy(value.copy()))
                       for name, value in values.items()}

    def groups(self, lr: float, *, single: bool = False) -> list[dict[str, Any]]:
        if single:
            return [{"params": list(self.params.values()), "lr": lr}]
        return [{"params": [self.params["w"], self.params["b"]]},
                {"params": [self.params["v"]], "lr": lr * 0.5}]

    def numpy(self) -> dict[str, Array]:
        return {name: param.detach().numpy().copy() for name, param in self.params.items()}

    def set_grads(self, step: int, *, scale: float = 1.0, absent: Collection[str] = (),
                  loss: bool = False) -> float:
        """Set each ``.grad`` to :func:`_bowl`'s gradient at the current values (``None`` for
        the names in ``absent``); returns the loss (``nan`` unless ``loss``)."""
        import torch

        value, grads = _bowl(self.numpy(), step, loss=loss)
        for name, grad in grads.items():
            self.params[name].grad = (None if name in absent else
                                      torch.from_numpy(grad * scale if scale != 1.0 else grad))
        return value * scale

    def step(self, optimizer: Any, step: int, *, scale: float = 1.0,
             absent: Collection[str] = ()) -> None:
        """One step of a torch optimizer on :func:`_bowl`, as :func:`_step_numpy`."""
        import torch

        if getattr(optimizer, "requires_closure", False):
            optimizer.step(lambda: torch.tensor(
                self.set_grads(step, scale=scale, absent=absent, loss=True), dtype=torch.float64))
        else:
            self.set_grads(step, scale=scale, absent=absent)
            optimizer.step()


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
    if technique.kind == "optimizer" and "params" in runtime:
        from ..param_groups import normalize_params

        # Builders get params as optiplug.build hands them over (the builder contract).
        runtime = {**runtime, "params": normalize_params(runtime["params"], backend)}
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




def output_shape(spec: Spec, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape a layer declares (``spec.output_shape(input_shape)``, for layers that
    change the shape, such as gated units halving an axis), else the input shape."""
    declared = getattr(spec, "output_shape", None)
    return tuple(declared(input_shape)) if callable(declared) else tuple(input_shape)


def built_type(obj: Any) -> type:
    """``type(obj)``; for a torch module with parametrizations (``weight_norm``), whose class
    torch makes anew for each module, the class it had before."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.nn.Module):
        from torch.nn.utils.parametrize import type_before_parametrizations

        return type_before_parametrizations(obj)
    return type(obj)


def init_shapes(spec: Spec) -> tuple[tuple[int, ...], ...]:
    """The weight shapes an initializer spec is checked on (its ``example_shapes()``)."""
    shapes = getattr(spec, "example_shapes", None)
    return tuple(shapes()) if callable(shapes) else INIT_SHAPES


def input_shape(spec: Spec, batch: int, num_features: int) -> tuple[int, ...]:
    """The input shape a layer of ``spec`` is fed (its ``example_input_shape``)."""
    shape = getattr(spec, "example_input_shape", None)
    return tuple(shape(batch, num_features)) if callable(shape) else (batch, num_features)
