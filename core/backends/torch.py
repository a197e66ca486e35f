"""torch backend: the public base classes that torch optimizer builders return.

Imported only by torch builders (it imports torch). This module is the public surface for torch
plugins: builtins import only from here.

- :class:`TorchOptimizer`: mix it in before a ``torch.optim.Optimizer`` subclass (torch's own,
  or your own algorithm) to get named params in every form (an ``nn.Module``,
  ``named_parameters()``, ``{name: tensor}``, param-group dicts), state loaded by parameter
  name and checked before anything changes, and the ``nonfinite`` policy.
- :func:`torch_params`: the params normalization it uses, for builders that need it alone.
- :func:`kernel_ready` and :func:`run_kernel`: run a NumPy
  :func:`~optiplug.backends.numpy.fused_kernel` on CPU tensors in place (zero copy), so one
  compiled loop serves both backends.
- ``SGD``, ``Adam``, ``AdamW``, ``Adagrad``, ``RMSprop``, ``Adadelta``: torch's classes with
  :class:`TorchOptimizer` mixed in.
"""

from __future__ import annotations

from ._torch_kernels import KERNEL_PARALLEL_MIN, kernel_ready, run_kernel
from ._torch_optim import (
    FOREACH_MAX_NUMEL,
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    AdamW,
    NamedParamsOptimizer,
    RMSprop,
    torch_params,
)

TorchOptimizer = NamedParamsOptimizer
"""Public name of the named-params optimizer mixin (see the module docstring)."""

__all__ = ["FOREACH_MAX_NUMEL", "KERNEL_PARALLEL_MIN", "SGD", "Adadelta", "Adagrad", "Adam",
           "AdamW", "NamedParamsOptimizer", "RMSprop", "TorchOptimizer", "kernel_ready",
           "run_kernel", "torch_params"]
