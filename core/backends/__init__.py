"""Array backends: the builtin ``numpy`` and ``torch`` descriptors and backend detection.

This module is itself a plugin (it implements ``optiplug_backends``) that the registry always
registers: the core's base classes live here, so it cannot be disabled. Other backends come
from plugins through the same hook. Nothing here imports torch: a value can only be a torch
tensor if torch is already imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from typing import Any

from ..hookspecs import hookimpl
from ..technique import Backend

__all__ = ["NUMPY", "TORCH", "first_leaf", "optiplug_backends"]


def _owns_numpy(value: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and isinstance(value, numpy.ndarray)


def _owns_torch(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(
        value, (torch.Tensor, torch.nn.Module, torch.optim.Optimizer))


NUMPY = Backend(name="numpy", module="numpy", owns=_owns_numpy,
                summary="NumPy arrays on the CPU; optiplug's own optimizers and layers")
TORCH = Backend(name="torch", module="torch", owns=_owns_torch, priority=10,
                summary="PyTorch tensors and nn.Modules; wraps torch's own kernels")


@hookimpl
def optiplug_backends() -> list[Backend]:
    """The builtin backends."""
    return [NUMPY, TORCH]


def first_leaf(value: Any, _depth: int = 0) -> Any:
    """The first array-like leaf inside params-like ``value``, or ``None``.

    Looks through param-group dicts (``{"params": ...}``), ``{name: array}`` mappings,
    ``(name, array)`` pairs and sequences. Iterators are not consumed: callers pass lists.
    """
    if _depth > 6:
        return None
    if isinstance(value, Mapping):
        if "params" in value:
            return first_leaf(value["params"], _depth + 1)
        for item in value.values():
            return first_leaf(item, _depth + 1)
        return None
    if isinstance(value, (str, bytes)):
        return None
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return first_leaf(value[1], _depth + 1)
    if isinstance(value, (list, tuple)):
        for item in value:
            return first_leaf(item, _depth + 1)
        return None
    if isinstance(value, Iterable) and not hasattr(value, "shape") and not _owns_torch(value):
        return None
    return value
