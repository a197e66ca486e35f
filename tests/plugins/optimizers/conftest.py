"""Run the NumPy optimizer numerics on both kernel engines: numba's fused kernels and the
pure-NumPy ufunc chains (``OPTIPLUG_NUMPY_KERNELS``)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from optiplug.backends.numpy import kernel_engine


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
