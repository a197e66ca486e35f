"""Every builtin initializer on both backends: the intended distribution (Kolmogorov-Smirnov
against scipy) with the variance of its formula, bounds, orthogonality, seeding, and torch fills
equal to ``torch.nn.init`` draw for draw."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from scipy import stats

import optiplug

torch = pytest.importorskip("torch")
init = torch.nn.init

SHAPE = (64, 32, 3, 3)  # Conv2d(32, 64, 3): fan_in 288, fan_out 576
FAN_IN, FAN_OUT = 32 * 9, 64 * 9
SMALL_SHAPE = (16, 8, 3, 3)
LINEAR_SHAPE = (100, 50)


@dataclass(frozen=True)
class Case:
    """An initializer configuration, the scipy distribution its formula gives ``SHAPE``, and the
    ``torch.nn.init`` call it must equal draw for draw."""

    name: str
    hyper: dict[str, Any]
    distribution: Any
    torch_fill: Callable[[Any, Any], Any]

    @property
    def id(self) -> str:
        return self.name + "".join(f"-{k}={v}" for k, v in self.hyper.items())


def _uniform(bound: float) -> Any:
    return stats.uniform(-bound, 2 * bound)


def _leaky(slope: float) -> float:
    return math.sqrt(2.0 / (1 + slope**2))


CASES = [
    Case("normal", {"mean": 0.5, "std": 0.2}, stats.norm(0.5, 0.2),
         lambda t, g: init.normal_(t, 0.5, 0.2, generator=g)),
    Case("uniform", {"low": -0.3, "high": 0.7}, stats.uniform(-0.3, 1.0),
         lambda t, g: init.uniform_(t, -0.3, 0.7, generator=g)),
    Case("truncated_normal", {}, stats.truncnorm(-2, 2),
         lambda t, g: init.trunc_normal_(t, generator=g)),
    Case("truncated_normal", {"mean": 0.0, "std": 0.02, "low": 0.03, "high": 0.06},
         stats.truncnorm(1.5, 3.0, scale=0.02),
         lambda t, g: init.trunc_normal_(t, 0.0, 0.02, 0.03, 0.06, generator=g)),
    Case("xavier_uniform", {}, _uniform(math.sqrt(6 / (FAN_IN + FAN_OUT))),
         lambda t, g: init.xavier_uniform_(t, generator=g)),
    Case("xavier_uniform", {"gain": 5 / 3}, _uniform(5 / 3 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
         lambda t, g: init.xavier_uniform_(t, gain=5 / 3, generator=g)),
    Case("xavier_normal", {"gain": 2.0}, stats.norm(0, 2.0 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
         lambda t, g: init.xavier_normal_(t, gain=2.0, generator=g)),
    Case("he_uniform", {}, _uniform(math.sqrt(6 / FAN_IN)),
         lambda t, g: init.kaiming_uniform_(t, nonlinearity="relu", generator=g)),
    Case("he_uniform", {"mode": "fan_out", "nonlinearity": "leaky_relu", "negative_slope": 0.2},
         _uniform(math.sqrt(3) * _leaky(0.2) / math.sqrt(FAN_OUT)),
         lambda t, g: init.kaiming_uniform_(t, a=0.2, mode="fan_out", generator=g)),
    Case("he_normal", {}, stats.norm(0, math.sqrt(2 / FAN_IN)),
         lambda t, g: init.kaiming_normal_(t, nonlinearity="relu", generator=g)),
    Case("he_normal", {"mode": "fan_out"}, stats.norm(0, math.sqrt(2 / FAN_OUT)),
         lambda t, g: init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu", generator=g)),
    Case("he_normal", {"nonlinearity": "leaky_relu"}, stats.norm(0, _leaky(0.01) / math.sqrt(
        FAN_IN)), lambda t, g: init.kaiming_normal_(t, a=0.01, generator=g)),
    Case("he_normal", {"nonlinearity": "tanh"}, stats.norm(0, 5 / 3 / math.sqrt(FAN_IN)),
         lambda t, g: init.kaiming_normal_(t, nonlinearity="tanh", generator=g)),
    Case("he_normal", {"nonlinearity": "selu", "mode": "fan_out"},
         stats.norm(0, 0.75 / math.sqrt(FAN_OUT)),
         lambda t, g: init.kaiming_normal_(t, mode="fan_out", nonlinearity="selu", generator=g)),
    Case("lecun_uniform", {}, _uniform(math.sqrt(3 / FAN_IN)),
         lambda t, g: init.kaiming_uniform_(t, nonlinearity="linear", generator=g)),
    Case("lecun_normal", {}, stats.norm(0, 1 / math.sqrt(FAN_IN)),
         lambda t, g: init.kaiming_normal_(t, nonlinearity="linear", generator=g)),
]
RANDOM = pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
ALL = ["zeros", "constant", "normal", "uniform", "truncated_normal", "xavier_uniform",
       "xavier_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal", "orthogonal"]


def numpy_sample(case: Case, seed: int = 0, dtype: Any = np.float64) -> np.ndarray:
    initializer = optiplug.initializer(case.name, **case.hyper)
    return initializer(SHAPE, dtype=dtype, rng=np.random.default_rng(seed))


def torch_sample(case: Case, seed: int = 0, dtype: Any = None, shape: Any = SHAPE) -> Any:
    initializer = optiplug.initializer(case.name, **case.hyper)
    tensor = torch.empty(shape, dtype=dtype or torch.float64)
    return initializer(tensor, generator=torch.Generator().manual_seed(seed))


def assert_variance_matches(sample: np.ndarray, distribution: Any) -> None:
    # Standard error of the sample variance: sqrt((mu4 - sigma^4) / n); allow five of them.
    n = sample.size
    variance = distribution.var()
    mu4 = distribution.moment(4) - 4 * distribution.mean() * distribution.moment(3) \
        + 6 * distribution.mean() ** 2 * distribution.moment(2) - 3 * distribution.mean() ** 4
    tolerance = 5 * math.sqrt((mu4 - variance**2) / n)
    assert abs(np.var(sample) - variance) < tolerance


@RANDOM
def test_numpy_initializer_draws_the_intended_distribution(case: Case) -> None:
    sample = numpy_sample(case)
    assert sample.shape == SHAPE and sample.dtype == np.float64
    assert stats.kstest(sample.ravel(), case.distribution.cdf).pvalue > 1e-3
    assert_variance_matches(sample.ravel(), case.distribution)


@RANDOM
def test_torch_initializer_draws_the_intended_distribution(case: Case) -> None:
    sample = torch_sample(case).numpy()
    assert stats.kstest(sample.ravel(), case.distribution.cdf).pvalue > 1e-3
    assert_variance_matches(sample.ravel(), case.distribution)


@RANDOM
def test_torch_fill_equals_torch_nn_init_with_the_same_generator_seed(case: Case) -> None:
    for dtype in (torch.float32, torch.float64):
        expected = case.torch_fill(torch.empty(SMALL_SHAPE, dtype=dtype),
                                   torch.Generator().manual_seed(7))
        assert torch.equal(torch_sample(case, seed=7, dtype=dtype, shape=SMALL_SHAPE), expected)


@RANDOM
def test_numpy_initializer_is_reproducible_from_the_seed(case: Case) -> None:
    first = numpy_sample(case, seed=3)
    np.testing.assert_array_equal(first, numpy_sample(case, seed=3))
    assert not np.array_equal(first, numpy_sample(case, seed=4))
    narrow = numpy_sample(case, seed=3, dtype=np.float32)
    assert narrow.dtype == np.float32
    np.testing.assert_array_equal(narrow, first.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bounds", [(-2.0, 2.0), (0.03, 0.06), (-1e-3, 1e-3)])
def test_truncated_normal_respects_its_bounds_on_both_backends(bounds: tuple[float, float],
                                                               dtype: Any) -> None:
    low, high = bounds
    initializer = optiplug.initializer("truncated_normal", std=0.02, low=low, high=high)
    array = initializer(LINEAR_SHAPE, dtype=dtype, rng=np.random.default_rng(0))
    assert array.min() >= dtype(low) and array.max() <= dtype(high)
    tensor = initializer(torch.empty(LINEAR_SHAPE, dtype=torch.from_numpy(array).dtype),
                         generator=torch.Generator().manual_seed(0))
    assert tensor.min().item() >= dtype(low) and tensor.max().item() <= dtype(high)


@pytest.mark.parametrize("shape", [(16, 64), (64, 16), (32, 32), (8, 4, 3, 3), (64, 4, 3)],
                         ids=str)
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_orthogonal_gives_w_wt_equal_gain_squared_identity(shape: tuple[int, ...],
                                                           backend: str) -> None:
    gain = 1.4
    initializer = optiplug.initializer("orthogonal", gain=gain)
    if backend == "numpy":
        weight = initializer(shape, rng=np.random.default_rng(0))
    else:
        weight = initializer(torch.empty(shape, dtype=torch.float64),
                             generator=torch.Generator().manual_seed(0)).numpy()
    matrix = weight.reshape(shape[0], -1)
    rows, cols = matrix.shape
    gram = matrix @ matrix.T if rows <= cols else matrix.T @ matrix
    np.testing.assert_allclose(gram, gain**2 * np.eye(min(rows, cols)), atol=1e-12)


def test_orthogonal_torch_fill_equals_torch_nn_init() -> None:
    fill = optiplug.initializer("orthogonal", gain=0.5)
    ours = fill(torch.empty(6, 10), generator=torch.Generator().manual_seed(2))
    expected = init.orthogonal_(torch.empty(6, 10), gain=0.5,
                                generator=torch.Generator().manual_seed(2))
    assert torch.equal(ours, expected)


def test_zeros_and_constant_fill_exact_values_on_both_backends() -> None:
    zeros = optiplug.initializer("zeros")
    constant = optiplug.initializer("constant", value=0.25)
    np.testing.assert_array_equal(zeros((3, 4), rng=np.random.default_rng(0)), np.zeros((3, 4)))
    assert constant(5, dtype=np.float32, rng=np.random.default_rng(0)).tolist() == [0.25] * 5
    assert torch.equal(zeros(torch.ones(3, 4)), torch.zeros(3, 4))
    assert torch.equal(constant(torch.empty(2, 2)), torch.full((2, 2), 0.25))


@pytest.mark.parametrize("name", ALL)
def test_torch_fill_is_in_place_and_records_no_autograd(name: str) -> None:
    hyper = {"value": 1.5} if name == "constant" else {}
    parameter = torch.nn.Parameter(torch.full((6, 5), 9.0))
    out = optiplug.initializer(name, **hyper)(parameter, generator=torch.Generator())
    assert out is parameter
    assert parameter.is_leaf and parameter.requires_grad and parameter.grad_fn is None
    assert not torch.equal(parameter.detach(), torch.full((6, 5), 9.0))


@pytest.mark.parametrize("name", ALL)
def test_numpy_fill_rejects_integer_dtypes(name: str) -> None:
    hyper = {"value": 1.5} if name == "constant" else {}
    with pytest.raises(TypeError, match="floating"):
        optiplug.initializer(name, **hyper)((3, 3), dtype=np.int32, rng=np.random.default_rng(0))


def test_fan_based_initializers_need_two_dimensions() -> None:
    with pytest.raises(ValueError, match="fewer than 2"):
        optiplug.initializer("he_normal")((10,), rng=np.random.default_rng(0))


def test_initializer_specs_reject_bad_hyperparameters() -> None:
    bad = [("uniform", {"low": 1.0, "high": 1.0}), ("truncated_normal", {"low": 2.0, "high": 1.0}),
           ("normal", {"std": 0.0}), ("he_normal", {"negative_slope": 0.2}),
           ("he_normal", {"mode": "fan_avg"}), ("he_uniform", {"nonlinearity": "gelu"}),
           ("xavier_normal", {"gain": -1.0}), ("constant", {}), ("orthogonal", {"gain": "1"})]
    for name, hyper in bad:
        with pytest.raises(optiplug.ConfigError):
            optiplug.initializer(name, **hyper)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_initializer_spec_round_trips_through_its_dump(case: Case) -> None:
    spec = optiplug.spec("initializer", case.name, **case.hyper)
    assert type(spec)(**spec.model_dump()) == spec
    assert optiplug.to_spec(spec.model_dump()) == spec


def test_every_initializer_is_listed_with_both_backends() -> None:
    for name in ALL:
        technique = optiplug.registry().get("initializer", name)
        assert set(technique.backends) == {"numpy", "torch"}
        assert technique.summary and technique.reference
