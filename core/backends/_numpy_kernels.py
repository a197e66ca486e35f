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

A kernel runs on one tensor per call. To step many tensors without a numba dispatch (a few
microseconds of argument unboxing) per tensor, the optimizer records once what the technique's
``update_fused`` passes to its kernel (:func:`record_fused_call`) and runs the kernel's
*multi-tensor driver* (:meth:`FusedKernel.driver`): a loop over a table of array addresses that
calls the kernel on every row, generated as a module in the kernel cache directory so numba
caches it like the kernel. Techniques write nothing for it.

Which engine runs is chosen when an optimizer is built, by the environment variable
``OPTIPLUG_NUMPY_KERNELS``: ``auto`` (the default: numba when it is installed, else NumPy),
``numba`` (required: an error when it is not installed) or ``numpy`` (the pure-NumPy ufunc
path, always available). Both give the same numbers: a fused kernel performs the same float
operations in the same order as the technique's ufunc chain, without fast-math reordering or
fused multiply-adds, so the results are bit-for-bit equal. A kernel that returns sums (a norm)
may be declared ``@fused_kernel(reassociate=True)``: the compiler may then reorder its float
additions, which lets a sum use all SIMD lanes (about 3x faster here) at the cost of the last
bits of the sum, so such a kernel is never the fused twin of a ufunc chain.
"""

from __future__ import annotations

import hashlib
import importlib.util
import marshal
import os
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, overload

import numpy as np

from ..errors import ConfigError

__all__ = ["ENGINE_VARIABLE", "Argument", "FusedCall", "FusedKernel", "compile_driver",
           "finite_rows", "fused_kernel", "kernel_cache_dir", "kernel_engine",
           "record_fused_call", "scatter"]

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
        reassociate: Let the compiler reorder float additions and multiplications (LLVM's
            ``reassoc`` fast-math flag, nothing else), so that a sum over the elements is
            vectorized. For kernels that return sums; their results may differ in the last
            bits from a sum taken in order.

    A kernel may call other fused kernels defined in its own module (say, a norm, then an
    update that uses it, on one tensor while it is in the cache); each keeps its own flags.
    """

    __slots__ = ("__wrapped__", "_compiled", "_drivers", "reassociate")

    def __init__(self, function: Callable[..., None], reassociate: bool = False) -> None:
        self.__wrapped__ = function
        self.reassociate = reassociate
        self._compiled: Callable[..., None] | None = None
        self._drivers: dict[tuple[Any, ...], Callable[..., Any]] = {}

    @property
    def compiled(self) -> Callable[..., None]:
        """The numba dispatcher (imports numba and prepares the compiler on first access)."""
        compiled = self._compiled
        if compiled is None:
            numba = _numba()
            # nogil: the optimizer's worker threads run kernels in parallel; no fastmath:
            # the same float operations as the ufunc chain, so the same bits.
            fastmath: Any = {"reassoc"} if self.reassociate else False
            compiled = self._compiled = numba.njit(nogil=True, cache=True, error_model="numpy",
                                                   fastmath=fastmath)(self._with_helpers())
        return compiled

    def _helpers(self) -> dict[str, FusedKernel]:
        """The fused kernels this kernel's loop calls, by their global names."""
        function = self.__wrapped__
        return {name: value for name, value in function.__globals__.items()
                if isinstance(value, FusedKernel) and value is not self
                and name in function.__code__.co_names}

    def code_parts(self, _seen: frozenset[int] = frozenset()) -> list[Any]:
        """What the machine code of this kernel depends on, for keys of compiled code built
        on it (the multi-tensor drivers): its flags and bytecode, then its helpers', in
        order. A driver compiled on the kernel embeds its helpers too, so an edited helper
        must give the driver a new key even where the kernel's own bytecode is unchanged."""
        parts: list[Any] = [repr(self.reassociate), marshal.dumps(self.__wrapped__.__code__)]
        seen = _seen | {id(self)}
        for name, helper in sorted(self._helpers().items()):
            if id(helper) not in seen:  # (numba refuses recursion; the key must not loop)
                parts += [name, *helper.code_parts(seen)]
        return parts

    def _with_helpers(self) -> Callable[..., Any]:
        """The loop, with the fused kernels it calls bound to their numba dispatchers.

        A kernel may call other fused kernels of its module by name (each compiled with its
        own flags: a ``reassociate`` sum inside an exact update); numba sees the dispatchers,
        not the lazy :class:`FusedKernel` objects. Only of its own module: numba's disk cache
        of a kernel is invalidated by its own file, so a helper from another file could change
        without the caller being compiled again."""
        function = self.__wrapped__
        helpers = self._helpers()
        if not helpers:
            return function
        for name, helper in helpers.items():
            if helper.__wrapped__.__module__ != function.__module__:
                raise TypeError(
                    f"fused kernel {function.__qualname__} calls {name}, a fused kernel of "
                    f"{helper.__wrapped__.__module__}: a kernel may call fused kernels of its "
                    f"own module only (numba's cache would not see that file change); define "
                    f"the helper in {function.__module__}")
        bound = types.FunctionType(
            function.__code__,
            {**function.__globals__, **{name: h.compiled for name, h in helpers.items()}},
            function.__name__, function.__defaults__, function.__closure__)
        bound.__qualname__, bound.__module__ = function.__qualname__, function.__module__
        bound.__doc__ = function.__doc__
        return bound

    def __call__(self, *args: Any) -> None:
        recording = getattr(_recording, "calls", None)
        if recording is not None:
            recording.append((self, args))
            return
        self.compiled(*args)

    def driver(self, arguments: tuple[Argument, ...]) -> Callable[..., None]:
        """The multi-tensor driver of this kernel for one argument pattern (see
        :func:`record_fused_call`): ``driver(table, sizes, like, *scalars)`` runs the kernel
        once per row ``t`` of the address table, on arrays of ``sizes[t]`` elements of
        ``like``'s dtype, in one compiled call (numba's per-call argument unboxing, paid once
        per call instead of once per tensor). Generated as a module in the kernel cache
        directory, so numba caches its machine code like the kernel's."""
        return self.memoized_driver(arguments, lambda: _driver(self, arguments))

    def memoized_driver(self, key: tuple[Any, ...],
                        build: Callable[[], Callable[..., Any]]) -> Callable[..., Any]:
        """The driver this kernel keeps under ``key`` (an argument pattern), built by
        ``build()`` (say, by :func:`compile_driver`) on first use: one cache per kernel for the
        drivers of both backends, gone with the kernel."""
        driver = self._drivers.get(key)
        if driver is None:
            driver = self._drivers[key] = build()
        return driver

    def __reduce__(self) -> tuple[Any, ...]:
        return (FusedKernel, (self.__wrapped__, self.reassociate))


