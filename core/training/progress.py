"""What ``optiplug run`` and ``optiplug compare`` show while they train, on stderr.

Two displays, chosen by :func:`progress_display`:

- **bars** (:class:`BatchBars`, drawn by `tqdm <https://tqdm.github.io>`_): a bar that moves
  with every batch and shows the *running loss*, the sample-weighted mean of the epoch's batch
  losses so far (at the end of the epoch exactly the ``train_loss`` of ``metrics.csv``). ``run``
  leaves one bar per epoch, finished with the epoch's validation metrics; ``compare`` leaves one
  bar per variant, over all of its epochs (variants train one after another, so each bar has a
  line of its own and the finished ones stay readable above the moving one). Shown by default
  when the stream is a terminal; ``--progress`` forces them on (a pipe then receives tqdm's
  carriage-return updates), ``--no-progress`` off.
- **lines** (:class:`EpochLines`): one plain line per finished epoch (``compare``: per finished
  variant), nothing redrawn: what a CI log or a pipe gets by default.

tqdm's own environment variables apply to the bars (``TQDM_MININTERVAL``, ``TQDM_MINITERS``,
``TQDM_NCOLS``, ``TQDM_DISABLE``, ...), read when tqdm is first imported.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Protocol, TextIO

__all__ = ["BatchBars", "EpochLines", "ProgressDisplay", "format_loss", "is_terminal",
           "progress_display"]


class ProgressDisplay(Protocol):
    """What the training commands call while a run trains."""

    def batch(self, loss: float, size: int) -> None:
        """One optimizer step done on ``size`` samples whose mean loss was ``loss``."""

    def epoch(self, record: dict[str, Any], elapsed: float | None = None) -> None:
        """An epoch finished with the metrics ``record`` (``elapsed``: seconds so far)."""

    def close(self) -> None:
        """The run ended (finished, failed or interrupted)."""


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def format_loss(value: float | None) -> str:
    """A loss as the bars show it: four significant digits (``nan`` and ``inf`` as such)."""
    if value is None:
        return "-"
    return f"{value:.4g}" if math.isfinite(value) else str(value)


def _epoch_text(record: dict[str, Any]) -> str:
    """``val_loss=... val_acc=...`` of a finished epoch."""
    accuracy = record.get("val_accuracy")
    return (f"val_loss={format_loss(record['val_loss'])}"
            + (f" val_acc={accuracy:.2%}" if accuracy is not None else ""))


class BatchBars:
    """tqdm bars that move with every batch, showing the running loss.

    Args:
        total_epochs: The run's last epoch (the total, counting resumed epochs).
        batches_per_epoch: Optimizer steps per epoch.
        stream: Where to draw (``sys.stderr`` by default).
        label: Shown before the bar (``compare``: the variant, padded to one width).
        start_epoch: Epochs already finished (a resumed run).
        per_epoch: One bar per epoch (``run``); else one bar over all epochs (``compare``).
    """

    def __init__(self, total_epochs: int, batches_per_epoch: int, *,
                 stream: TextIO | None = None, label: str = "", start_epoch: int = 0,
                 per_epoch: bool = True) -> None:
        self.total_epochs = total_epochs
        self.batches_per_epoch = batches_per_epoch
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.per_epoch = per_epoch
        self.finished = start_epoch
        self._bar: Any = None
        self._loss_sum = 0.0
        self._samples = 0
        self._last = ""

    def _open(self) -> Any:
        from tqdm import tqdm

        epoch = self.finished + 1
        width = len(str(self.total_epochs))
        if self.per_epoch:
            desc = f"{self.label}  " if self.label else ""
            desc += f"epoch {epoch:>{width}}/{self.total_epochs}"
            total = self.batches_per_epoch
        else:
            desc = self.label
            total = self.batches_per_epoch * (self.total_epochs - self.finished)
        # Explicit arguments would override tqdm's environment variables: pass only the layout.
        return tqdm(total=total, desc=desc, file=self.stream, unit="batch", leave=True,
                    dynamic_ncols=is_terminal(self.stream))

    def _postfix(self, text: str) -> str:
        if self.per_epoch:
            return text
        width = len(str(self.total_epochs))
        return f"epoch {self.finished + 1:>{width}}/{self.total_epochs} {text}"

    def batch(self, loss: float, size: int) -> None:
        """Advance the bar by one batch and show the running loss of the epoch."""
        if self._bar is None:
            self._bar = self._open()
        self._loss_sum += loss * size
        self._samples += size
        # Same arithmetic as the runners' epoch mean: the last value equals train_loss.
        running = self._loss_sum / self._samples
        self._bar.set_postfix_str(self._postfix(f"loss={format_loss(running)}"), refresh=False)
        self._bar.update(1)

    def epoch(self, record: dict[str, Any], elapsed: float | None = None) -> None:
        """Finish the epoch: its train loss and validation metrics stay on the bar."""
        if self._bar is None:
            self._bar = self._open()
        text = f"loss={format_loss(record['train_loss'])} {_epoch_text(record)}"
        self._bar.set_postfix_str(self._postfix(text), refresh=False)
        self.finished = int(record["epoch"])
        self._loss_sum, self._samples = 0.0, 0
        if self.per_epoch or self.finished >= self.total_epochs:
            self._bar.close()
            self._bar = None
        else:
            self._bar.refresh()

    def close(self) -> None:
        """Close an unfinished bar (a failed or interrupted run), leaving it as it got."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class EpochLines:
    """One plain line per finished epoch, for logs and pipes.

    Args:
        total: The run's last epoch.
        label: Shown before each line (the variant in ``compare``).
        stream: Where to write; ``sys.stderr`` by default.
        every_epoch: A line per epoch; else only the last epoch's (``compare``).
    """

    def __init__(self, total: int, *, label: str = "", stream: TextIO | None = None,
                 every_epoch: bool = True) -> None:
        self.total = total
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.every_epoch = every_epoch
        self.start = time.perf_counter()

    def batch(self, loss: float, size: int) -> None:
        """Nothing: lines are written per epoch."""

    def epoch(self, record: dict[str, Any], elapsed: float | None = None) -> None:
        """Write the metrics of a finished epoch."""
        elapsed = time.perf_counter() - self.start if elapsed is None else elapsed
        epoch = int(record["epoch"])
        if not (self.every_epoch or epoch >= self.total):
            return
        accuracy = record.get("val_accuracy")
        text = (f"epoch {epoch:>{len(str(self.total))}}/{self.total}  "
                f"loss {_number(record['train_loss'])}  val_loss {_number(record['val_loss'])}"
                + (f"  val_acc {accuracy:6.2%}" if accuracy is not None else "")
                + f"  {elapsed:6.1f}s")
        prefix = f"{self.label}  " if self.label else ""
        self.stream.write(f"{prefix}{text}\n")
        self.stream.flush()

    def close(self) -> None:
        """Nothing to finish: every line is complete when written."""


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return f"{value!s:>8}"
    return f"{value:8.4f}"


def progress_display(total_epochs: int, batches_per_epoch: int, *, stream: TextIO,
                     bar: bool | None, label: str = "", start_epoch: int = 0,
                     per_epoch: bool = True) -> ProgressDisplay:
    """The display for one run: :class:`BatchBars` or :class:`EpochLines`.

    Args:
        bar: Per-batch bars: ``True`` always, ``False`` never, ``None`` when ``stream`` is a
            terminal.
        per_epoch: ``run``'s layout (a bar or a line per epoch); else ``compare``'s (one per
            variant).
    """
    if bar is None:
        bar = is_terminal(stream)
    if bar:
        return BatchBars(total_epochs, batches_per_epoch, stream=stream, label=label,
                         start_epoch=start_epoch, per_epoch=per_epoch)
    return EpochLines(total_epochs, label=label, stream=stream, every_epoch=per_epoch)
