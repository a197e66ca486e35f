"""``run`` steps each scheduler when the scheduler itself declares: the learning rate every
optimizer step of ``run`` used equals torch's own scheduler stepped the same way (per batch
or per epoch), on both backends.

The rates are read where the optimizer sees them: a wrapper around the runner's optimizer
``step`` records ``param_groups[0]["lr"]`` at every call. The reference is a plain
``torch.optim.SGD`` on one parameter with ``torch.optim.lr_scheduler``'s class, stepped once
after every batch or once after every epoch.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest

from optiplug.training import loop
from optiplug.training.recipe import DEFAULT_RECIPE
from optiplug.training.run import run

torch = pytest.importorskip("torch")

LR = 0.05
EPOCHS = 3
BATCHES = 8  # 240 training samples in batches of 32: the last one has 16


def _recipe(backend: str, scheduler: dict[str, Any]) -> dict[str, Any]:
    recipe = copy.deepcopy(DEFAULT_RECIPE)
    recipe["data"]["samples"] = 300
    recipe["model"]["layers"][0]["units"] = 16
    recipe["optimizer"] = {"name": "sgd", "lr": LR}
    recipe["scheduler"] = scheduler
    recipe["train"].update({"epochs": EPOCHS, "batch_size": 32, "backend": backend})
    return recipe


def _rates_seen_in_run(recipe: dict[str, Any], out: Path,
                       monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Train ``recipe`` with :func:`run`; the lr of every optimizer step, in order."""
    seen: list[float] = []
    make_runner = loop.make_runner

    def recording_runner(*args: Any, **kwargs: Any) -> Any:
        runner = make_runner(*args, **kwargs)
        optimizer = runner.optimizer
        step = optimizer.step

        def recorded(*step_args: Any, **step_kwargs: Any) -> Any:
            seen.append(float(optimizer.param_groups[0]["lr"]))
            return step(*step_args, **step_kwargs)

        recorded._wrapped_by_lr_sched = True  # type: ignore[attr-defined]  # torch's marker
        optimizer.step = recorded
        return runner

    monkeypatch.setattr(loop, "make_runner", recording_runner)
    result = run(recipe, out=out, progress=False)
    # The metrics' lr column is the rate of each epoch's first step.
    assert [r["lr"] for r in result.history] == seen[::BATCHES]
    recorded_lrs = [r["lr"] for r in json.loads((out / "metrics.json").read_text())["epochs"]]
    assert recorded_lrs == seen[::BATCHES]
    return seen


def _torch_rates(make_scheduler: Any, per_batch: bool) -> list[float]:
    """The lr of every step of torch's scheduler, stepped per batch or per epoch."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=LR)
    scheduler = make_scheduler(optimizer)
    rates = []
    for _ in range(EPOCHS):
        for _ in range(BATCHES):
            rates.append(float(optimizer.param_groups[0]["lr"]))
            optimizer.step()
            if per_batch:
                scheduler.step()
        if not per_batch:
            scheduler.step()
    return rates


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_per_batch_scheduler_in_run_matches_torch_stepped_per_batch(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = EPOCHS * BATCHES
    scheduler = {"name": "one_cycle", "max_lr": 0.1, "total_steps": steps, "pct_start": 0.25}
    seen = _rates_seen_in_run(_recipe(backend, scheduler), tmp_path / "r", monkeypatch)
    expected = _torch_rates(lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.1, total_steps=steps, pct_start=0.25, cycle_momentum=False),
        per_batch=True)
    assert len(seen) == len(expected) == steps
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if backend == "torch":  # torch's own scheduler class: the same numbers, bit for bit
        assert seen == expected
    assert len(set(seen[:BATCHES])) == BATCHES  # it moves within the first epoch


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_per_epoch_scheduler_in_run_matches_torch_stepped_per_epoch(
        backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scheduler = {"name": "cosine", "T_max": EPOCHS}
    seen = _rates_seen_in_run(_recipe(backend, scheduler), tmp_path / "r", monkeypatch)
    expected = _torch_rates(lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=EPOCHS), per_batch=False)
    assert len(seen) == len(expected) == EPOCHS * BATCHES
    assert seen == pytest.approx(expected, rel=1e-12, abs=1e-15)
    if backend == "torch":  # torch's own scheduler class: the same numbers, bit for bit
        assert seen == expected
    # Constant within each epoch, changing between epochs.
    assert [len(set(seen[k:k + BATCHES])) for k in range(0, len(seen), BATCHES)] == [1] * 3
    assert seen[BATCHES] == pytest.approx(LR * (1 + math.cos(math.pi / EPOCHS)) / 2)
