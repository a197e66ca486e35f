"""Shared math and spec pieces of the weight initializers (pure Python and NumPy, no torch).

Shapes follow torch's weight layout ``(out_features, in_features, *kernel)``, so
:func:`fan_in_and_fan_out` and :func:`calculate_gain` give the numbers
``torch.nn.init._calculate_fan_in_and_fan_out`` and ``torch.nn.init.calculate_gain`` give, and
an initializer draws from the same distribution on both backends.

NumPy fills have the signature ``fill(shape, *, dtype, rng) -> ndarray``: :func:`numpy_fill`
turns a float64 sampler ``draw(rng, shape)`` into one (shape and dtype checks, the cast to
``dtype``). Samples are drawn in float64 and rounded once, so a float32 weight is the float64
weight of the same seed, rounded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal, Protocol

import numpy as np
from numpy.typing import DTypeLike, NDArray
from pydantic import AliasChoices, Field, model_validator

from .specs import InitializerSpec, NonNegativeFloat, PositiveFloat

__all__ = [
    "LINEAR_NONLINEARITIES",
    "TRUNCATED_NORMAL_STD_2",
    "FanMode",
    "FiniteFloat",
    "GainSpec",
    "NamedGainSpec",
    "NonlinearityGainSpec",
    "Nonlinearity",
    "NumpyFill",
    "ScalingMode",
    "Shape",
    "TorchFill",
    "as_shape",
    "calculate_gain",
    "fan",
    "fan_in_and_fan_out",
    "lecun_std",
    "numpy_fill",
    "orthogonal",
    "indicator_moments",
    "truncated_normal",
    "truncated_normal_moments",
    "uniform_bound",
    "variance_scaling_fan",
    "xavier_std",
]

Shape = tuple[int, ...]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
"""Any finite float (means, bounds, fill values)."""
FanMode = Literal["fan_in", "fan_out"]
"""Which fan a variance-scaling initializer divides by: ``fan_in`` keeps the forward
activations' variance, ``fan_out`` the backward gradients'."""
ScalingMode = Literal["fan_in", "fan_out", "fan_avg"]
"""Keras' and JAX's ``VarianceScaling`` modes: :data:`FanMode` plus ``fan_avg``, the mean of
``fan_in`` and ``fan_out`` (Glorot's compromise)."""
Nonlinearity = Literal["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                       "conv_transpose2d", "conv_transpose3d", "sigmoid", "tanh", "relu",
                       "leaky_relu", "selu"]
"""The nonlinearities :func:`calculate_gain` knows (``torch.nn.init.calculate_gain``'s names)."""

LINEAR_NONLINEARITIES: Final[frozenset[str]] = frozenset(
    {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
     "conv_transpose3d"})
DEFAULT_NEGATIVE_SLOPE: Final = 0.01
TRUNCATED_NORMAL_STD_2: Final = 0.87962566103423978
"""Standard deviation of the standard normal truncated to ``[-2, 2]``: Keras and JAX divide the
target standard deviation by it so that a ``[-2, 2] * std`` truncated sample has variance
``std**2`` (the exact value is ``0.8796256610342398...``)."""


class NumpyFill(Protocol):
    """``fill(shape, *, dtype, rng) -> ndarray``: a new array from a NumPy ``Generator``."""

    def __call__(self, shape: int | Sequence[int], *, dtype: DTypeLike = ...,
                 rng: np.random.Generator | None = ...) -> NDArray[Any]: ...


class TorchFill(Protocol):
    """``fill(tensor, *, generator=None) -> tensor``: fills in place, records no autograd."""

    def __call__(self, tensor: Any, *, generator: Any = ...) -> Any: ...


def as_shape(shape: int | Sequence[int]) -> Shape:
    """``shape`` as a tuple of non-negative ints.

    Raises:
        ValueError: a dimension is negative or not an integer.
    """
    dims = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0
               for d in dims):
        raise ValueError(f"shape must be non-negative integers, got {shape!r}")
    return tuple(int(d) for d in dims)


def fan_in_and_fan_out(shape: int | Sequence[int]) -> tuple[int, int]:
    """Fan-in and fan-out of a weight of ``shape`` ``(out_features, in_features, *kernel)``.

    ``fan_in = in_features * prod(kernel)`` and ``fan_out = out_features * prod(kernel)``,
    as ``torch.nn.init._calculate_fan_in_and_fan_out``.

    Raises:
        ValueError: ``shape`` has fewer than 2 dimensions.
    """
    dims = as_shape(shape)
    if len(dims) < 2:
        raise ValueError("fan in and fan out can not be computed for a shape with fewer than 2 "
                         f"dimensions, got {dims}")
    receptive_field = math.prod(dims[2:])
    return dims[1] * receptive_field, dims[0] * receptive_field


