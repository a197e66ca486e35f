"""Progress of ``optiplug run`` and ``compare``: tqdm bars that move with every batch and show
the running loss, plain lines in logs and pipes, nothing with ``--quiet``.

The bars are read from the real command's stderr (``--progress`` forces them onto a pipe;
``TQDM_MININTERVAL=0 TQDM_MINITERS=1``, tqdm's own settings, make it draw every update) and
checked against the metrics files the run writes and against the batch losses of the same
recipe trained again in this process.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from optiplug.cli import main
from optiplug.training.loop import Trainer
from optiplug.training.progress import BatchBars, EpochLines, progress_display
from optiplug.training.recipe import load_recipe

from .conftest import small_recipe

BACKENDS = ["numpy", pytest.param("torch", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("torch"), reason="torch is not installed"))]

# One drawn state of a bar: "DESC: 38%|###  | 3/8 [00:00<00:00, 9.1batch/s, POSTFIX]".
STATE = re.compile(r"^(?P<desc>.*?): +\d+%\|[^|]*\| (?P<n>\d+)/(?P<total>\d+) "
                   r"\[[^,\]]*(?:, [^,\]]*batch/s)?(?:, (?P<postfix>[^\]]*))?\]\s*$")


def _optiplug(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}
    env.pop("TQDM_DISABLE", None)
    process = subprocess.run([sys.executable, "-m", "optiplug", *args], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=180)
    assert process.returncode == 0, process.stderr
    return process


def _states(stderr: str) -> list[dict[str, Any]]:
    """Every state the bars drew, in order (tqdm separates them with carriage returns)."""
    states = []
    for chunk in re.split(r"[\r\n]", stderr):
        match = STATE.match(chunk)
        if match:
            states.append({"desc": match["desc"].strip(), "n": int(match["n"]),
                           "total": int(match["total"]), "postfix": match["postfix"] or ""})
    return states


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _batch_losses(run_dir: Path) -> list[list[tuple[float, int]]]:
    """The (loss, size) of every batch, per epoch, of the run's recipe trained again here."""
    trainer = Trainer(load_recipe(run_dir / "config.yaml"))
    epochs: list[list[tuple[float, int]]] = []
    for _ in range(trainer.recipe.train.epochs):
        epochs.append([])
        trainer.run_epoch(on_batch=lambda loss, size: epochs[-1].append((loss, size)))
    return epochs


def _running_means(batches: list[tuple[float, int]]) -> list[float]:
    total = count = 0.0
    means = []
    for loss, size in batches:
        total += loss * size
        count += size
        means.append(total / count)
    return means


def test_run_bars_move_per_batch_with_the_running_loss(tmp_path: Path,
                                                       recipe_file: Any) -> None:
    # 300 samples: 240 to train in batches of 50, the last one of 40 (a weighted mean).
    path = recipe_file(small_recipe(batch_size=50))
    done = _optiplug("run", str(path), "--out", "r", "--progress", cwd=tmp_path)
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"]
    batches = _batch_losses(tmp_path / "r")
    assert [[size for _, size in epoch] for epoch in batches] == [[50, 50, 50, 50, 40]] * 3
    states = _states(done.stderr)
    for epoch, record in enumerate(history, start=1):
        drawn = [s for s in states if s["desc"] == f"epoch {epoch}/3"]
        assert drawn and all(s["total"] == 5 for s in drawn)
        moving = [s for s in drawn if s["n"] > 0 and "val_loss" not in s["postfix"]]
        # Every batch drawn once, in order, with the mean of the batch losses so far.
        assert [s["n"] for s in moving] == [1, 2, 3, 4, 5]
        means = _running_means(batches[epoch - 1])
        assert [s["postfix"] for s in moving] == [f"loss={_fmt(m)}" for m in means]
        # The last running mean is the epoch's train_loss in metrics.json, bit for bit.
        assert means[-1] == record["train_loss"]
        final = drawn[-1]
        assert final["n"] == 5
        assert final["postfix"] == (f"loss={_fmt(record['train_loss'])} "
                                    f"val_loss={_fmt(record['val_loss'])} "
                                    f"val_acc={record['val_accuracy']:.2%}")
    assert "epoch 1/3  loss" not in done.stderr  # bars replace the plain lines


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_backend_hands_the_bar_the_losses_it_averages(
        backend: str, tmp_path: Path, recipe_file: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipe = small_recipe(batch_size=50, backend=backend)
    trainer = Trainer(load_recipe(recipe))
    for _ in range(3):
        batches: list[tuple[float, int]] = []
        record = trainer.run_epoch(on_batch=lambda loss, size, seen=batches: seen.append(
            (loss, size)))
        assert [size for _, size in batches] == [50, 50, 50, 50, 40]
        assert _running_means(batches)[-1] == record["train_loss"]
    # stderr is captured (not a terminal): --progress forces the bars.
    assert main(["run", str(recipe_file(recipe)), "--out", str(tmp_path / "r"),
                 "--progress"]) == 0
    history = json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in trainer.history]
    states = _states(capsys.readouterr().err)
    for epoch, record in enumerate(history, start=1):
        final = [s for s in states if s["desc"] == f"epoch {epoch}/3"][-1]
        assert (final["n"], final["total"]) == (5, 5)
        assert final["postfix"] == (f"loss={_fmt(record['train_loss'])} "
                                    f"val_loss={_fmt(record['val_loss'])} "
                                    f"val_acc={record['val_accuracy']:.2%}")


