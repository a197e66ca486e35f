"""``--tensorboard DIR``: TensorBoard event files from ``run`` and ``compare``.

The events are read back with TensorBoard's own ``EventAccumulator`` and every scalar is
compared with the run's ``metrics.json`` / ``compare.json`` (and ``metrics.csv``): TensorBoard
stores scalars as float32, so each must be exactly the file's number rounded to float32, at
step = epoch, and no tag may be missing or extra.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiplug.cli import main

from .conftest import small_recipe

BACKENDS = ["numpy", pytest.param("torch", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("torch"), reason="torch is not installed"))]

needs_tensorboard = pytest.mark.skipif(
    not __import__("importlib").util.find_spec("tensorboard"),
    reason="tensorboard is not installed (pip install 'optiplug[logging]')")


def read_events(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard run in ``folder``: tag to ``(step, value)`` in order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    accumulator.Reload()
    scalars = {}
    for tag in accumulator.Tags()["tensors"]:
        assert accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        events = accumulator.Tensors(tag)
        values = [tensor_util.make_ndarray(event.tensor_proto) for event in events]
        assert all(value.dtype == np.float32 and value.shape == () for value in values)
        scalars[tag] = [(event.step, float(value)) for event, value in zip(events, values,
                                                                           strict=True)]
    return scalars


def expected_scalars(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """What the events must hold for a metrics history, each value rounded to float32."""
    expected: dict[str, list[tuple[int, float]]] = {}

    def add(tag: str, epoch: int, value: float | None) -> None:
        if value is not None:
            expected.setdefault(tag, []).append((epoch, float(np.float32(value))))

    for record in history:
        epoch = record["epoch"]
        for tag, key in (("loss/train", "train_loss"), ("loss/val", "val_loss"),
                         ("accuracy/train", "train_accuracy"),
                         ("accuracy/val", "val_accuracy"), ("lr", "lr"),
                         ("seconds", "seconds")):
            add(tag, epoch, record[key])
        for layer, stats in record["layers"].items():
            for name in ("grad_norm", "act_mean", "act_std"):
                add(f"{name}/{layer}", epoch, stats.get(name))
    return expected


def assert_same(events: dict[str, list[tuple[int, float]]],
                expected: dict[str, list[tuple[int, float]]]) -> None:
    assert sorted(events) == sorted(expected)
    for tag, points in expected.items():
        assert [step for step, _ in events[tag]] == [step for step, _ in points], tag
        for (_, got), (_, want) in zip(events[tag], points, strict=True):
            assert got == want or (math.isnan(got) and math.isnan(want)), tag


def _history(run_dir: Path) -> list[dict[str, Any]]:
    return json.loads((run_dir / "metrics.json").read_text())["epochs"]  # type: ignore[no-any-return]


@needs_tensorboard
@pytest.mark.parametrize("backend", BACKENDS)
def test_run_writes_every_metric_as_a_scalar_equal_to_the_metrics_files(
        backend: str, tmp_path: Path, recipe_file: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    recipe = small_recipe()
    recipe["scheduler"] = {"name": "step", "step_size": 1, "gamma": 0.5}
    path = recipe_file(recipe)
    out = tmp_path / "run"
    assert main(["run", str(path), "--backend", backend, "--out", str(out), "--quiet",
                 "--tensorboard", str(tmp_path / "tb")]) == 0
    assert f"tensorboard: {tmp_path / 'tb' / 'run'}" in capsys.readouterr().out
    history = _history(out)
    events = read_events(tmp_path / "tb" / "run")
    expected = expected_scalars(history)
    assert {"loss/train", "accuracy/val", "lr", "grad_norm/layers.0", "grad_norm/output",
            "act_std/layers.0"} <= set(expected)
    assert_same(events, expected)
    lr = recipe["optimizer"]["lr"]  # halved every epoch by the step scheduler
    assert events["lr"] == [(k + 1, float(np.float32(lr * 0.5**k))) for k in range(3)]
    with (out / "metrics.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(int(row["epoch"]), float(np.float32(float(row["val_loss"])))) for row in rows] \
        == events["loss/val"]


@needs_tensorboard
def test_compare_writes_one_tensorboard_run_per_variant(tmp_path: Path,
                                                       recipe_file: Any) -> None:
    path = recipe_file(small_recipe(epochs=2))
    assert main(["compare", str(path), "--vary", "optimizer=adam,sgd(lr=0.1),adam", "--out",
                 str(tmp_path / "c"), "--quiet", "--tensorboard", str(tmp_path / "tb")]) == 0
    variants = json.loads((tmp_path / "c" / "compare.json").read_text())["variants"]
    folders = ["adam", "sgd(lr=0.1)", "adam-2"]  # a repeated label gets a folder of its own
    assert sorted(p.name for p in (tmp_path / "tb" / "c").iterdir()) == sorted(folders)
    for variant, folder in zip(variants, folders, strict=True):
        assert_same(read_events(tmp_path / "tb" / "c" / folder),
                    expected_scalars(variant["history"]))
    assert read_events(tmp_path / "tb" / "c" / "adam")["loss/train"] != \
        read_events(tmp_path / "tb" / "c" / "sgd(lr=0.1)")["loss/train"]


@needs_tensorboard
def test_a_resumed_numpy_run_continues_its_events_without_repeating_an_epoch(
        tmp_path: Path, recipe_file: Any) -> None:
    # Checkpoints after epochs 2 and 4; killed after epoch 3, whose events were written.
    path = recipe_file(small_recipe(epochs=4, checkpoint_every=2))
    tb, killed = tmp_path / "tb", tmp_path / "r"
    # The NumPy backend logs without torch: the killed process cannot import it.
    script = textwrap.dedent(f"""
        import sys

        class NoTorch:  # as if torch were not installed: importing it fails
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, NoTorch())
        from optiplug.cli import main
        sys.exit(main(["run", {str(path)!r}, "--out", {str(killed)!r}, "--tensorboard",
                       {str(tb)!r}, "--kill-after-epoch", "3", "--quiet"]))
    """)
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert process.returncode == -signal.SIGKILL, process.stderr
    before = read_events(tb / "r")
    assert [step for step, _ in before["loss/train"]] == [1, 2, 3]
    assert main(["run", "--resume", str(killed), "--tensorboard", str(tb), "--quiet"]) == 0
    history = _history(killed)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    after = read_events(tb / "r")
    # Epoch 3 was trained again after the checkpoint of epoch 2: listed once, as retrained.
    assert_same(after, expected_scalars(history))
    assert after["loss/train"][:3] == before["loss/train"]  # deterministic: same numbers
    assert len(list((tb / "r").glob("events.out.tfevents.*"))) == 1
    # The same run uninterrupted writes the same scalars (wall times aside).
    assert main(["run", str(path), "--out", str(tmp_path / "whole"), "--tensorboard", str(tb),
                 "--quiet"]) == 0
    whole = read_events(tb / "whole")
    assert {tag: v for tag, v in whole.items() if tag != "seconds"} == \
        {tag: v for tag, v in after.items() if tag != "seconds"}


@pytest.mark.parametrize("command", ["run", "compare"])
def test_without_tensorboard_the_flag_fails_before_training(
        command: str, tmp_path: Path, recipe_file: Any, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    path = recipe_file(small_recipe())
    out = tmp_path / "out"
    assert main([command, str(path), "--out", str(out), "--tensorboard",
                 str(tmp_path / "tb")]) == 1
    captured = capsys.readouterr()
    assert captured.err == ("optiplug: error: --tensorboard needs the tensorboard package: "
                            "pip install 'optiplug[logging]'\n")
    assert not out.exists() and not (tmp_path / "tb").exists()


