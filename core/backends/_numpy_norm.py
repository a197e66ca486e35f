"""Shared machinery of the normalizer plugins: moment normalization and its backward pass on
NumPy, the NumPy normalization-layer base, and the data-scaler base used by both backends.

Normalization layers (batch, layer, group and RMS norm) all compute, over different axes::

    x_hat = (x - mean) * r,  r = 1 / sqrt(var + eps)    (RMS norm: x * r, var = mean(x^2))
    y = weight * x_hat + bias

and share one backward pass: with ``g = dL/dx_hat`` and means taken over the normalized axes::

    dL/dx = r * (g - mean(g) - x_hat * mean(g * x_hat))    (RMS norm: no mean(g) term)

Only ``x_hat`` and ``r`` are cached between forward and backward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..errors import ConfigError, ConfigIssue, OptiplugError
from ._numpy_module import NumpyModule

__all__ = ["NotFittedError", "NumpyNormLayer", "Scaler", "float_input", "layer_features",
           "near_constant_std", "nonzero_range", "normalize", "normalize_backward", "reduced_size"]

Array = NDArray[Any]
Stats = dict[str, NDArray[np.float64]]
_FLOAT64_EPS: Final = float(np.finfo(np.float64).eps)


def reduced_size(shape: Sequence[int], axes: Sequence[int]) -> int:
    """How many elements one reduction over ``axes`` of an array of ``shape`` averages."""
    return math.prod(shape[axis] for axis in axes)


def layer_features(technique: str, num_features: Any) -> int:
    """``num_features`` checked for a normalization layer named ``technique``.

    Raises:
        ConfigError: missing (a layer must know its feature size) or not a positive int.
    """
    if num_features is None:
        raise ConfigError([ConfigIssue("num_features", (
            f"normalizer {technique!r} is a layer: pass num_features=<size of the feature "
            f"(channel) dimension>"))])
    if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) \
            or num_features < 1:
        raise ConfigError([ConfigIssue("num_features", (
            f"must be a positive int, got {num_features!r}"))])
    return int(num_features)


def float_input(x: Any, name: str) -> Array:
    """``x`` as a floating NumPy array (no copy when it already is one).

    Raises:
        TypeError: ``x`` is not floating point (layers keep the caller's precision, so they do
            not guess one for integers).
    """
    array = np.asarray(x)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} expects a floating-point array, got dtype {array.dtype}")
    return array


def normalize(x: Array, axes: tuple[int, ...], eps: float, *, center: bool = True
              ) -> tuple[Array, Array, Array | None, Array]:
    """Normalize ``x`` by its moments over ``axes``.

    Args:
        x: A floating array; the computation stays in its dtype.
        axes: The axes the statistics are taken over.
        eps: Added to the variance (mean square without centering) before the square root.
        center: Subtract the mean first (batch, layer, group norm); ``False`` for RMS norm.

    Returns:
        ``(x_hat, inv_std, mean, var)``: the normalized array, ``1/sqrt(var + eps)``, the mean
        (``None`` without centering) and the biased variance (the mean square without
        centering). Statistics keep their reduced axes (size 1) so they broadcast against ``x``.
    """
    mean: Array | None = None
    if center:
        mean = x.mean(axis=axes, keepdims=True)
        x_hat = np.subtract(x, mean)
    else:
        x_hat = x.copy()
    var = np.square(x_hat).mean(axis=axes, keepdims=True)
    inv_std = 1.0 / np.sqrt(var + np.asarray(eps, dtype=x.dtype))
    x_hat *= inv_std
    return x_hat, inv_std, mean, var


def normalize_backward(grad_x_hat: Array, x_hat: Array, inv_std: Array, axes: tuple[int, ...],
                       *, center: bool = True) -> Array:
    """Gradient with respect to ``x`` of ``x_hat = normalize(x)`` given ``dL/dx_hat``.

    Statistics are those of the same batch (training-mode batch norm, layer, group and RMS
    norm); ``dL/dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat))`` with means over
    ``axes`` and the ``mean(g)`` term only when centered. One full-size scratch array is used.
    """
    count = reduced_size(x_hat.shape, axes)
    grad = np.multiply(grad_x_hat, x_hat)
    projection = grad.sum(axis=axes, keepdims=True)
    projection /= count
    np.multiply(x_hat, projection, out=grad)
    np.subtract(grad_x_hat, grad, out=grad)
    if center:
        grad -= grad_x_hat.mean(axis=axes, keepdims=True)
    grad *= inv_std
    return grad


class NumpyNormLayer(NumpyModule):
    """Base of NumPy normalization layers: the learned per-feature affine map and its gradients.

    ``params`` holds ``weight`` (ones) and, with ``bias``, ``bias`` (zeros) when ``affine``;
    ``grads`` holds arrays of the same shapes that :meth:`backward` adds into (like torch's
    ``.grad``: call :meth:`zero_grad` between steps). Computation runs in the input's dtype.

    Args:
        num_features: Size of the feature (channel) dimension the parameters live on.
        affine: Learn ``weight`` (and ``bias``).
        bias: Learn ``bias`` too (only with ``affine``).
        dtype: Dtype of the parameters and buffers.
        feature_axis: Axis of the input the parameters broadcast along (1 for channels, -1 for
            the last dimension).
    """

    def __init__(self, num_features: int, *, affine: bool, bias: bool = True,
                 dtype: DTypeLike = np.float64, feature_axis: int = 1) -> None:
        super().__init__()
        if not isinstance(num_features, int) or isinstance(num_features, bool) \
                or num_features < 1:
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        self.num_features = num_features
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"dtype must be floating point, got {self.dtype}")
        self.feature_axis = feature_axis
        if affine:
            self.params["weight"] = np.ones(num_features, dtype=self.dtype)
            if bias:
                self.params["bias"] = np.zeros(num_features, dtype=self.dtype)
        self.zero_grad()
        self._x_hat: Array | None = None

    @property
    def affine(self) -> bool:
        """Whether the layer learns a per-feature scale (and shift)."""
        return "weight" in self.params

    def _check_input(self, x: Any, min_ndim: int) -> Array:
        array = float_input(x, type(self).__name__)
        if array.ndim < min_ndim or array.shape[self.feature_axis] != self.num_features:
            axis = "last" if self.feature_axis == -1 else f"axis {self.feature_axis}"
            raise ValueError(f"{type(self).__name__} expects at least {min_ndim} dimensions with "
                             f"{self.num_features} features on the {axis}, got shape "
                             f"{array.shape}")
        return array

    def _feature_shape(self, ndim: int) -> tuple[int, ...]:
        shape = [1] * ndim
        shape[self.feature_axis] = self.num_features
        return tuple(shape)

    def _feature_param(self, name: str, ndim: int, dtype: np.dtype[Any]) -> Array:
        return self.params[name].astype(dtype, copy=False).reshape(self._feature_shape(ndim))

    def _affine_forward(self, x_hat: Array) -> Array:
        """``y = weight * x_hat + bias`` as a new array; caches ``x_hat`` for the backward pass."""
        self._x_hat = x_hat
        if not self.affine:
            return x_hat.copy()
        out = x_hat * self._feature_param("weight", x_hat.ndim, x_hat.dtype)
        if "bias" in self.params:
            out += self._feature_param("bias", x_hat.ndim, x_hat.dtype)
        return out

    def _affine_backward(self, grad_out: Any) -> tuple[Array, Array]:
        """Add the parameter gradients into ``grads``; return ``(dL/dx_hat, x_hat)``.

        Raises:
            RuntimeError: no ``forward`` since the layer was built.
        """
        if self._x_hat is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        x_hat = self._x_hat
        grad_out = np.asarray(grad_out, dtype=x_hat.dtype)
        if grad_out.shape != x_hat.shape:
            raise ValueError(f"grad_out has shape {grad_out.shape}, the output has {x_hat.shape}")
        if not self.affine:
            return grad_out, x_hat
        param_axes = tuple(a for a in range(x_hat.ndim) if a != self.feature_axis % x_hat.ndim)
        self.grads["weight"] += np.multiply(grad_out, x_hat).sum(axis=param_axes)
        if "bias" in self.params:
            self.grads["bias"] += grad_out.sum(axis=param_axes)
        return grad_out * self._feature_param("weight", x_hat.ndim, x_hat.dtype), x_hat


class NotFittedError(OptiplugError, RuntimeError):
    """A data scaler was used before ``fit`` (or ``load_state_dict``)."""


class _NumpyOps:
    """Array operations of the scalers on NumPy arrays (statistics are float64 arrays)."""

    name: ClassVar[str] = "numpy"

    @staticmethod
    def as_float(x: Any) -> Any:
        array = np.asarray(x)
        return array if np.issubdtype(array.dtype, np.floating) else array.astype(np.float64)

    @staticmethod
    def extrema(x: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return x.min(axis=0).astype(np.float64), x.max(axis=0).astype(np.float64)

    @staticmethod
    def moments(x: Any, with_var: bool) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        # float64 accumulators, as scikit-learn uses, whatever the input precision.
        mean = x.mean(axis=0, dtype=np.float64)
        if not with_var:
            return mean, None
        return mean, np.square(x - mean).mean(axis=0)

    @staticmethod
    def cast(stat: NDArray[np.float64], like: Any) -> Any:
        return stat.astype(like.dtype)

    @staticmethod
    def to_float64(values: Any) -> NDArray[np.float64]:
        return np.asarray(values, dtype=np.float64)

    @staticmethod
    def clip(x: Any, low: float, high: float) -> Any:
        return np.clip(x, low, high, out=x)


class _TorchOps:
    """The same operations on torch tensors; statistics come back as float64 NumPy arrays."""

    name: ClassVar[str] = "torch"

    @staticmethod
    def as_float(x: Any) -> Any:
        import torch

        if not isinstance(x, torch.Tensor):
            raise TypeError(f"the torch scaler expects a torch.Tensor, got {type(x).__name__}")
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())

    @staticmethod
    def extrema(x: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        low, high = x.detach().aminmax(dim=0)
        return _to_numpy(low), _to_numpy(high)

    @staticmethod
    def moments(x: Any, with_var: bool) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
        import torch

        x = x.detach()
        mean = x.mean(dim=0, dtype=torch.float64)
        if not with_var:
            return _to_numpy(mean), None
        return _to_numpy(mean), _to_numpy((x.to(torch.float64) - mean).square_().mean(dim=0))

    @staticmethod
    def cast(stat: NDArray[np.float64], like: Any) -> Any:
        import torch

        return torch.as_tensor(stat).to(device=like.device, dtype=like.dtype)

    @staticmethod
    def to_float64(values: Any) -> NDArray[np.float64]:
        return _to_numpy(values)

    @staticmethod
    def clip(x: Any, low: float, high: float) -> Any:
        return x.clamp_(low, high)


def _to_numpy(tensor: Any) -> NDArray[np.float64]:
    return np.asarray(tensor.detach().cpu().double().numpy(), dtype=np.float64)


_OPS: Final[dict[str, type[_NumpyOps] | type[_TorchOps]]] = {"numpy": _NumpyOps,
                                                             "torch": _TorchOps}


class Scaler:
    """Base of data scalers: a per-feature affine map fitted to data, on NumPy or torch.

    ``transform(x) = (x - center) / scale + offset`` and ``inverse_transform`` undoes it, where
    a subclass computes ``center`` and ``scale`` (float64 vectors, one entry per feature) from
    its fitted statistics in :meth:`_affine`. Inputs are ``(n_samples, n_features)``, or any
    ``(..., n_features)`` (statistics are taken over all leading axes). Statistics are kept as
    float64 NumPy arrays on both backends; :meth:`state_dict` gives them as plain lists.

    Subclasses set :attr:`statistic_names` and implement :meth:`_batch_statistics`,
    :meth:`_merge` and :meth:`_affine`.

    Args:
        backend: ``"numpy"`` (arrays in, arrays out) or ``"torch"`` (tensors in, tensors out,
            on the tensor's device and dtype; statistics are not tracked by autograd).
        num_features: Expected number of features, checked at fit; ``None`` accepts any.
    """

    statistic_names: tuple[str, ...] = ()
    offset: float = 0.0

    def __init__(self, *, backend: Literal["numpy", "torch"] = "numpy",
                 num_features: int | None = None) -> None:
        if backend not in _OPS:
            raise ValueError(f"backend must be one of {', '.join(_OPS)}, got {backend!r}")
        self.backend = backend
        self._ops = _OPS[backend]
        self.num_features = num_features
        self.n_samples_seen = 0
        self._stats: Stats | None = None
        self._cast_cache: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    @property
    def fitted(self) -> bool:
        """Whether statistics are available (after ``fit``/``partial_fit``/``load_state_dict``)."""
        return self._stats is not None

    @property
    def statistics(self) -> dict[str, NDArray[np.float64]]:
        """Copies of the fitted statistics by name.

        Raises:
            NotFittedError: not fitted yet.
        """
        return {name: value.copy() for name, value in self._require_stats().items()}

    def _batch_statistics(self, x: Any) -> Stats:
        """The statistics of one 2-D batch (use ``self._ops`` for the reductions)."""
        raise NotImplementedError

    def _merge(self, old: Stats, n_old: int, new: Stats, n_new: int) -> Stats:
        """Combine the statistics of ``n_old`` earlier samples with those of ``n_new`` more."""
        raise NotImplementedError

    def _affine(self, stats: Stats) -> tuple[NDArray[np.float64] | None, NDArray[np.float64]]:
        """``(center, scale)`` of the map; ``center`` may be ``None`` (no shift)."""
        raise NotImplementedError

    def _as_2d(self, x: Any, what: str) -> tuple[Any, Any]:
        array = self._ops.as_float(x)
        if array.ndim < 2:
            raise ValueError(f"{type(self).__name__}.{what} expects (n_samples, n_features), got "
                             f"shape {tuple(array.shape)}; reshape a single feature to (-1, 1)")
        return array, array.reshape(-1, array.shape[-1])

    def _check_features(self, n_features: int, what: str) -> None:
        expected = self.num_features
        if self._stats is not None:
            expected = len(next(iter(self._stats.values())))
        if expected is not None and n_features != expected:
            raise ValueError(f"{type(self).__name__}.{what}: x has {n_features} features, "
                             f"expected {expected}")

    def _require_stats(self) -> Stats:
        if self._stats is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(x) or "
                                 f"load_state_dict(state) before transforming")
        return self._stats

    def fit(self, x: Any) -> Scaler:
        """Compute the statistics of ``x``, forgetting earlier ones; returns ``self``."""
        self._stats = None
        self.n_samples_seen = 0
        return self.partial_fit(x)

    def partial_fit(self, x: Any) -> Scaler:
        """Update the statistics with one more batch ``x`` (streaming fit); returns ``self``.

        Raises:
            ValueError: ``x`` is empty, not at least 2-D, or has the wrong number of features.
        """
        _, flat = self._as_2d(x, "fit")
        self._check_features(flat.shape[1], "fit")
        if flat.shape[0] == 0:
            raise ValueError(f"{type(self).__name__}.fit needs at least one sample")
        batch = self._batch_statistics(flat)
        if self._stats is not None:
            batch = self._merge(self._stats, self.n_samples_seen, batch, flat.shape[0])
        self._stats = batch
        self.n_samples_seen += flat.shape[0]
        self._cast_cache.clear()
        return self

    def _cast_affine(self, like: Any) -> tuple[Any, Any, Any]:
        """``(scale, center_high, center_low)`` in ``like``'s dtype (and device), cached.

        The float64 center is split into ``high + low``, both in the input's dtype, so
        ``(x - high) - low`` keeps float64 accuracy in float32 without a float64 temporary: a
        feature with mean 7 and std 1e-3 would otherwise lose three digits to the rounding of
        its mean. ``center_*`` are ``None`` without centering, ``low`` also when it is zero.
        """
        key = (str(like.dtype), str(getattr(like, "device", "cpu")))
        cached = self._cast_cache.get(key)
        if cached is None:
            center, scale = self._affine(self._require_stats())
            high = low = None
            if center is not None:
                high = self._ops.cast(center, like)
                residual = center - self._ops.to_float64(high)
                low = self._ops.cast(residual, like) if residual.any() else None
            cached = (self._ops.cast(scale, like), high, low)
            self._cast_cache[key] = cached
        return cached

    def _prepared(self, x: Any, what: str) -> tuple[Any, Any, Any, Any]:
        """``x`` checked (fitted, feature count) with the affine terms in its dtype."""
        self._require_stats()
        array, _ = self._as_2d(x, what)
        self._check_features(array.shape[-1], what)
        return (array, *self._cast_affine(array))

    def transform(self, x: Any) -> Any:
        """``(x - center) / scale + offset``: a new array or tensor of ``x``'s shape and dtype.

        Raises:
            NotFittedError: not fitted yet.
            ValueError: wrong number of features.
        """
        array, scale, high, low = self._prepared(x, "transform")
        out = array - high if high is not None else array * 1
        if low is not None:
            out -= low
        out /= scale
        if self.offset:
            out += self.offset
        return out

    def inverse_transform(self, y: Any) -> Any:
        """Map transformed data back: ``(y - offset) * scale + center``.

        Raises:
            NotFittedError: not fitted yet.
            ValueError: wrong number of features.
        """
        array, scale, high, low = self._prepared(y, "inverse_transform")
        out = array - self.offset if self.offset else array * 1
        out *= scale
        if low is not None:
            out += low
        if high is not None:
            out += high
        return out

    def fit_transform(self, x: Any) -> Any:
        """``fit(x)`` then ``transform(x)``."""
        return self.fit(x).transform(x)

    def state_dict(self) -> dict[str, Any]:
        """The fitted statistics as plain Python lists (JSON-serialisable), plus
        ``n_samples_seen``.

        Raises:
            NotFittedError: not fitted yet.
        """
        state: dict[str, Any] = {name: value.tolist()
                                 for name, value in self._require_stats().items()}
        state["n_samples_seen"] = self.n_samples_seen
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore statistics saved by :meth:`state_dict` (lists or arrays).

        Raises:
            ValueError: names missing or unexpected, or vectors of different lengths (nothing
                is changed then).
        """
        expected = {*self.statistic_names, "n_samples_seen"}
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or extra:
            raise ValueError(f"state does not match {type(self).__name__}: missing {missing}, "
                             f"unexpected {extra}")
        stats = {name: np.array(state[name], dtype=np.float64) for name in self.statistic_names}
        lengths = {value.shape for value in stats.values()}
        if len(lengths) != 1 or len(next(iter(lengths))) != 1:
            raise ValueError(f"statistics must be vectors of one length, got shapes "
                             f"{ {name: value.shape for name, value in stats.items()} }")
        n_features = next(iter(stats.values())).shape[0]
        if self.num_features is not None and n_features != self.num_features:
            raise ValueError(f"state has {n_features} features, expected {self.num_features}")
        samples = state["n_samples_seen"]
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 1:
            raise ValueError(f"n_samples_seen must be a positive int, got {samples!r}")
        self._stats = stats
        self.n_samples_seen = int(samples)
        self._cast_cache.clear()

    def __repr__(self) -> str:
        fitted = f"fitted on {self.n_samples_seen} samples" if self.fitted else "not fitted"
        return f"{type(self).__name__}(backend={self.backend!r}, {fitted})"


def near_constant_std(var: NDArray[np.float64], mean: NDArray[np.float64], n_samples: int
                      ) -> NDArray[np.float64]:
    """``sqrt(var)`` with 1 for features indistinguishable from constant.

    A feature is constant when its variance is within the rounding error bound of the
    two-pass algorithm (Chan, Golub & LeVeque), the test scikit-learn's ``StandardScaler``
    uses, so a constant feature is never divided by zero or by rounding noise.
    """
    bound = n_samples * _FLOAT64_EPS * var + (n_samples * mean * _FLOAT64_EPS) ** 2
    std = np.sqrt(var)
    std[var <= bound] = 1.0
    return std


def nonzero_range(data_range: NDArray[np.float64]) -> NDArray[np.float64]:
    """``data_range`` with 1 for (near-)constant features (range below 10 machine epsilons)."""
    safe = data_range.copy()
    safe[data_range < 10 * _FLOAT64_EPS] = 1.0
    return safe

