"""The new optimizers (sam, soap, yogi, sgdw) the way a user reaches them: a recipe file ->
``optiplug compare`` (CLI) on both backends -> the training loop; and the two backends' loops
started from the same weights train to the same numbers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from optiplug.cli import main

torch = pytest.importorskip("torch")

NEW = {"sam": {"name": "sam", "base": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
               "rho": 0.05},
       "asam": {"name": "sam", "base": {"name": "adamw", "lr": 0.01}, "rho": 0.5,
                "adaptive": True},
       # Only the 2-long axes get factors: a factor of a longer axis (8 x 8 from an 8 x 2
       # gradient) is rank-deficient, and its null-space basis is each LAPACK's own choice.
       "soap": {"name": "soap", "lr": 0.01, "precondition_frequency": 3,
                "max_precondition_dim": 2},
       "yogi": {"name": "yogi", "lr": 0.02},
       "sgdw": {"name": "sgdw", "lr": 0.1, "weight_decay": 0.01}}


def recipe(optimizer: dict[str, Any], backend: str = "numpy") -> dict[str, Any]:
    return {"name": "catalogue-seam",
            "data": {"dataset": "moons", "samples": 160, "noise": 0.2, "seed": 1},
            "model": {"layers": [{"units": 8, "initializer": {"name": "xavier_uniform"},
                                  "activation": {"name": "tanh"}}]},
            "optimizer": optimizer,
            "train": {"epochs": 3, "batch_size": 40, "seed": 0, "backend": backend,
                      "dtype": "float64"}}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_compare_cli_trains_the_new_optimizers_from_a_recipe_file(
        backend: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(NEW["sam"])), encoding="utf-8")
    out = tmp_path / "out"
    code = main(["compare", str(path), "--backend", backend, "--vary",
                 "optimizer=sam(rho=0.1),soap(lr=0.01),yogi(lr=0.02),sgdw(lr=0.1)", "--quiet",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "compare.json").read_text(encoding="utf-8"))
    labels = [variant["label"] for variant in report["variants"]]
    assert labels == ["sam(rho=0.1)", "soap(lr=0.01)", "yogi(lr=0.02)", "sgdw(lr=0.1)"]
    for variant in report["variants"]:
        assert variant["error"] is None, variant["label"]
        history = variant["history"]
        assert len(history) == 3
        assert history[-1]["train_loss"] < history[0]["train_loss"], variant["label"]
    sam = report["variants"][0]["recipe"]["optimizer"]
    assert sam["name"] == "sam" and sam["rho"] == 0.1


@pytest.mark.parametrize("name", list(NEW))
def test_both_backends_train_to_the_same_numbers_from_the_same_weights(name: str) -> None:
    from optiplug.training.loop import Trainer
    from optiplug.training.recipe import load_recipe

    numpy_trainer = Trainer(load_recipe(recipe(NEW[name], "numpy")))
    torch_trainer = Trainer(load_recipe(recipe(NEW[name], "torch")))
    weights = numpy_trainer.runner.state()["model"]
    torch_trainer.runner.model.load_state_dict(
        {key: torch.from_numpy(np.array(value)) for key, value in weights.items()})
    numpy_history = numpy_trainer.fit()
    torch_history = torch_trainer.fit()
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "lr"):
        np.testing.assert_allclose([row[key] for row in numpy_history],
                                   [row[key] for row in torch_history], rtol=1e-9, atol=1e-12,
                                   err_msg=f"{name}: {key}")
    assert numpy_history[-1]["train_loss"] < numpy_history[0]["train_loss"]


def test_sam_in_the_loop_steps_with_the_gradient_at_the_perturbed_point() -> None:
    """The loop hands SAM a closure: its run differs from the base optimizer's alone, and a
    rho too small to move the weights gives the base optimizer's numbers."""
    from optiplug.training.loop import Trainer
    from optiplug.training.recipe import load_recipe

    base = {"name": "sgd", "lr": 0.1, "momentum": 0.9}

    def losses(optimizer: dict[str, Any]) -> list[float]:
        return [row["train_loss"] for row in Trainer(load_recipe(recipe(optimizer))).fit()]

    plain = losses(base)
    assert losses({"name": "sam", "base": base, "rho": 1e-300}) == pytest.approx(plain,
                                                                                  rel=1e-12)
    assert abs(losses(NEW["sam"])[-1] - plain[-1]) > 1e-6


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["sam", "soap"])
def test_a_resumed_run_continues_exactly(name: str, backend: str, tmp_path: Path) -> None:
    from optiplug.training.loop import Trainer
    from optiplug.training.recipe import load_recipe

    config = load_recipe(recipe(NEW[name], backend))
    whole = Trainer(config).fit()
    first = Trainer(config)
    first.fit(2, checkpoint=tmp_path / "ckpt")
    second = Trainer(config)
    second.load(next(tmp_path.glob("ckpt*")))
    resumed = second.fit()
    assert [row["train_loss"] for row in resumed] == [row["train_loss"] for row in whole]
    assert [row["val_loss"] for row in resumed] == [row["val_loss"] for row in whole]
