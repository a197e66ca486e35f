"""Training-loop speed, measured side by side in one run; prints a table of ratios.

Rows (time per epoch on the default digits recipe: 64 -> 128 relu -> 10, batch size 32, adam,
1438 training samples; the best of alternating repeats, the least disturbed by other work):

- ``optiplug run`` NumPy backend over scikit-learn's ``MLPClassifier`` with the same
  architecture, solver, batch size, epochs and dtype (target: ratio <= 1.0). optiplug also
  evaluates the loss and accuracy of both splits after every epoch; scikit-learn does not.
- ``optiplug run`` torch backend over a hand-written torch loop of the same model, optimizer,
  batching and metrics (running train loss and accuracy, validation loss and accuracy per
  epoch) (target: ratio <= 1.05): once with ``torch.optim.Adam``'s
  defaults, once with the fused kernel optiplug's ``adam`` uses (the loop's own overhead).

Both sides of a row run with the same thread limit (``train.threads``, one thread by default),
and the final validation accuracy of each side is printed as a sanity check.

Usage: ``python benchmarks/training.py [--epochs N] [--repeats N] [--threads N]``.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings
from collections.abc import Callable

import numpy as np

from optiplug.training.data import Dataset, load_dataset
from optiplug.training.loop import Trainer, limited_threads
from optiplug.training.recipe import DEFAULT_RECIPE, Recipe, parse_recipe


def _recipe(backend: str, dtype: str, epochs: int, threads: int) -> Recipe:
    data = copy.deepcopy(DEFAULT_RECIPE)
    data["train"].update({"backend": backend, "dtype": dtype, "epochs": epochs,
                          "threads": threads, "checkpoint_every": 0})
    return parse_recipe(data)


def optiplug_epoch(recipe: Recipe, data: Dataset) -> tuple[float, float]:
    """Seconds per epoch of ``Trainer.fit`` (with per-epoch evaluation) and final val acc."""
    trainer = Trainer(recipe, data=data)
    start = time.perf_counter()
    trainer.fit()
    seconds = (time.perf_counter() - start) / recipe.train.epochs
    return seconds, float(trainer.history[-1]["val_accuracy"])


def sklearn_epoch(recipe: Recipe, data: Dataset) -> tuple[float, float]:
    """Seconds per epoch of ``MLPClassifier.fit`` with the same settings, and val acc."""
    from sklearn.neural_network import MLPClassifier

    model = MLPClassifier(hidden_layer_sizes=tuple(layer.units for layer in
                                                   recipe.model.layers),
                          activation="relu", solver="adam", learning_rate_init=1e-3,
                          batch_size=int(recipe.train.batch_size), alpha=0.0,
                          max_iter=recipe.train.epochs, tol=0.0, n_iter_no_change=10**9,
                          shuffle=True, random_state=0)
    with limited_threads(recipe.train.threads, "numpy"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: stopping at max_iter is the point
        start = time.perf_counter()
        model.fit(data.x_train, data.y_train)
        seconds = (time.perf_counter() - start) / recipe.train.epochs
    return seconds, float(model.score(data.x_val, data.y_val))


class TorchLoop:
    """A hand-written torch loop of the recipe's model: ``epoch()`` trains one epoch.

    ``fused=True`` uses the fused Adam kernel that optiplug's torch ``adam`` selects on CPU, so
    the row measures the loop's own overhead; the default is what a hand-written loop gets.
    """

    def __init__(self, recipe: Recipe, data: Dataset, fused: bool | None = None) -> None:
        import torch
        from torch import nn

        dtype = {"float32": torch.float32, "float64": torch.float64}[recipe.train.dtype]
        generator = torch.Generator().manual_seed(0)
        units = recipe.model.layers[0].units
        self.model = nn.Sequential(nn.Linear(data.num_features, units, dtype=dtype), nn.ReLU(),
                                   nn.Linear(units, data.num_outputs, dtype=dtype))
        with torch.no_grad():
            nn.init.kaiming_normal_(self.model[0].weight, generator=generator)
            nn.init.xavier_uniform_(self.model[2].weight, generator=generator)
            self.model[0].bias.zero_()
            self.model[2].bias.zero_()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3, fused=fused)
        self.x_train, self.y_train = torch.from_numpy(data.x_train), torch.from_numpy(
            data.y_train)
        self.x_val, self.y_val = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
        self.rng = np.random.default_rng(0)
        self.batch_size = int(recipe.train.batch_size)

    def epoch(self) -> float:
        """Train one epoch and report what optiplug reports: running train loss and accuracy,
        then the final model's validation loss and accuracy (returned)."""
        import torch
        from torch.nn import functional

        model, optimizer = self.model, self.optimizer
        model.train()
        order = torch.from_numpy(self.rng.permutation(len(self.x_train)))
        loss_sum, correct = 0.0, 0
        for index in torch.split(order, self.batch_size):
            optimizer.zero_grad(set_to_none=True)
            x, y = self.x_train[index], self.y_train[index]
            output = model(x)
            loss = functional.cross_entropy(output, y)
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(index)
            correct += int((output.detach().argmax(1) == y).sum())
        model.eval()
        with torch.no_grad():
            output = model(self.x_val)
            float(functional.cross_entropy(output.double(), self.y_val))
            return float((output.argmax(1) == self.y_val).sum()) / len(self.y_val)


