"""A recipe trained on the NumPy backend reaches the fused multi-tensor drivers through the
training loop, and a checkpoint taken mid-run resumes onto them with the same bits as an
uninterrupted run and as the pure-NumPy engine."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiplug.training.loop import Trainer
from optiplug.training.recipe import parse_recipe

from ..training.conftest import small_recipe


def _weights(trainer: Trainer) -> dict[str, np.ndarray]:
    return {name: np.asarray(value).copy()
            for name, value in trainer.runner.model.state_dict().items()}


def _recipe() -> Any:
    recipe = small_recipe(epochs=2, backend="numpy")
    recipe["data"]["samples"] = 160
    recipe["optimizer"] = {"name": "adamw", "lr": 0.01, "weight_decay": 0.05, "amsgrad": True}
    return parse_recipe(recipe)


@pytest.mark.skipif(importlib.util.find_spec("numba") is None, reason="numba is not installed")
def test_a_resumed_numpy_run_on_the_fused_drivers_matches_an_uninterrupted_run_and_the_ufuncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = {}
    for engine in ("numba", "numpy"):
        monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", engine)
        trainer = Trainer(_recipe())
        trainer.run_epoch()
        trainer.run_epoch()
        runs[engine] = _weights(trainer)
    monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", "numba")
    first = Trainer(_recipe())
    first.run_epoch()
    path = tmp_path / "epoch1.npz"
    first.save(path)
    resumed = Trainer(_recipe())
    resumed.load(path)
    resumed.run_epoch()
    optimizer = resumed.runner.optimizer
    assert optimizer.kernels == "numba"
    plan = optimizer._plan  # the loop's in-place gradients: a reused plan on its drivers
    assert plan is not None and plan.schedule and plan.schedule[0] is not None
    for name, value in _weights(resumed).items():
        np.testing.assert_array_equal(value, runs["numba"][name], err_msg=name)
        np.testing.assert_array_equal(value, runs["numpy"][name], err_msg=name)
    assert not np.array_equal(runs["numba"]["layers.0.linear.weight"],
                              _weights(first)["layers.0.linear.weight"])  # it trained on
