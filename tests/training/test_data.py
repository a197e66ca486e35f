"""Embedded datasets: shapes, seeds, the split, and input scaling fitted on the training split."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import optiplug
from optiplug.training.data import load_dataset, make_moons, make_regression, make_spirals
from optiplug.training.recipe import DataConfig


def test_digits_split_is_seeded_and_scaled_with_training_statistics() -> None:
    from sklearn.datasets import load_digits
    from sklearn.preprocessing import StandardScaler

    config = DataConfig(dataset="digits", validation_split=0.2, seed=3,
                        normalizer=optiplug.spec("normalizer", "standardize"))
    data = load_dataset(config, dtype="float64")
    again = load_dataset(config, dtype="float64")
    assert data.x_train.shape == (1438, 64) and data.x_val.shape == (359, 64)
    assert data.num_classes == 10 and data.task == "classification"
    np.testing.assert_array_equal(data.x_train, again.x_train)
    np.testing.assert_array_equal(data.y_val, again.y_val)

    # Reference: the same permutation, scaled by scikit-learn's StandardScaler on train only.
    digits = load_digits()
    order = np.random.default_rng([3, 1]).permutation(1797)
    train, val = order[359:], order[:359]
    scaler = StandardScaler().fit(digits.data[train])
    np.testing.assert_allclose(data.x_train, scaler.transform(digits.data[train]), atol=1e-12)
    np.testing.assert_allclose(data.x_val, scaler.transform(digits.data[val]), atol=1e-12)
    np.testing.assert_array_equal(data.y_val, digits.target[val])


def test_another_seed_gives_another_split() -> None:
    first = load_dataset(DataConfig(dataset="moons", seed=0))
    second = load_dataset(DataConfig(dataset="moons", seed=1))
    assert not np.array_equal(first.y_val, second.y_val)


def test_moons_without_noise_lie_on_their_half_circles() -> None:
    x, y = make_moons(100, 0.0, np.random.default_rng(0))
    upper, lower = x[y == 0], x[y == 1]
    np.testing.assert_allclose(np.hypot(upper[:, 0], upper[:, 1]), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0,
                               atol=1e-12)
    assert upper[:, 1].min() >= -1e-12 and lower[:, 1].max() <= 0.5 + 1e-12


def test_spiral_arms_have_radius_growing_with_angle() -> None:
    x, y = make_spirals(300, 3, 0.0, np.random.default_rng(0))
    assert np.bincount(y).tolist() == [100, 100, 100]
    arm = x[y == 1]
    radius = np.hypot(arm[:, 0], arm[:, 1])
    np.testing.assert_allclose(radius, np.linspace(0.05, 1.0, 100), atol=1e-12)
    angle = np.arctan2(arm[:, 1], arm[:, 0])
    expected = radius * 2.5 * np.pi + 2 * np.pi / 3
    np.testing.assert_allclose(np.cos(angle), np.cos(expected), atol=1e-9)


def test_regression_target_follows_its_formula() -> None:
    x, y = make_regression(50, 4, 0.0, np.random.default_rng(0))
    expected = (x[:, 0] + x[:, 1] / 2 + x[:, 2] / 3 + x[:, 3] / 4
                + np.sin(np.pi * x[:, 0] * x[:, 1]) + (x[:, 2] - 0.5) ** 2)
    np.testing.assert_allclose(y[:, 0], expected, atol=1e-12)
    data = load_dataset(DataConfig(dataset="regression", samples=200, features=4))
    assert data.task == "regression" and data.y_train.shape == (160, 1)
    assert data.y_train.dtype == np.float32


def test_a_layer_normalizer_as_data_scaler_is_a_config_error() -> None:
    config = DataConfig(dataset="moons", normalizer=optiplug.spec("normalizer", "batch_norm"))
    with pytest.raises(optiplug.ConfigError) as caught:
        load_dataset(config)
    assert caught.value.issues[0].path == "data.normalizer"


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(optiplug.OptiplugError, match=r"pip install 'optiplug\[train\]'"):
        load_dataset(DataConfig(dataset="digits"))
