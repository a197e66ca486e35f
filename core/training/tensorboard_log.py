"""TensorBoard event files for ``optiplug run --tensorboard DIR`` and ``compare``.

Written with TensorBoard's own framework-free event-file writer and protocol buffers (the
pieces ``torch.utils.tensorboard`` builds on; they need only NumPy and protobuf), so the NumPy
backend logs without torch or TensorFlow. Each epoch is one event holding all of its scalars
(``tensorboard.summary.Writer`` would write one event per scalar, through a ten-event queue
that makes the training thread wait for the writer thread: 5 ms per epoch of a 12-layer
model, against 0.5 ms here, most of it the flush; ``benchmarks/logging_overhead.py``).
Install the writer with ``pip install 'optiplug[logging]'``; without it ``--tensorboard``
stops before training with a one-line error saying so. CSV and JSON metrics are written
either way.

Every epoch adds these scalars (scalar-plugin tensors, as ``tensorboard.summary.Writer``
writes them) at step = epoch number, each the number of ``metrics.json`` rounded to float32
(TensorBoard's scalar type: its fast loader, the default, shows no float64 scalar):

========================  ====================================================================
tag                       value
========================  ====================================================================
``loss/train``            ``train_loss``: mean over the epoch's samples, as trained on
``loss/val``              ``val_loss``: the model at the end of the epoch
``accuracy/train``        ``train_accuracy`` (classification only)
``accuracy/val``          ``val_accuracy`` (classification only)
``lr``                    ``lr``: the first param group's learning rate during the epoch
``seconds``               ``seconds``: wall time of the epoch
``grad_norm/<layer>``     mean weight-gradient L2 norm of the layer over the epoch's steps
``act_mean/<layer>``      mean of the hidden layer's activations (first batch of the epoch)
``act_std/<layer>``       their standard deviation
========================  ====================================================================

Layout: ``run`` writes ``DIR/<run folder name>/``, ``compare`` writes
``DIR/<compare folder name>/<variant>/`` (one TensorBoard run per variant), so
``tensorboard --logdir DIR`` shows every run and variant side by side. The folder of a run
holds exactly that run's events: event files already in it are replaced, and a resumed run
rewrites the epochs it keeps from its checkpoint before it continues, so epochs trained again
after a crash are never listed twice.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from ..errors import OptiplugError

__all__ = ["EXTRA", "MissingPackageError", "TensorBoardLog", "epoch_scalars",
           "require_tensorboard", "run_name"]

EXTRA: Final = "pip install 'optiplug[logging]'"

_EVENT_FILES: Final = "events.out.tfevents.*"

_DESCRIPTIONS: Final = {
    "loss/train": "mean training loss over the epoch's samples, each as trained on",
    "loss/val": "validation loss of the model at the end of the epoch",
    "accuracy/train": "training accuracy over the epoch's samples, each as trained on",
    "accuracy/val": "validation accuracy of the model at the end of the epoch",
    "lr": "learning rate of the first param group during the epoch",
    "seconds": "wall time of the epoch",
    "grad_norm": "mean L2 norm of the layer's weight gradient over the epoch's steps",
    "act_mean": "mean of the layer's activations on the epoch's first batch",
    "act_std": "standard deviation of the layer's activations on the epoch's first batch",
}


class MissingPackageError(OptiplugError, ImportError):
    """An optional package that the asked-for feature needs is not installed."""


def require_tensorboard() -> None:
    """Check that the ``tensorboard`` package can be imported, before any work starts.

    Raises:
        MissingPackageError: it is not installed; the message says what to install.
    """
    try:
        missing = importlib.util.find_spec("tensorboard") is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        raise MissingPackageError(f"--tensorboard needs the tensorboard package: {EXTRA}")


def run_name(label: str) -> str:
    """A folder name for a TensorBoard run: ``label`` with path separators and control
    characters replaced (``optimizer=sgd(lr=0.1)`` stays as it is)."""
    name = re.sub(r"[\x00-\x1f/\\:*?\"<>|]", "_", label).strip().strip(".")
    return name or "_"


def epoch_scalars(record: dict[str, Any]) -> list[tuple[str, float]]:
    """The ``(tag, value)`` scalars of one epoch's metrics record, in a fixed order.

    Metrics that are ``None`` (accuracy in regression, statistics a layer has not) are left
    out; ``NaN`` and infinities (a diverged run) are kept.
    """
    scalars = [(tag, record.get(key)) for tag, key in (
        ("loss/train", "train_loss"), ("loss/val", "val_loss"),
        ("accuracy/train", "train_accuracy"), ("accuracy/val", "val_accuracy"),
        ("lr", "lr"), ("seconds", "seconds"))]
    for layer, stats in (record.get("layers") or {}).items():
        scalars.extend((f"{name}/{layer}", stats.get(name))
                       for name in ("grad_norm", "act_mean", "act_std"))
    return [(tag, float(value)) for tag, value in scalars if value is not None]


class TensorBoardLog:
    """The event files of one run: one call to :meth:`add_epoch` per finished epoch.

    Args:
        log_dir: The run's own folder (created if missing). Event files already in it are
            removed once ``history`` is rewritten, so it holds this run's events only.
        history: Epochs already trained (a resumed run): written first, with their recorded
            numbers.

    Raises:
        MissingPackageError: ``tensorboard`` is not installed.
    """

    def __init__(self, log_dir: str | Path, history: Iterable[dict[str, Any]] = ()) -> None:
        require_tensorboard()
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
        from tensorboard.plugins.scalar import metadata
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event, self._summary, self._tensor = (event_pb2.Event, summary_pb2.Summary,
                                                    tensor_pb2.TensorProto)
        self._metadata = summary_pb2.SummaryMetadata
        self._plugin = self._metadata.PluginData(plugin_name=metadata.PLUGIN_NAME)
        self._scalar_class = summary_pb2.DATA_CLASS_SCALAR
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        stale = sorted(self.log_dir.glob(_EVENT_FILES))
        self._writer: Any = EventFileWriter(str(self.log_dir))
        self._described: set[str] = set()
        for record in history:
            self.add_epoch(record, flush=False)
        self.flush()
        # Only now that the kept epochs are on disk in the new file: a crash in between
        # leaves them twice, never lost, and the next start removes the old file again.
        for path in stale:
            path.unlink(missing_ok=True)

    def add_epoch(self, record: dict[str, Any], *, flush: bool = True) -> None:
        """Write the scalars of one finished epoch (step = its epoch number) as one event."""
        event = self._event(wall_time=time.time(), step=int(record["epoch"]))
        for tag, value in epoch_scalars(record):
            value_proto = event.summary.value.add(tag=tag, tensor=self._tensor(
                dtype="DT_FLOAT", float_val=[value]))
            if tag not in self._described:
                # TensorBoard reads a tag's kind and description from its first event.
                self._described.add(tag)
                value_proto.metadata.CopyFrom(self._metadata(
                    plugin_data=self._plugin, data_class=self._scalar_class,
                    summary_description=_DESCRIPTIONS.get(tag) or _DESCRIPTIONS.get(
                        tag.split("/")[0], "")))
        self._writer.add_event(event)
        if flush:
            self.flush()

    def flush(self) -> None:
        """Put everything written so far on disk."""
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.close()
