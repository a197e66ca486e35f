"""standardize scaler against scikit-learn's StandardScaler, on NumPy and torch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.preprocessing import StandardScaler

import optiplug
from optiplug.backends._numpy_norm import NotFittedError
from tests.plugins.normalizers.normalizer_checks import TOLERANCES


def _data(dtype: type = np.float64, seed: int = 0, n: int = 60) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4)) * np.array([1.0, 100.0, 1e-3, 5.0]) + np.array([0, -3, 7, 1e3])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("with_mean,with_std", [(True, True), (False, True), (True, False),
                                                (False, False)])
def test_standardize_matches_sklearn(with_mean: bool, with_std: bool, dtype: type) -> None:
    x, new = _data(dtype, 0), _data(dtype, 1)
    scaler = optiplug.normalizer("standardize", with_mean=with_mean, with_std=with_std)
    # float64 reference on the same values: both accumulate statistics in float64.
    reference = StandardScaler(with_mean=with_mean, with_std=with_std)
    x64, new64 = x.astype(np.float64), new.astype(np.float64)
    tol = TOLERANCES[dtype]
    out = scaler.fit_transform(x)
    assert out.dtype == dtype and out is not x
    np.testing.assert_allclose(out, reference.fit_transform(x64), **tol)
    np.testing.assert_allclose(scaler.transform(new), reference.transform(new64), **tol)
    np.testing.assert_allclose(scaler.inverse_transform(out), x, rtol=tol["rtol"])
    np.testing.assert_allclose(scaler.statistics["mean"], reference.mean_ if with_mean or
                               with_std else x64.mean(axis=0), rtol=1e-12)
    if with_std:
        np.testing.assert_allclose(scaler.statistics["var"], reference.var_, rtol=1e-10)


def test_standardize_uses_population_std() -> None:
    x = _data()
    out = optiplug.normalizer("standardize").fit_transform(x)
    np.testing.assert_allclose(out, (x - x.mean(axis=0)) / x.std(axis=0, ddof=0), rtol=1e-10)
    np.testing.assert_allclose(out.std(axis=0), 1.0, rtol=1e-12)


def test_standardize_constant_features_get_scale_one_like_sklearn() -> None:
    x = _data()
    x[:, 0] = 3.0
    x[:, 3] = 1e6 + 1e-11  # a large constant: its computed variance is rounding noise
    scaler = optiplug.normalizer("standardize")
    with np.errstate(all="raise"):
        out = scaler.fit_transform(x)
    reference = StandardScaler().fit(x)
    assert reference.scale_[0] == 1.0 and reference.scale_[3] == 1.0
    np.testing.assert_allclose(out, reference.transform(x), rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(out[:, [0, 3]], 0.0)
    np.testing.assert_allclose(scaler.inverse_transform(out), x, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_standardize_torch_matches_numpy_and_keeps_tensor_dtype(dtype: type) -> None:
    x, new = _data(dtype, 0), _data(dtype, 1)
    scaler = optiplug.normalizer("standardize").fit(x)
    scaler_t = optiplug.normalizer("standardize", backend="torch").fit(torch.from_numpy(x))
    out_t = scaler_t.transform(torch.from_numpy(new))
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.from_numpy(new).dtype
    np.testing.assert_allclose(out_t.numpy(), scaler.transform(new), **TOLERANCES[dtype])
    np.testing.assert_allclose(scaler_t.inverse_transform(out_t).numpy(), new,
                               rtol=TOLERANCES[dtype]["rtol"])
    for key, value in scaler.statistics.items():
        np.testing.assert_allclose(scaler_t.statistics[key], value, rtol=1e-12, err_msg=key)


def test_standardize_torch_transform_is_differentiable() -> None:
    x = torch.from_numpy(_data()).requires_grad_(True)
    scaler = optiplug.normalizer("standardize", backend="torch").fit(x)
    scaler.transform(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), np.broadcast_to(
        1 / scaler.statistics["var"] ** 0.5, x.shape), rtol=1e-12)


def test_standardize_partial_fit_matches_sklearn_partial_fit() -> None:
    x = _data(n=90)
    scaler = optiplug.normalizer("standardize")
    reference = StandardScaler()
    for batch in np.array_split(x, [7, 40, 41]):
        scaler.partial_fit(batch)
        reference.partial_fit(batch)
    np.testing.assert_allclose(scaler.statistics["mean"], reference.mean_, rtol=1e-12)
    np.testing.assert_allclose(scaler.statistics["var"], reference.var_, rtol=1e-10)
    np.testing.assert_allclose(scaler.transform(x), reference.transform(x), rtol=1e-10,
                               atol=1e-10)
    assert scaler.n_samples_seen == reference.n_samples_seen_ == 90
    scaler.fit(x[:5])  # fit forgets earlier batches
    assert scaler.n_samples_seen == 5


def test_standardize_reduces_over_all_leading_axes() -> None:
    x = _data().reshape(3, 20, 4)
    out = optiplug.normalizer("standardize").fit_transform(x)
    flat = optiplug.normalizer("standardize").fit_transform(x.reshape(-1, 4))
    np.testing.assert_array_equal(out, flat.reshape(3, 20, 4))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_standardize_state_dict_round_trip_gives_identical_transforms(backend: str) -> None:
    x, new = _data(), _data(seed=2)
    convert = torch.from_numpy if backend == "torch" else np.asarray
    scaler = optiplug.normalizer("standardize", backend=backend).fit(convert(x))
    state = json.loads(json.dumps(scaler.state_dict()))
    assert state["n_samples_seen"] == 60 and set(state) == {"mean", "var", "n_samples_seen"}
    assert all(isinstance(v, float) for v in state["mean"])
    for target in ("numpy", "torch"):
        copy = optiplug.normalizer("standardize", backend=target)
        copy.load_state_dict(state)
        out = copy.transform(torch.from_numpy(new) if target == "torch" else new)
        np.testing.assert_array_equal(np.asarray(out),
                                      np.asarray(scaler.transform(convert(new))))


def test_standardize_transform_before_fit_is_a_clear_error() -> None:
    for backend in ("numpy", "torch"):
        scaler = optiplug.normalizer("standardize", backend=backend)
        data = _data() if backend == "numpy" else torch.from_numpy(_data())
        assert not scaler.fitted
        with pytest.raises(NotFittedError, match=r"not fitted: call fit\(x\)"):
            scaler.transform(data)
        with pytest.raises(NotFittedError):
            scaler.inverse_transform(data)


def test_standardize_rejects_bad_state_and_empty_data() -> None:
    scaler = optiplug.normalizer("standardize")
    with pytest.raises(ValueError, match="one length"):
        scaler.load_state_dict({"mean": [0.0, 1.0], "var": [1.0], "n_samples_seen": 3})
    with pytest.raises(ValueError, match="n_samples_seen"):
        scaler.load_state_dict({"mean": [0.0], "var": [1.0], "n_samples_seen": 0})
    with pytest.raises(ValueError, match="unexpected"):
        scaler.load_state_dict({"mean": [0.0], "var": [1.0], "scale": [1.0],
                                "n_samples_seen": 3})
    assert not scaler.fitted
    with pytest.raises(ValueError, match="at least one sample"):
        scaler.fit(np.ones((0, 3)))
    integer = optiplug.normalizer("standardize").fit_transform(np.arange(6).reshape(3, 2))
    assert integer.dtype == np.float64
