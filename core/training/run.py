"""``optiplug run``: train one recipe and write a run folder.

A run folder holds::

    config.yaml          the resolved recipe (every default filled in); --resume reads it
    metrics.csv          one row per epoch (written after every epoch)
    metrics.json         the same, plus the final metrics
    checkpoints/last.npz (NumPy) or last.pt (torch): the latest checkpoint
    curves.png           loss and accuracy per epoch, train and validation (needs matplotlib:
                         without it the run notes that the plot was skipped)
    layers.csv, gradients.png   per-layer gradient norms and activation statistics
    .lock                held by the process training into the folder (see ``lock``)

Every file is written atomically (``checkpoint.atomic_write``), so a crash at any moment leaves
each file either as it was or whole, and ``--resume`` continues from the last checkpoint (or
from scratch, if the run died before its first one) with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from ..errors import ConfigError, ConfigIssue
from .checkpoint import atomic_write, remove_stale_temporaries, write_text_atomic
from .diagnostics import layers_csv, plot_gradients
from .lock import RunFolderInUseError, RunFolderLock
from .loop import METRICS, Trainer
from .progress import progress_display
from .recipe import Recipe, fingerprint, load_recipe, parse_recipe, recipe_to_dict
from .tensorboard_log import TensorBoardLog, require_tensorboard

__all__ = ["RunFolderInUseError", "RunResult", "default_run_dir", "format_table", "plot_curves",
           "plot_or_skip", "read_run_recipe", "run", "summary", "write_metrics"]

CONFIG_FILE = "config.yaml"


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        run_dir: The run folder.
        recipe: The recipe that was trained.
        history: Metrics per epoch.
        resumed_from: The epoch the run was resumed after, or ``None``.
        notes: What the run left out and how to get it.
        tensorboard_dir: Where the TensorBoard event files are (``None``: not asked for).
    """

    run_dir: Path
    recipe: Recipe
    history: list[dict[str, Any]]
    resumed_from: int | None = None
    notes: list[str] = field(default_factory=list)
    """What the run left out and how to get it (``curves.png`` without matplotlib)."""
    tensorboard_dir: Path | None = None
    """The folder of the run's TensorBoard event files, if any were written."""

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's metrics."""
        return self.history[-1]


def default_run_dir(name: str, root: str | os.PathLike[str] = "runs") -> Path:
    """``runs/<name>-<UTC timestamp>``, made unique with a counter if taken."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = Path(root) / f"{name}-{stamp}"
    candidate, counter = base, 1
    while candidate.exists():
        counter += 1
        candidate = base.with_name(f"{base.name}-{counter}")
    return candidate


def _yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    from ..config import yaml_dumper

    return str(yaml.dump(data, Dumper=yaml_dumper(), sort_keys=False, default_flow_style=None))


def read_run_recipe(run_dir: Path) -> Recipe:
    """The resolved recipe a run folder was started with.

    Raises:
        ConfigError: not a run folder, or its config no longer validates.
    """
    config = run_dir / CONFIG_FILE
    if not config.is_file():
        raise ConfigError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    return load_recipe(config)


def write_metrics(run_dir: Path, history: list[dict[str, Any]], *,
                  extra: dict[str, Any] | None = None, durable: bool = True) -> None:
    """Write ``metrics.csv`` and ``metrics.json`` atomically.

    Args:
        durable: Flush them to disk (``fsync``). The training loop writes them every epoch
            without: after a crash ``--resume`` rewrites both from the checkpoint, so flushing
            them would cost two disk flushes an epoch and buy nothing.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRICS), lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({key: "" if record.get(key) is None else record[key]
                         for key in METRICS})
    write_text_atomic(run_dir / "metrics.csv", buffer.getvalue(), durable=durable)
    document = {"epochs": history, "final": history[-1] if history else None, **(extra or {})}
    write_text_atomic(run_dir / "metrics.json", json.dumps(document, indent=2) + "\n",
                      durable=durable)


