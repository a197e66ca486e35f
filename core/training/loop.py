"""The training loop shared by both backends: epochs, batches, metrics, checkpoints.

Determinism: the weights come from a generator seeded with ``train.seed``; the order of every
epoch is a permutation drawn from a separate NumPy generator seeded with ``train.seed``, the
same on both backends. A checkpoint holds the model, optimizer, scheduler and both generators,
so a resumed run continues with exactly the numbers of an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError, ConfigIssue
from .checkpoint import CheckpointError, _one_line
from .data import Dataset, load_dataset
from .recipe import Recipe, fingerprint

__all__ = ["METRICS", "Runner", "Trainer", "evaluation_weights", "limited_threads",
           "make_runner"]

METRICS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
           "seconds")
"""Columns of the per-epoch metrics. ``train_*``: averages over the epoch's samples, each
measured as the model was when it trained on it (what scikit-learn's ``loss_curve_`` reports;
no extra pass over the training split). ``val_*``: the model at the end of the epoch, in
evaluation mode. ``lr``: the first param group's learning rate during the epoch. ``seconds``:
wall time of the epoch, the only column that differs between identical runs."""


@contextlib.contextmanager
def evaluation_weights(optimizer: Any) -> Iterator[None]:
    """Evaluate at the optimizer's evaluation weights, if it keeps any.

    An optimizer with ``eval()`` and ``train()`` methods (schedule-free optimizers, weight
    averages, lookahead) swaps its evaluation weights into the parameters on ``eval()`` and
    back on ``train()``; others are left alone.
    """
    swaps = callable(getattr(optimizer, "eval", None)) and callable(
        getattr(optimizer, "train", None))
    if swaps:
        optimizer.eval()
    try:
        yield
    finally:
        if swaps:
            optimizer.train()


class Runner(Protocol):
    """What the loop needs from a backend (see ``model_numpy``/``model_torch``)."""

    backend: str
    checkpoint_suffix: str
    optimizer: Any
    scheduler: Any

    def train_epoch(self, order: NDArray[Any] | None, batch_size: int,
                    after_batch: Callable[[float, int], None] | None = None
                    ) -> tuple[float, float | None]:
        """One pass over the training split; ``after_batch(loss, size)`` is called after
        every optimizer step with the batch's mean loss and its number of samples."""

    def evaluate(self, split: str) -> tuple[float, float | None]: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def save(self, path: Any, meta: dict[str, Any]) -> None: ...

    def layer_stats(self) -> dict[str, dict[str, float | None]] | None: ...

    def read_checkpoint(self, path: Any) -> dict[str, Any]: ...


def make_runner(recipe: Recipe, data: Dataset) -> Runner:
    """The backend's runner; torch is imported only for the torch backend."""
    if recipe.train.backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ConfigError([ConfigIssue("train.backend", (
                "the torch backend needs PyTorch: pip install 'optiplug[torch]'"))]) from None
        from .model_torch import TorchRunner

        return TorchRunner(recipe, data)
    from .model_numpy import NumpyRunner

    return NumpyRunner(recipe, data)


def _wants_metric(step: Callable[..., Any]) -> bool:
    """Whether a scheduler's ``step`` needs a metric (plateau schedulers)."""
    try:
        parameters = inspect.signature(step).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.default is inspect.Parameter.empty and p.kind in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
               for p in parameters)


@contextlib.contextmanager
def limited_threads(threads: int | None, backend: str) -> Iterator[None]:
    """Run the body with at most ``threads`` math-library threads, then restore the setting.

    Tiny matrix products pay more for waking threads than they gain, and badly so on a busy
    machine, so training small models on one thread is faster.
    """
    if threads is None:
        yield
        return
    with contextlib.ExitStack() as stack:
        try:
            from threadpoolctl import threadpool_limits  # type: ignore[import-untyped,unused-ignore]
        except ImportError:
            pass
        else:
            stack.enter_context(threadpool_limits(limits=threads))
        if backend == "torch":
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(threads)
            stack.callback(torch.set_num_threads, previous)
        yield


