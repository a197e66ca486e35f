"""Gradient clipping before an optimizer step, as ``torch.nn.utils`` does it, for NumPy.

The torch base class calls ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``
themselves; this module is their NumPy counterpart, with the same arithmetic:

- by norm: ``total = ||(||g_1||_p, ..., ||g_n||_p)||_p`` over every gradient of the step
  (``p = inf``: the largest magnitude), ``coef = max_norm / (total + 1e-6)``, and every
  gradient is multiplied by ``min(coef, 1)``; a NaN or infinite total makes the gradients NaN
  (or zero), as torch's ``error_if_nonfinite=False`` does;
- by value: every element clamped to ``[-value, value]`` (NaN stays NaN).

The gradients given are never modified: clipped copies are returned, and a gradient that no
clipping changes is returned as it is (so an unclipped step is bit-identical to no clipping).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

__all__ = ["CLIP_KEYS", "checked_clipping", "clip_arrays", "total_norm"]

Array = NDArray[Any]
CLIP_KEYS: Final = ("clip_grad_norm", "clip_grad_norm_type", "clip_grad_value")
"""The clipping keyword arguments of the optimizer base classes."""
_EPS: Final = 1e-6  # torch.nn.utils.clip_grad_norm_'s guard against a zero norm


def checked_clipping(clip_grad_norm: float | None, clip_grad_norm_type: float,
                     clip_grad_value: float | None) -> dict[str, float] | None:
    """The clipping options as one dict (``None``: no clipping), validated.

    Raises:
        ConfigError: a bound that is not a positive number, a norm type that is not > 0, or
            both kinds of clipping at once.
    """
    if clip_grad_norm is not None and clip_grad_value is not None:
        raise ConfigError("give clip_grad_norm or clip_grad_value, not both")
    for key, value in (("clip_grad_norm", clip_grad_norm), ("clip_grad_value", clip_grad_value)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                      and value > 0):
            raise ConfigError([_issue(key, f"must be a positive number, got {value!r}")])
    if not (isinstance(clip_grad_norm_type, (int, float)) and clip_grad_norm_type > 0):
        raise ConfigError([_issue("clip_grad_norm_type", f"must be > 0 (inf allowed), got "
                                                         f"{clip_grad_norm_type!r}")])
    if clip_grad_norm is not None:
        return {"max_norm": float(clip_grad_norm), "norm_type": float(clip_grad_norm_type)}
    if clip_grad_value is not None:
        return {"clip_value": float(clip_grad_value)}
    return None


def _issue(path: str, message: str) -> Any:
    from ..errors import ConfigIssue

    return ConfigIssue(path, message)


def total_norm(grads: Sequence[Array], norm_type: float) -> float:
    """The ``norm_type``-norm of the per-array norms (torch's total gradient norm), in float64."""
    if not grads:
        return 0.0
    if math.isinf(norm_type):
        norms = [float(np.max(np.abs(g))) if g.size else 0.0 for g in grads]
    else:
        norms = [float(np.linalg.norm(g.reshape(-1).astype(np.float64, copy=False),
                                      norm_type)) if g.size else 0.0 for g in grads]
    return float(np.linalg.norm(np.asarray(norms, np.float64), norm_type))


def clip_arrays(grads: Sequence[Array], options: Mapping[str, float]) -> list[Array]:
    """``grads`` clipped as ``options`` (from :func:`checked_clipping`) say; never in place."""
    if "clip_value" in options:
        bound = options["clip_value"]
        return [np.clip(g, -bound, bound) for g in grads]
    norm = total_norm(grads, options["norm_type"])
    coef = options["max_norm"] / (norm + _EPS)
    # min() keeps a NaN coefficient (from a NaN norm), as torch.clamp does.
    clamped = coef if math.isnan(coef) else min(coef, 1.0)
    if clamped == 1.0:
        return list(grads)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, silently, as in torch
        return [g * g.dtype.type(clamped) for g in grads]