def plot_curves(path: Path, series: dict[str, list[dict[str, Any]]], *, title: str,
                overlay: bool = False) -> None:
    """Write a PNG of loss (and accuracy, for classification) per epoch.

    Args:
        series: Label to metrics history; one run has one label.
        overlay: Compare style: one colour per label, validation solid and train dotted.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    has_accuracy = any(r.get("val_accuracy") is not None for h in series.values() for r in h)
    columns = 2 if has_accuracy else 1
    figure, axes = plt.subplots(1, columns, figsize=(6 * columns, 4.2), squeeze=False)
    panels = [("loss", axes[0][0])] + ([("accuracy", axes[0][1])] if has_accuracy else [])
    for metric, axis in panels:
        for index, (label, history) in enumerate(series.items()):
            epochs = [r["epoch"] for r in history]
            color = f"C{index % 10}"
            val = [_nan(r.get(f"val_{metric}")) for r in history]
            train = [_nan(r.get(f"train_{metric}")) for r in history]
            if overlay:
                axis.plot(epochs, val, color=color, label=label)
                axis.plot(epochs, train, color=color, linestyle=":", linewidth=1)
            else:
                axis.plot(epochs, train, color="C0", label="train")
                axis.plot(epochs, val, color="C1", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        if metric == "loss":
            axis.set_yscale("log")
        axis.grid(True, alpha=0.3)
        axis.set_title(f"{metric} (validation solid, train dotted)" if overlay else metric)
    axes[0][-1].legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    try:
        atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=100))
    finally:
        plt.close(figure)


PLOT_EXTRA: Final = "pip install 'optiplug[train]'"


def plot_or_skip(path: Path, series: dict[str, list[dict[str, Any]]], *, title: str,
                 overlay: bool = False) -> str | None:
    """:func:`plot_curves`, or without matplotlib a note saying it was skipped and why.

    Returns:
        ``None`` once the plot is written, else the note (the run is complete without it).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"{path.name} skipped: matplotlib is not installed ({PLOT_EXTRA} adds it)"
    plot_curves(path, series, title=title, overlay=overlay)
    return None


def _nan(value: Any) -> float:
    return math.nan if value is None else float(value)


def format_table(rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the first row is the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(width) if i else cell.ljust(width)
                       for i, (cell, width) in enumerate(zip(row, widths, strict=True)))
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _final_table(history: list[dict[str, Any]]) -> str:
    final = history[-1]
    rows = [["split", "loss", "accuracy"]]
    for split in ("train", "val"):
        accuracy = final.get(f"{split}_accuracy")
        rows.append(["train" if split == "train" else "validation",
                     f"{final[f'{split}_loss']:.4f}",
                     "-" if accuracy is None else f"{accuracy:.2%}"])
    return format_table(rows)