class Trainer:
    """One training run of a recipe: call :meth:`fit`, or :meth:`run_epoch` epoch by epoch.

    Args:
        recipe: The validated recipe.
        data: The dataset, if already loaded (``compare`` shares one between variants).

    Attributes:
        history: One metrics dict per finished epoch (keys :data:`METRICS`).
        epoch: Number of finished epochs.
        scheduler_interval: ``"batch"`` or ``"epoch"``: when the scheduler steps (the recipe's
            ``train.scheduler_interval``, else the scheduler's declaration); ``None`` without
            a scheduler. A plateau scheduler steps per epoch on the validation loss.
    """

    def __init__(self, recipe: Recipe, *, data: Dataset | None = None) -> None:
        self.recipe = recipe
        self.data = data if data is not None else load_dataset(recipe.data,
                                                               dtype=recipe.train.dtype)
        self.runner = make_runner(recipe, self.data)
        self.order_rng = np.random.default_rng([recipe.train.seed, 1])
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        scheduler = self.runner.scheduler
        self._scheduler_metric = scheduler is not None and _wants_metric(scheduler.step)
        self.scheduler_interval = self._scheduler_interval()
        size = recipe.train.batch_size
        n_train = len(self.data.x_train)
        self.batch_size = n_train if size == "full" else min(int(size), n_train)

    @property
    def lr(self) -> float:
        """The current learning rate of the first param group."""
        return float(self.runner.optimizer.param_groups[0]["lr"])

    def _scheduler_interval(self) -> Literal["batch", "epoch"] | None:
        """When the scheduler steps: the recipe's ``train.scheduler_interval`` if set, else the
        scheduler's own declaration (``SchedulerSpec.step_interval``); ``None`` without one.

        Raises:
            ConfigError: a scheduler that steps on the validation metric set to step per batch.
        """
        if self.runner.scheduler is None:
            return None
        chosen = self.recipe.train.scheduler_interval
        path = "train.scheduler_interval"
        if chosen is None:
            declared = getattr(self.recipe.scheduler, "step_interval", None)
            chosen = declared() if callable(declared) else "epoch"
            path = "scheduler"
        if chosen == "batch" and self._scheduler_metric:
            name = getattr(self.recipe.scheduler, "name", "?")
            raise ConfigError([ConfigIssue(path, (
                f"scheduler {name!r} steps on a validation metric, "
                f"so it can only step once per epoch"))])
        return "batch" if chosen == "batch" else "epoch"

    def _step_scheduler(self, metric: float) -> None:
        scheduler = self.runner.scheduler
        if self._scheduler_metric:
            scheduler.step(metric)
        else:
            scheduler.step()

    @property
    def batches_per_epoch(self) -> int:
        """Optimizer steps per epoch (the last batch may be smaller)."""
        return math.ceil(len(self.data.x_train) / self.batch_size)

    def run_epoch(self, on_batch: Callable[[float, int], None] | None = None
                  ) -> dict[str, Any]:
        """Train one epoch, evaluate both splits, step the scheduler; the epoch's metrics.

        Args:
            on_batch: Called after every optimizer step (and per-batch scheduler step) with
                the batch's mean loss and its number of samples.
        """
        start = time.perf_counter()
        n_train = len(self.data.x_train)
        full = self.batch_size >= n_train
        order = None if full else self.order_rng.permutation(n_train)
        lr = self.lr
        per_batch = self.scheduler_interval == "batch"
        step = self.runner.scheduler.step if per_batch else None
        after_batch: Callable[[float, int], None] | None = None
        if step is not None and on_batch is not None:
            def after_batch(loss: float, size: int) -> None:
                step()
                on_batch(loss, size)
        elif step is not None:
            def after_batch(loss: float, size: int) -> None:
                step()
        else:
            after_batch = on_batch
        train_loss, train_accuracy = self.runner.train_epoch(order, self.batch_size,
                                                             after_batch)
        with evaluation_weights(self.runner.optimizer):
            val_loss, val_accuracy = self.runner.evaluate("val")
        if self.runner.scheduler is not None and not per_batch:
            self._step_scheduler(val_loss)
        self.epoch += 1
        record: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss,
                  "train_accuracy": train_accuracy, "val_loss": val_loss,
                  "val_accuracy": val_accuracy, "lr": lr,
                  "seconds": time.perf_counter() - start}
        layers = self.runner.layer_stats()
        if layers is not None:
            record["layers"] = layers
        self.history.append(record)
        return record

    def fit(self, epochs: int | None = None, *,
            checkpoint: str | Path | None = None,
            on_epoch: Callable[[Trainer, dict[str, Any]], None] | None = None,
            on_batch: Callable[[float, int], None] | None = None) -> list[dict[str, Any]]:
        """Train until ``epochs`` epochs are finished (the recipe's by default).

        Args:
            epochs: Total number of epochs, counting those already finished.
            checkpoint: Checkpoint file written every ``train.checkpoint_every`` epochs and
                after the last; ``None`` for none.
            on_epoch: Called after every epoch (after its checkpoint).
            on_batch: Called after every optimizer step with the batch's mean loss and its
                number of samples (progress bars; see :meth:`run_epoch`).

        Returns:
            :attr:`history`.
        """
        total = epochs if epochs is not None else self.recipe.train.epochs
        every = self.recipe.train.checkpoint_every
        with limited_threads(self.recipe.train.threads, self.runner.backend):
            while self.epoch < total:
                record = self.run_epoch(on_batch)
                if checkpoint is not None and every and (self.epoch % every == 0 or
                                                         self.epoch == total):
                    self.save(checkpoint)
                if on_epoch is not None:
                    on_epoch(self, record)
        return self.history

    def _meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history,
                "order_rng": self.order_rng.bit_generator.state,
                "fingerprint": fingerprint(self.recipe), "backend": self.runner.backend}

    def save(self, path: str | Path) -> None:
        """Write a checkpoint of the whole training state, atomically."""
        self.runner.save(path, self._meta())

    def load(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` for the same recipe and backend.

        All or nothing: the checkpoint is checked whole before anything is restored, and the
        runner restores its parts all or none, so a bad file leaves the trainer as it was.

        Raises:
            CheckpointError: unreadable or corrupt, or written for another recipe or backend.
        """
        payload = self.runner.read_checkpoint(path)
        meta = payload["meta"]
        problems = []
        if meta.get("backend") != self.runner.backend:
            problems.append(f"it was written by the {meta.get('backend')!r} backend, not "
                            f"{self.runner.backend!r}")
        if meta.get("fingerprint") != fingerprint(self.recipe):
            problems.append("it was written for a different recipe (data, model, optimizer, "
                            "scheduler or training settings differ)")
        if problems:
            raise CheckpointError(f"checkpoint {path} does not match this run: "
                                  + "; ".join(problems))
        try:
            epoch = int(meta["epoch"])
            history = [dict(record) for record in meta["history"]]
            # Set on a spare generator first: a bad state raises before the live one changes.
            type(self.order_rng.bit_generator)().state = meta["order_rng"]
        except Exception as exc:
            raise CheckpointError(f"checkpoint {path} is corrupt: {_one_line(exc)}") from None
        if len(history) != epoch:
            raise CheckpointError(f"checkpoint {path} is corrupt: {len(history)} epochs of "
                                  f"metrics for epoch {epoch}")
        try:
            self.runner.load_state(payload)
        except Exception as exc:
            # The payload is data from a file: whatever it breaks, the runner is unchanged.
            raise CheckpointError(f"checkpoint {path} does not match this run: "
                                  f"{_one_line(exc)}") from None
        self.order_rng.bit_generator.state = meta["order_rng"]
        self.epoch = epoch
        self.history = history
