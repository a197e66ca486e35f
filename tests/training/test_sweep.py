"""optiplug sweep: search spaces read from the specs, Optuna studies, resumable and shared."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("optuna")

import optuna

import optiplug
from optiplug.training.sweep import Dimension, search_space

from .conftest import small_recipe


def _optiplug(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "optiplug", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def _recipe(tmp_path: Path, **sweep: Any) -> Path:
    recipe = small_recipe(epochs=3)
    recipe["optimizer"] = {"name": "adam", "lr": 0.01}
    recipe["sweep"] = {"trials": 4, **sweep}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_default_space_is_log_lr_around_the_recipe_and_log_weight_decay():
    dimensions, fixed = search_space(optiplug.spec("optimizer", "adam", lr=0.01), "optimizer")
    assert fixed == {}
    by_path = {d.path: d for d in dimensions}
    assert by_path["optimizer.lr"] == Dimension("optimizer.lr", 0.001, 0.1, log=True)
    assert by_path["optimizer.weight_decay"] == Dimension("optimizer.weight_decay", 1e-6, 0.1,
                                                          log=True)
    assert set(by_path) == {"optimizer.lr", "optimizer.weight_decay"}


def test_user_space_narrows_fixes_and_adds_inside_the_specs_bounds():
    space = {"optimizer.lr": {"low": 1e-4, "high": 0.3, "log": True},
             "optimizer.weight_decay": 0.0,
             "optimizer.betas.1": {"low": 0.9, "high": 0.9999}}
    dimensions, fixed = search_space(optiplug.spec("optimizer", "adam"), "optimizer", space)
    assert fixed == {"optimizer.weight_decay": 0.0}
    assert {d.path: (d.low, d.high, d.log) for d in dimensions} == {
        "optimizer.lr": (1e-4, 0.3, True), "optimizer.betas.1": (0.9, 0.9999, False)}


@pytest.mark.parametrize(("space", "message"), [
    ({"optimizer.betas.1": {"low": 0.9, "high": 1.0}}, "high 1 is outside the spec's bound (< 1)"),
    ({"optimizer.lr": {"low": 0.0, "high": 0.1}}, "low 0 is outside the spec's bound (> 0)"),
    ({"optimizer.lr": {"low": 0.1, "high": 0.01}}, "low 0.1 must be below high 0.01"),
    ({"optimizer.amsgrad": {"low": 0, "high": 1}}, "not a number"),
    ({"optimizer.wieght_decay": {"low": 0.1, "high": 0.2}}, "no numeric hyperparameter"),
])
def test_a_range_outside_the_specs_bounds_is_a_config_error_with_its_path(space, message):
    with pytest.raises(optiplug.ConfigError) as caught:
        search_space(optiplug.spec("optimizer", "adam"), "optimizer", space)
    [issue] = caught.value.issues
    assert issue.path == "sweep.space." + next(iter(space))
    assert message in issue.message


def test_sweep_then_run_best_yaml_reproduces_the_best_trial_exactly(tmp_path: Path):
    recipe = _recipe(tmp_path)
    done = _optiplug("sweep", str(recipe), "--seed", "0", "--out", "sweep", "--quiet",
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "best: trial #" in done.stdout and "4 trials:" in done.stdout
    folder = tmp_path / "sweep"
    for name in ("best.yaml", "trials.csv", "history.png", "study.journal"):
        assert (folder / name).is_file(), name
    assert (folder / "importance.png").is_file() or (folder / "parallel.png").is_file()
    study = optuna.load_study(study_name="digits", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(folder / "study.journal"))))
    best = study.best_trial
    assert best.value == min(t.value for t in study.trials
                             if t.state == optuna.trial.TrialState.COMPLETE)
    best_recipe = yaml.safe_load((folder / "best.yaml").read_text(encoding="utf-8"))
    assert best_recipe["optimizer"]["lr"] == best.params["optimizer.lr"]
    assert "sweep" not in best_recipe
    rerun = _optiplug("run", "sweep/best.yaml", "--out", "rerun", "--quiet", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    final = json.loads((tmp_path / "rerun" / "metrics.json").read_text())["final"]
    assert final["val_loss"] == best.value  # bit for bit: same recipe, same seed


def test_running_again_resumes_the_study_up_to_the_new_total(tmp_path: Path):
    recipe = _recipe(tmp_path)
    assert _optiplug("sweep", str(recipe), "--trials", "2", "--seed", "1", "--out", "s",
                     "--quiet", cwd=tmp_path).returncode == 0
    done = _optiplug("sweep", str(recipe), "--trials", "5", "--seed", "2", "--out", "s",
                     "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = (tmp_path / "s" / "trials.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [0, 1, 2, 3, 4]


def test_two_workers_on_one_storage_finish_one_study_without_duplicate_or_lost_trials(
        tmp_path: Path):
    recipe = _recipe(tmp_path)
    storage = tmp_path / "shared.journal"
    workers = [subprocess.Popen(
        [sys.executable, "-m", "optiplug", "sweep", str(recipe), "--trials", "8",
         "--storage", str(storage), "--study", "shared", "--out", f"w{i}", "--quiet"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(2)]
    for worker in workers:
        _, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(storage))))
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers)))  # no number twice, none missing
    finished = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(t.state in finished for t in study.trials)  # none lost mid-way
    assert 8 <= len(numbers) <= 9  # a worker stops once 8 are finished; one may be in flight
    recipes = [json.dumps(t.user_attrs["recipe"], sort_keys=True) for t in study.trials]
    assert len(set(recipes)) == len(recipes)


def test_vary_makes_the_technique_a_choice_with_its_own_space(tmp_path: Path):
    from optiplug.training.sweep import sweep

    result = sweep(_recipe(tmp_path), trials=6, vary=["optimizer=adam,sgd(lr=0.1)"], seed=3,
                   out=tmp_path / "v", progress=False)
    for trial in result.study.trials:
        choice = trial.params["optimizer"]
        assert choice in ("adam", "sgd(lr=0.1)")
        recipe_lr = trial.user_attrs["recipe"]["optimizer"]["lr"]
        assert trial.params[f"{choice}.lr"] == recipe_lr
        low, high = (1e-4, 1e-2) if choice == "adam" else (0.01, 1.0)
        assert low <= recipe_lr <= high
        assert math.isfinite(trial.params[f"{choice}.weight_decay"])


def test_sweep_section_errors_name_the_path_and_nothing_trains(tmp_path: Path):
    recipe = _recipe(tmp_path, metric="val_acc")
    done = _optiplug("sweep", str(recipe), "--out", "bad", cwd=tmp_path)
    assert done.returncode == 1
    assert "sweep.metric" in done.stderr
    assert not (tmp_path / "bad" / "study.journal").exists()