def run(recipe: Recipe | dict[str, Any] | str | os.PathLike[str] | None = None, *,
        out: str | os.PathLike[str] | None = None, resume: str | os.PathLike[str] | None = None,
        backend: str | None = None, epochs: int | None = None, progress: bool = True,
        bar: bool | None = None, tensorboard: str | os.PathLike[str] | None = None,
        stream: TextIO | None = None, kill_after_epoch: int | None = None) -> RunResult:
    """Train a recipe into a run folder, or resume a run folder from its last checkpoint.

    The run folder is locked for the whole call (see :mod:`optiplug.training.lock`): a second
    process training or resuming into it stops with :class:`RunFolderInUseError` naming the
    holder, before it changes anything.

    Args:
        recipe: A recipe (file, mapping or :class:`Recipe`); the default digits recipe if
            ``None``. With ``resume`` it may be left out, else it must match the run's; it
            starts a resumed folder that holds no run yet (killed before writing its config).
        out: The run folder (default ``runs/<name>-<timestamp>``); with ``resume``, the run
            folder itself.
        resume: A run folder to continue from its last checkpoint; one killed before its
            first checkpoint starts again from scratch with its recorded recipe. Temporary
            files left by a killed write are removed.
        backend: Override ``train.backend``.
        epochs: Override ``train.epochs`` (the total, counting resumed epochs).
        progress: Show progress on ``stream`` (stderr); ``False`` shows nothing.
        bar: Per-batch progress bars with the running loss (tqdm): ``None`` when ``stream`` is
            a terminal, else one plain line per epoch (see :mod:`optiplug.training.progress`).
        tensorboard: Also write TensorBoard event files into ``tensorboard/<run folder
            name>/`` (needs ``tensorboard``; see :mod:`optiplug.training.tensorboard_log`).
            A resumed run writes the epochs it keeps again, then continues.
        stream: Where progress goes (``sys.stderr`` by default).
        kill_after_epoch: Testing aid: SIGKILL this process right after that epoch's
            checkpoint, as a crash would.

    Raises:
        ConfigError: invalid recipe, or a recipe that differs from the resumed run's.
        CheckpointError: the run folder's checkpoint is corrupt or mismatched.
        RunFolderInUseError: another process holds the run folder.
        MissingPackageError: ``tensorboard`` is asked for but not installed (checked first).
        OSError: the run folder cannot be written (the last checkpoint stays as it was).
    """
    if tensorboard is not None:
        require_tensorboard()
    stream = stream if stream is not None else sys.stderr
    show = _Show(progress, bar, stream, None if tensorboard is None else Path(tensorboard))
    if resume is not None:
        run_dir = Path(resume)
        if out is not None and Path(out).resolve() != run_dir.resolve():
            raise ConfigError("--out and --resume name different folders; a resumed run "
                              "continues in its own folder")
        given = None if recipe is None else _override(load_recipe(recipe), backend, epochs)
        if not run_dir.is_dir():
            raise ConfigError(f"{run_dir} is not a run folder (no such folder); start a run "
                              f"there with --out {run_dir}")
        with RunFolderLock(run_dir):
            return _resume(run_dir, given, backend, epochs, show, kill_after_epoch)
    resolved = _override(load_recipe(recipe), backend, epochs)
    trainer = Trainer(resolved)
    run_dir = Path(out) if out is not None else _new_run_dir(resolved.name)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunFolderLock(run_dir):
        if (run_dir / CONFIG_FILE).exists():
            raise ConfigError(f"{run_dir} already holds a run; choose another --out or "
                              f"continue it with --resume {run_dir}")
        _clean(run_dir)
        write_text_atomic(run_dir / CONFIG_FILE, _yaml_dump(recipe_to_dict(resolved)))
        return _train(run_dir, trainer, None, show, kill_after_epoch)


@dataclass(frozen=True)
class _Show:
    """How a run reports: progress on ``stream``, and where TensorBoard logs go."""

    progress: bool
    bar: bool | None
    stream: TextIO
    tensorboard: Path | None


def _resume(run_dir: Path, given: Recipe | None, backend: str | None, epochs: int | None,
            show: _Show, kill_after_epoch: int | None) -> RunResult:
    """Continue ``run_dir`` (held by this process) from its checkpoint, or from scratch."""
    _clean(run_dir)
    recorded = (run_dir / CONFIG_FILE).is_file()
    if not recorded:
        if given is None:
            raise ConfigError(f"{run_dir} holds no run yet (no {CONFIG_FILE}: it was stopped "
                              f"before it began); give the recipe to start it there")
        resolved = given
    else:
        resolved = _override(read_run_recipe(run_dir), backend, epochs)
        if given is not None:
            if fingerprint(given) != fingerprint(resolved):
                raise ConfigError([ConfigIssue("", (
                    f"the recipe differs from the one {run_dir} was started with; resume "
                    f"with the run folder alone (--resume {run_dir})"))])
            resolved = given
    trainer = Trainer(resolved)
    if not recorded:  # written once the recipe builds, as for a new run
        write_text_atomic(run_dir / CONFIG_FILE, _yaml_dump(recipe_to_dict(resolved)))
    checkpoint = _checkpoint_path(run_dir, trainer)
    resumed_from = None
    if checkpoint.is_file():
        trainer.load(checkpoint)
        resumed_from = trainer.epoch
    # Metrics of epochs after the checkpoint would be trained again: show what is kept.
    write_metrics(run_dir, trainer.history, durable=False)
    if show.progress:
        show.stream.write(f"resuming {run_dir} after epoch {resumed_from}\n" if resumed_from
                          is not None else
                          f"starting {run_dir} again: it has no checkpoint yet\n")
    return _train(run_dir, trainer, resumed_from, show, kill_after_epoch)


