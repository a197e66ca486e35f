"""``optiplug run`` end to end: run folders, both backends, determinism, kill and resume."""

from __future__ import annotations

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from optiplug.cli import main
from optiplug.training.recipe import DEFAULT_RECIPE, load_recipe, recipe_to_dict
from optiplug.training.run import run

from .conftest import small_recipe, without_seconds

PNG = b"\x89PNG\r\n\x1a\n"


def _metrics(run_dir: Path) -> list[dict[str, object]]:
    return json.loads((run_dir / "metrics.json").read_text())["epochs"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_run_writes_a_complete_run_folder(backend: str, tmp_path: Path, recipe_file: object,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    path = recipe_file(small_recipe())  # type: ignore[operator]
    out = tmp_path / "run"
    assert main(["run", str(path), "--backend", backend, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "validation" in captured.out and str(out) in captured.out
    assert "epoch 3/3" in captured.err  # progress, plain lines when not a terminal
    assert sorted(p.name for p in out.iterdir()) == [
        ".lock", "checkpoints", "config.yaml", "curves.png", "gradients.png", "layers.csv",
        "metrics.csv", "metrics.json"]
    assert (out / ".lock").read_bytes() == b""  # released: no holder named any more
    suffix = ".pt" if backend == "torch" else ".npz"
    assert [p.name for p in (out / "checkpoints").iterdir()] == [f"last{suffix}"]
    assert (out / "curves.png").read_bytes().startswith(PNG)
    resolved = load_recipe(out / "config.yaml")
    assert resolved.train.backend == backend
    with (out / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    history = _metrics(out)
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3] == [r["epoch"] for r in history]
    assert float(rows[-1]["val_loss"]) == history[-1]["val_loss"]
    # Reported metrics are the model's: re-evaluating the final checkpointed model agrees.
    from optiplug.training.loop import Trainer

    trainer = Trainer(resolved)
    trainer.load(out / "checkpoints" / f"last{suffix}")
    assert trainer.runner.evaluate("val") == (history[-1]["val_loss"],
                                              history[-1]["val_accuracy"])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_same_recipe_and_seed_give_the_same_numbers(backend: str, tmp_path: Path) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    recipe = small_recipe(backend=backend, batch_size=16)
    first = run(recipe, out=tmp_path / "a", progress=False)
    second = run(recipe, out=tmp_path / "b", progress=False)
    assert without_seconds(first.history) == without_seconds(second.history)
    other_seed = run(small_recipe(backend=backend, batch_size=16, seed=1),
                     out=tmp_path / "c", progress=False)
    assert without_seconds(other_seed.history) != without_seconds(first.history)


@pytest.mark.parametrize("batch_size", ["full", 1])
def test_full_batch_and_stochastic_steps(batch_size: object, tmp_path: Path) -> None:
    recipe = small_recipe(batch_size=batch_size, epochs=2)
    recipe["data"]["samples"] = 60
    recipe["optimizer"] = {"name": "sgd", "lr": 0.05}
    result = run(recipe, out=tmp_path / "r", progress=False)
    # Reference: the same SGD steps written out by hand from the initial weights.
    from optiplug.training.loop import Trainer
    from optiplug.training.model_numpy import cross_entropy

    reference = Trainer(load_recipe(recipe))
    model, data = reference.runner.model, reference.data
    rng = np.random.default_rng([0, 1])
    for _ in range(2):
        order = (np.arange(len(data.x_train)) if batch_size == "full"
                 else rng.permutation(len(data.x_train)))
        size = len(order) if batch_size == "full" else 1
        for start in range(0, len(order), size):
            index = order[start:start + size]
            _, grad, _ = cross_entropy(model.forward(data.x_train[index]),
                                       data.y_train[index], grad=True)
            for name, value in model.backward(grad).items():
                model.params[name] -= np.float32(0.05) * value
    assert reference.runner.evaluate("val")[0] == pytest.approx(
        result.history[-1]["val_loss"], rel=1e-5)


def test_resume_continues_exactly_after_sigkill(tmp_path: Path, recipe_file: object) -> None:
    recipe = small_recipe(epochs=4, batch_size=16)
    recipe["scheduler"] = {"name": "step", "step_size": 1, "gamma": 0.7}
    path = recipe_file(recipe)  # type: ignore[operator]
    killed = tmp_path / "killed"
    process = subprocess.run(
        [sys.executable, "-m", "optiplug", "run", str(path), "--out", str(killed),
         "--kill-after-epoch", "2", "--quiet"], capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert [r["epoch"] for r in _metrics(killed)] == [1, 2]

    assert main(["run", "--resume", str(killed), "--quiet"]) == 0
    uninterrupted = run(load_recipe(path), out=tmp_path / "whole", progress=False)
    assert without_seconds(_metrics(killed)) == without_seconds(uninterrupted.history)


def test_torch_resume_restores_model_optimizer_and_scheduler(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    recipe = small_recipe(backend="torch", epochs=4, batch_size=16)
    recipe["model"]["layers"][0]["normalizer"] = {"name": "batch_norm"}
    recipe["optimizer"] = {"name": "adamw", "lr": 0.01}
    recipe["scheduler"] = {"name": "cosine", "T_max": 4}
    run(recipe, out=tmp_path / "part", progress=False, epochs=2)
    resumed = run(None, resume=tmp_path / "part", epochs=4, progress=False)
    whole = run(recipe, out=tmp_path / "whole", progress=False)
    assert resumed.resumed_from == 2
    assert without_seconds(resumed.history) == without_seconds(whole.history)


def test_resume_with_a_different_recipe_is_refused(tmp_path: Path, recipe_file: object,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run(small_recipe(epochs=1), out=tmp_path / "r", progress=False)
    other = small_recipe()
    other["optimizer"] = {"name": "sgd"}
    assert main(["run", str(recipe_file(other)), "--resume",  # type: ignore[operator]
                 str(tmp_path / "r"), "--quiet"]) == 1
    assert "differs from the one" in capsys.readouterr().err


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    run(small_recipe(epochs=1), out=tmp_path / "r", progress=False)
    (tmp_path / "r" / "checkpoints" / "last.npz").write_bytes(b"garbage")
    assert main(["run", "--resume", str(tmp_path / "r"), "--epochs", "2", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("optiplug: error: checkpoint") and "corrupt" in err
    assert "Traceback" not in err


def test_invalid_recipe_lists_every_path(tmp_path: Path, recipe_file: object,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    bad = copy.deepcopy(DEFAULT_RECIPE)
    bad["model"]["layers"][0]["activation"] = {"name": "rleu"}
    bad["optimizer"]["lr"] = 0
    assert main(["run", str(recipe_file(bad)), "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "model.layers.0.activation.name" in err and "optimizer.lr" in err
    assert not (tmp_path / "r").exists()


def test_run_refuses_to_overwrite_a_run_folder(tmp_path: Path) -> None:
    import optiplug

    run(small_recipe(epochs=1), out=tmp_path / "r", progress=False)
    with pytest.raises(optiplug.ConfigError, match="already holds a run"):
        run(small_recipe(epochs=1), out=tmp_path / "r", progress=False)


def test_numpy_backend_runs_without_torch_installed(tmp_path: Path, recipe_file: object
                                                    ) -> None:
    path = recipe_file(small_recipe(epochs=2))  # type: ignore[operator]
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:  # as if torch were not installed: importing it fails
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NoTorch())
        from optiplug.cli import main
        code = main(["run", {str(path)!r}, "--out", {str(tmp_path / 'r')!r}, "--quiet"])
        assert "torch" not in sys.modules
        code2 = main(["run", {str(path)!r}, "--backend", "torch", "--out",
                      {str(tmp_path / 't')!r}, "--quiet"])
        sys.exit(code * 10 + code2)
    """)
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert process.returncode == 1, process.stderr  # numpy ok, torch: a clear error
    assert "pip install 'optiplug[torch]'" in process.stderr
    assert len(_metrics(tmp_path / "r")) == 2


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_default_recipe_reaches_97_percent_like_scikit_learn(backend: str,
                                                             tmp_path: Path) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    from sklearn.neural_network import MLPClassifier

    recipe = load_recipe()
    result = run(recipe_to_dict(recipe), backend=backend, out=tmp_path / "r", progress=False)
    accuracy = result.history[-1]["val_accuracy"]
    assert accuracy >= 0.97

    # Reference: scikit-learn's MLPClassifier, same split, architecture, batch size, epochs.
    from optiplug.training.data import load_dataset

    data = load_dataset(recipe.data, dtype="float64")
    sklearn = MLPClassifier(hidden_layer_sizes=(128,), solver="adam", learning_rate_init=1e-3,
                            batch_size=32, max_iter=30, alpha=0.0, tol=0.0,
                            n_iter_no_change=1000, random_state=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached, as asked
        sklearn.fit(data.x_train, data.y_train)
    assert accuracy >= sklearn.score(data.x_val, data.y_val) - 0.01


@pytest.mark.parametrize("name", ["moons.yaml", "regression.toml"])
def test_example_recipes_train_on_both_backends_alike(name: str, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = Path(__file__).resolve().parents[2] / "examples" / "recipes" / name
    results = [run(path, backend=backend, epochs=3, out=tmp_path / backend, progress=False)
               for backend in ("numpy", "torch")]
    first, second = (r.history[0] for r in results)
    last = [r.history[-1] for r in results]
    # Different weight draws, same data and schedule: same learning rates, similar losses.
    assert [r["lr"] for r in results[0].history] == pytest.approx(
        [r["lr"] for r in results[1].history], rel=1e-6)
    assert last[0]["val_loss"] < first["val_loss"] and last[1]["val_loss"] < second["val_loss"]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_train_metrics_average_the_epoch_as_it_trained(backend: str) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    from optiplug.training.loop import Trainer

    # Full batch: the epoch's one step sees the weights of the epoch's start, so its train
    # loss and accuracy are those of the model before the step.
    trainer = Trainer(load_recipe(small_recipe(backend=backend, batch_size="full")))
    before = trainer.runner.evaluate("train")
    record = trainer.run_epoch()
    assert record["train_loss"] == pytest.approx(before[0], rel=1e-6)
    assert record["train_accuracy"] == before[1]
