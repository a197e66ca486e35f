"""NumPy layers' base class (re-exported by :mod:`optiplug.backends.numpy`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["NumpyModule", "copy_arrays_into"]


def copy_arrays_into(own: dict[str, NDArray[Any]], state: dict[str, NDArray[Any]],
                     owner: str) -> None:
    """Copy ``state`` into the arrays of ``own`` in place, all or nothing.

    Raises:
        ValueError: a name is missing or extra, or a shape differs (nothing is changed).
    """
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"state does not match {owner}: missing {missing}, unexpected {extra}")
    for name, value in state.items():
        if np.shape(value) != own[name].shape:
            raise ValueError(f"{name}: shape {np.shape(value)} does not match {own[name].shape}")
    for name, value in state.items():
        own[name][...] = value


class NumpyModule:
    """Base of NumPy layers: ``y = forward(x)``, then ``grad_x = backward(grad_y)``.

    ``forward`` caches what ``backward`` needs; ``backward`` ADDS the parameter gradients into
    :attr:`grads` (same keys as :attr:`params`, arrays created once and updated in place, like
    torch's ``.grad``: call :meth:`zero_grad` between steps) and returns the gradient with
    respect to the input. Parameters and buffers
    are plain arrays keyed by name, so a :class:`NumpyOptimizer` can update them in place.
    """

    optiplug_backend = "numpy"

    def __init__(self) -> None:
        self.params: dict[str, NDArray[Any]] = {}
        self.grads: dict[str, NDArray[Any]] = {}
        self.buffers: dict[str, NDArray[Any]] = {}
        self.training = True

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        """Compute the output and cache what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        """Gradient w.r.t. the last ``forward`` input; parameter grads are added into ``grads``."""
        raise NotImplementedError

    def __call__(self, x: NDArray[Any]) -> NDArray[Any]:
        return self.forward(x)

    def train(self, mode: bool = True) -> NumpyModule:
        """Training mode (batch statistics, caches for backward)."""
        self.training = mode
        return self

    def eval(self) -> NumpyModule:
        """Evaluation mode (running statistics)."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Set every parameter gradient to zero, in place."""
        for name, param in self.params.items():
            grad = self.grads.get(name)
            if grad is None:
                self.grads[name] = np.zeros_like(param)
            else:
                grad.fill(0)

    def state_dict(self) -> dict[str, NDArray[Any]]:
        """Copies of parameters and buffers by name."""
        return {name: value.copy() for name, value in {**self.params, **self.buffers}.items()}

    def load_state_dict(self, state: dict[str, NDArray[Any]]) -> None:
        """Copy parameters and buffers in place; every name and shape must match.

        Raises:
            ValueError: a name is missing or extra, or a shape differs (nothing is changed).
        """
        copy_arrays_into({**self.params, **self.buffers}, state, type(self).__name__)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"

