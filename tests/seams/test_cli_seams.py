"""Command-line seams: every file optiplug reads validates, overrides, numbers as written,
suggestions for misspellings, --debug anywhere, one message for a missing file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import optiplug
from optiplug.cli import main
from optiplug.training.recipe import load_recipe, technique_entries

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "examples" / "recipes").glob("*.*"))


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    return subprocess.run([sys.executable, "-m", "optiplug", *args], capture_output=True,
                          text=True, env=environment, timeout=300, check=False, cwd=cwd)


def _without_seconds(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


# ----------------------------------------------------------------------------- validate
@pytest.mark.parametrize("recipe", RECIPES, ids=[path.name for path in RECIPES])
def test_validate_accepts_every_recipe_that_run_accepts(recipe: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert main(["validate", str(recipe)]) == 0
    out = capsys.readouterr().out
    parsed = load_recipe(recipe)
    entries = technique_entries(parsed)
    names = ", ".join(f"{spec.kind} {spec.name}" for _, spec in entries)
    assert out.strip() == f"{recipe}: valid recipe {parsed.name!r} ({names})"


def test_validate_accepts_a_technique_and_a_sectioned_file(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    single = tmp_path / "adam.toml"
    single.write_text('kind = "optimizer"\nname = "adam"\nlr = 1e-3\n', encoding="utf-8")
    sectioned = tmp_path / "train.yaml"
    sectioned.write_text("optimizer: {name: sgd, lr: 1e-2, momentum: 0.9, nesterov: true}\n"
                         "scheduler: {name: cosine, T_max: 1_000}\n", encoding="utf-8")
    assert main(["validate", str(single)]) == 0
    assert main(["validate", str(sectioned)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{single}: valid (optimizer adam)",
        f"{sectioned}: valid (optimizer sgd, scheduler cosine)"]


@pytest.mark.parametrize("form", ["1e-3", "5E-4", ".5", "1_000", "+1e3"])
def test_cli_reads_numbers_as_written_in_files(tmp_path: Path, form: str,
                                                             capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    path = tmp_path / "opt.yaml"
    path.write_text(f"optimizer: {{name: sgd, lr: {form}}}\n", encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    # Read as a number, it is checked as one: a momentum of 1 or more is out of range.
    code = main(["validate", str(path), f"optimizer.momentum={form}"])
    assert code == (0 if float(form) < 1 else 1)
    if code:
        assert "optimizer.momentum: Input should be less than 1" in capsys.readouterr().err
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text(f"optimizer: {{name: sgd, lr: '{form}'}}\n", encoding="utf-8")
    assert main(["validate", str(quoted)]) == 1
    assert "optimizer.lr: Input should be a valid number" in capsys.readouterr().err


@pytest.mark.parametrize("form", ["1e-3", "5E-4", ".5", "-2.5e-4"])
def test_an_override_sets_the_number_as_written(tmp_path: Path, form: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "opt.yaml"
    path.write_text("optimizer: {name: sgd, lr: 0.1}\n", encoding="utf-8")
    code = main(["validate", str(path), f"optimizer.momentum={form}"])
    if float(form) >= 0:
        assert code == 0
        assert capsys.readouterr().out.strip() == f"{path}: valid (optimizer sgd)"
    else:
        assert code == 1
        assert "optimizer.momentum: Input should be greater than or equal to 0" in \
            capsys.readouterr().err


def test_overrides_on_validate_name_the_path_and_suggest(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    moons = str(ROOT / "examples" / "recipes" / "moons.yaml")
    assert main(["validate", moons, "optimizer.lr=3e-4", "train.epochs=5"]) == 0
    assert main(["validate", moons, "optimizer.lr=fast", "train.epoch=5",
                 "optimizer.wieght_decay=0.1"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{moons}: optimizer.lr: Input should be a valid number (got 'fast')",
        f"{moons}: optimizer.wieght_decay: unknown key (not a hyperparameter of this "
        f"technique); did you mean 'weight_decay'?",
        f"{moons}: train.epoch: unknown key; did you mean 'epochs'?"]
    assert main(["validate", moons, "model.layers.9.units=4"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"{moons}: model.layers.9.units: index 9 is out of range: model.layers has 2 items")


# ---------------------------------------------------------------------------------- run
def test_run_overrides_train_exactly_as_the_edited_file(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    moons = ROOT / "examples" / "recipes" / "moons.yaml"
    overrides = ["data.samples=240", "train.epochs=2", "optimizer.lr=3e-2",
                 "model.layers.1.units=8"]
    assert main(["run", str(moons), *overrides, "--quiet", "--out",
                 str(tmp_path / "overridden")]) == 0
    edited = yaml.safe_load(moons.read_text(encoding="utf-8"))
    edited["data"]["samples"] = 240
    edited["train"]["epochs"] = 2
    edited["optimizer"]["lr"] = 0.03
    edited["model"]["layers"][1]["units"] = 8
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(edited), encoding="utf-8")
    # Options may come before the overrides, too.
    assert main(["run", str(path), "--quiet", "--out", str(tmp_path / "edited")]) == 0
    capsys.readouterr()
    mine = json.loads((tmp_path / "overridden" / "metrics.json").read_text(encoding="utf-8"))
    theirs = json.loads((tmp_path / "edited" / "metrics.json").read_text(encoding="utf-8"))
    assert len(mine["epochs"]) == 2 and mine["epochs"][0]["lr"] == 0.03
    assert _without_seconds(mine["epochs"]) == _without_seconds(theirs["epochs"])
    assert main(["run", str(moons), "--quiet", "train.epochs=0", "--out",
                 str(tmp_path / "bad")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"optiplug: error: invalid config in {moons}: train.epochs: ")
    assert not (tmp_path / "bad").exists()


def test_a_missing_file_is_the_same_one_line_error_for_every_command(tmp_path: Path) -> None:
    lines = set()
    for command in ("run", "validate", "compare"):
        result = run_cli(command, "nope.yaml", cwd=tmp_path)
        assert result.returncode == 1, result.stderr
        lines.add(result.stderr)
    assert lines == {"optiplug: error: no such file: nope.yaml\n"}


@pytest.mark.parametrize(("args", "message"), [
    (["show", "optimiser", "adam"], "unknown kind 'optimiser'; did you mean 'optimizer'?"),
    (["list", "--kind", "optimizers"], "unknown kind 'optimizers'; did you mean 'optimizer'?"),
    (["schema", "--kind", "Scheduler"], "unknown kind 'Scheduler'; did you mean 'scheduler'?"),
])
def test_a_misspelt_kind_gets_a_suggestion(args: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"optiplug: error: {message} Kinds: {', '.join(optiplug.KINDS)}\n")


def test_debug_is_accepted_before_or_after_the_subcommand() -> None:
    for args in (["--debug", "show", "activation", "rleu"],
                 ["show", "activation", "rleu", "--debug"],
                 ["show", "--debug", "activation", "rleu"]):
        result = run_cli(*args)
        assert result.returncode == 1
        assert "Traceback" in result.stderr and "did you mean 'relu'" in result.stderr
    plain = run_cli("show", "activation", "rleu")
    assert "Traceback" not in plain.stderr and "run with --debug" not in plain.stderr


def test_an_unknown_argument_is_still_a_usage_error(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate", str(tmp_path / "x.yaml"), "--bogus"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["doctor", "a=1"])
    assert info.value.code == 2
    assert "unrecognized arguments: a=1" in capsys.readouterr().err


def test_compare_torch_with_sgd_in_torch_vocabulary(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from optiplug.training.run import run

    moons = ROOT / "examples" / "recipes" / "moons.yaml"
    small = yaml.safe_load(moons.read_text(encoding="utf-8"))
    small["data"]["samples"] = 200
    small["train"]["epochs"] = 2
    # The recipe shrunk by overrides, the README's --vary as written.
    result = run_cli("compare", str(moons), "data.samples=200", "--backend", "torch", "--vary",
                     "optimizer=adam,sgd(lr=0.1, momentum=0.9),rmsprop", "--quiet", "--out",
                     str(tmp_path / "cmp"), "train.epochs=2")
    assert result.returncode == 0, result.stderr
    rows = [line.split("  ")[0].strip() for line in result.stdout.splitlines()[2:5]]
    assert rows == ["adam", "sgd(lr=0.1, momentum=0.9)", "rmsprop"]
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text(encoding="utf-8"))
    variant = next(v for v in report["variants"] if v["label"].startswith("sgd"))
    assert variant["error"] is None
    assert variant["recipe"]["optimizer"]["momentum"] == 0.9
    # The variant trains exactly as a run of the recipe with that optimizer.
    alone = run(small | {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9}},
                backend="torch", out=tmp_path / "alone", progress=False)
    assert _without_seconds(variant["history"]) == _without_seconds(alone.history)
