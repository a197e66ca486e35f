"""Embedded datasets (no download), the train/validation split and input scaling.

- ``digits``: the 8x8 handwritten digits that scikit-learn ships (1797 images, 10 classes),
  read with ``sklearn.datasets.load_digits`` from its bundled copy.
- ``moons``, ``spirals``, ``regression``: synthetic problems generated with NumPy from a seed.

The split is a seeded permutation, so the same ``data`` section always gives the same split on
both backends. The input scaler (a ``normalizer`` technique such as ``standardize``) is fitted
on the training split only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, ConfigIssue, OptiplugError
from .recipe import DataConfig

__all__ = ["Dataset", "load_dataset", "make_moons", "make_regression", "make_spirals"]

_SYNTHETIC_SAMPLES = 1000


@dataclass(frozen=True)
class Dataset:
    """A split, scaled dataset.

    Attributes:
        x_train, x_val: Inputs, ``(n, features)``, in the recipe's dtype.
        y_train, y_val: Class indices (``int64``) or regression targets ``(n, 1)``.
        task: ``classification`` or ``regression``.
        num_classes: Number of classes (1 output for regression).
        name: The dataset's name.
    """

    x_train: NDArray[Any]
    y_train: NDArray[Any]
    x_val: NDArray[Any]
    y_val: NDArray[Any]
    task: Literal["classification", "regression"]
    num_classes: int
    name: str

    @property
    def num_features(self) -> int:
        """Number of input features."""
        return int(self.x_train.shape[1])

    @property
    def num_outputs(self) -> int:
        """Width of the model's output layer."""
        return self.num_classes if self.task == "classification" else 1


def _load_digits() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise OptiplugError("the digits dataset comes with scikit-learn, which is not "
                            "installed: pip install 'optiplug[train]' (or choose a synthetic "
                            "dataset: moons, spirals, regression)") from None
    bunch = load_digits()
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


def make_moons(samples: int, noise: float, rng: np.random.Generator
               ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Two interleaving half circles (classes 0 and 1) plus Gaussian noise."""
    outer = samples // 2
    inner = samples - outer
    t_outer = np.linspace(0.0, np.pi, outer)
    t_inner = np.linspace(0.0, np.pi, inner)
    x = np.concatenate([
        np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1),
        np.stack([1.0 - np.cos(t_inner), 0.5 - np.sin(t_inner)], axis=1),
    ])
    y = np.concatenate([np.zeros(outer, np.int64), np.ones(inner, np.int64)])
    x += rng.normal(0.0, noise, size=x.shape)
    return x, y


def make_spirals(samples: int, classes: int, noise: float, rng: np.random.Generator
                 ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """``classes`` interleaved spiral arms, each turning 1.25 times, plus Gaussian noise."""
    sizes = [samples // classes + (1 if k < samples % classes else 0) for k in range(classes)]
    xs, ys = [], []
    for k, size in enumerate(sizes):
        radius = np.linspace(0.05, 1.0, size)
        angle = radius * 2.5 * np.pi + 2.0 * np.pi * k / classes
        arm = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
        xs.append(arm + rng.normal(0.0, noise * 0.5, size=arm.shape))
        ys.append(np.full(size, k, np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def make_regression(samples: int, features: int, noise: float, rng: np.random.Generator
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """A smooth nonlinear target of ``features`` uniform inputs in ``[-1, 1]``, plus noise.

    ``y = sin(pi x0 x1) + (x2 - 0.5)**2 + sum_j w_j x_j`` (terms whose inputs exist), with fixed
    weights ``w_j = 1 / (j + 1)``: a Friedman-style problem with interactions, curvature and a
    linear part.
    """
    x = rng.uniform(-1.0, 1.0, size=(samples, features))
    y = x @ (1.0 / np.arange(1, features + 1))
    if features >= 2:
        y += np.sin(np.pi * x[:, 0] * x[:, 1])
    if features >= 3:
        y += (x[:, 2] - 0.5) ** 2
    y += rng.normal(0.0, noise, size=samples)
    return x, y.reshape(-1, 1)


def load_dataset(config: DataConfig, *, dtype: str = "float32") -> Dataset:
    """Generate or load, split and scale the dataset of a recipe's ``data`` section.

    Raises:
        OptiplugError: scikit-learn is missing for ``digits``.
        ConfigError: the split leaves a side empty.
    """
    rng = np.random.default_rng(config.seed)
    samples = config.samples or _SYNTHETIC_SAMPLES
    x: NDArray[Any]
    y: NDArray[Any]
    if config.dataset == "digits":
        x, y = _load_digits()
    elif config.dataset == "moons":
        x, y = make_moons(samples, config.noise, rng)
    elif config.dataset == "spirals":
        x, y = make_spirals(samples, config.classes, config.noise, rng)
    else:
        x, y = make_regression(samples, config.features, config.noise, rng)
    # One permutation from its own stream: the same split whatever was generated before it.
    order = np.random.default_rng([config.seed, 1]).permutation(len(x))
    if config.samples is not None:
        order = order[:config.samples]
    n_val = round(len(order) * config.validation_split)
    if n_val < 1 or n_val >= len(order):
        raise ConfigError([ConfigIssue("data.validation_split", (
            f"leaves {len(order) - n_val} training and {n_val} validation samples of "
            f"{len(order)}; both need at least one"))])
    val_index, train_index = order[:n_val], order[n_val:]
    x_train, x_val = x[train_index], x[val_index]
    if config.normalizer is not None:
        from ..config import build

        scaler = build(config.normalizer, backend="numpy", num_features=x.shape[1])
        if not (hasattr(scaler, "fit") and hasattr(scaler, "transform")):
            raise ConfigError([ConfigIssue("data.normalizer", (
                f"{config.normalizer.name!r} is a normalization layer, not a data scaler "
                f"(fit/transform); put it in model.layers.N.normalizer"))])
        scaler.fit(x_train)
        x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    float_type = np.dtype(dtype)
    y_type = np.int64 if config.dataset != "regression" else float_type
    task: Literal["classification", "regression"] = (
        "regression" if config.dataset == "regression" else "classification")
    return Dataset(
        x_train=np.ascontiguousarray(x_train, dtype=float_type),
        y_train=np.ascontiguousarray(y[train_index], dtype=y_type),
        x_val=np.ascontiguousarray(x_val, dtype=float_type),
        y_val=np.ascontiguousarray(y[val_index], dtype=y_type),
        task=task,
        num_classes=int(y.max()) + 1 if task == "classification" else 1,
        name=config.dataset)
