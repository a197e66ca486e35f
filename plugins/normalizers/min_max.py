"""Min-max scaling: map every feature linearly onto ``feature_range`` (``[0, 1]`` by default).

``x' = (x - min) / (max - min) * (high - low) + low`` per feature, with ``min``/``max`` fitted
on training data. Use it for bounded inputs (pixels, sensor readings) or models that expect a
fixed range; prefer ``standardize`` when features have outliers. A constant feature has range
1 (it maps to ``low``), never a division by zero. Same results as scikit-learn's
``MinMaxScaler``.

Reference: scikit-learn ``sklearn.preprocessing.MinMaxScaler``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import model_validator

import optiplug
from optiplug.backends.numpy import Scaler, nonzero_range

Stats = dict[str, NDArray[np.float64]]


class MinMaxSpec(optiplug.NormalizerSpec):
    """Per-feature rescaling of data onto ``feature_range``."""

    name: Literal["min_max"] = "min_max"
    feature_range: tuple[float, float] = (0.0, 1.0)
    """``(low, high)`` the fitted minimum and maximum of each feature map to; low < high."""
    clip: bool = False
    """Clip transformed values of unseen data into ``feature_range``."""

    @model_validator(mode="after")
    def _low_below_high(self) -> MinMaxSpec:
        low, high = self.feature_range
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"feature_range must be finite with low < high, got "
                             f"{self.feature_range}")
        return self


class MinMaxScaler(Scaler):
    """Fitted statistics: ``data_min`` and ``data_max`` per feature."""

    statistic_names = ("data_min", "data_max")

    def __init__(self, spec: MinMaxSpec, *, backend: Literal["numpy", "torch"],
                 num_features: int | None = None) -> None:
        super().__init__(backend=backend, num_features=num_features)
        self.spec = spec
        self.offset, high = spec.feature_range
        self._span = high - self.offset

    def _batch_statistics(self, x: Any) -> Stats:
        data_min, data_max = self._ops.extrema(x)
        return {"data_min": data_min, "data_max": data_max}

    def _merge(self, old: Stats, n_old: int, new: Stats, n_new: int) -> Stats:
        return {"data_min": np.minimum(old["data_min"], new["data_min"]),
                "data_max": np.maximum(old["data_max"], new["data_max"])}

    def _affine(self, stats: Stats) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return stats["data_min"], nonzero_range(stats["data_max"] - stats["data_min"]) / self._span

    def transform(self, x: Any) -> Any:
        out = super().transform(x)
        return self._ops.clip(out, *self.spec.feature_range) if self.spec.clip else out


def build_numpy(spec: MinMaxSpec, num_features: int | None = None) -> MinMaxScaler:
    return MinMaxScaler(spec, backend="numpy", num_features=num_features)


def build_torch(spec: MinMaxSpec, num_features: int | None = None) -> MinMaxScaler:
    import torch  # noqa: F401  (fail here, not at the first transform, without torch)

    return MinMaxScaler(spec, backend="torch", num_features=num_features)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="min_max", spec=MinMaxSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Data scaler mapping each feature's fitted [min, max] onto feature_range; for "
                "bounded inputs such as pixels.",
        reference="scikit-learn MinMaxScaler")]
