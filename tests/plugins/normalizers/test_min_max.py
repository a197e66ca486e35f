"""min_max scaler against scikit-learn's MinMaxScaler, on NumPy and torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.preprocessing import MinMaxScaler

import optiplug
from optiplug.backends._numpy_norm import NotFittedError
from tests.plugins.normalizers.normalizer_checks import TOLERANCES


def _data(dtype: type = np.float64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 4)) * np.array([1.0, 100.0, 1e-3, 5.0]) + np.array([0, -3, 7, 1e3])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 2.5)])
def test_min_max_matches_sklearn(feature_range: tuple[float, float], dtype: type) -> None:
    x, new = _data(dtype, 0), _data(dtype, 1)
    scaler = optiplug.normalizer("min_max", feature_range=feature_range)
    reference = MinMaxScaler(feature_range=feature_range)
    tol = TOLERANCES[dtype]
    out = scaler.fit_transform(x)
    assert out.dtype == dtype
    # The reference runs in float64 on the same values: in float32 sklearn's x * scale + min
    # cancels for features far from zero (column 2 loses 3 digits); (x - min) / range does not.
    x64, new64 = x.astype(np.float64), new.astype(np.float64)
    np.testing.assert_allclose(out, reference.fit_transform(x64), **tol)
    np.testing.assert_allclose(scaler.transform(new), reference.transform(new64), **tol)
    np.testing.assert_allclose(scaler.inverse_transform(out), x, rtol=tol["rtol"])
    np.testing.assert_allclose(scaler.statistics["data_min"], reference.data_min_, rtol=1e-15)
    np.testing.assert_allclose(scaler.statistics["data_max"], reference.data_max_, rtol=1e-15)


def test_min_max_clip_matches_sklearn() -> None:
    x, new = _data(seed=0), _data(seed=1) * 3
    scaler = optiplug.normalizer("min_max", feature_range=(-1.0, 1.0), clip=True).fit(x)
    reference = MinMaxScaler(feature_range=(-1.0, 1.0), clip=True).fit(x)
    out = scaler.transform(new)
    np.testing.assert_allclose(out, reference.transform(new), rtol=1e-10, atol=1e-10)
    assert out.min() == -1.0 and out.max() == 1.0


def test_min_max_constant_feature_maps_to_low_without_dividing_by_zero() -> None:
    x = _data()
    x[:, 1] = 4.2
    x[:, 2] = np.linspace(0.0, 1e-15, 50)  # a range below 10 machine epsilons: constant too
    scaler = optiplug.normalizer("min_max", feature_range=(-1.0, 1.0))
    reference = MinMaxScaler(feature_range=(-1.0, 1.0))
    with np.errstate(all="raise"):
        out = scaler.fit_transform(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 1], -1.0)
    np.testing.assert_allclose(out, reference.fit_transform(x), rtol=1e-10, atol=1e-10)
    # Column 2 maps to about -1, whose rounding step (1e-16) bounds the round trip's error.
    np.testing.assert_allclose(scaler.inverse_transform(out), x, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_min_max_torch_matches_numpy_and_keeps_tensor_dtype(dtype: type) -> None:
    x, new = _data(dtype, 0), _data(dtype, 1)
    scaler = optiplug.normalizer("min_max", feature_range=(-2.0, 3.0)).fit(x)
    scaler_t = optiplug.normalizer("min_max", backend="torch", feature_range=(-2.0, 3.0))
    scaler_t.fit(torch.from_numpy(x))
    out_t = scaler_t.transform(torch.from_numpy(new))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.from_numpy(new).dtype
    np.testing.assert_allclose(out_t.numpy(), scaler.transform(new), **TOLERANCES[dtype])
    np.testing.assert_allclose(scaler_t.inverse_transform(out_t).numpy(), new,
                               rtol=TOLERANCES[dtype]["rtol"], atol=TOLERANCES[dtype]["atol"] * 1e3)
    assert scaler_t.state_dict() == scaler.state_dict()


def test_min_max_partial_fit_equals_fit_on_all_data() -> None:
    x = _data()
    scaler = optiplug.normalizer("min_max")
    for batch in np.array_split(x, 4):
        scaler.partial_fit(batch)
    reference = MinMaxScaler().fit(x)
    np.testing.assert_allclose(scaler.transform(x), reference.transform(x), rtol=1e-10,
                               atol=1e-10)
    assert scaler.n_samples_seen == 50


def test_min_max_state_dict_is_json_and_round_trips_across_backends() -> None:
    x = _data()
    scaler = optiplug.normalizer("min_max", feature_range=(-1.0, 1.0)).fit(x)
    state = json.loads(json.dumps(scaler.state_dict()))
    for backend in ("numpy", "torch"):
        copy = optiplug.normalizer("min_max", backend=backend, feature_range=(-1.0, 1.0))
        copy.load_state_dict(state)
        new = _data(seed=3)
        out = copy.transform(new if backend == "numpy" else torch.from_numpy(new))
        np.testing.assert_array_equal(np.asarray(out), scaler.transform(new))


def test_min_max_transform_before_fit_is_a_clear_error() -> None:
    scaler = optiplug.normalizer("min_max")
    with pytest.raises(NotFittedError, match="not fitted"):
        scaler.transform(_data())
    with pytest.raises(RuntimeError, match="fit"):
        scaler.inverse_transform(_data())
    with pytest.raises(NotFittedError):
        scaler.state_dict()


def test_min_max_checks_shapes_and_feature_range() -> None:
    scaler = optiplug.normalizer("min_max", num_features=4)
    with pytest.raises(ValueError, match="5 features, expected 4"):
        scaler.fit(np.ones((3, 5)))
    scaler.fit(_data())
    with pytest.raises(ValueError, match="3 features, expected 4"):
        scaler.transform(np.ones((2, 3)))
    with pytest.raises(ValueError, match="n_samples, n_features"):
        scaler.transform(np.ones(4))
    with pytest.raises(optiplug.ConfigError, match="feature_range"):
        optiplug.spec("normalizer", "min_max", feature_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="missing"):
        scaler.load_state_dict({"data_min": [0.0] * 4, "n_samples_seen": 1})
