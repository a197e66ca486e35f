# mypy: ignore-errors
"""Compiled drivers that run a fused kernel over many tensors in one call; imported only once
numba is used by :func:`optiplug.backends.torch.run_kernel`, never by ``import optiplug``. Not
type-checked: numba is optional, and its intrinsics are typed by numba itself."""

from __future__ import annotations

from typing import Any

import numba

from ._numpy_numba import _pointer

_drivers: dict[tuple[Any, ...], Any] = {}


def driver(kernel: Any, arrays: int, own: int, returns: int | None) -> Any:
    """A compiled ``drive(addresses, sizes, like, scalars, own, out)`` that calls ``kernel`` on
    the tensors at ``addresses[k]`` (``arrays`` of them per row, ``sizes[k]`` elements of
    ``like``'s dtype each), with ``*scalars`` and ``own[k]`` (``own`` values), and stores what
    it returns in ``out[k]`` (``returns``: ``None`` for nothing, 0 for a number, else the
    length of the tuple it returns)."""
    key = (kernel, arrays, own, returns)
    compiled = _drivers.get(key)
    if compiled is not None:
        return compiled
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
    source = (f"def drive(addresses, sizes, like, scalars, own, out):\n"
              f"    for k in range(sizes.size):\n"
              f"        n = sizes[k]\n{views}\n{store}\n")
    namespace: dict[str, Any] = {"numba": numba, "_pointer": _pointer, "kernel": kernel}
    # The source is built from integers only: nothing from a config or a user is evaluated.
    exec(compile(source, f"<optiplug driver of {kernel}>", "exec"), namespace)
    compiled = _drivers[key] = numba.njit(nogil=True)(namespace["drive"])
    return compiled
