"""The cost of watching a run, measured side by side in one run: time per epoch of the default
digits recipe (small batches: many steps per epoch, the worst case for a per-batch bar) with
nothing shown, with plain lines per epoch, with tqdm bars redrawn per batch (to a discarded
stream, tqdm's default redraw interval), and with TensorBoard events written every epoch;
then the cost of one bar update and of one epoch's events, measured alone.

Each row alternates the settings over the repeats and keeps the best of each (the least
disturbed by other work). Usage:
``python benchmarks/logging_overhead.py [--quick] [--epochs N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optiplug.training.data import load_dataset
from optiplug.training.loop import Trainer
from optiplug.training.progress import ProgressDisplay, progress_display
from optiplug.training.recipe import DEFAULT_RECIPE, parse_recipe

Setup = Callable[[Trainer, Path], tuple[ProgressDisplay | None, Any]]


def _nothing(trainer: Trainer, folder: Path) -> tuple[ProgressDisplay | None, Any]:
    return None, None


def _lines(trainer: Trainer, folder: Path) -> tuple[ProgressDisplay | None, Any]:
    return progress_display(trainer.recipe.train.epochs, trainer.batches_per_epoch,
                            stream=io.StringIO(), bar=False), None


def _bars(trainer: Trainer, folder: Path) -> tuple[ProgressDisplay | None, Any]:
    return progress_display(trainer.recipe.train.epochs, trainer.batches_per_epoch,
                            stream=io.StringIO(), bar=True), None


def _tensorboard(trainer: Trainer, folder: Path) -> tuple[ProgressDisplay | None, Any]:
    from optiplug.training.tensorboard_log import TensorBoardLog

    return None, TensorBoardLog(folder / f"tb-{time.perf_counter_ns()}")


def _seconds_per_epoch(recipe: Any, dataset: Any, setup: Setup, folder: Path) -> float:
    trainer = Trainer(recipe, data=dataset)
    display, events = setup(trainer, folder)

    def on_epoch(trainer: Trainer, record: dict[str, Any]) -> None:
        if events is not None:
            events.add_epoch(record)
        if display is not None:
            display.epoch(record)

    started = time.perf_counter()
    trainer.fit(on_epoch=on_epoch, on_batch=None if display is None else display.batch)
    if display is not None:
        display.close()
    if events is not None:
        events.close()
    return (time.perf_counter() - started) / recipe.train.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 epochs, 3 repeats")
    args = parser.parse_args()
    epochs, repeats = (2, 3) if args.quick else (args.epochs, args.repeats)
    settings: dict[str, Setup] = {"nothing": _nothing, "lines": _lines, "bars": _bars}
    if importlib.util.find_spec("tensorboard") is not None:
        settings["tensorboard"] = _tensorboard
    print(f"{'backend':<7} {'batch':>5} {'steps/epoch':>11} "
          + " ".join(f"{name + ' ms':>14}" for name in settings)
          + " " + " ".join(f"{name + '/nothing':>20}" for name in list(settings)[1:]))
    with tempfile.TemporaryDirectory() as folder:
        for backend in ("numpy", "torch"):
            if backend == "torch" and importlib.util.find_spec("torch") is None:
                continue
            for batch_size in (8, 64):
                data = copy.deepcopy(DEFAULT_RECIPE)
                data["train"].update({"backend": backend, "epochs": epochs,
                                      "batch_size": batch_size, "checkpoint_every": 0})
                recipe = parse_recipe(data)
                dataset = load_dataset(recipe.data, dtype=recipe.train.dtype)
                for setup in settings.values():  # warm-up: caches, lazy imports
                    _seconds_per_epoch(recipe, dataset, setup, Path(folder))
                best = dict.fromkeys(settings, float("inf"))
                for _ in range(repeats):
                    for name, setup in settings.items():
                        best[name] = min(best[name], _seconds_per_epoch(
                            recipe, dataset, setup, Path(folder)))
                steps = Trainer(recipe, data=dataset).batches_per_epoch
                print(f"{backend:<7} {batch_size:>5} {steps:>11} "
                      + " ".join(f"{best[name] * 1e3:>14.1f}" for name in settings) + " "
                      + " ".join(f"{best[name] / best['nothing']:>20.3f}"
                                 for name in list(settings)[1:]))


def per_call() -> None:
    """Microseconds per bar update and per TensorBoard epoch, measured alone."""
    calls = 20_000
    bars = progress_display(1, calls, stream=io.StringIO(), bar=True)
    started = time.perf_counter()
    for _ in range(calls):
        bars.batch(0.5, 32)
    per_batch = (time.perf_counter() - started) / calls
    bars.close()
    print(f"\nbar update (tqdm, default redraw interval): {per_batch * 1e6:.2f} us per batch")
    if importlib.util.find_spec("tensorboard") is None:
        return
    from optiplug.training.tensorboard_log import TensorBoardLog

    layers = {f"layers.{i}": {"grad_norm": 1.0, "act_mean": 0.1, "act_std": 0.9}
              for i in range(12)}
    record = {"epoch": 1, "train_loss": 0.5, "val_loss": 0.4, "train_accuracy": 0.8,
              "val_accuracy": 0.85, "lr": 1e-3, "seconds": 1.0, "layers": layers}
    with tempfile.TemporaryDirectory() as folder:
        events = TensorBoardLog(Path(folder))
        started = time.perf_counter()
        epochs = 200
        for epoch in range(1, epochs + 1):
            events.add_epoch({**record, "epoch": epoch})
        per_epoch = (time.perf_counter() - started) / epochs
        events.close()
    print(f"TensorBoard events of one epoch (12 layers: 42 scalars, flushed): "
          f"{per_epoch * 1e3:.2f} ms per epoch")


if __name__ == "__main__":
    main()
    per_call()
