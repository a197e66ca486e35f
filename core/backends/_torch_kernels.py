"""Run a NumPy fused kernel on CPU torch tensors in place: one pass over memory per step.

A torch optimizer built from eager kernels (``torch._foreach_*``) streams the parameters, the
gradients and the state through memory once per operation: a dozen passes for an Adam-like
rule. A :func:`~optiplug.backends.numpy.fused_kernel` does the whole rule in one pass. On the
CPU a float tensor and ``tensor.numpy()`` share memory, so the same compiled loop that serves
the NumPy backend updates torch parameters and torch state in place: write the kernel once,
fast on both backends. The state stays torch tensors (state dicts and checkpoints unchanged).

:func:`kernel_ready` says whether a set of tensors can take that path (CPU, float32 or
float64, dense and contiguous); :func:`run_kernel` runs a kernel over them, splitting the
elements between ``torch.get_num_threads()`` threads (the kernels release the GIL). Whether
to take it at all follows the NumPy backend's engine, chosen when the optimizer is built:
``optiplug.backends.numpy.kernel_engine() == "numba"`` (``OPTIPLUG_NUMPY_KERNELS`` unset,
``auto`` or ``numba``, with numba installed). Other devices (CUDA), other tensors and the
``numpy`` engine keep the caller's eager path.
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import Any, Final

import numpy as np
import torch
from torch.autograd.graph import increment_version

from ._numpy_kernels import FusedKernel, compile_driver

__all__ = ["KERNEL_PARALLEL_MIN", "kernel_ready", "run_kernel"]

KERNEL_PARALLEL_MIN: Final = 1 << 16
"""Steps over fewer elements than this run in the calling thread (threads cost more)."""
DRIVER_MIN_TENSORS: Final = 32
"""From this many tensors, a :func:`~optiplug.backends.numpy.fused_kernel` runs over them in
one compiled call per thread (their addresses in an array) instead of one call per tensor: no
per-tensor NumPy views or dispatch, and the GIL is released for the whole call."""
_DTYPES: Final = (torch.float32, torch.float64)
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_lock = threading.Lock()
_data_ptr = torch.Tensor.data_ptr

Task = tuple[int, list[np.ndarray[Any, Any]], tuple[Any, ...]]
"""A parameter's index, its flat arrays (param, grad, states) and its own scalars."""


