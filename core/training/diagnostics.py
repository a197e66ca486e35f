"""Per-layer gradient norms and activation statistics: vanishing and exploding gradients, seen.

Every epoch records, for each hidden layer (``layers.0``, ``layers.1``, ...) and the
``output`` layer:

- ``grad_norm``: the L2 norm of the layer's weight gradient, averaged over the epoch's steps
  where it was finite (``NaN`` when it never was: the run diverged);
- ``act_mean`` and ``act_std`` (hidden layers): the mean and standard deviation of the layer's
  activations (after its activation function) on the epoch's first training batch (the
  weights the epoch starts from: in epoch 1, the initialization).

A poor initialization shows as gradient norms that shrink (vanish) or grow (explode)
geometrically from the output towards the input, and as activations that collapse to zero or
saturate; normalization layers and a fitting initializer keep them level. Reading the values
does not change training: runs with and without statistics are bit-identical. The cost is one
norm per weight per step and two reductions per layer per epoch (``benchmarks/layer_stats.py``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LayerStats", "gradient_ratio", "layers_csv", "plot_gradients"]


class LayerStats:
    """Accumulates one epoch's per-layer statistics; :meth:`finish` returns and resets them.

    Args:
        layers: Names of the layers whose weight gradients are measured, input first; every
            name but the last (the output layer) also has activations.
    """

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = tuple(layers)
        self._reset()

    def _reset(self) -> None:
        hidden = len(self.layers) - 1
        self.act_sum = [0.0] * hidden
        self.act_sumsq = [0.0] * hidden
        self.act_count = [0] * hidden
        self.grad_sum = [0.0] * len(self.layers)
        self.grad_steps = [0] * len(self.layers)

    def add_activation(self, index: int, total: float, total_sq: float, count: int) -> None:
        """Add one batch's activations of hidden layer ``index``: their sum, sum of squares and
        number."""
        self.act_sum[index] += total
        self.act_sumsq[index] += total_sq
        self.act_count[index] += count

    def add_grad_norms(self, norms: Sequence[float],
                       steps: Sequence[int] | None = None) -> None:
        """Add weight-gradient norms, one per layer in :attr:`layers` order: one step's, or
        per layer the sum over its ``steps`` finite steps. Non-finite norms are left out."""
        for index, norm in enumerate(norms):
            if steps is not None:
                self.grad_sum[index] += norm
                self.grad_steps[index] += steps[index]
            elif math.isfinite(norm):
                self.grad_sum[index] += norm
                self.grad_steps[index] += 1

    def finish(self) -> dict[str, dict[str, float | None]]:
        """The epoch's statistics by layer name; the accumulators start again at zero."""
        out: dict[str, dict[str, float | None]] = {}
        for index, name in enumerate(self.layers):
            steps = self.grad_steps[index]
            entry: dict[str, float | None] = {
                "grad_norm": self.grad_sum[index] / steps if steps else math.nan}
            if index < len(self.act_count):
                count = self.act_count[index]
                mean = self.act_sum[index] / count if count else None
                variance = (self.act_sumsq[index] / count - mean * mean
                            if count and mean is not None else None)
                entry["act_mean"] = mean
                entry["act_std"] = (math.sqrt(max(variance, 0.0)) if variance is not None
                                    and math.isfinite(variance) else
                                    None if variance is None else math.nan)
            out[name] = entry
        self._reset()
        return out


def gradient_ratio(record: Mapping[str, Any]) -> float | None:
    """First layer's gradient norm over the output layer's in one epoch's record: far below 1
    when gradients vanish towards the input, far above 1 when they explode."""
    layers = record.get("layers")
    if not layers:
        return None
    norms = [entry.get("grad_norm") for entry in layers.values()]
    first, last = norms[0], norms[-1]
    if first is None or last is None or not last:
        return None
    return float(first / last)


def layers_csv(history: Sequence[Mapping[str, Any]]) -> str:
    """``epoch,layer,depth,grad_norm,act_mean,act_std``: one row per epoch and layer."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", "layer", "depth", "grad_norm", "act_mean", "act_std"])
    for record in history:
        for depth, (name, entry) in enumerate((record.get("layers") or {}).items(), start=1):
            writer.writerow([record["epoch"], name, depth,
                             *("" if entry.get(key) is None else entry[key]
                               for key in ("grad_norm", "act_mean", "act_std"))])
    return buffer.getvalue()


def _profile(record: Mapping[str, Any]) -> list[float]:
    return [math.nan if entry.get("grad_norm") is None else float(entry["grad_norm"])
            for entry in (record.get("layers") or {}).values()]


def plot_gradients(path: Path, series: Mapping[str, Sequence[Mapping[str, Any]]], *,
                   title: str) -> bool:
    """Write ``gradients.png``: gradient norm against depth and against epoch, log scale.

    One run (one label): depth profiles of the first and last epoch, and each layer's norm per
    epoch. Several labels (``compare``): each label's depth profile at the first and at the
    last epoch.

    Returns:
        ``False`` when matplotlib is not installed (nothing written).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from .checkpoint import atomic_write

    figure, (by_depth, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = [label for label, history in series.items() if history and
              history[0].get("layers")]
    if len(series) == 1 and labels:
        history = series[labels[0]]
        for record, style in ((history[0], "-o"), (history[-1], "--s")):
            profile = _profile(record)
            by_depth.plot(range(1, len(profile) + 1), profile, style, markersize=3,
                          label=f"epoch {record['epoch']}")
        names = list(history[0]["layers"])
        colours = plt.get_cmap("viridis")
        for index, name in enumerate(names):
            values = [_profile(record)[index] for record in history]
            right.plot([record["epoch"] for record in history], values,
                       color=colours(index / max(len(names) - 1, 1)), label=name)
        right.set_xlabel("epoch")
        right.set_title("per layer, input (dark) to output (light)")
        if len(names) <= 8:
            right.legend(fontsize=7)
    else:
        for label in labels:
            history = series[label]
            first, last = _profile(history[0]), _profile(history[-1])
            line, = by_depth.plot(range(1, len(first) + 1), first, "-o", markersize=3,
                                  label=label)
            right.plot(range(1, len(last) + 1), last, "-o", markersize=3,
                       color=line.get_color(), label=label)
        right.set_xlabel("layer (1 = input side)")
        right.set_title("last epoch")
        right.legend(fontsize=7)
    by_depth.set_xlabel("layer (1 = input side)")
    by_depth.set_title("first epoch" if len(series) > 1 else "depth profile")
    by_depth.legend(fontsize=7)
    for axes in (by_depth, right):
        axes.set_yscale("log")
        axes.set_ylabel("weight-gradient L2 norm")
        axes.grid(True, which="both", alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return True
