"""Standardization: shift every feature to zero mean and scale it to unit variance.

``x' = (x - mean) / std`` per feature, with the mean and the population standard deviation
(``ddof=0``) fitted on training data. The default preprocessing for gradient-trained models: it
makes features comparable in scale, which conditions the loss surface. A (near-)constant feature
has scale 1, never a division by zero. Same results as scikit-learn's ``StandardScaler``;
``partial_fit`` combines batches exactly (Chan et al.).

Reference: scikit-learn ``sklearn.preprocessing.StandardScaler``; Chan, Golub & LeVeque,
"Algorithms for computing the sample variance", 1983.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import Scaler, near_constant_std

Stats = dict[str, NDArray[np.float64]]


class StandardizeSpec(optiplug.NormalizerSpec):
    """Per-feature zero-mean, unit-variance scaling of data."""

    name: Literal["standardize"] = "standardize"
    with_mean: bool = True
    """Subtract the fitted mean."""
    with_std: bool = True
    """Divide by the fitted population standard deviation (1 for constant features)."""


class StandardScaler(Scaler):
    """Fitted statistics: ``mean`` and, with ``with_std``, the population variance ``var``."""

    def __init__(self, spec: StandardizeSpec, *, backend: Literal["numpy", "torch"],
                 num_features: int | None = None) -> None:
        super().__init__(backend=backend, num_features=num_features)
        self.spec = spec
        self.statistic_names = ("mean", "var") if spec.with_std else ("mean",)

    def _batch_statistics(self, x: Any) -> Stats:
        mean, var = self._ops.moments(x, with_var=self.spec.with_std)
        return {"mean": mean} if var is None else {"mean": mean, "var": var}

    def _merge(self, old: Stats, n_old: int, new: Stats, n_new: int) -> Stats:
        total = n_old + n_new
        delta = new["mean"] - old["mean"]
        merged = {"mean": old["mean"] + delta * (n_new / total)}
        if self.spec.with_std:
            squares = old["var"] * n_old + new["var"] * n_new + delta**2 * (n_old * n_new / total)
            merged["var"] = squares / total
        return merged

    def _affine(self, stats: Stats) -> tuple[NDArray[np.float64] | None, NDArray[np.float64]]:
        center = stats["mean"] if self.spec.with_mean else None
        if not self.spec.with_std:
            return center, np.ones_like(stats["mean"])
        return center, near_constant_std(stats["var"], stats["mean"], self.n_samples_seen)


def build_numpy(spec: StandardizeSpec, num_features: int | None = None) -> StandardScaler:
    return StandardScaler(spec, backend="numpy", num_features=num_features)


def build_torch(spec: StandardizeSpec, num_features: int | None = None) -> StandardScaler:
    import torch  # noqa: F401  (fail here, not at the first transform, without torch)

    return StandardScaler(spec, backend="torch", num_features=num_features)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="standardize", spec=StandardizeSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Data scaler to zero mean and unit (population) variance per feature; the "
                "default preprocessing for gradient-trained models.",
        reference="scikit-learn StandardScaler")]