def kernel_ready(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether :func:`run_kernel` can update ``tensors`` in place: every tensor is a dense,
    contiguous float32 or float64 CPU tensor of one dtype, without conjugate or negative bits.

    Check the engine too, once when the optimizer is built:
    ``optiplug.backends.numpy.kernel_engine() == "numba"``.
    """
    if not tensors:
        return False
    dtype = tensors[0].dtype
    if dtype not in _DTYPES:
        return False
    # This runs over every tensor at every step: one C-level pass per property (map over the
    # method or attribute) instead of a Python loop. A float tensor has no conjugate bit, and a
    # negative bit only comes from the private torch._neg_view.
    return (all(map(operator.is_, map(_dtype_of, tensors), repeat(dtype)))
            and all(map(_is_cpu, tensors))
            and all(map(operator.is_, map(_layout_of, tensors), repeat(torch.strided)))
            and all(map(torch.Tensor.is_contiguous, tensors))
            and not any(map(torch.Tensor.is_neg, tensors)))


_dtype_of = operator.attrgetter("dtype")
_is_cpu = operator.attrgetter("is_cpu")
_layout_of = operator.attrgetter("layout")


def run_kernel(kernel: Callable[..., Any], params: Sequence[torch.Tensor],
               grads: Sequence[torch.Tensor], states: Sequence[Sequence[torch.Tensor]],
               scalars: Sequence[Any], *, param_scalars: Sequence[Sequence[Any]] | None = None,
               split: bool = True, views: dict[Any, Any] | None = None) -> list[Any]:
    """Run ``kernel(param, grad, *state, *scalars)`` on flat NumPy views of every parameter.

    The kernel is a :func:`~optiplug.backends.numpy.fused_kernel` (its compiled dispatcher is
    called, so what it returns comes back) or any callable over 1-D arrays that updates them
    in place; the tensors must pass :func:`kernel_ready`. Python
    floats in ``scalars`` become NumPy scalars of the tensors' dtype (float32 arithmetic stays
    float32, as in the NumPy backend); other scalars pass unchanged. The parameters'
    autograd version counters are bumped, as a torch in-place operation would.

    Args:
        kernel: The elementwise kernel.
        params: The parameters (written in place).
        grads: Their gradients, one per parameter.
        states: One list per state name, each with one tensor per parameter (written in place).
        scalars: Trailing arguments of every call.
        param_scalars: More trailing arguments, one sequence per parameter (after
            ``scalars``): per-tensor factors such as trust ratios.
        split: Whether a parameter's elements may be split between threads. A kernel that
            returns per-element sums (norms) may be split: its results are added up.
        views: A dict the caller keeps between steps (one per optimizer): the NumPy views of
            each parameter and its states are kept there (keyed by the parameter's ``id``)
            and reused while they are the same tensor objects and the parameter keeps its
            address and size (its ``.data`` may be replaced; a state replaced by
            ``load_state_dict`` is a new object). Creating views costs microseconds per
            tensor, as much as a small tensor's update.

    Returns:
        What the kernel returned for each parameter: ``None``, a number or a tuple of
        numbers, summed over the pieces of a split parameter.
    """
    if not params:
        return []
    fused = kernel if isinstance(kernel, FusedKernel) else None
    if fused is not None:
        kernel = fused.compiled
    kind = np.float32 if params[0].dtype == torch.float32 else np.float64
    values = tuple(kind(value) if type(value) is float else value for value in scalars)
    if (fused is not None and len(params) >= DRIVER_MIN_TENSORS
            and (param_scalars is None or all(type(value) is float for own in param_scalars
                                              for value in own))):
        driven = _run_driven(fused, params, grads, states, values, kind, param_scalars)
        increment_version(list(params))
        return driven
    tasks: list[Task] = []
    total = 0
    # The per-tensor loop is the whole overhead of a step over many small tensors: keep it
    # to dict lookups and identity checks (views of params and states come from ``views``).
    cache = {} if views is None else views
    per_param = list(zip(*states, strict=True)) if states else [()] * len(params)
    is_ = operator.is_
    for index, param in enumerate(params):
        own_states = per_param[index]
        entry = cache.get(id(param))
        if (entry is None or entry[0] is not param or entry[1] != param.data_ptr()
                or entry[2] != param.numel() or len(entry[3]) != len(own_states)
                or not all(map(is_, entry[3], own_states))):
            entry = cache[id(param)] = (
                param, param.data_ptr(), param.numel(), own_states,
                param.detach().numpy().reshape(-1),
                [state.detach().numpy().reshape(-1) for state in own_states])
        grad = grads[index]
        # detach() makes a tensor object (microseconds); a gradient rarely needs it.
        grad_array = (grad.detach() if grad.requires_grad else grad).numpy().reshape(-1)
        own = () if param_scalars is None else tuple(
            [kind(value) if type(value) is float else value for value in param_scalars[index]])
        tasks.append((index, [entry[4], grad_array, *entry[5]], own))
        total += entry[2]
    threads = torch.get_num_threads()
    results: list[Any] = [None] * len(params)
    if threads <= 1 or total < KERNEL_PARALLEL_MIN:
        _run(kernel, tasks, values, results, None)
    else:
        chunks = _split(tasks, threads, total, split)
        pool = _executor(threads)
        lock = threading.Lock()
        futures = [pool.submit(_run, kernel, chunk, values, results, lock)
                   for chunk in chunks[1:]]
        _run(kernel, chunks[0], values, results, lock)
        for future in futures:
            future.result()
    increment_version(list(params))
    return results


def _run_driven(fused: FusedKernel, params: Sequence[torch.Tensor],
                grads: Sequence[torch.Tensor], states: Sequence[Sequence[torch.Tensor]],
                values: tuple[Any, ...], kind: Any,
                param_scalars: Sequence[Sequence[Any]] | None) -> list[Any]:
    """:func:`run_kernel` by compiled drivers (see :data:`DRIVER_MIN_TENSORS`)."""
    kernel: Callable[..., Any] = fused.compiled
    count = len(params)
    columns = [params, grads, *states]
    addresses = np.empty((count, len(columns)), np.intp)
    for column, tensors in enumerate(columns):
        if len(tensors) != count:
            raise ValueError(f"run_kernel: {len(tensors)} tensors in a list of "
                             f"{count} parameters")
        addresses[:, column] = np.fromiter(map(_data_ptr, tensors), np.intp, count)
    sizes = np.fromiter(map(torch.Tensor.numel, params), np.intp, count)
    first_states = [state[0] for state in states]
    own_values = (np.empty((count, 0), kind) if param_scalars is None
                  else np.array(param_scalars, kind).reshape(count, -1))
    # The first tensor by the dispatcher: it compiles the kernel for these types and shows
    # what the kernel returns, which the driver's code depends on.
    first = kernel(params[0].detach().numpy().reshape(-1), grads[0].detach().numpy().reshape(-1),
                   *[state.detach().numpy().reshape(-1) for state in first_states], *values,
                   *own_values[0])
    returns = None if first is None else len(first) if isinstance(first, tuple) else 0
    out = np.zeros((count, max(returns or 0, 1)))
    if first is not None:
        out[0] = first
    drive = _driver(fused, addresses.shape[1], own_values.shape[1], returns)
    like = np.empty(0, kind)
    threads = torch.get_num_threads()
    total = int(sizes[1:].sum())
    bounds = [1, count]
    if threads > 1 and total >= KERNEL_PARALLEL_MIN:
        # Contiguous runs of tensors with about equal elements, one per thread.
        cumulative = np.cumsum(sizes[1:])
        cuts = np.searchsorted(cumulative, [total * i / threads for i in range(1, threads)])
        bounds = sorted({1, count, *(int(c) + 2 for c in cuts if int(c) + 2 < count)})
    pieces = [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]

    def run(start: int, stop: int) -> None:
        drive(addresses[start:stop], sizes[start:stop], like, values, own_values[start:stop],
              out[start:stop])

    if len(pieces) > 1:
        pool = _executor(threads)
        futures = [pool.submit(run, *piece) for piece in pieces[1:]]
        run(*pieces[0])
        for future in futures:
            future.result()
    elif pieces:
        run(*pieces[0])
    if returns is None:
        return [None] * count
    if returns == 0:
        return out[:, 0].tolist()  # type: ignore[no-any-return]
    return list(map(tuple, out[:, :returns].tolist()))


def _driver(kernel: FusedKernel, arrays: int, own: int, returns: int | None
            ) -> Callable[..., None]:
    """A compiled ``driver(addresses, sizes, like, scalars, own, out)`` that calls ``kernel``
    on the tensors at ``addresses[k]`` (``arrays`` of them per row, ``sizes[k]`` elements of
    ``like``'s dtype each), with ``*scalars`` and ``own[k]`` (``own`` values), and stores what
    it returns in ``out[k]`` (``returns``: ``None`` for nothing, 0 for a number, else the
    length of the tuple it returns). Kept by the kernel, cached on disk like the NumPy
    backend's drivers."""
    def build() -> Callable[..., None]:
        views = "\n".join(f"        a{j} = numba.carray(_pointer(addresses[k, {j}], like), n)"
                          for j in range(arrays))
        call = (f"kernel({', '.join(f'a{j}' for j in range(arrays))}, *scalars"
                + "".join(f", own[k, {j}]" for j in range(own)) + ")")
        if returns is None:
            store = f"        {call}"
        elif returns == 0:
            store = f"        out[k, 0] = {call}"
        else:
            store = f"        r = {call}\n" + "\n".join(f"        out[k, {j}] = r[{j}]"
                                                       for j in range(returns))
        return compile_driver(kernel, (
            f"def driver(addresses, sizes, like, scalars, own, out):\n"
            f"    for k in range(sizes.size):\n"
            f"        n = sizes[k]\n{views}\n{store}\n"))

    return kernel.memoized_driver(("torch", arrays, own, returns), build)


def _run(kernel: Callable[..., Any], tasks: list[Task], scalars: tuple[Any, ...],
         results: list[Any], lock: threading.Lock | None) -> None:
    for index, arrays, own in tasks:
        result = kernel(*arrays, *scalars, *own)
        if result is None:
            continue
        if lock is None:
            results[index] = _add(results[index], result)
            continue
        with lock:
            results[index] = _add(results[index], result)


def _add(total: Any, result: Any) -> Any:
    if total is None:
        return result
    if isinstance(result, tuple):
        return tuple(a + b for a, b in zip(total, result, strict=True))
    return total + result


def _split(tasks: list[Task], workers: int, total: int, split: bool) -> list[list[Task]]:
    """Deal tasks out to ``workers`` threads, about equal elements each; arrays are cut into
    contiguous pieces when ``split``."""
    share = -(-total // workers)
    # Many tensors: whole tensors per thread balance well and cost no slicing.
    split = split and len(tasks) < 8 * workers
    chunks: list[list[Task]] = [[]]
    filled = 0
    for index, arrays, own in tasks:
        n = arrays[0].size
        if not split:
            if filled >= share and len(chunks) < workers:
                chunks.append([])
                filled = 0
            chunks[-1].append((index, arrays, own))
            filled += n
            continue
        start = 0
        while start < n:
            if filled >= share and len(chunks) < workers:
                chunks.append([])
                filled = 0
            stop = n if len(chunks) == workers else min(n, start + share - filled)
            chunks[-1].append((index, [array[start:stop] for array in arrays], own))
            filled += stop - start
            start = stop
    return chunks


def _executor(threads: int) -> ThreadPoolExecutor:
    """The shared worker pool (``threads - 1`` workers: the caller runs one chunk itself)."""
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != threads:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max(threads - 1, 1), thread_name_prefix="optiplug-torch")
            _pool_size = threads
        return _pool
