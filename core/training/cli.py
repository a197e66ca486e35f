"""The ``optiplug run`` and ``optiplug compare`` subcommands.

Kept light: only argparse at import time, so ``optiplug --help`` stays fast; NumPy, torch and
matplotlib are imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..cli import CommandError, add_overrides_argument, require_file, split_overrides

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
                    "checkpoints/ and curves.png (and TensorBoard event files with "
                    "--tensorboard). Without RECIPE the built-in digits recipe is used.")
    p.add_argument("recipe", nargs="?", metavar="RECIPE",
                   help="YAML, TOML or JSON recipe (optional with --resume)")
    add_overrides_argument(p)
    p.add_argument("--backend", choices=_BACKENDS, help="override train.backend")
    p.add_argument("--out", metavar="DIR", help="run folder (default runs/<name>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run folder from its last checkpoint")
    p.add_argument("--epochs", type=_positive_int, metavar="N",
                   help="override train.epochs (the total, counting resumed epochs)")
    _add_logging_arguments(p, "per epoch", "DIR/<run folder name>/")
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
    add_overrides_argument(p)
    p.add_argument("--vary", action="append", default=[], metavar="KIND=a,b,c",
                   help="techniques to compare (repeatable: every combination)")
    p.add_argument("--backend", choices=_BACKENDS, help="override train.backend")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="override train.epochs")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default runs/compare-<name>-<time>)")
    _add_logging_arguments(p, "per variant", "DIR/<out folder name>/<variant>/")
    p.set_defaults(func=_cmd_compare)

    p = subparsers.add_parser(
        "sweep", help="search a recipe's hyperparameters with Optuna (space from the specs)",
        description="Search hyperparameters on the recipe's validation metric. The space comes "
                    "from the specs: the optimizer's lr (log scale, x/÷10 around the recipe's "
                    "value), weight_decay (log, 1e-6..0.1), every field whose spec declares a "
                    "search range, narrowed, fixed or extended by the recipe's sweep.space. "
                    "Needs optuna (pip install 'optiplug[sweep]'). Running it again resumes the "
                    "study; several processes may share one study through --storage.")
    p.add_argument("recipe", metavar="RECIPE",
                   help="YAML, TOML or JSON recipe, optionally with a sweep: section")
    p.add_argument("--trials", type=_positive_int, metavar="N",
                   help="finished trials the study should hold (default sweep.trials, 20)")
    p.add_argument("--vary", action="append", default=[], metavar="KIND=a,b,c",
                   help="make the technique of KIND a searched choice (repeatable)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage: sqlite:///FILE, a database URL, or a journal file "
                        "path (default OUT/study.journal)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the recipe's name)")
    p.add_argument("--metric", choices=("val_loss", "val_accuracy", "train_loss",
                                        "train_accuracy"),
                   help="final-epoch metric to optimize (default sweep.metric, val_loss)")
    p.add_argument("--seed", type=int, help="seed the sampler (reproducible with one worker)")
    p.add_argument("--backend", choices=_BACKENDS, help="override train.backend")
    p.add_argument("--epochs", type=_positive_int, metavar="N", help="override train.epochs")
    p.add_argument("--out", metavar="DIR",
                   help="sweep folder (default runs/sweep-<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no per-trial output")
    p.set_defaults(func=_cmd_sweep)


def _add_logging_arguments(p: argparse.ArgumentParser, bars: str, events: str) -> None:
    """``--quiet``, ``--progress``/``--no-progress`` and ``--tensorboard DIR``."""
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--quiet", action="store_true", help="no progress output at all")
    shown.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help=f"progress bars that move with every batch and show the running "
                            f"loss, one {bars} (default: on a terminal; otherwise plain "
                            f"lines)")
    p.add_argument("--tensorboard", metavar="DIR",
                   help=f"also write TensorBoard event files to {events} (needs "
                        f"tensorboard: pip install 'optiplug[logging]')")


def _require_logging(args: argparse.Namespace) -> None:
    """Stop before any work when ``--tensorboard`` cannot be written."""
    if args.tensorboard is not None:
        from .tensorboard_log import require_tensorboard

        require_tensorboard()


def _recipe(args: argparse.Namespace) -> Any:
    """The recipe file (checked to exist) with the command line's overrides applied."""
    from .recipe import load_recipe

    path, overrides = split_overrides(args.recipe, list(args.overrides))
    if path is not None:
        require_file(path)
    if not overrides:
        return path
    if path is None and getattr(args, "resume", None) is not None:
        raise CommandError("overrides need a RECIPE with --resume (the run's own recipe is "
                           "resumed as recorded)")
    return load_recipe(path, overrides)


def _cmd_run(args: argparse.Namespace) -> int:
    _require_logging(args)
    from .run import run, summary

    result = run(_recipe(args), out=args.out, resume=args.resume, backend=args.backend,
                 epochs=args.epochs, progress=not args.quiet, bar=args.progress,
                 tensorboard=args.tensorboard, kill_after_epoch=args.kill_after_epoch)
    print(summary(result))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    _require_logging(args)
    from .compare import compare

    outcome = compare(_recipe(args), args.vary, out=args.out, backend=args.backend,
                      epochs=args.epochs, progress=not args.quiet, bar=args.progress,
                      tensorboard=args.tensorboard)
    print(outcome.table())
    best = outcome.best()
    if best is not None:
        final = best.history[-1]
        score = (f"val_acc {final['val_accuracy']:.2%}" if final["val_accuracy"] is not None
                 else f"val_loss {final['val_loss']:.4f}")
        print(f"\nbest: {best.label} ({score})")
    if outcome.skipped:
        print("not compared: " + "; ".join(outcome.skipped))
    files = ["compare.csv", "compare.json"]
    if not outcome.notes:
        files[:0] = ["curves.png", "gradients.png"]
    print(f"plot and tables: {outcome.out_dir}/" + ", ".join(files))
    if outcome.tensorboard_dir is not None:
        print(f"tensorboard: {outcome.tensorboard_dir}/<variant>  (tensorboard --logdir "
              f"{outcome.tensorboard_dir})")
    for note in outcome.notes:
        print(f"note: {note}")
    # Any failed variant fails the command (after the whole table is printed and written).
    return 1 if any(r.error is not None for r in outcome.results) else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("optuna") is None:
        print("optiplug: error: sweep needs optuna: pip install 'optiplug[sweep]'",
              file=sys.stderr)
        return 1
    from .sweep import sweep

    result = sweep(args.recipe, trials=args.trials, vary=args.vary, storage=args.storage,
                   study_name=args.study, out=args.out, metric=args.metric, seed=args.seed,
                   backend=args.backend, epochs=args.epochs, progress=not args.quiet)
    print(result.table())
    if result.best_recipe is None:
        print(f"no trial finished; trials: {result.out_dir}/trials.csv")
        return 1
    best = result.study.best_trial
    print(f"\nbest: trial #{best.number} ({result.metric} {best.value:.6g}); re-run it with: "
          f"optiplug run {result.out_dir}/best.yaml")
    print(f"plots and trials: {result.out_dir}/history.png, trials.csv")
    return 0