class Argument(NamedTuple):
    """Where a recorded kernel argument comes from: ``kind`` ``"array"`` (index into
    ``[param, grad, *state]``), ``"scalar"`` (index into the scalars) or ``"constant"``."""

    kind: Literal["array", "scalar", "constant"]
    value: Any


class FusedCall(NamedTuple):
    """What a technique's ``update_fused`` does, found by :func:`record_fused_call`: call
    ``kernel`` with these arguments."""

    kernel: FusedKernel
    arguments: tuple[Argument, ...]


class _Slot:
    """Stands in for one array or scalar while ``update_fused`` is recorded; anything but
    passing it on (arithmetic, a truth test, indexing) ends the recording."""

    __slots__ = ("argument",)

    def __init__(self, argument: Argument) -> None:
        self.argument = argument

    def __bool__(self) -> bool:
        raise _NotRecordable

    def __getattr__(self, name: str) -> Any:
        raise _NotRecordable


class _NotRecordable(Exception):
    pass


_recording = threading.local()
_CONSTANTS: Final = (bool, int, float)


def record_fused_call(update_fused: Callable[..., None], arrays: int, scalars: int
                      ) -> FusedCall | None:
    """Record which kernel ``update_fused(param, grad, state, scalars)`` calls, and with what.

    It is called once with stand-ins for ``arrays`` arrays (param, grad, then the state) and a
    tuple of ``scalars`` scalars. A method that calls exactly one :class:`FusedKernel` and
    passes its arrays, scalars and plain constants through (as every builtin technique does)
    gives a :class:`FusedCall`; one that computes with them, calls several kernels or none
    gives ``None``, and then the optimizer calls it per tensor as before.
    """
    slots = [_Slot(Argument("array", index)) for index in range(arrays)]
    given = tuple(_Slot(Argument("scalar", index)) for index in range(scalars))
    calls: list[tuple[FusedKernel, tuple[Any, ...]]] = []
    _recording.calls = calls
    try:
        update_fused(slots[0], slots[1], slots[2:], given)
    except Exception:  # anything the stand-ins cannot do: no driver, the per-tensor path
        return None
    finally:
        _recording.calls = None
    if len(calls) != 1:
        return None
    kernel, args = calls[0]
    arguments = []
    for value in args:
        if isinstance(value, _Slot):
            arguments.append(value.argument)
        elif type(value) in _CONSTANTS:
            arguments.append(Argument("constant", value))
        else:
            return None
    if not any(argument.kind == "array" for argument in arguments):
        return None
    return FusedCall(kernel, tuple(arguments))


_DRIVER_TEMPLATE: Final = '''"""Generated by optiplug: {name} over a table of arrays in one call."""
import numba

from optiplug.backends._numpy_kernels import _kernel_for_driver
from optiplug.backends._numpy_numba import _pointer

kernel = _kernel_for_driver({key!r})


@numba.njit(nogil=True, cache=True, error_model="numpy")
{function}'''
_pending_kernels: dict[str, Any] = {}


def _kernel_for_driver(key: str) -> Any:
    return _pending_kernels.pop(key)


