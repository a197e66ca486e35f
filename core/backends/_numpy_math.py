"""Numerically stable elementwise functions shared by the NumPy activations.

Each function works in its input's floating dtype (float32 stays float32: constants are Python
floats, which NumPy does not let upcast an array) and raises no overflow, division or invalid
floating-point error for any finite input. Results that underflow to zero may set NumPy's
underflow flag, which NumPy ignores by default.

:func:`erfc` is W. J. Cody's rational Chebyshev approximation (the ``CALERF`` routine of
SPECFUN), accurate to about one unit in the last place of float64 over the whole real line,
so NumPy needs no SciPy to compute the exact GELU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["elu", "elu_grad", "erfc", "halved_shape", "normal_cdf", "normal_pdf", "sigmoid",
           "sigmoid_pair", "softplus", "split_halves"]

Array = NDArray[Any]

SQRT1_2: Final = math.sqrt(0.5)
INV_SQRT_2PI: Final = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT_PI: Final = 5.6418958354775628695e-1

# Cody (1969), Math. Comp. 23, 631-637, as in Netlib SPECFUN's CALERF.
# erf(x) = x * A(x^2) / B(x^2) on |x| <= 0.46875.
_A: Final = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
             3.20937758913846947e03, 1.85777706184603153e-1)
_B: Final = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
             2.84423683343917062e03)
# erfc(x) = exp(-x^2) * C(x) / D(x) on 0.46875 < x <= 4.
_C: Final = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
             2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
             2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_D: Final = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
             1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
             3.43936767414372164e03, 1.23033935480374942e03)
# erfc(x) = exp(-x^2) / x * (1/sqrt(pi) + P(1/x^2) / (x^2 Q(1/x^2))) on x > 4.
_P: Final = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
             1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_Q: Final = (2.56852019228982242e00, 1.87295284992346047e00, 5.27905102951428412e-1,
             6.05183413124413191e-2, 2.33520497626869185e-3)
# Beyond these erfc underflows to zero (float64, float32): the values of CALERF's XBIG.
_ERFC_ZERO_FROM: Final = {np.dtype(np.float64): 26.543, np.dtype(np.float32): 9.194}


def _exp_minus_square(v: Array, factor: float = 1.0) -> Array:
    """``exp(-factor * v**2)``, accurate to a few ulp even where ``v**2`` is large.

    ``v**2`` rounds with a relative error of ``eps``, which ``exp`` turns into an error of
    ``v**2 eps`` (hundreds of ulp by ``|v| = 30``). Splitting ``v = hi + lo`` with ``hi`` a
    multiple of 1/16 makes ``hi**2`` exact and leaves only the small ``(v - hi)(v + hi)`` to
    round (Cody's CALERF does the same).
    """
    hi = np.trunc(v * 16.0) / 16.0
    return np.exp(-factor * (hi * hi)) * np.exp(-factor * ((v - hi) * (v + hi)))


def _erfc_nonnegative(y: Array, gauss: Callable[[NDArray[np.bool_]], Array]) -> Array:
    """``erfc(y)`` for ``y >= 0``, in ``y``'s dtype.

    ``gauss(mask)`` gives ``exp(-y**2)`` on ``y[mask]``: computed from ``y`` itself for
    :func:`erfc`, or from the unscaled ``x = sqrt(2) y`` for :func:`normal_cdf`, so that the
    rounding of ``x / sqrt(2)`` does not reach the exponential.
    """
    out = np.zeros_like(y)
    small = y <= 0.46875
    if small.any():
        ys = y[small]
        z = ys * ys
        num = _A[4] * z
        den = z
        for i in range(3):
            num = (num + _A[i]) * z
            den = (den + _B[i]) * z
        out[small] = 1.0 - ys * (num + _A[3]) / (den + _B[3])
    middle = (y > 0.46875) & (y <= 4.0)
    if middle.any():
        ym = y[middle]
        num = _C[8] * ym
        den = ym
        for i in range(7):
            num = (num + _C[i]) * ym
            den = (den + _D[i]) * ym
        out[middle] = gauss(middle) * ((num + _C[7]) / (den + _D[7]))
    large = (y > 4.0) & (y < _ERFC_ZERO_FROM.get(y.dtype, 26.543))
    if large.any():
        yl = y[large]
        z = 1.0 / (yl * yl)
        num = _P[5] * z
        den = z
        for i in range(4):
            num = (num + _P[i]) * z
            den = (den + _Q[i]) * z
        out[large] = gauss(large) * ((_INV_SQRT_PI - z * (num + _P[4]) / (den + _Q[4])) / yl)
    return out


def _floating(x: Array) -> Array:
    array = np.asarray(x)
    return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)


def erfc(x: Array) -> Array:
    """The complementary error function ``1 - erf(x)``, elementwise, accurate in both tails.

    Float64 results are within a few ulp of ``math.erfc``; ``erfc(-x) = 2 - erfc(x)`` keeps
    the negative side accurate too.
    """
    x = _floating(x)
    y = np.abs(x)
    positive = _erfc_nonnegative(y, lambda mask: _exp_minus_square(y[mask]))
    return np.where(x < 0, 2.0 - positive, positive)


def normal_cdf(x: Array) -> Array:
    """The standard normal CDF ``Phi(x) = erfc(-x / sqrt(2)) / 2``, accurate in both tails."""
    x = _floating(x)
    magnitude = np.abs(x)
    tail = 0.5 * _erfc_nonnegative(magnitude * SQRT1_2,
                                   lambda mask: _exp_minus_square(magnitude[mask], 0.5))
    return np.where(x < 0, tail, 1.0 - tail)


def normal_pdf(x: Array) -> Array:
    """The standard normal density ``exp(-x^2 / 2) / sqrt(2 pi)``."""
    x = _floating(x)
    # Beyond |x| = 1e4 the density is zero in every format; bounding keeps x*x finite.
    return INV_SQRT_2PI * _exp_minus_square(np.minimum(np.abs(x), 1e4), 0.5)


def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))`` without overflow: ``exp`` only ever sees ``-|x|``."""
    x = _floating(x)
    e = np.exp(-np.abs(x))
    big = 1.0 / (1.0 + e)
    return np.where(x >= 0, big, e * big)


def sigmoid_pair(x: Array) -> tuple[Array, Array]:
    """``(sigmoid(x), sigmoid(-x))``, each to full relative precision.

    ``1 - sigmoid(x)`` would lose all its digits for large ``x``; both halves here come from
    the same ``exp(-|x|)``, which never overflows.
    """
    x = _floating(x)
    e = np.exp(-np.abs(x))
    big = 1.0 / (1.0 + e)
    small = e * big
    positive = x >= 0
    return np.where(positive, big, small), np.where(positive, small, big)


def softplus(x: Array) -> Array:
    """``log(1 + exp(x))`` without overflow: ``max(x, 0) + log1p(exp(-|x|))``."""
    x = _floating(x)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def elu(x: Array, alpha: float, scale: float = 1.0) -> Array:
    """``scale * (x if x > 0 else alpha * expm1(x))``; ``exp`` only sees ``min(x, 0)``."""
    negative = (scale * alpha) * np.expm1(np.minimum(x, 0.0))
    return np.where(x > 0, x * scale, negative)


def elu_grad(x: Array, alpha: float, scale: float = 1.0) -> Array:
    """``d elu / dx``: ``scale`` for ``x > 0``, ``scale * alpha * exp(x)`` otherwise (as torch)."""
    negative = (scale * alpha) * np.exp(np.minimum(x, 0.0))
    return np.where(x > 0, scale, negative).astype(negative.dtype, copy=False)


def split_halves(x: Array, dim: int, technique: str) -> tuple[Array, Array]:
    """``x`` split into its first and second half along ``dim`` (views, no copy): the two
    inputs of a gated unit (GLU, SwiGLU).

    Raises:
        ValueError: ``dim`` is out of range for ``x`` or its size is odd; the message names
            ``technique``.
    """
    if not -x.ndim <= dim < x.ndim:
        raise ValueError(f"{technique}: dim={dim} is out of range for a {x.ndim}-D input of "
                         f"shape {x.shape}")
    if x.shape[dim] % 2:
        raise ValueError(f"{technique} halves dim={dim}, whose size must be even; got input "
                         f"shape {x.shape}")
    first, second = np.split(x, 2, axis=dim)
    return first, second


def halved_shape(shape: tuple[int, ...], dim: int) -> tuple[int, ...]:
    """``shape`` with axis ``dim`` halved: the output shape of a gated unit."""
    axis = dim % len(shape)
    return (*shape[:axis], shape[axis] // 2, *shape[axis + 1:])
