# mypy: ignore-errors
"""Machinery compiled by numba for the fused NumPy kernels; imported only once numba is used
(see :mod:`._numpy_kernels`), never by ``import optiplug``. Not type-checked: numba is
optional, and its intrinsics are typed by numba itself."""

from __future__ import annotations

from typing import Any

import numba
from numba import types
from numba.extending import intrinsic
from numpy.typing import NDArray


@intrinsic
def _pointer(typingctx: Any, address: Any, like: Any) -> Any:
    """A typed data pointer from an address, for element type of the array ``like``."""
    pointer_type = types.CPointer(like.dtype)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(pointer_type))

    return pointer_type(types.intp, like), codegen


@numba.njit(nogil=True, cache=True)
def scatter(packed: NDArray[Any], addresses: NDArray[Any], offsets: NDArray[Any]) -> None:
    """Copy ``packed[offsets[k]:offsets[k + 1]]`` into the C-contiguous array of ``packed``'s
    dtype at ``addresses[k]``, for every ``k``: one call instead of one ``np.copyto`` per array.
    The caller keeps those arrays alive."""
    for k in range(addresses.size):
        start = offsets[k]
        size = offsets[k + 1] - start
        target = numba.carray(_pointer(addresses[k], packed), size)
        for i in range(size):
            target[i] = packed[start + i]


@numba.njit(nogil=True, cache=True)
def finite_rows(table, sizes, bits, exponent):
    """Whether every float of column 1 (the gradients) of the address table is finite: its
    ``bits`` (an unsigned integer array of the float's size) hold an exponent field that is
    not all ones. Integer operations, so the loop vectorizes without reordering floats."""
    for t in range(sizes.size):
        values = numba.carray(_pointer(table[t, 1], bits), sizes[t])
        infinite = False
        for i in range(values.size):
            infinite |= (values[i] & exponent) == exponent
        if infinite:
            return False
    return True
