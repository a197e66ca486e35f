"""Shared pieces of the trajectory tests: parameters moved between NumPy and torch, param
groups split by name, gradients set on torch parameters."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Array = np.ndarray


def as_torch(params: Mapping[str, Array]) -> dict[str, Any]:
    """Fresh ``torch.nn.Parameter`` copies of NumPy arrays, by name."""
    import torch

    return {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in params.items()}


def as_numpy(params: Mapping[str, Any]) -> dict[str, Array]:
    """NumPy copies of torch tensors, by name."""
    return {n: p.detach().numpy().copy() for n, p in params.items()}


def split_groups(params: Mapping[str, Any], groups: Sequence[Sequence[str]],
                 overrides: Mapping[str, Any], named: bool = True) -> list[dict[str, Any]]:
    """Param groups of ``params`` by the names in ``groups``; the last group gets
    ``overrides``. ``named=False`` gives plain lists, as ``torch.optim`` takes them."""
    result: list[dict[str, Any]] = []
    for index, names in enumerate(groups):
        members = ({n: params[n] for n in names} if named else [params[n] for n in names])
        extra = dict(overrides) if index == len(groups) - 1 else {}
        result.append({"params": members, **extra})
    return result


def set_grads(params: Mapping[str, Any], grads: Mapping[str, Any], dtype: Any = None) -> None:
    """Set each torch parameter's ``.grad`` from a NumPy array (cast to ``dtype`` if given);
    ``None`` stays ``None``."""
    import torch

    for n, g in grads.items():
        params[n].grad = (None if g is None
                          else torch.from_numpy(g if dtype is None else g.astype(dtype)))


def tanh_net_gradients(params: Mapping[str, Array], x: Array, y: Array, step: int,
                       no_grad: Mapping[str, set[int]], drop: bool = True) -> dict[str, Any]:
    """Gradients of a 2-layer tanh network's (``w1, b1, w2, b2``) weighted mean squared error on
    ``x, y``, recomputed at ``params`` in float64. A fresh sample weighting per step makes them
    noisy; ``None`` at the steps ``no_grad`` gives per parameter (with ``drop``)."""
    p = {name: np.asarray(value, dtype=np.float64) for name, value in params.items()}
    weights = 1.0 + 0.5 * np.random.default_rng(100 + step).random(len(x))
    hidden = np.tanh(x @ p["w1"].T + p["b1"])
    out = hidden @ p["w2"].T + p["b2"]
    d_out = 2.0 * weights[:, None] * (out - y) / len(x)
    d_hidden = (d_out @ p["w2"]) * (1.0 - hidden**2)
    grads: dict[str, Any] = {"w2": d_out.T @ hidden, "b2": d_out.sum(0),
                             "w1": d_hidden.T @ x, "b1": d_hidden.sum(0)}
    if drop:
        for name, steps in no_grad.items():
            if step in steps:
                grads[name] = None
    return grads