def _driver(kernel: FusedKernel, arguments: tuple[Argument, ...]) -> Callable[..., None]:
    columns = sorted({argument.value for argument in arguments if argument.kind == "array"})
    scalars = sorted({argument.value for argument in arguments if argument.kind == "scalar"})
    count = max(scalars, default=-1) + 1
    names = {"array": lambda index: f"a{index}", "scalar": lambda index: f"s{index}",
             "constant": repr}
    views = "\n".join(f"        a{index} = numba.carray(_pointer(table[t, {index}], like), n)"
                      for index in columns)
    call = ", ".join(names[argument.kind](argument.value) for argument in arguments)
    return compile_driver(kernel, (
        f"def driver(table, sizes, like{''.join(f', s{index}' for index in range(count))}):\n"
        f"    for t in range(sizes.size):\n"
        f"        n = sizes[t]\n{views}\n"
        f"        kernel({call})\n"))


def compile_driver(kernel: FusedKernel, function: str) -> Callable[..., Any]:
    """Compile ``function``, the source of a function named ``driver`` that calls ``kernel``
    (and may use ``numba`` and the intrinsic ``_pointer(address, like)``), as a module in the
    kernel cache directory, so that numba caches its machine code on disk like the kernel's:
    a later process loads it instead of compiling (about a second per driver).

    The source is the caller's own text, built from integers (never from a config or a user).
    """
    numba = _numba()
    wrapped = kernel.__wrapped__
    # The kernel's code and the driver's source name the module: a changed kernel gets a new
    # driver instead of a stale cached one.
    digest = hashlib.sha256()
    for part in (wrapped.__module__, wrapped.__qualname__, numba.__version__, function,
                 *kernel.code_parts()):
        digest.update(part.encode() if isinstance(part, str) else part)
    key = digest.hexdigest()[:24]
    source = _DRIVER_TEMPLATE.format(name=f"{wrapped.__module__}.{wrapped.__qualname__}",
                                     key=key, function=function)
    directory = kernel_cache_dir() / "drivers"
    directory.mkdir(parents=True, exist_ok=True)
    module_name = f"optiplug_driver_{key}"
    path = directory / f"{module_name}.py"
    # Written once: numba's cache of the driver is keyed by the file's modification time.
    if not path.exists() or path.read_text() != source:
        temporary = directory / f".{module_name}.{os.getpid()}.{threading.get_ident()}.tmp"
        temporary.write_text(source)
        os.replace(temporary, path)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    _pending_kernels[key] = kernel.compiled
    try:
        spec.loader.exec_module(module)
    finally:
        _pending_kernels.pop(key, None)
    sys.modules[module_name] = module
    driver: Callable[..., Any] = module.driver
    return driver


_scatter: Callable[..., None] | None = None


def scatter(packed: Any, addresses: Any, offsets: Any) -> None:
    """Copy slices of ``packed`` back into the arrays at ``addresses`` in one compiled call."""
    global _scatter
    if _scatter is None:
        _numba()
        _scatter = importlib.import_module("._numpy_numba", __package__).scatter
    _scatter(packed, addresses, offsets)


_finite_rows: Callable[..., bool] | None = None
_EXPONENTS: Final[dict[int, tuple[np.dtype[Any], np.unsignedinteger[Any]]]] = {
    4: (np.dtype(np.uint32), np.uint32(0x7F800000)),
    8: (np.dtype(np.uint64), np.uint64(0x7FF0000000000000))}


def finite_rows(table: Any, sizes: Any, dtype: Any) -> bool | None:
    """Whether the gradients of an address table's rows (column 1, ``sizes[t]`` elements of
    ``dtype`` each) are all finite, in one compiled pass; ``None`` for a dtype it cannot check
    (other than float32 and float64)."""
    global _finite_rows
    if dtype.kind != "f" or dtype.itemsize not in _EXPONENTS:
        return None
    if _finite_rows is None:
        _numba()
        _finite_rows = importlib.import_module("._numpy_numba", __package__).finite_rows
    bits, exponent = _EXPONENTS[dtype.itemsize]
    return bool(_finite_rows(table, sizes, np.empty(0, bits), exponent))


@overload
def fused_kernel(function: Callable[..., None], *, reassociate: bool = False) -> FusedKernel:
    ...


@overload
def fused_kernel(function: None = None, *,
                 reassociate: bool = False) -> Callable[[Callable[..., None]], FusedKernel]:
    ...


def fused_kernel(function: Callable[..., None] | None = None, *, reassociate: bool = False
                 ) -> FusedKernel | Callable[[Callable[..., None]], FusedKernel]:
    """Decorate an elementwise loop as a :class:`FusedKernel` (compiled on first call):
    ``@fused_kernel``, or ``@fused_kernel(reassociate=True)`` for a kernel that returns sums
    (see :class:`FusedKernel`).

    A technique calls it from its :meth:`~optiplug.backends.numpy.NumpyOptimizer.update_fused`.
    """
    if function is None:
        return lambda wrapped: FusedKernel(wrapped, reassociate)
    return FusedKernel(function, reassociate)
