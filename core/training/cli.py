"""The ``optiplug run`` and ``optiplug compare`` subcommands.

Kept light: only argparse at import time, so ``optiplug --help`` stays fast; NumPy, torch and
matplotlib are imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_commands"]

_BACKENDS = ("numpy", "torch")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_commands(subparsers: Any) -> None:
    """Add ``run`` and ``compare`` to the ``optiplug`` command's subparsers."""
    p = subparsers.add_parser(
        "run", help="train a recipe (default: digits) and write a run folder",
        description="Train a recipe with a progress bar, print the final metrics and write a "
                    "run folder: config.yaml (resolved recipe), metrics.csv/json, "
                    "checkpoints/ and curves.png. Without RECIPE the built-in digits recipe "
                    "is used.")
    p.add_argument("recipe", nargs="?", metavar="RECIPE",
                   help="YAML, TOML or JSON recipe (optional with --resume)")
    p.add_argument("--backend", choices=_BACKENDS, help="override train.backend")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run folder from its last checkpoint")
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="override train.epochs (the total, counting resumed epochs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--kill-after-epoch", type=_positive_int, help=argparse.SUPPRESS)
    p.set_defaults(func=_cmd_run)

    p = subparsers.add_parser(
        "compare", help="train variants of a recipe side by side (default: every optimizer "
                        "on digits)",
        description="Train every variant on the same data split and seed, print one table "
                    "(final train/validation loss and accuracy, epochs to reach the target, "
                    "wall time) and write compare.csv, compare.json and one curves.png with "
                    "all curves overlaid. KIND is optimizer, initializer, activation, "
                    "normalizer or scheduler; items are names, 'none', or name(key=value, "
                    "...). Without --vary every installed optimizer is compared.")
    p.add_argument("recipe", nargs="?", metavar="RECIPE",
                   help="YAML, TOML or JSON recipe (default: the built-in digits recipe)")
    p.add_argument("--vary", action="append", default=[], metavar="KIND=a,b,c",
                   help="techniques to compare (repeatable: every combination)")
    p.add_argument("--backend", choices=_BACKENDS, help="override train.backend")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="override train.epochs")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default runs/compare-<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cmd_compare)


def _cmd_run(args: argparse.Namespace) -> int:
    from .run import run, summary

    result = run(args.recipe, out=args.out, resume=args.resume, backend=args.backend,
                 epochs=args.epochs, progress=not args.quiet,
                 kill_after_epoch=args.kill_after_epoch)
    print(summary(result))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import compare

    outcome = compare(args.recipe, args.vary, out=args.out, backend=args.backend,
                      epochs=args.epochs, progress=not args.quiet)
    print(outcome.table())
    best = outcome.best()
    if best is not None:
        final = best.history[-1]
        score = (f"val_acc {final['val_accuracy']:.2%}" if final["val_accuracy"] is not None
                 else f"val_loss {final['val_loss']:.4f}")
        print(f"\nbest: {best.label} ({score})")
    if outcome.skipped:
        print("not compared: " + "; ".join(outcome.skipped))
    print(f"plot and tables: {outcome.out_dir}/curves.png, compare.csv, compare.json",
          file=sys.stdout)
    # Any failed variant fails the command (after the whole table is printed and written).
    return 1 if any(r.error is not None for r in outcome.results) else 0