def fan(shape: int | Sequence[int], mode: FanMode) -> int:
    """The fan ``mode`` names (``fan_in`` or ``fan_out``) of a weight of ``shape``."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return fan_in if mode == "fan_in" else fan_out


def variance_scaling_fan(shape: int | Sequence[int], mode: ScalingMode) -> float:
    """The fan ``mode`` names for a weight of ``shape``: ``fan_in``, ``fan_out`` or their mean
    ``fan_avg`` (``(fan_in + fan_out) / 2``), as Keras' and JAX's ``VarianceScaling``."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    if mode == "fan_avg":
        return (fan_in + fan_out) / 2.0
    return float(fan_in if mode == "fan_in" else fan_out)


def indicator_moments(ones: int, size: int) -> tuple[float, float]:
    """Mean and variance of an array of ``size`` elements of which ``ones`` are 1, the rest 0
    (the deterministic identity-like initializers: ``eye``, ``dirac``)."""
    mean = ones / size
    return mean, mean * (1.0 - mean)


def calculate_gain(nonlinearity: Nonlinearity, negative_slope: float | None = None) -> float:
    """The recommended gain for ``nonlinearity``, as ``torch.nn.init.calculate_gain``.

    ``1`` for linear, convolution and sigmoid, ``5/3`` for tanh, ``sqrt(2)`` for relu,
    ``sqrt(2 / (1 + negative_slope**2))`` for leaky_relu (slope 0.01 when ``None``) and ``3/4``
    for selu (torch's empirical value; use ``linear`` for self-normalizing networks).

    Raises:
        ValueError: unknown ``nonlinearity``.
    """
    if nonlinearity in LINEAR_NONLINEARITIES or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = DEFAULT_NEGATIVE_SLOPE if negative_slope is None else negative_slope
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def xavier_std(shape: Shape, gain: float = 1.0) -> float:
    """``gain * sqrt(2 / (fan_in + fan_out))``: Glorot & Bengio's standard deviation."""
    fan_in, fan_out = fan_in_and_fan_out(shape)
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def lecun_std(shape: Shape) -> float:
    """``1 / sqrt(fan_in)``: LeCun's standard deviation (He's with a linear gain)."""
    return 1.0 / math.sqrt(fan(shape, "fan_in"))


def uniform_bound(std: float) -> float:
    """The half-width ``b`` of ``U(-b, b)`` with standard deviation ``std``: ``sqrt(3) * std``."""
    return math.sqrt(3.0) * std


def numpy_fill(draw: Callable[[np.random.Generator, Shape], NDArray[Any]]) -> NumpyFill:
    """Wrap ``draw(rng, shape) -> float64 array`` into ``fill(shape, *, dtype, rng)``.

    The fill checks the shape, requires a floating ``dtype``, returns an empty array without
    drawing for a shape with a zero dimension (as torch's initializers leave zero-element
    tensors alone), and rounds the float64 sample to ``dtype`` once.
    """

    def fill(shape: int | Sequence[int], *, dtype: DTypeLike = np.float64,
             rng: np.random.Generator | None = None) -> NDArray[Any]:
        dims = as_shape(shape)
        kind = np.dtype(dtype)
        if not np.issubdtype(kind, np.floating):
            raise TypeError(f"initializers make floating-point arrays, got dtype {kind}")
        if math.prod(dims) == 0:
            return np.empty(dims, dtype=kind)
        generator = rng if rng is not None else np.random.default_rng()
        return np.asarray(draw(generator, dims)).astype(kind, copy=False)

    return fill


def _normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def truncated_normal(rng: np.random.Generator, shape: Shape, mean: float, std: float,
                     low: float, high: float) -> NDArray[np.float64]:
    """Samples of ``N(mean, std**2)`` conditioned on ``low <= x <= high``, in float64.

    Uses the two rejection samplers torch's ``trunc_normal_`` uses: redraw from the normal while
    the interval holds more than 30% of its mass; otherwise propose uniformly on the interval and
    accept with probability ``pdf(x) / pdf(mode)``, which stays efficient far in a tail.
    """
    size = math.prod(shape)
    mass = _normal_cdf((high - mean) / std) - _normal_cdf((low - mean) / std)
    if mass > 0.3:
        out = rng.normal(mean, std, size=size)
        pending = (out < low) | (out > high)
        while pending.any():
            out[pending] = rng.normal(mean, std, size=int(pending.sum()))
            pending = (out < low) | (out > high)
        return out.reshape(shape)
    mode = max(low, min(mean, high))
    log_peak = -0.5 * ((mode - mean) / std) ** 2
    out = np.empty(size)
    pending = np.ones(size, dtype=bool)
    while pending.any():
        count = int(pending.sum())
        candidates = rng.uniform(low, high, size=count)
        log_ratio = -0.5 * ((candidates - mean) / std) ** 2 - log_peak
        # log1p(-u) = log(1 - u) with 1 - u in (0, 1]: never log(0).
        accepted = np.log1p(-rng.random(count)) <= log_ratio
        slots = np.flatnonzero(pending)[accepted]
        out[slots] = candidates[accepted]
        pending[slots] = False
    return out.reshape(shape)