def _clean(run_dir: Path) -> None:
    for folder in (run_dir, run_dir / "checkpoints"):
        remove_stale_temporaries(folder)


def _checkpoint_path(run_dir: Path, trainer: Trainer) -> Path:
    return run_dir / "checkpoints" / f"last{trainer.runner.checkpoint_suffix}"


def _new_run_dir(name: str) -> Path:
    """A fresh ``runs/<name>-<timestamp>`` folder, created here so no other run takes it."""
    while True:
        candidate = default_run_dir(name)
        candidate.parent.mkdir(parents=True, exist_ok=True)
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate


def _train(run_dir: Path, trainer: Trainer, resumed_from: int | None, show: _Show,
           kill_after_epoch: int | None) -> RunResult:
    """Train the held ``run_dir`` to the end: checkpoints, metrics, then the plot."""
    resolved = trainer.recipe
    checkpoint = _checkpoint_path(run_dir, trainer)
    total = resolved.train.epochs
    display = progress_display(total, trainer.batches_per_epoch, stream=show.stream,
                               bar=show.bar, start_epoch=trainer.epoch) if show.progress else None
    tensorboard_dir = None if show.tensorboard is None else show.tensorboard / run_dir.name
    events = None if tensorboard_dir is None else TensorBoardLog(tensorboard_dir,
                                                                 trainer.history)
    elapsed_before = sum(r["seconds"] for r in trainer.history)
    started = time.perf_counter()

    def on_epoch(trainer: Trainer, record: dict[str, Any]) -> None:
        write_metrics(run_dir, trainer.history, durable=False)
        if events is not None:
            events.add_epoch(record)
        if display is not None:
            display.epoch(record, elapsed_before + time.perf_counter() - started)
        if kill_after_epoch is not None and trainer.epoch >= kill_after_epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        trainer.fit(total, checkpoint=checkpoint, on_epoch=on_epoch,
                    on_batch=None if display is None else display.batch)
    finally:
        if display is not None:
            display.close()
        if events is not None:
            events.close()
    history = trainer.history
    write_metrics(run_dir, history, extra={"backend": trainer.runner.backend,
                                           "recipe": resolved.name})
    notes = []
    if history:
        skipped = plot_or_skip(run_dir / "curves.png", {resolved.name: history},
                               title=f"{resolved.name} ({trainer.runner.backend})")
        if skipped:
            notes.append(skipped)
        if history[-1].get("layers"):
            write_text_atomic(run_dir / "layers.csv", layers_csv(history))
            plot_gradients(run_dir / "gradients.png", {resolved.name: history},
                           title=f"{resolved.name}: weight-gradient norm by layer "
                                 f"({trainer.runner.backend})")
    return RunResult(run_dir=run_dir, recipe=resolved, history=history,
                     resumed_from=resumed_from, notes=notes, tensorboard_dir=tensorboard_dir)


def _override(recipe: Recipe, backend: str | None, epochs: int | None) -> Recipe:
    if backend is None and epochs is None:
        return recipe
    data = recipe_to_dict(recipe)
    if backend is not None:
        data["train"]["backend"] = backend
    if epochs is not None:
        data["train"]["epochs"] = epochs
    return parse_recipe(data)


def summary(result: RunResult) -> str:
    """The final metrics table, where the run folder is, and any notes."""
    plotted = not result.notes
    files = "config.yaml, metrics.csv, metrics.json, checkpoints/" + (
        ", curves.png" if plotted else "")
    if result.history and result.history[-1].get("layers"):
        files += ", layers.csv" + (", gradients.png" if plotted else "")
    lines = [_final_table(result.history), f"\nrun folder: {result.run_dir}  ({files})"]
    if result.tensorboard_dir is not None:
        lines.append(f"tensorboard: {result.tensorboard_dir}  (tensorboard --logdir "
                     f"{result.tensorboard_dir.parent})")
    lines.extend(f"note: {note}" for note in result.notes)
    return "\n".join(lines)