def test_compare_draws_one_bar_per_variant_over_all_its_epochs(
        tmp_path: Path, recipe_file: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe_file(small_recipe(epochs=2))
    # stderr is captured (not a terminal): --progress forces the bars.
    assert main(["compare", str(path), "--vary", "optimizer=adam,sgd(lr=0.1)", "--out",
                 str(tmp_path / "c"), "--progress"]) == 0
    variants = json.loads((tmp_path / "c" / "compare.json").read_text())["variants"]
    states = _states(capsys.readouterr().err)
    # Variants train one after the other: each one's bar is drawn, then finished, in turn.
    labels = [s["desc"] for s in states]
    assert labels == sorted(labels, key=["adam", "sgd(lr=0.1)"].index)
    assert set(labels) == {"adam", "sgd(lr=0.1)"}
    for variant in variants:
        drawn = [s for s in states if s["desc"] == variant["label"]]
        assert {s["total"] for s in drawn} == {16}  # 2 epochs of 8 batches, one bar
        counts = [s["n"] for s in drawn]
        assert counts == sorted(counts) and counts[0] == 0 and counts[-1] == 16
        for epoch, record in enumerate(variant["history"], start=1):
            # Each epoch's end is drawn with that epoch's metrics, at 8 * epoch batches.
            end = [s for s in drawn if "val_loss" in s["postfix"]
                   and s["postfix"].startswith(f"epoch {epoch}/2 ")]
            assert end and {s["n"] for s in end} == {8 * epoch}
            assert end[-1]["postfix"] == (
                f"epoch {epoch}/2 loss={_fmt(record['train_loss'])} "
                f"val_loss={_fmt(record['val_loss'])} val_acc={record['val_accuracy']:.2%}")


def test_a_pipe_gets_plain_lines_by_default_and_nothing_when_quiet(
        tmp_path: Path, recipe_file: Any, capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe_file(small_recipe())
    for flags, out in (([], "a"), (["--no-progress"], "b")):
        assert main(["run", str(path), "--out", str(tmp_path / out), *flags]) == 0
        err = capsys.readouterr().err
        history = json.loads((tmp_path / out / "metrics.json").read_text())["epochs"]
        assert "\r" not in err and "batch/s" not in err
        assert [line.split("  val_acc")[0] for line in err.splitlines()] == [
            f"epoch {r['epoch']}/3  loss {r['train_loss']:8.4f}  val_loss {r['val_loss']:8.4f}"
            for r in history]
    assert main(["run", str(path), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_quiet_and_progress_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["run", "--quiet", "--progress"])
    assert caught.value.code == 2
    assert "not allowed with argument --quiet" in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_are_the_default_on_a_terminal_only() -> None:
    assert isinstance(progress_display(3, 8, stream=_Terminal(), bar=None), BatchBars)
    assert isinstance(progress_display(3, 8, stream=io.StringIO(), bar=None), EpochLines)
    assert isinstance(progress_display(3, 8, stream=io.StringIO(), bar=True), BatchBars)
    assert isinstance(progress_display(3, 8, stream=_Terminal(), bar=False), EpochLines)


def _record(epoch: int) -> dict[str, object]:
    return {"epoch": epoch, "train_loss": 0.5 / epoch, "val_loss": 0.25,
            "val_accuracy": 0.875}


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = EpochLines(2, stream=stream)
    progress.epoch(_record(1), elapsed=1.0)
    progress.epoch(_record(2), elapsed=2.5)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "epoch 1/2  loss   0.5000  val_loss   0.2500  val_acc 87.50%     1.0s",
        "epoch 2/2  loss   0.2500  val_loss   0.2500  val_acc 87.50%     2.5s"]


def test_only_the_last_line_per_run_when_asked() -> None:
    stream = io.StringIO()
    progress = EpochLines(2, label="adam", stream=stream, every_epoch=False)
    progress.epoch(_record(1), elapsed=1.0)
    progress.epoch(_record(2), elapsed=2.0)
    assert stream.getvalue().splitlines() == [
        "adam  epoch 2/2  loss   0.2500  val_loss   0.2500  val_acc 87.50%     2.0s"]