def truncated_normal_moments(mean: float, std: float, low: float,
                             high: float) -> tuple[float, float]:
    """Mean and variance of ``N(mean, std**2)`` conditioned on ``low <= x <= high``."""
    alpha, beta = (low - mean) / std, (high - mean) / std
    mass = _normal_cdf(beta) - _normal_cdf(alpha)
    pdf_alpha, pdf_beta = _normal_pdf(alpha), _normal_pdf(beta)
    shift = (pdf_alpha - pdf_beta) / mass
    variance = std**2 * (1 + (alpha * pdf_alpha - beta * pdf_beta) / mass - shift**2)
    return mean + std * shift, variance


def _normal_pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def orthogonal(rng: np.random.Generator, shape: Shape, gain: float) -> NDArray[np.float64]:
    """A (semi-)orthogonal ``gain``-scaled matrix, trailing dimensions flattened, in float64.

    As ``torch.nn.init.orthogonal_``: QR of a standard normal ``rows x cols`` matrix (its
    transpose when ``rows < cols``), with Q's columns multiplied by the signs of R's diagonal so
    that Q is Haar-distributed (Mezzadri 2007). ``W @ W.T = gain**2 I`` when ``rows <= cols``,
    ``W.T @ W = gain**2 I`` otherwise.

    Raises:
        ValueError: ``shape`` has fewer than 2 dimensions.
    """
    if len(shape) < 2:
        raise ValueError(f"orthogonal initialization needs at least 2 dimensions, got {shape}")
    rows = shape[0]
    cols = math.prod(shape) // rows
    flattened = rng.standard_normal((rows, cols))
    if rows < cols:
        flattened = flattened.T
    q, r = np.linalg.qr(flattened)
    q = q * np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return (gain * q).reshape(shape)


class GainSpec(InitializerSpec):
    """Base of initializers scaled by a plain ``gain`` (Xavier/Glorot, orthogonal)."""

    gain: PositiveFloat = 1.0
    """Scale factor, > 0: 5/3 before tanh, sqrt(2) before relu (see calculate_gain)."""


class NamedGainSpec(InitializerSpec):
    """Base of initializers scaled by a ``gain`` given as a number or as the name of the
    nonlinearity that follows, whose :func:`calculate_gain` value it then is (Xavier/Glorot)."""

    gain: PositiveFloat | Nonlinearity = 1.0
    """Scale factor, > 0, or a nonlinearity name meaning ``torch.nn.init.calculate_gain(name)``
    (``tanh``: 5/3, ``relu``: sqrt(2), ``leaky_relu``: slope 0.01, ``selu``: 3/4)."""

    def gain_value(self) -> float:
        """The gain as a number (a nonlinearity name resolved by :func:`calculate_gain`)."""
        return calculate_gain(self.gain) if isinstance(self.gain, str) else self.gain


class NonlinearityGainSpec(InitializerSpec):
    """Base of fan-scaled initializers whose gain comes from the following nonlinearity (He)."""

    mode: FanMode = "fan_in"
    """``fan_in`` keeps the forward activations' variance, ``fan_out`` the gradients'."""
    nonlinearity: Nonlinearity = "relu"
    """The activation after this layer; sets the gain (see ``torch.nn.init.calculate_gain``)."""
    negative_slope: NonNegativeFloat = Field(
        DEFAULT_NEGATIVE_SLOPE, validation_alias=AliasChoices("negative_slope", "a"))
    """Negative slope of the leaky ReLU that follows; only with ``nonlinearity="leaky_relu"``.
    Also accepted as ``a``, torch's ``kaiming_*_`` name."""

    @model_validator(mode="after")
    def _slope_only_for_leaky_relu(self) -> NonlinearityGainSpec:
        # Compared with the default, not with model_fields_set, so that a dumped spec loads back.
        if self.nonlinearity != "leaky_relu" and self.negative_slope != DEFAULT_NEGATIVE_SLOPE:
            raise ValueError("negative_slope applies only to nonlinearity='leaky_relu', not "
                             f"{self.nonlinearity!r}")
        return self

    def gain_value(self) -> float:
        """The gain of :attr:`nonlinearity` (with :attr:`negative_slope` for leaky ReLU)."""
        return calculate_gain(self.nonlinearity, self.negative_slope)

    def std(self, shape: Shape) -> float:
        """``gain / sqrt(fan)``: the standard deviation He initialization gives ``shape``."""
        return self.gain_value() / math.sqrt(fan(shape, self.mode))

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return self.std(shape) ** 2
