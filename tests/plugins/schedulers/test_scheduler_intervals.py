"""The training loop steps every scheduler at its declared interval, per batch or per epoch.

Each test records the learning rate every optimizer step actually used (a wrapper around the
runner's optimizer ``step``) and checks it against the schedule's closed form evaluated at the
global batch index (per-batch schedulers) or at the epoch index (per-epoch schedulers).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

import optiplug
from optiplug.training.loop import Trainer
from optiplug.training.recipe import DEFAULT_RECIPE, parse_recipe

BACKENDS = ["numpy", pytest.param("torch", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("torch"), reason="torch is not installed"))]
LR = 0.01
EPOCHS = 3


def recipe(backend: str, scheduler: dict[str, Any] | None,
           interval: str | None = None) -> Any:
    """A small digits recipe: 300 samples (240 to train: 8 batches of 32 per epoch)."""
    data = copy.deepcopy(DEFAULT_RECIPE)
    data["data"]["samples"] = 300
    data["model"]["layers"][0]["units"] = 16
    data["optimizer"] = {"name": "sgd", "lr": LR}
    data["scheduler"] = scheduler
    data["train"].update({"epochs": EPOCHS, "batch_size": 32, "backend": backend})
    if interval is not None:
        data["train"]["scheduler_interval"] = interval
    return parse_recipe(data)


def train_recording_lrs(trainer: Trainer) -> list[list[float]]:
    """Run every epoch; the lr of the first param group at each optimizer step, per epoch."""
    optimizer = trainer.runner.optimizer
    original = optimizer.step
    seen: list[float] = []

    def step(*args: Any, **kwargs: Any) -> Any:
        seen.append(float(optimizer.param_groups[0]["lr"]))
        return original(*args, **kwargs)

    step._wrapped_by_lr_sched = True  # type: ignore[attr-defined]  # torch's own marker
    optimizer.step = step
    per_epoch = []
    for _ in range(EPOCHS):
        start = len(seen)
        trainer.run_epoch()
        per_epoch.append(seen[start:])
    return per_epoch


def batches_per_epoch(trainer: Trainer) -> int:
    return math.ceil(len(trainer.data.x_train) / trainer.batch_size)


def wsd_factor(step: int, warmup: int, stable: int, decay: int) -> float:
    """Linear warm-up from 0, plateau, linear decay to 0 (the WSD formula, MiniCPM)."""
    if step < warmup:
        return step / warmup
    if step < warmup + stable:
        return 1.0
    return max(0.0, 1.0 - (step - warmup - stable) / decay)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_per_batch_scheduler_changes_the_lr_within_an_epoch_as_its_formula_says(
        backend: str) -> None:
    scheduler = {"name": "warmup_stable_decay", "warmup_steps": 5, "stable_steps": 6,
                 "decay_steps": 10, "decay_shape": "linear"}
    trainer = Trainer(recipe(backend, scheduler))
    assert trainer.scheduler_interval == "batch"
    per_epoch = train_recording_lrs(trainer)
    batches = batches_per_epoch(trainer)
    assert [len(lrs) for lrs in per_epoch] == [batches] * EPOCHS == [8] * EPOCHS
    used = np.concatenate(per_epoch)
    expected = [LR * wsd_factor(k, 5, 6, 10) for k in range(EPOCHS * batches)]
    np.testing.assert_allclose(used, expected, rtol=1e-12, atol=1e-18)
    # Within the first epoch: the five warm-up rates, then the peak.
    assert sorted(set(per_epoch[0])) == pytest.approx([0.0, 0.002, 0.004, 0.006, 0.008, LR])
    assert [record["lr"] for record in trainer.history] == [lrs[0] for lrs in per_epoch]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_per_epoch_scheduler_changes_the_lr_only_between_epochs(backend: str) -> None:
    trainer = Trainer(recipe(backend, {"name": "cosine", "T_max": EPOCHS}))
    assert trainer.scheduler_interval == "epoch"
    per_epoch = train_recording_lrs(trainer)
    for epoch, lrs in enumerate(per_epoch):
        expected = LR * (1 + math.cos(math.pi * epoch / EPOCHS)) / 2
        assert lrs == pytest.approx([expected] * len(lrs), rel=1e-12)
        assert len(set(lrs)) == 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_recipe_overrides_the_declared_interval(backend: str) -> None:
    trainer = Trainer(recipe(backend, {"name": "cosine", "T_max": 40}, interval="batch"))
    assert trainer.scheduler_interval == "batch"
    used = np.concatenate(train_recording_lrs(trainer))
    k = np.arange(len(used))
    np.testing.assert_allclose(used, LR * (1 + np.cos(np.pi * k / 40)) / 2, rtol=1e-12)

    per_epoch = train_recording_lrs(Trainer(recipe(
        backend, {"name": "linear_warmup", "warmup_steps": 4, "start_factor": 0.25},
        interval="epoch")))
    for epoch, lrs in enumerate(per_epoch):
        assert lrs == pytest.approx([LR * (0.25 + 0.75 * epoch / 4)] * len(lrs), rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_sequence_with_a_per_batch_child_steps_per_batch(backend: str) -> None:
    scheduler = {"name": "sequential", "milestones": [6], "schedulers": [
        {"name": "linear_warmup", "warmup_steps": 6, "start_factor": 0.5},
        {"name": "exponential", "gamma": 0.9}]}
    trainer = Trainer(recipe(backend, scheduler))
    assert trainer.scheduler_interval == "batch"
    used = np.concatenate(train_recording_lrs(trainer))
    k = np.arange(len(used))
    expected = LR * np.where(k < 6, 0.5 + 0.5 * k / 6, 0.9 ** np.maximum(k - 6, 0))
    np.testing.assert_allclose(used, expected, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_on_plateau_steps_per_epoch_on_the_validation_loss(backend: str) -> None:
    # A threshold no epoch can beat: every epoch after the first is a bad one.
    hyper = {"patience": 0, "factor": 0.5, "threshold": 0.9}
    trainer = Trainer(recipe(backend, {"name": "reduce_on_plateau", **hyper}))
    assert trainer.scheduler_interval == "epoch"
    per_epoch = train_recording_lrs(trainer)
    reference_groups = [{"lr": LR}]

    class Reference:
        param_groups = reference_groups

    reference = optiplug.scheduler("reduce_on_plateau", Reference(), **hyper)
    expected = []
    for record in trainer.history:
        expected.append(reference_groups[0]["lr"])
        reference.step(record["val_loss"])
    # The first evaluation improves on nothing (best = inf); the next does not by 90%.
    assert [lrs[0] for lrs in per_epoch] == expected == [LR, LR, LR / 2]
    assert all(len(set(lrs)) == 1 for lrs in per_epoch)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_plateau_scheduler_cannot_step_per_batch(backend: str) -> None:
    with pytest.raises(optiplug.ConfigError) as caught:
        Trainer(recipe(backend, {"name": "reduce_on_plateau"}, interval="batch"))
    [issue] = caught.value.issues
    assert issue.path == "train.scheduler_interval"
    assert "only step once per epoch" in issue.message


def test_no_scheduler_has_no_interval() -> None:
    assert Trainer(recipe("numpy", None)).scheduler_interval is None


def test_a_bad_interval_in_the_recipe_is_a_config_error_with_its_path() -> None:
    with pytest.raises(optiplug.ConfigError) as caught:
        recipe("numpy", {"name": "cosine", "T_max": 3}, interval="step")
    assert [issue.path for issue in caught.value.issues] == ["train.scheduler_interval"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scheduler", [
    {"name": "sequential", "milestones": [10], "schedulers": [
        {"name": "linear_warmup", "warmup_steps": 10},
        {"name": "cosine_restarts", "T_0": 7, "T_mult": 2}]},
    {"name": "cyclic", "max_lr": 0.05, "step_size_up": 5, "mode": "exp_range", "gamma": 0.99},
    {"name": "warmup_stable_decay", "warmup_steps": 5, "stable_steps": 10, "decay_steps": 12},
], ids=["sequential", "cyclic", "warmup_stable_decay"])
def test_a_resumed_run_continues_a_per_batch_schedule_exactly(
        tmp_path: Any, backend: str, scheduler: dict[str, Any]) -> None:
    from optiplug.training.run import run

    data = recipe(backend, scheduler).model_dump(mode="python")
    run(data, out=tmp_path / "part", progress=False, epochs=2)
    resumed = run(None, resume=tmp_path / "part", epochs=EPOCHS, progress=False)
    whole = run(data, out=tmp_path / "whole", progress=False)

    def lrs(history: list[dict[str, Any]]) -> list[Any]:
        return [(record["lr"], record["val_loss"]) for record in history]

    assert lrs(resumed.history) == lrs(whole.history)
    assert len({record["lr"] for record in whole.history}) == EPOCHS
