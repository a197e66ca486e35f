"""Shared fixtures of the optimizer tests.

Trajectories are compared with torch in float64: one torch thread makes torch's reductions
(norms, sums) run in one order, the same in every run. ``numpy_kernels`` runs a NumPy test on
both kernel engines: numba's fused kernels and the pure-NumPy ufunc chains
(``OPTIPLUG_NUMPY_KERNELS``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from optiplug.backends.numpy import kernel_engine


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    try:
        import torch
    except ImportError:  # the NumPy tests run without torch
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=["numba", "numpy"])
def numpy_kernels(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
                  ) -> Iterator[str]:
    """The engine NumPy optimizers built in the test use (both, one test each)."""
    engine: str = request.param
    if engine == "numba" and importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed (pip install 'optiplug[fast]')")
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
    assert kernel_engine() == engine
    yield engine
