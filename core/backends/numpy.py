"""NumPy backend: the base classes that NumPy builders return.

- :class:`NumpyModule`: a layer with ``forward``/``backward`` and named ``params``, ``grads``
  and ``buffers`` (activations and normalization layers).
- :class:`NumpyOptimizer`: param groups, name-keyed state, cache-blocked in-place updates;
  :func:`fused_kernel` turns a technique's update into one compiled pass (numba, optional).
- :class:`NumpyScheduler`: ``torch.optim.lr_scheduler`` semantics over ``param_groups``;
  :class:`NumpyLambdaScheduler` (a factor of the step), :class:`NumpySequentialScheduler`
  and :class:`NumpyChainedScheduler` (composition).
- :class:`NumpyNormLayer` and :class:`Scaler` with ``normalize``/``normalize_backward``: the
  shared machinery of normalization layers and data scalers.
- Numerically careful elementwise math for activations (``sigmoid``, ``softplus``, ``elu``,
  ``normal_cdf``, ...).

This module is the public surface for NumPy plugins: builtins import only from here.

Weights use torch's layout ``(out_features, in_features, *kernel)``, so fan-in and fan-out are
the same numbers on both backends.
"""

from __future__ import annotations

from ..errors import NonfiniteGradientError
from ._numpy_kernels import FusedKernel, fused_kernel, kernel_cache_dir, kernel_engine
from ._numpy_math import (
    elu,
    elu_grad,
    erfc,
    halved_shape,
    normal_cdf,
    normal_pdf,
    sigmoid,
    sigmoid_pair,
    softplus,
    split_halves,
)
from ._numpy_module import NumpyModule, copy_arrays_into
from ._numpy_norm import (
    NotFittedError,
    NumpyNormLayer,
    Scaler,
    float_input,
    layer_features,
    near_constant_std,
    nonzero_range,
    normalize,
    normalize_backward,
    reduced_size,
)
from ._numpy_optim import NumpyOptimizer, effective_grad
from ._numpy_sched import (
    NumpyChainedScheduler,
    NumpyLambdaScheduler,
    NumpyScheduler,
    NumpySequentialScheduler,
    check_per_group,
    checked_param_groups,
)

__all__ = ["FusedKernel", "NonfiniteGradientError", "NotFittedError", "NumpyChainedScheduler",
           "NumpyLambdaScheduler", "NumpyModule", "NumpyNormLayer",
           "NumpyOptimizer", "NumpyScheduler", "NumpySequentialScheduler", "Scaler",
           "check_per_group", "checked_param_groups", "copy_arrays_into", "effective_grad", "elu",
           "elu_grad", "erfc", "float_input", "fused_kernel", "halved_shape", "kernel_cache_dir",
           "kernel_engine", "layer_features",
           "near_constant_std", "nonzero_range", "normal_cdf", "normal_pdf", "normalize",
           "normalize_backward", "reduced_size", "sigmoid", "sigmoid_pair", "softplus",
           "split_halves"]
