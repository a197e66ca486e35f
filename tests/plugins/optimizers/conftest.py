"""Optimizer tests compare float64 trajectories with torch: one torch thread makes torch's
reductions (norms, sums) run in one order, the same in every run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


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
