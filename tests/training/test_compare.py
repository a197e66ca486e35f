"""``optiplug compare`` end to end: variants on one split and seed, table, plot, --vary."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import optiplug
from optiplug.cli import main
from optiplug.training.compare import compare, installed_optimizers, parse_vary
from optiplug.training.run import run

from .conftest import small_recipe, without_seconds


def test_compare_without_arguments_covers_every_installed_optimizer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    # The command of the README, shortened to one epoch, in a fresh process.
    process = subprocess.run([sys.executable, "-m", "optiplug", "compare", "--epochs", "1"],
                             capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    usable, skipped = installed_optimizers("numpy")
    lines = process.stdout.splitlines()
    assert lines[0].split() == ["variant", "train_loss", "train_acc", "val_loss", "val_acc",
                                "epochs_to_95%", "grad_in/out", "time_s"]
    assert [line.split()[0] for line in lines[2:2 + len(usable)]] == usable
    assert sorted(usable + [s.split()[0] for s in skipped]) == \
        optiplug.registry().names("optimizer")
    out_dirs = list((tmp_path / "runs").iterdir())
    assert len(out_dirs) == 1 and out_dirs[0].name.startswith("compare-digits-")
    assert (out_dirs[0] / "curves.png").read_bytes().startswith(b"\x89PNG")
    document = json.loads((out_dirs[0] / "compare.json").read_text())
    assert [v["label"] for v in document["variants"]] == usable


def test_variants_share_the_split_and_seed_of_a_plain_run(tmp_path: Path) -> None:
    recipe = small_recipe(epochs=2)
    outcome = compare(recipe, ["optimizer=sgd(lr=0.1),adam"], out=tmp_path / "c",
                      progress=False)
    assert [r.label for r in outcome.results] == ["sgd(lr=0.1)", "adam"]
    recipe["optimizer"] = {"name": "sgd", "lr": 0.1}
    alone = run(recipe, out=tmp_path / "r", progress=False)
    assert without_seconds(outcome.results[0].history) == without_seconds(alone.history)
    rows = (tmp_path / "c" / "compare.csv").read_text().splitlines()
    assert rows[0].startswith("variant,train_loss") and len(rows) == 3


def test_several_vary_options_give_every_combination(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    code = main(["compare", "--vary", "activation=relu,tanh", "--vary",
                 "normalizer=none,batch_norm,min_max", "--epochs", "1", "--quiet",
                 "--out", str(tmp_path / "c")])
    assert code == 0
    out = capsys.readouterr().out
    document = json.loads((tmp_path / "c" / "compare.json").read_text())
    labels = [v["label"] for v in document["variants"]]
    assert labels == [f"activation={a} normalizer={n}" for a in ("relu", "tanh")
                      for n in ("none", "batch_norm", "min_max")]
    assert all(label in out for label in labels)
    recipes = {v["label"]: v["recipe"] for v in document["variants"]}
    with_bn = recipes["activation=tanh normalizer=batch_norm"]
    assert with_bn["model"]["layers"][0]["normalizer"]["name"] == "batch_norm"
    assert with_bn["model"]["layers"][0]["activation"] == {"name": "tanh"}
    # min_max is a data scaler: it replaces the input normalizer, not a layer.
    with_min_max = recipes["activation=relu normalizer=min_max"]
    assert with_min_max["data"]["normalizer"]["name"] == "min_max"
    assert with_min_max["model"]["layers"][0]["normalizer"] is None


def test_torch_backend_compare(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    outcome = compare(small_recipe(epochs=2), ["scheduler=none,cosine(T_max=2)"],
                      backend="torch", out=tmp_path / "c", progress=False)
    assert [r.error for r in outcome.results] == [None, None]
    assert outcome.results[1].history[-1]["lr"] == pytest.approx(0.0005)
    assert outcome.results[0].history[-1]["lr"] == pytest.approx(0.001)


def test_vary_items_are_validated_with_paths() -> None:
    assert parse_vary("optimizer=sgd(lr=0.1, momentum=0.9), adam") == (
        "optimizer", [("sgd(lr=0.1, momentum=0.9)", {"name": "sgd", "lr": 0.1,
                                                    "momentum": 0.9}),
                      ("adam", {"name": "adam"})])
    assert parse_vary("optimizer=adam(betas=[0.8, 0.9])")[1][0][1] == {
        "name": "adam", "betas": [0.8, 0.9]}
    with pytest.raises(optiplug.ConfigError) as caught:
        compare(small_recipe(), ["optimizer=adam(lr=-1),sgd,adamm"], progress=False)
    paths = [issue.path for issue in caught.value.issues]
    assert paths == ["vary.optimizer.0.lr", "vary.optimizer.2.name"]
    with pytest.raises(optiplug.ConfigError, match="unknown kind 'optimiser'"):
        parse_vary("optimiser=adam")


def test_a_failing_variant_is_reported_and_the_others_still_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from optiplug.training import compare as compare_module

    real = compare_module.Trainer

    class Flaky(real):  # type: ignore[misc, valid-type]
        def __init__(self, recipe: object, **kwargs: object) -> None:
            if recipe.optimizer.name == "sgd":  # type: ignore[attr-defined]
                raise optiplug.OptiplugError("simulated failure")
            super().__init__(recipe, **kwargs)

    monkeypatch.setattr(compare_module, "Trainer", Flaky)
    outcome = compare(small_recipe(epochs=1), ["optimizer=sgd,adam"], out=tmp_path / "c",
                      progress=False)
    assert outcome.results[0].error == "simulated failure"
    assert outcome.results[1].error is None and outcome.best() is outcome.results[1]
    assert "sgd: simulated failure" in outcome.table()
