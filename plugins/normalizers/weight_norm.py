"""Weight normalization: a weight reparametrized as ``w = g * v / ||v||``, ``g`` and ``v`` trained.

The direction ``v`` and the norm ``g`` of each output unit's weight vector are separate
parameters: the optimizer updates ``g`` and ``v`` and the layer computes its weight from them
at every forward pass. It decouples the length of the weights from their direction, which
conditions the gradient like batch norm does but without batch statistics: for recurrent
networks, reinforcement learning, generative models and small batches. ``||v||`` is the
2-norm over every axis except ``dim`` (one norm per output unit for ``dim=0``), or over the
whole tensor for ``dim=None``. At build, ``v`` is the layer's weight and ``g`` its norm, so the
layer computes what it computed before.

Builder signature (both backends)::

    build(spec, num_features=None, *, layer=None, dtype=..., device=...)

- ``layer=`` wraps an existing layer's ``spec.parameter`` (``"weight"`` by default). torch:
  any ``nn.Module`` with that parameter, reparametrized in place with
  ``torch.nn.utils.parametrizations.weight_norm`` (the optimizer then sees
  ``parametrizations.weight.original0`` = ``g`` and ``original1`` = ``v``) and returned. NumPy:
  any layer with ``params``/``grads``/``forward``/``backward`` (a ``NumpyModule``), wrapped in
  a :class:`NumpyWeightNorm` whose ``params`` hold ``weight_g``, ``weight_v`` and the layer's
  other parameters (the same arrays), so a NumPy optimizer built over it trains ``g`` and ``v``.
- without ``layer``, ``num_features=n`` makes a weight-normalized ``Linear(n, n)`` with a bias,
  which, like every normalization layer, starts as the identity map (``v = I``, ``g = 1``,
  bias 0), the same on both backends.

``layer`` is a runtime value, like ``num_features``: pass it to ``optiplug.build``, e.g.
``optiplug.build({"kind": "normalizer", "name": "weight_norm", "dim": 0}, backend="torch",
layer=torch.nn.Conv2d(3, 8, 3))``.

Reference: Salimans & Kingma, "Weight Normalization: A Simple Reparameterization to Accelerate
Training of Deep Neural Networks", NeurIPS 2016; ``torch.nn.utils.parametrizations.weight_norm``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray
from pydantic import Field

import optiplug
from optiplug.backends.numpy import NumpyModule, layer_features

Array = NDArray[Any]


class WeightNormSpec(optiplug.NormalizerSpec):
    """``w = g * v / ||v||`` with ``g`` and ``v`` the trained parameters."""

    name: Literal["weight_norm"] = "weight_norm"
    dim: optiplug.NonNegativeInt | None = 0
    """The axis kept by the norm (0: one norm per output unit); ``None``: one norm over the
    whole weight (torch's ``dim=None``)."""
    parameter: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = "weight"
    """Name of the wrapped layer's parameter to reparametrize (torch's ``name``)."""


def _setup_error(message: str) -> optiplug.ConfigError:
    return optiplug.ConfigError([optiplug.ConfigIssue("parameter", message)])


class NumpyLinear(NumpyModule):
    """``y = x W^T + b`` over the last axis, ``W`` in torch's ``(out, in)`` layout."""

    def __init__(self, weight: Array, bias: Array) -> None:
        super().__init__()
        self.params.update(weight=weight, bias=bias)
        self.zero_grad()

    def forward(self, x: Array) -> Array:
        self._x = x
        params = self.params
        return x @ params["weight"].T.astype(x.dtype) + params["bias"].astype(x.dtype)

    def backward(self, grad_out: Array) -> Array:
        flat_grad = grad_out.reshape(-1, grad_out.shape[-1])
        self.grads["weight"] += flat_grad.T @ self._x.reshape(-1, self._x.shape[-1])
        self.grads["bias"] += flat_grad.sum(axis=0)
        return grad_out @ self.params["weight"].astype(grad_out.dtype)


class NumpyWeightNorm(NumpyModule):
    """A NumPy layer whose ``parameter`` is computed from ``{parameter}_g`` and
    ``{parameter}_v`` at every forward pass; ``backward`` adds their gradients.

    With ``G = dL/dw`` and sums over the normed axes:
    ``dL/dg = sum(G v) / ||v||`` and ``dL/dv = (g / ||v||) (G - v sum(G v) / ||v||**2)``.
    """

    def __init__(self, layer: Any, parameter: str, dim: int | None) -> None:
        super().__init__()
        params = getattr(layer, "params", None)
        if not isinstance(params, dict) or not isinstance(params.get(parameter), np.ndarray):
            raise _setup_error(f"weight_norm wraps a NumPy layer's params[{parameter!r}]; "
                               f"{type(layer).__name__} has no such parameter")
        weight = params[parameter]
        if dim is not None and dim >= weight.ndim:
            raise optiplug.ConfigError([optiplug.ConfigIssue("dim", (
                f"dim={dim} is out of range for {parameter!r} of shape {weight.shape}"))])
        self.layer = layer
        self.parameter = parameter
        self._axes = tuple(axis for axis in range(weight.ndim) if axis != dim)
        self._keep_dims = dim is not None
        self.g_name, self.v_name = f"{parameter}_g", f"{parameter}_v"
        # An array even for dim=None (0-d, as torch's g), so optimizers update it in place.
        self.params[self.g_name] = np.array(self._norm(weight), dtype=weight.dtype)
        self.params[self.v_name] = weight.copy()
        self.grads[self.g_name] = np.zeros_like(self.params[self.g_name])
        self.grads[self.v_name] = np.zeros_like(weight)
        grads = layer.grads
        for name, value in params.items():
            if name != parameter:
                self.params[name] = value
                self.grads[name] = grads.setdefault(name, np.zeros_like(value))
        grads.setdefault(parameter, np.zeros_like(weight))
        self.buffers = layer.buffers

    def _norm(self, v: Array) -> Array:
        return np.sqrt(np.square(v).sum(axis=self._axes, keepdims=self._keep_dims))

    def compute_weight(self) -> Array:
        """Write ``g * v / ||v||`` into the wrapped layer's parameter and return it."""
        v = self.params[self.v_name]
        weight = self.layer.params[self.parameter]
        np.multiply(v, self.params[self.g_name] / self._norm(v), out=weight)
        return weight

    def forward(self, x: Array) -> Array:
        self.compute_weight()
        return self.layer.forward(x)

    def backward(self, grad_out: Array) -> Array:
        weight_grad = self.layer.grads[self.parameter]
        weight_grad.fill(0)
        grad_x = self.layer.backward(grad_out)
        grad_w = weight_grad.copy()
        v, g = self.params[self.v_name], self.params[self.g_name]
        norm = self._norm(v)
        projection = np.multiply(grad_w, v).sum(axis=self._axes, keepdims=self._keep_dims)
        self.grads[self.g_name] += projection / norm
        self.grads[self.v_name] += (g / norm) * (grad_w - v * (projection / (norm * norm)))
        return grad_x

    def train(self, mode: bool = True) -> NumpyWeightNorm:
        super().train(mode)
        if callable(getattr(self.layer, "train", None)):
            self.layer.train(mode)
        return self

    def __repr__(self) -> str:
        return f"NumpyWeightNorm({self.layer!r}, parameter={self.parameter!r})"


def _layer_or_features(layer: Any, num_features: Any) -> int | None:
    if layer is not None:
        if num_features is not None:
            raise optiplug.ConfigError([optiplug.ConfigIssue("num_features", (
                "weight_norm takes layer= (a layer to wrap) or num_features= (a new square "
                "linear layer), not both"))])
        return None
    return layer_features("weight_norm", num_features)


def build_numpy(spec: WeightNormSpec, num_features: int | None = None, *, layer: Any = None,
                dtype: DTypeLike = np.float64) -> NumpyWeightNorm:
    size = _layer_or_features(layer, num_features)
    if size is not None:
        layer = NumpyLinear(np.eye(size, dtype=dtype), np.zeros(size, dtype=dtype))
    return NumpyWeightNorm(layer, spec.parameter, spec.dim)


def build_torch(spec: WeightNormSpec, num_features: int | None = None, *, layer: Any = None,
                dtype: Any = None, device: Any = None) -> Any:
    import torch

    size = _layer_or_features(layer, num_features)
    if size is not None:
        layer = torch.nn.Linear(size, size, dtype=dtype, device=device)
        with torch.no_grad():
            torch.nn.init.eye_(layer.weight)
            torch.nn.init.zeros_(layer.bias)
    if not isinstance(layer, torch.nn.Module) or \
            not isinstance(getattr(layer, spec.parameter, None), torch.nn.Parameter):
        raise _setup_error(f"weight_norm wraps an nn.Module's parameter {spec.parameter!r}; "
                           f"{type(layer).__name__} has no such parameter")
    if spec.dim is not None and spec.dim >= getattr(layer, spec.parameter).dim():
        raise optiplug.ConfigError([optiplug.ConfigIssue("dim", (
            f"dim={spec.dim} is out of range for {spec.parameter!r} of shape "
            f"{tuple(getattr(layer, spec.parameter).shape)}"))])
    return torch.nn.utils.parametrizations.weight_norm(layer, name=spec.parameter, dim=spec.dim)


@optiplug.hookimpl
def optiplug_normalizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="normalizer", name="weight_norm", spec=WeightNormSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Weight normalization: a layer's weight reparametrized as g * v / ||v|| with g "
                "and v trained by the optimizer; batch-independent, for RNNs, RL and GANs.",
        reference="Salimans & Kingma 2016, arXiv:1602.07868")]
