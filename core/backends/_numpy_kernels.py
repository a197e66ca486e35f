"""Fused elementwise kernels for NumPy optimizers: one pass over memory instead of a dozen.

A technique's :meth:`~optiplug.backends.numpy.NumpyOptimizer.update` is a chain of in-place
ufuncs; each one streams its operands through the cache once more. A *fused kernel* is the same
update written as one loop over the elements, compiled by `numba <https://numba.pydata.org>`_
(the ``fast`` extra: ``pip install optiplug[fast]``) into machine code that reads every array
once and writes it once, which is what the memory bandwidth allows.

:func:`fused_kernel` wraps such a loop. Nothing is compiled or imported when a plugin module
is imported: numba is imported and the loop compiled on the kernel's first call, once per
dtype, and the machine code is cached on disk in the user's cache directory
(``$NUMBA_CACHE_DIR`` when set, else ``$XDG_CACHE_HOME/optiplug/numba`` or
``~/.cache/optiplug/numba``), never in the package directory, so a later process loads it
instead of compiling.

Which engine runs is chosen when an optimizer is built, by the environment variable
``OPTIPLUG_NUMPY_KERNELS``: ``auto`` (the default: numba when it is installed, else NumPy),
``numba`` (required: an error when it is not installed) or ``numpy`` (the pure-NumPy ufunc
path, always available). Both give the same numbers: a fused kernel performs the same float
operations in the same order as the technique's ufunc chain, without fast-math reordering or
fused multiply-adds, so the results are bit-for-bit equal.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal

from ..errors import ConfigError

__all__ = ["ENGINE_VARIABLE", "FusedKernel", "fused_kernel", "kernel_cache_dir",
           "kernel_engine", "scatter"]

Engine = Literal["numba", "numpy"]
ENGINE_VARIABLE: Final = "OPTIPLUG_NUMPY_KERNELS"
"""Environment variable that selects the NumPy kernel engine: ``auto``, ``numba``, ``numpy``."""
_ENGINES: Final = ("auto", "numba", "numpy")
_numba_available: bool | None = None


def kernel_engine() -> Engine:
    """The engine a NumPy optimizer built now uses, from ``OPTIPLUG_NUMPY_KERNELS``.

    Raises:
        ConfigError: an unknown value, or ``numba`` when numba is not installed.
    """
    global _numba_available
    choice = os.environ.get(ENGINE_VARIABLE, "auto").strip().lower() or "auto"
    if choice not in _ENGINES:
        raise ConfigError(f"{ENGINE_VARIABLE}={choice!r} is not an engine: use one of "
                          f"{', '.join(_ENGINES)}")
    if choice == "numpy":
        return "numpy"
    if _numba_available is None:
        _numba_available = importlib.util.find_spec("numba") is not None
    if _numba_available:
        return "numba"
    if choice == "numba":
        raise ConfigError(f"{ENGINE_VARIABLE}=numba but numba is not installed: "
                          f"pip install 'optiplug[fast]', or unset {ENGINE_VARIABLE}")
    return "numpy"


def kernel_cache_dir() -> Path:
    """Where compiled kernels are cached: ``$NUMBA_CACHE_DIR``, else the user cache directory."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "optiplug" / "numba"


def _numba() -> Any:
    cache = str(kernel_cache_dir())
    # numba reads NUMBA_CACHE_DIR when it is imported; if someone imported it first, tell its
    # config directly (a user's own setting wins either way).
    os.environ.setdefault("NUMBA_CACHE_DIR", cache)
    numba: Any = importlib.import_module("numba")

    if not numba.config.CACHE_DIR:
        numba.config.CACHE_DIR = cache
    return numba


class FusedKernel:
    """An elementwise loop compiled by numba on first call (see the module docstring).

    Args:
        function: A plain Python function over 1-D arrays and scalars that loops over the
            elements (``for i in range(param.size): ...``) and writes its results in place.
            Use only the scalars it is given (a float literal would be float64 and change a
            float32 result) and operations in the order of the technique's ufunc chain.
    """

    __slots__ = ("__wrapped__", "_compiled")

    def __init__(self, function: Callable[..., None]) -> None:
        self.__wrapped__ = function
        self._compiled: Callable[..., None] | None = None

    @property
    def compiled(self) -> Callable[..., None]:
        """The numba dispatcher (imports numba and prepares the compiler on first access)."""
        compiled = self._compiled
        if compiled is None:
            numba = _numba()
            # nogil: the optimizer's worker threads run kernels in parallel; no fastmath:
            # the same float operations as the ufunc chain, so the same bits.
            compiled = self._compiled = numba.njit(nogil=True, cache=True,
                                                   error_model="numpy")(self.__wrapped__)
        return compiled

    def __call__(self, *args: Any) -> None:
        self.compiled(*args)

    def __reduce__(self) -> tuple[Any, ...]:
        return (FusedKernel, (self.__wrapped__,))


_scatter: Callable[..., None] | None = None


def scatter(packed: Any, addresses: Any, offsets: Any) -> None:
    """Copy slices of ``packed`` back into the arrays at ``addresses`` in one compiled call."""
    global _scatter
    if _scatter is None:
        _numba()
        _scatter = importlib.import_module("._numpy_numba", __package__).scatter
    _scatter(packed, addresses, offsets)


def fused_kernel(function: Callable[..., None]) -> FusedKernel:
    """Decorate an elementwise loop as a :class:`FusedKernel` (compiled on first call).

    A technique calls it from its :meth:`~optiplug.backends.numpy.NumpyOptimizer.update_fused`.
    """
    return FusedKernel(function)
