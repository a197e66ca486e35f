"""The Python API: one function per kind, each validating first and building second."""

from __future__ import annotations

from typing import Any

from .config import build, to_spec
from .registry import Registry, default_registry
from .specs import Spec

__all__ = ["Initializer", "activation", "initializer", "normalizer", "optimizer", "registry",
           "scheduler", "spec"]


def registry() -> Registry:
    """The process-wide registry (discovered on first use)."""
    return default_registry()


def spec(kind: str, name: str, **hyper: Any) -> Spec:
    """The validated, frozen spec of ``kind``/``name`` with ``hyper``.

    Raises:
        ConfigError: unknown kind or name, or bad hyperparameters (every path listed).
    """
    return to_spec({"kind": kind, "name": name, **hyper})


def optimizer(name: str, params: Any, *, backend: str | None = None, **hyper: Any) -> Any:
    """Build optimizer ``name`` over ``params``.

    Args:
        name: A registered optimizer (``"adam"``, ``"sgd"``, ...).
        params: torch tensors, ``nn.Parameter``s, ``named_parameters()``, an ``nn.Module`` or
            param-group dicts; or NumPy arrays, a ``{name: array}`` dict, or param-group dicts;
            or what :func:`optiplug.param_groups` returns, as it is.
        backend: Inferred from ``params`` when left out.
        **hyper: The optimizer's hyperparameters (``lr=1e-3``, ...).

    Returns:
        A ``torch.optim.Optimizer`` (torch) or a ``NumpyOptimizer`` (NumPy).
    """
    return build({"kind": "optimizer", "name": name, **hyper}, backend=backend, params=params)


def scheduler(name: str, optimizer: Any, **hyper: Any) -> Any:
    """Build learning-rate scheduler ``name`` driving ``optimizer`` (its backend is used)."""
    return build({"kind": "scheduler", "name": name, **hyper}, optimizer=optimizer)


def activation(name: str, *, backend: str = "numpy", **hyper: Any) -> Any:
    """Build activation ``name``: an ``nn.Module`` (torch) or a ``NumpyModule`` (NumPy)."""
    return build({"kind": "activation", "name": name, **hyper}, backend=backend)


def normalizer(name: str, *, backend: str = "numpy", num_features: int | None = None,
               dtype: Any = None, device: Any = None, **hyper: Any) -> Any:
    """Build normalizer ``name``: a data scaler (``fit``/``transform``) or a layer.

    Args:
        num_features: Size of the normalized feature (channel) dimension, for layers.
        dtype: Parameter and buffer dtype of a layer (``np.float32``, ``torch.float32``).
        device: torch device of a layer's parameters.
    """
    runtime: dict[str, Any] = {key: value for key, value in
               (("num_features", num_features), ("dtype", dtype), ("device", device))
               if value is not None}
    return build({"kind": "normalizer", "name": name, **hyper}, backend=backend, **runtime)


class Initializer:
    """A configured weight initializer that fills torch tensors or makes NumPy arrays.

    ``init(tensor, generator=g)`` fills a torch tensor in place (no autograd recording) and
    returns it; ``init(shape, dtype=np.float32, rng=np.random.default_rng(0))`` returns a new
    NumPy array. Shapes follow torch's layout ``(out_features, in_features, *kernel)``.
    """

    def __init__(self, spec: Spec, registry: Registry) -> None:
        self.spec = spec
        self._registry = registry
        self._fills: dict[str, Any] = {}

    def _fill(self, backend: str) -> Any:
        fill = self._fills.get(backend)
        if fill is None:
            fill = self._fills[backend] = self._registry.build(self.spec, backend=backend)
        return fill

    def __call__(self, target: Any, *, dtype: Any = None, rng: Any = None,
                 generator: Any = None) -> Any:
        backend = self._registry.detect_backend(target)
        if backend is not None and backend != "numpy":
            return self._fill(backend)(target, generator=generator)
        import numpy as np

        shape = (target,) if isinstance(target, int) else tuple(getattr(target, "shape", target))
        return self._fill("numpy")(shape, dtype=np.dtype(dtype or np.float64),
                                   rng=rng if rng is not None else np.random.default_rng())

    def __repr__(self) -> str:
        return f"Initializer({self.spec!r})"


def initializer(name: str, **hyper: Any) -> Initializer:
    """A configured initializer, usable on torch tensors and NumPy shapes alike."""
    return Initializer(to_spec({"kind": "initializer", "name": name, **hyper}),
                       default_registry())


