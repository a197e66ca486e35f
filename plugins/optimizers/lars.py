"""LARS: layer-wise adaptive rate scaling for SGD with momentum.

Scales each parameter tensor's step by a local learning rate ``eta ||p|| / (||g|| + wd ||p||)``
so that every layer moves by a fixed fraction of its own norm, which keeps very large batches
(ResNet-50 with 32k images) stable. Use it with momentum SGD recipes at large batch sizes;
``lamb`` is its Adam counterpart.

    local = trust_coefficient ||p|| / (||g|| + wd ||p||)     (1 where a norm or the sum is 0)
    v = momentum v + lr local (g + wd p);   p -= v

Tensors of at most one dimension (biases, normalization weights) are left out of the
adaptation and of the weight decay by default (``exclude_1d``), as in the usual LARS recipes and
pytorch_optimizer: they step by plain momentum SGD, ``v = momentum v + lr g``.

Conventions against pytorch_optimizer's ``Lars``: the paper (and this) keeps ``lr`` inside the
velocity, pytorch_optimizer multiplies the velocity by ``lr`` (``p -= lr v``); the two are equal
while ``lr`` is constant and differ once a scheduler changes it. pytorch_optimizer always
excludes 1-D tensors (``exclude_1d=True`` here) and has no ``eps``.

Reference: You, Gitman & Ginsburg, "Large Batch Training of Convolutional Networks", 2017
(arXiv:1708.03888), Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel
from optiplug.param_groups import StandardOptimizerSpec


class LarsSpec(StandardOptimizerSpec):
    """LARS (the paper's Algorithm 1)."""

    name: Literal["lars"] = "lars"
    lr: optiplug.PositiveFloat = 1e-3
    """Global learning rate (scaled per tensor by the local rate)."""
    momentum: optiplug.Beta = 0.9
    """Momentum of the velocity."""
    weight_decay: optiplug.NonNegativeFloat = 0.0
    """L2 weight decay (``beta`` of the paper), added to the gradient of adapted tensors."""
    trust_coefficient: optiplug.PositiveFloat = 1e-3
    """``eta`` of the paper: how far one step may move a tensor relative to its norm."""
    exclude_1d: bool = True
    """Step tensors of at most one dimension by plain momentum SGD (no adaptation, no decay)."""


class NumpyLars(NumpyOptimizer):
    """LARS on NumPy arrays: each parameter is updated whole (its local rate needs norms)."""

    state_keys = ("momentum_buffer",)
    scratch_blocks = 1
    whole_tensors = True

    def __init__(self, params: Any, lr: float = 1e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, trust_coefficient: float = 1e-3,
                 exclude_1d: bool = True, **options: Any) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "trust_coefficient": trust_coefficient,
                                  "exclude_1d": exclude_1d}, **options)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        return (group["lr"], group["momentum"], group["weight_decay"],
                group["trust_coefficient"], group["exclude_1d"])

    def update_fused(self, param: NDArray[Any], grad: NDArray[Any],
                     state: Sequence[NDArray[Any]], scalars: Any) -> None:
        decay, local = self._local_rate(param, grad, scalars)
        kind = param.dtype.type
        lars_kernel(param.reshape(-1), grad.reshape(-1), state[0].reshape(-1), scalars[1],
                    kind(decay), kind(scalars[0] * local))

    @staticmethod
    def _local_rate(param: NDArray[Any], grad: NDArray[Any], scalars: Any) -> tuple[Any, float]:
        """``(weight decay, local rate)`` of this tensor (0 and 1 for an excluded one)."""
        _, _, decay, trust_coefficient, exclude_1d = scalars
        if exclude_1d and param.ndim <= 1:
            return 0.0, 1.0
        return decay, lars_local_rate(float(np.linalg.norm(param)), float(np.linalg.norm(grad)),
                                      float(decay), float(trust_coefficient))

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        lr, momentum = scalars[0], scalars[1]
        buffer, tmp = state[0], scratch[0]
        decay, local = self._local_rate(param, grad, scalars)
        np.multiply(buffer, momentum, out=buffer)
        if decay:
            np.multiply(param, decay, out=tmp)
            np.add(tmp, grad, out=tmp)
            np.multiply(tmp, param.dtype.type(lr * local), out=tmp)
        else:
            np.multiply(grad, param.dtype.type(lr * local), out=tmp)
        np.add(buffer, tmp, out=buffer)
        np.subtract(param, buffer, out=param)


def lars_local_rate(weight_norm: float, grad_norm: float, decay: float,
                    trust_coefficient: float) -> float:
    """``trust_coefficient ||p|| / (||g|| + wd ||p||)``, 1 where a norm or the sum is 0."""
    denominator = grad_norm + decay * weight_norm
    return (trust_coefficient * weight_norm / denominator
            if weight_norm > 0 and denominator > 0 else 1.0)


@fused_kernel(reassociate=True)
def lars_sums_kernel(param: NDArray[Any], grad: NDArray[Any]) -> tuple[float, float]:
    """``(sum p^2, sum g^2)`` in float64: the squared norms of the local rate, in one pass
    (the additions in any order, so that the sums are vectorized)."""
    weights = squares = 0.0
    for i in range(param.size):
        w, g = np.float64(param[i]), np.float64(grad[i])
        weights += w * w
        squares += g * g
    return weights, squares


@fused_kernel
def lars_kernel(param: NDArray[Any], grad: NDArray[Any], buffer: NDArray[Any], momentum: Any,
                decay: Any, scale: Any) -> None:
    """NumpyLars.update in one pass once the local rate is known (``scale = lr local``)."""
    for i in range(param.size):
        p = param[i]
        g = grad[i]
        step = (p * decay + g) * scale if decay else g * scale
        b = buffer[i] * momentum + step
        buffer[i] = b
        param[i] = p - b


@fused_kernel
def lars_tensor_kernel(param: NDArray[Any], grad: NDArray[Any], buffer: NDArray[Any],
                       momentum: Any, lr: float, decay: float, trust_coefficient: float,
                       adapt: Any) -> None:
    """LARS on one whole tensor: its squared norms (:func:`lars_sums_kernel`), its local rate
    (:func:`lars_local_rate`'s formula, in float64) and :func:`lars_kernel`. Run tensor by
    tensor, the update finds the tensor that the norms just read still in the cache: one pass
    over memory instead of two."""
    scale = lr
    wd = 0.0
    if adapt:
        weights, squares = lars_sums_kernel(param, grad)
        weight_norm, grad_norm = np.sqrt(weights), np.sqrt(squares)
        denominator = grad_norm + decay * weight_norm
        if weight_norm > 0 and denominator > 0:
            scale = lr * (trust_coefficient * weight_norm / denominator)
        wd = decay
    kind = param.dtype.type
    lars_kernel(param, grad, buffer, momentum, kind(wd), kind(scale))


def build_numpy(spec: LarsSpec, params: Any) -> NumpyLars:
    return NumpyLars(spec.group_params(params), **spec.optimizer_arguments())


def build_torch(spec: LarsSpec, params: Any) -> Any:
    from optiplug.plugins.optimizers.paper_torch import Lars

    return Lars(spec.group_params(params), **spec.optimizer_arguments())


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="lars", spec=LarsSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Momentum SGD with a per-tensor local rate eta norm(p) / (norm(g) + wd norm(p)): "
                "stable very-large-batch training of convnets.",
        reference="You et al. 2017, arXiv:1708.03888")]
