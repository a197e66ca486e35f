"""The cost of per-layer statistics (gradient norms, activation mean and std), measured side by
side in one run: time per epoch with ``train.layer_stats`` on over off, on the default digits
recipe (one hidden layer) and on examples/recipes/deep.yaml (12 hidden layers), both backends.

Each row alternates on/off repeats and keeps the best of each (the least disturbed by other
work). Usage: ``python benchmarks/layer_stats.py [--epochs N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

import yaml

from optiplug.training.data import load_dataset
from optiplug.training.loop import Trainer
from optiplug.training.recipe import DEFAULT_RECIPE, parse_recipe

DEEP = Path(__file__).resolve().parents[1] / "examples" / "recipes" / "deep.yaml"


def _recipe(base: dict[str, Any], backend: str, epochs: int, stats: bool) -> Any:
    data = copy.deepcopy(base)
    data["train"].update({"backend": backend, "epochs": epochs, "checkpoint_every": 0,
                          "layer_stats": stats})
    return parse_recipe(data)


def _seconds_per_epoch(recipe: Any, dataset: Any) -> float:
    trainer = Trainer(recipe, data=dataset)
    started = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - started) / recipe.train.epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    bases = {"digits (1 layer)": DEFAULT_RECIPE,
             "deep (12 layers)": yaml.safe_load(DEEP.read_text(encoding="utf-8"))}
    print(f"{'recipe':<18} {'backend':<7} {'off ms/epoch':>12} {'on ms/epoch':>12} "
          f"{'on/off':>7}")
    for label, base in bases.items():
        for backend in ("numpy", "torch"):
            recipes = {flag: _recipe(base, backend, args.epochs, flag) for flag in (False, True)}
            dataset = load_dataset(recipes[True].data, dtype=recipes[True].train.dtype)
            best = {False: float("inf"), True: float("inf")}
            for _ in range(args.repeats):
                for flag in (False, True):
                    best[flag] = min(best[flag], _seconds_per_epoch(recipes[flag], dataset))
            print(f"{label:<18} {backend:<7} {best[False] * 1e3:>12.1f} "
                  f"{best[True] * 1e3:>12.1f} {best[True] / best[False]:>7.3f}")


if __name__ == "__main__":
    main()