def torch_epochs(recipe: Recipe, data: Dataset, fused: bool | None, repeats: int
                 ) -> tuple[float, float, float, float]:
    """Best seconds per epoch of optiplug's torch backend and of :class:`TorchLoop`, timed
    epoch by epoch, alternately, over ``repeats`` times the recipe's epochs; and each side's
    validation accuracy after the recipe's epochs."""
    trainer = Trainer(recipe, data=data)
    loop = TorchLoop(recipe, data, fused=fused)
    our_times, their_times = [], []
    our_accuracy = their_accuracy = 0.0
    with limited_threads(recipe.train.threads, "torch"):
        for epoch in range(1, recipe.train.epochs * repeats + 1):
            start = time.perf_counter()
            record = trainer.run_epoch()
            our_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            accuracy = loop.epoch()
            their_times.append(time.perf_counter() - start)
            if epoch == recipe.train.epochs:
                our_accuracy, their_accuracy = float(record["val_accuracy"]), accuracy
    # The first epochs allocate optimizer state and warm caches: not part of the steady state.
    return (min(our_times[3:]), min(their_times[3:]), our_accuracy, their_accuracy)


def compare(ours: Callable[[], tuple[float, float]], theirs: Callable[[], tuple[float, float]],
            repeats: int) -> tuple[float, float, float, float]:
    """Best seconds per epoch of both over ``repeats`` alternating runs (the least disturbed
    by other work on the machine), and their last accuracies."""
    ours(), theirs()  # warm-up: imports, caches, first allocations
    our_times, their_times = [], []
    our_accuracy = their_accuracy = 0.0
    for _ in range(repeats):
        seconds, our_accuracy = ours()
        our_times.append(seconds)
        seconds, their_accuracy = theirs()
        their_times.append(seconds)
    return min(our_times), min(their_times), our_accuracy, their_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-torch", action="store_true")
    args = parser.parse_args()

    rows: list[tuple[str, float, float, float, float, float]] = []
    for dtype in ("float32", "float64"):
        recipe = _recipe("numpy", dtype, args.epochs, args.threads)
        data = load_dataset(recipe.data, dtype=dtype)
        ours, theirs, our_acc, their_acc = compare(
            lambda recipe=recipe, data=data: optiplug_epoch(recipe, data),
            lambda recipe=recipe, data=data: sklearn_epoch(recipe, data), args.repeats)
        rows.append((f"numpy {dtype} vs sklearn MLPClassifier", ours, theirs, 1.0, our_acc,
                     their_acc))
    if not args.skip_torch:
        recipe = _recipe("torch", "float32", args.epochs, args.threads)
        data = load_dataset(recipe.data, dtype="float32")
        for fused, name in ((None, "torch float32 vs hand-written torch loop"),
                            (True, "torch float32 vs same loop, fused Adam")):
            ours, theirs, our_acc, their_acc = torch_epochs(recipe, data, fused, args.repeats)
            rows.append((name, ours, theirs, 1.05, our_acc, their_acc))

    header = ("row", "optiplug ms/epoch", "reference ms/epoch", "ratio", "target",
              "val acc (ours/ref)")
    table: list[tuple[str, ...]] = [header]
    for name, ours, theirs, target, our_acc, their_acc in rows:
        ratio = ours / theirs
        table.append((name, f"{ours * 1e3:.2f}", f"{theirs * 1e3:.2f}", f"{ratio:.2f}x",
                      f"<= {target:.2f}x {'ok' if ratio <= target else 'MISSED'}",
                      f"{our_acc:.2%} / {their_acc:.2%}"))
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"digits, {args.epochs} epochs, batch 32, {args.threads} thread(s); best of "
          f"{args.repeats} alternating fits (numpy rows) or of {args.repeats * args.epochs} "
          f"alternating epochs (torch rows)")
    for index, row in enumerate(table):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


if __name__ == "__main__":
    main()
