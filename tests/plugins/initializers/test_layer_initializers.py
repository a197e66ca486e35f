"""The initializers of the layers catalogue on both backends: ``ones``, ``eye`` and ``dirac``
equal ``torch.nn.init`` exactly; ``sparse`` keeps the definition of ``torch.nn.init.sparse_``
but is reproducible from its generator; ``variance_scaling`` draws Keras' and JAX's
distributions (Kolmogorov-Smirnov against scipy); ``he_*`` take torch's ``a`` and ``xavier_*``
a nonlinearity name as ``gain``, equal to ``torch.nn.init`` draw for draw."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy import stats

import optiplug

torch = pytest.importorskip("torch")
init = torch.nn.init

CONV = (64, 32, 3, 3)  # fan_in 288, fan_out 576
FANS = {"fan_in": 288.0, "fan_out": 576.0, "fan_avg": 432.0}


def numpy_fill(name: str, shape: tuple[int, ...], seed: int = 0, dtype: Any = np.float64,
               **hyper: Any) -> np.ndarray:
    return optiplug.initializer(name, **hyper)(shape, dtype=dtype, rng=np.random.default_rng(seed))


def torch_fill(name: str, shape: tuple[int, ...], seed: int = 0, dtype: Any = None,
               **hyper: Any) -> Any:
    tensor = torch.empty(shape, dtype=dtype or torch.float64)
    return optiplug.initializer(name, **hyper)(tensor,
                                                generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ deterministic ones
DETERMINISTIC = [
    ("ones", {}, (7, 3, 2), init.ones_),
    ("eye", {}, (4, 6), init.eye_),
    ("eye", {}, (6, 4), init.eye_),
    ("eye", {}, (5, 5), init.eye_),
    ("dirac", {}, (4, 3, 5), init.dirac_),
    ("dirac", {}, (6, 8, 3, 3), init.dirac_),
    ("dirac", {}, (3, 2, 3, 4, 5), init.dirac_),
    ("dirac", {"groups": 2}, (6, 4, 3, 3), lambda t: init.dirac_(t, groups=2)),
    ("dirac", {"groups": 3}, (6, 1, 4), lambda t: init.dirac_(t, groups=3)),
]


@pytest.mark.parametrize(("name", "hyper", "shape", "reference"), DETERMINISTIC,
                         ids=[f"{n}-{h}-{s}" for n, h, s, _ in DETERMINISTIC])
def test_deterministic_initializer_equals_torch_nn_init_on_both_backends(
        name: str, hyper: dict[str, Any], shape: tuple[int, ...], reference: Any) -> None:
    expected = reference(torch.full(shape, 7.0, dtype=torch.float64)).numpy()
    for dtype in (np.float32, np.float64):
        ours = numpy_fill(name, shape, dtype=dtype, **hyper)
        assert ours.dtype == dtype
        np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(torch_fill(name, shape, **hyper).numpy(), expected)
    spec = optiplug.spec("initializer", name, **hyper)
    assert spec.expected_mean(shape) == pytest.approx(expected.mean(), rel=1e-15)
    assert spec.expected_variance(shape) == pytest.approx(expected.var(), rel=1e-12)


@pytest.mark.parametrize(("name", "hyper", "shape"), [
    ("eye", {}, (3,)), ("eye", {}, (3, 3, 3)), ("dirac", {}, (3, 3)),
    ("dirac", {}, (2, 2, 2, 2, 2, 2)), ("dirac", {"groups": 4}, (6, 4, 3))])
def test_shape_restricted_initializers_refuse_other_shapes_on_both_backends(
        name: str, hyper: dict[str, Any], shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        numpy_fill(name, shape, **hyper)
    with pytest.raises(ValueError):
        torch_fill(name, shape, **hyper)
    assert optiplug.spec("initializer", name, **hyper).expected_variance(shape) is None


# ------------------------------------------------------------------------------ sparse
@pytest.mark.parametrize(("shape", "sparsity"), [((50, 400), 0.1), ((7, 300), 0.5),
                                                 ((20, 30), 0.0), ((20, 30), 1.0)])
def test_sparse_zeros_ceil_sparsity_rows_in_every_column_on_both_backends(
        shape: tuple[int, int], sparsity: float) -> None:
    zeros = math.ceil(sparsity * shape[0])
    for weight in (numpy_fill("sparse", shape, sparsity=sparsity),
                   torch_fill("sparse", shape, sparsity=sparsity).numpy()):
        np.testing.assert_array_equal((weight == 0).sum(axis=0), np.full(shape[1], zeros))


def test_sparse_values_are_the_generators_normal_draws_in_order() -> None:
    shape, std = (40, 25), 0.3
    ours = numpy_fill("sparse", shape, seed=3, sparsity=0.2, std=std)
    dense = np.random.default_rng(3).normal(0.0, std, size=shape)
    np.testing.assert_array_equal(ours[ours != 0], dense[ours != 0])
    theirs = torch_fill("sparse", shape, seed=3, sparsity=0.2, std=std).numpy()
    torch_dense = torch.empty(shape, dtype=torch.float64).normal_(
        0.0, std, generator=torch.Generator().manual_seed(3)).numpy()
    np.testing.assert_array_equal(theirs[theirs != 0], torch_dense[theirs != 0])


def test_sparse_is_reproducible_from_its_generator_unlike_torch_sparse() -> None:
    shape = (30, 40)
    np.testing.assert_array_equal(numpy_fill("sparse", shape, seed=5, sparsity=0.5),
                                  numpy_fill("sparse", shape, seed=5, sparsity=0.5))
    patterns = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)  # ours ignores the global generator
        patterns.append(torch_fill("sparse", shape, seed=5, sparsity=0.5).numpy())
    np.testing.assert_array_equal(*patterns)
    # torch's own sparse_ draws its zero positions from the global generator, whatever
    # generator it is given: the documented reason for our own torch fill.
    theirs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        theirs.append(init.sparse_(torch.empty(shape), 0.5,
                                   generator=torch.Generator().manual_seed(5)).numpy() == 0)
    assert not np.array_equal(*theirs)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sparse_draws_normal_values_at_uniformly_random_positions(backend: str) -> None:
    shape, sparsity, std = (10, 20000), 0.3, 0.05
    fill = numpy_fill if backend == "numpy" else torch_fill
    weight = np.asarray(fill("sparse", shape, seed=11, sparsity=sparsity, std=std))
    assert stats.kstest(weight[weight != 0], stats.norm(0, std).cdf).pvalue > 1e-3
    # Each row is zeroed in a column with probability 3/10: chi-square over the rows.
    zero_counts = (weight == 0).sum(axis=1)
    expected = np.full(shape[0], shape[1] * 3 / 10)
    assert stats.chisquare(zero_counts, expected).pvalue > 1e-3
    spec = optiplug.spec("initializer", "sparse", sparsity=sparsity, std=std)
    assert spec.expected_variance(shape) == pytest.approx(std**2 * 0.7)


# -------------------------------------------------------------------- variance scaling
def test_truncation_constant_is_the_std_of_the_unit_normal_truncated_to_two() -> None:
    from optiplug.init_math import TRUNCATED_NORMAL_STD_2

    assert abs(TRUNCATED_NORMAL_STD_2 - stats.truncnorm(-2, 2).std()) < 1e-15


def _keras_distribution(scale: float, mode: str, distribution: str) -> Any:
    # tf.keras.initializers.VarianceScaling / jax.nn.initializers.variance_scaling, written out.
    variance = scale / max(1.0, FANS[mode])
    if distribution == "truncated_normal":
        std = math.sqrt(variance) / 0.87962566103423978
        return stats.truncnorm(-2, 2, scale=std)
    if distribution == "untruncated_normal":
        return stats.norm(0, math.sqrt(variance))
    limit = math.sqrt(3 * variance)
    return stats.uniform(-limit, 2 * limit)


SCALING = [(scale, mode, distribution) for scale, mode in ((1.0, "fan_in"), (2.0, "fan_out"),
                                                           (0.5, "fan_avg"))
           for distribution in ("truncated_normal", "untruncated_normal", "uniform")]


@pytest.mark.parametrize(("scale", "mode", "distribution"), SCALING,
                         ids=["-".join(map(str, case)) for case in SCALING])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_variance_scaling_draws_keras_and_jax_distribution(scale: float, mode: str,
                                                           distribution: str,
                                                           backend: str) -> None:
    fill = numpy_fill if backend == "numpy" else torch_fill
    hyper = {"scale": scale, "mode": mode, "distribution": distribution}
    sample = np.asarray(fill("variance_scaling", CONV, seed=2, **hyper)).ravel()
    reference = _keras_distribution(scale, mode, distribution)
    assert stats.kstest(sample, reference.cdf).pvalue > 1e-3
    spec = optiplug.spec("initializer", "variance_scaling", **hyper)
    assert spec.expected_variance(CONV) == pytest.approx(reference.var(), rel=1e-12)
    assert spec.expected_variance(CONV) == pytest.approx(scale / FANS[mode], rel=1e-12)
    standard_error = math.sqrt((reference.moment(4) - reference.var() ** 2) / sample.size)
    assert abs(sample.var() - reference.var()) < 5 * standard_error


def test_variance_scaling_is_he_lecun_and_glorot_draw_for_draw_in_torch() -> None:
    cases = [({"scale": 2.0, "distribution": "untruncated_normal"},
              lambda t, g: init.kaiming_normal_(t, nonlinearity="relu", generator=g)),
             ({"scale": 1.0, "distribution": "uniform"},
              lambda t, g: init.kaiming_uniform_(t, nonlinearity="linear", generator=g)),
             ({"scale": 1.0, "mode": "fan_avg", "distribution": "uniform"},
              lambda t, g: init.xavier_uniform_(t, generator=g)),
             ({"scale": 1.0, "mode": "fan_avg", "distribution": "untruncated_normal"},
              lambda t, g: init.xavier_normal_(t, generator=g))]
    for hyper, reference in cases:
        ours = torch_fill("variance_scaling", CONV, seed=4, **hyper)
        theirs = reference(torch.empty(CONV, dtype=torch.float64),
                           torch.Generator().manual_seed(4))
        torch.testing.assert_close(ours, theirs, rtol=1e-15, atol=0)


def test_variance_scaling_truncated_torch_fill_is_trunc_normal_at_two_corrected_stds() -> None:
    std = math.sqrt(2.0 / FANS["fan_out"]) / 0.87962566103423978
    ours = torch_fill("variance_scaling", CONV, seed=9, scale=2.0, mode="fan_out")
    theirs = init.trunc_normal_(torch.empty(CONV, dtype=torch.float64), 0.0, std, -2 * std,
                                2 * std, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert ours.abs().max() <= 2 * std


# ------------------------------------------------------------- he_* and xavier_* options
@pytest.mark.parametrize("name", ["he_normal", "he_uniform"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_he_takes_torchs_a_mode_and_nonlinearity(name: str, mode: str) -> None:
    reference = init.kaiming_normal_ if name == "he_normal" else init.kaiming_uniform_
    ours = torch_fill(name, CONV, seed=1, a=0.2, mode=mode, nonlinearity="leaky_relu")
    theirs = reference(torch.empty(CONV, dtype=torch.float64), a=0.2, mode=mode,
                       nonlinearity="leaky_relu", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    spec = optiplug.spec("initializer", name, a=0.2, mode=mode, nonlinearity="leaky_relu")
    assert spec.negative_slope == 0.2
    assert spec.expected_variance(CONV) == pytest.approx(2 / (1 + 0.04) / FANS[mode])
    numpy_sample = numpy_fill(name, CONV, seed=1, a=0.2, mode=mode, nonlinearity="leaky_relu")
    std = math.sqrt(2 / (1.04 * FANS[mode]))
    distribution = (stats.norm(0, std) if name == "he_normal"
                    else stats.uniform(-math.sqrt(3) * std, 2 * math.sqrt(3) * std))
    assert stats.kstest(numpy_sample.ravel(), distribution.cdf).pvalue > 1e-3


def test_he_defaults_are_unchanged() -> None:
    spec = optiplug.spec("initializer", "he_normal")
    assert (spec.mode, spec.nonlinearity, spec.negative_slope) == ("fan_in", "relu", 0.01)
    assert optiplug.spec("initializer", "xavier_uniform").gain_value() == 1.0


@pytest.mark.parametrize("gain", ["linear", "conv2d", "sigmoid", "tanh", "relu", "leaky_relu",
                                  "selu", 5 / 3])
@pytest.mark.parametrize("name", ["xavier_normal", "xavier_uniform"])
def test_xavier_gain_takes_torch_calculate_gain_names(name: str, gain: Any) -> None:
    value = init.calculate_gain(gain) if isinstance(gain, str) else gain
    assert optiplug.spec("initializer", name, gain=gain).gain_value() == pytest.approx(
        value, rel=1e-15)
    reference = init.xavier_normal_ if name == "xavier_normal" else init.xavier_uniform_
    ours = torch_fill(name, CONV, seed=6, gain=gain)
    theirs = reference(torch.empty(CONV, dtype=torch.float64), gain=value,
                       generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(ours, theirs, rtol=1e-15, atol=0)
    numpy_sample = numpy_fill(name, CONV, seed=6, gain=gain).ravel()
    assert np.var(numpy_sample) == pytest.approx(value**2 * 2 / (288 + 576), rel=0.02)


def test_xavier_gain_name_round_trips_through_a_config() -> None:
    spec = optiplug.spec("initializer", "xavier_uniform", gain="tanh")
    assert type(spec).model_validate(spec.model_dump()) == spec
    assert spec.gain_value() == pytest.approx(5 / 3)


@pytest.mark.parametrize(("name", "hyper", "path"), [
    ("sparse", {"sparsity": 1.5}, "sparsity"),
    ("sparse", {}, "sparsity"),
    ("sparse", {"sparsity": 0.1, "std": 0.0}, "std"),
    ("variance_scaling", {"mode": "fan_sum"}, "mode"),
    ("variance_scaling", {"distribution": "normal"}, "distribution"),
    ("variance_scaling", {"scale": -1.0}, "scale"),
    ("dirac", {"groups": 0}, "groups"),
    ("xavier_normal", {"gain": "swish"}, "gain"),
    ("he_normal", {"a": 0.3}, ""),
    ("ones", {"value": 2.0}, "value"),
])
def test_layer_initializer_specs_reject_bad_hyperparameters(name: str, hyper: dict[str, Any],
                                                            path: str) -> None:
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.build({"kind": "initializer", "name": name, **hyper})
    assert path in str(caught.value)


def test_layer_initializers_are_listed_with_both_backends() -> None:
    listed = {t.name: t.backends for t in optiplug.registry().techniques("initializer")}
    for name in ("ones", "eye", "dirac", "sparse", "variance_scaling"):
        assert listed[name] == ("numpy", "torch")
    assert len(listed) >= 17
