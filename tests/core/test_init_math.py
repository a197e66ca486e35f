"""The initializers' shared math: fans and gains equal torch's, the float64 samplers draw the
intended distributions (Kolmogorov-Smirnov against scipy), NumPy fills check shape and dtype."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

from optiplug.init_math import (
    calculate_gain,
    fan,
    fan_in_and_fan_out,
    numpy_fill,
    orthogonal,
    truncated_normal,
)

torch = pytest.importorskip("torch")

SHAPES = [
    (5, 3),            # Linear(3, 5)
    (1, 1),
    (7, 2, 1),         # Conv1d(2, 7, 1)
    (8, 4, 3),         # Conv1d(4, 8, 3)
    (8, 4, 3, 3),      # Conv2d(4, 8, 3)
    (8, 4, 5, 1),
    (8, 4, 2, 3, 3),   # Conv3d(4, 8, (2, 3, 3))
    (6, 16, 3, 3),     # ConvTranspose2d weight (in, out / groups, kH, kW)
]
NONLINEARITIES = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                  "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu", "selu"]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_fan_in_and_fan_out_equal_torchs(shape: tuple[int, ...]) -> None:
    expected = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert fan_in_and_fan_out(shape) == expected
    assert fan(shape, "fan_in") == expected[0]
    assert fan(shape, "fan_out") == expected[1]


@pytest.mark.parametrize("shape", [(), (4,)], ids=str)
def test_fan_needs_two_dimensions_like_torch(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="fewer than 2"):
        torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    with pytest.raises(ValueError, match="fewer than 2"):
        fan_in_and_fan_out(shape)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_gain_equals_torchs(nonlinearity: Any) -> None:
    assert calculate_gain(nonlinearity) == torch.nn.init.calculate_gain(nonlinearity)


@pytest.mark.parametrize("slope", [None, 0.0, 0.01, 0.2, 1.0, 3.0])
def test_leaky_relu_gain_uses_the_negative_slope_like_torch(slope: float | None) -> None:
    expected = torch.nn.init.calculate_gain("leaky_relu", slope)
    assert calculate_gain("leaky_relu", slope) == expected
    assert expected == math.sqrt(2.0 / (1 + (0.01 if slope is None else slope) ** 2))


def test_selu_gain_is_torchs_three_quarters() -> None:
    assert calculate_gain("selu") == 0.75 == torch.nn.init.calculate_gain("selu")


def test_unknown_nonlinearity_is_rejected() -> None:
    with pytest.raises(ValueError, match="unsupported nonlinearity"):
        calculate_gain("swish")  # type: ignore[arg-type]


@pytest.mark.parametrize(("low", "high"), [(-2.0, 2.0), (-0.5, 3.0), (1.5, 3.0), (4.0, 4.5),
                                           (-9.0, -8.0)])
def test_truncated_normal_draws_the_truncated_distribution(low: float, high: float) -> None:
    # (-2, 2) and (-0.5, 3) hold > 30% of the mass (normal redraws); the others are tails
    # (uniform proposals with pdf-ratio acceptance).
    mean, std = 0.5, 1.0
    sample = truncated_normal(np.random.default_rng(5), (20000,), mean, std, low, high)
    assert sample.min() >= low and sample.max() <= high
    expected = stats.truncnorm((low - mean) / std, (high - mean) / std, loc=mean, scale=std)
    assert stats.kstest(sample, expected.cdf).pvalue > 1e-3


@pytest.mark.parametrize("shape", [(3, 7), (7, 3), (5, 5), (4, 2, 3, 3), (20, 2, 3)], ids=str)
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain(shape: tuple[int, ...]) -> None:
    gain = 1.7
    weight = orthogonal(np.random.default_rng(0), shape, gain)
    assert weight.shape == shape
    matrix = weight.reshape(shape[0], -1)
    rows, cols = matrix.shape
    gram = matrix @ matrix.T if rows <= cols else matrix.T @ matrix
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-13)


def test_orthogonal_is_haar_distributed() -> None:
    # For a Haar-random orthogonal n x n matrix each entry times sqrt(n) tends to N(0, 1), and
    # its diagonal is not biased toward positive values (the sign correction of Mezzadri).
    n = 64
    rng = np.random.default_rng(11)
    entries = np.concatenate([orthogonal(rng, (n, n), 1.0).ravel() for _ in range(5)])
    assert stats.kstest(entries * math.sqrt(n), "norm").pvalue > 1e-3
    diagonals = np.concatenate([np.diag(orthogonal(rng, (n, n), 1.0)) for _ in range(20)])
    assert abs(np.mean(diagonals > 0) - 0.5) < 0.1


def test_numpy_fill_rounds_the_float64_sample_once() -> None:
    fill = numpy_fill(lambda rng, shape: rng.normal(size=shape))
    wide = fill((4, 5), dtype=np.float64, rng=np.random.default_rng(3))
    narrow = fill((4, 5), dtype=np.float32, rng=np.random.default_rng(3))
    assert narrow.dtype == np.float32
    np.testing.assert_array_equal(narrow, wide.astype(np.float32))


def test_numpy_fill_rejects_integer_dtypes_and_bad_shapes() -> None:
    fill = numpy_fill(lambda rng, shape: rng.normal(size=shape))
    with pytest.raises(TypeError, match="floating"):
        fill((2, 2), dtype=np.int64, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="non-negative"):
        fill((2, -1), rng=np.random.default_rng(0))


def test_numpy_fill_of_a_zero_element_shape_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    out = numpy_fill(lambda rng, shape: rng.normal(size=shape))((0, 4), rng=rng)
    assert out.shape == (0, 4) and out.dtype == np.float64
    assert rng.bit_generator.state == state
