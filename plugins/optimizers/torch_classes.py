"""torch's own optimizer classes with :class:`~optiplug.backends.torch.TorchOptimizer` mixed in.

Imported only by torch builders (it imports torch): named params in every form, state loaded
by parameter name, the ``nonfinite`` policy, on top of torch's unchanged math. Kernels are
torch's own choice (``foreach`` on accelerators, the for-loop on CPU, where torch's
``foreach`` fallback measured no faster; see ``benchmarks/optimizers.py``); both handle
parameters whose ``grad`` is ``None`` on some steps.
"""

from __future__ import annotations

from typing import Any

import torch

from optiplug.backends.torch import TorchOptimizer

__all__ = ["ASGD", "LBFGS", "NAdam", "RAdam", "Adafactor", "Adamax", "Rprop"]


class _ScalarState(TorchOptimizer):
    """Keeps the per-parameter scalar state (``scalar_state_keys``) in torch's scalar dtype
    across ``load_state_dict``: torch casts it to the parameter's dtype on loading, so a resumed
    NAdam or ASGD would not continue with exactly the numbers of the uninterrupted run."""

    scalar_state_keys: tuple[str, ...] = ()

    def load_state_dict(self, state_dict: Any) -> None:
        super().load_state_dict(state_dict)
        dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
        for state in self.state.values():
            for key in self.scalar_state_keys:
                value = state.get(key)
                if isinstance(value, torch.Tensor) and value.dim() == 0:
                    state[key] = value.to(dtype)


class RAdam(TorchOptimizer, torch.optim.RAdam):
    """``torch.optim.RAdam`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.RAdam


class NAdam(_ScalarState, torch.optim.NAdam):
    """``torch.optim.NAdam`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.NAdam
    scalar_state_keys = ("mu_product",)


class Adamax(TorchOptimizer, torch.optim.Adamax):
    """``torch.optim.Adamax`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.Adamax


class ASGD(_ScalarState, torch.optim.ASGD):
    """``torch.optim.ASGD`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.ASGD
    scalar_state_keys = ("eta", "mu")


class Rprop(TorchOptimizer, torch.optim.Rprop):
    """``torch.optim.Rprop`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.Rprop


class Adafactor(TorchOptimizer, torch.optim.Adafactor):
    """``torch.optim.Adafactor`` with named params and state (torch's for-loop kernel, the
    memory-lean one: Adafactor is chosen to save memory)."""

    torch_class = torch.optim.Adafactor

    def state_shape(self, key: str, param: torch.Tensor) -> tuple[int, ...]:
        shape = tuple(param.shape)
        if key == "row_var":
            return (*shape[:-1], 1)
        if key == "col_var":
            return (*shape[:-2], 1, shape[-1])
        return shape


class LBFGS(TorchOptimizer, torch.optim.LBFGS):
    """``torch.optim.LBFGS`` with named params and state; ``step(closure)`` needs a closure."""

    torch_class = torch.optim.LBFGS
    requires_closure = True
