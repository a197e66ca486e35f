"""torch's own optimizer classes with :class:`~optiplug.backends.torch.TorchOptimizer` mixed in.

Imported only by torch builders (it imports torch): named params in every form, state loaded
by parameter name, the ``nonfinite`` policy, on top of torch's unchanged math. Kernels are
torch's own choice (``foreach`` on accelerators, the for-loop on CPU, where torch's
``foreach`` fallback measured no faster; see ``benchmarks/optimizers.py``); both handle
parameters whose ``grad`` is ``None`` on some steps.
"""

from __future__ import annotations

import torch

from optiplug.backends.torch import TorchOptimizer

__all__ = ["ASGD", "LBFGS", "NAdam", "RAdam", "Adafactor", "Adamax", "Rprop"]


class RAdam(TorchOptimizer, torch.optim.RAdam):
    """``torch.optim.RAdam`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.RAdam


class NAdam(TorchOptimizer, torch.optim.NAdam):
    """``torch.optim.NAdam`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.NAdam


class Adamax(TorchOptimizer, torch.optim.Adamax):
    """``torch.optim.Adamax`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.Adamax


class ASGD(TorchOptimizer, torch.optim.ASGD):
    """``torch.optim.ASGD`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.ASGD


class Rprop(TorchOptimizer, torch.optim.Rprop):
    """``torch.optim.Rprop`` with named params and state (torch's kernel choice)."""

    torch_class = torch.optim.Rprop


class Adafactor(TorchOptimizer, torch.optim.Adafactor):
    """``torch.optim.Adafactor`` with named params and state (torch's for-loop kernel, the
    memory-lean one: Adafactor is chosen to save memory)."""

    torch_class = torch.optim.Adafactor


class LBFGS(TorchOptimizer, torch.optim.LBFGS):
    """``torch.optim.LBFGS`` with named params and state; ``step(closure)`` needs a closure."""

    torch_class = torch.optim.LBFGS
    requires_closure = True
