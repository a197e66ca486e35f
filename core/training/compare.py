"""``optiplug compare``: train variants of one recipe on the same data split and seed.

``--vary KIND=a,b,c`` (repeatable; several give every combination) replaces the techniques of
that kind: ``optimizer`` and ``scheduler`` the recipe's own, ``initializer`` every layer's,
``activation`` every hidden layer's, ``normalizer`` every hidden layer's normalization layer
(or the data scaler when the technique is one). An item is a name, ``none`` (no scheduler or
normalizer) or a name with hyperparameters: ``sgd(lr=0.1, momentum=0.9)``. With no ``--vary``
every installed optimizer is compared with its default hyperparameters.

A variant that fails (a bad hyperparameter, a diverging run, a plugin that raises) is a row
marked ``failed`` with its reason listed under the table; the other variants still train. The
CLI then exits with status 1 (the table and files are written all the same), so a script or CI
job sees that something failed; 0 means every variant trained.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

from ..errors import ConfigError, ConfigIssue, OptiplugError
from ..specs import KINDS, Spec
from .checkpoint import write_text_atomic
from .data import Dataset, load_dataset
from .diagnostics import gradient_ratio, plot_gradients
from .loop import Trainer
from .progress import ProgressDisplay, progress_display
from .recipe import Recipe, load_recipe, parse_recipe, recipe_to_dict, with_technique
from .run import _yaml_dump, default_run_dir, format_table, plot_or_skip
from .tensorboard_log import TensorBoardLog, require_tensorboard, run_name

__all__ = ["CompareResult", "Variant", "VariantResult", "compare", "installed_optimizers",
           "parse_vary", "variants"]

_NONE: Final = ("none", "null")


@dataclass(frozen=True)
class Variant:
    """One recipe to train: its label in the table and plot, and the recipe."""

    label: str
    recipe: Recipe


@dataclass
class VariantResult:
    """The outcome of one variant: its metrics per epoch, or the error that stopped it."""

    label: str
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    epochs_to_target: int | None = None
    error: str | None = None
    recipe: dict[str, Any] | None = None


@dataclass
class CompareResult:
    """What :func:`compare` returns."""

    out_dir: Path
    results: list[VariantResult]
    target: str
    skipped: list[str]
    notes: list[str] = field(default_factory=list)
    """What was skipped and why (a plot without matplotlib)."""
    tensorboard_dir: Path | None = None
    """The folder holding one TensorBoard run per variant, if asked for."""

    def table(self) -> str:
        """The comparison table (one row per variant)."""
        rows = [["variant", "train_loss", "train_acc", "val_loss", "val_acc",
                 f"epochs_to_{self.target}", "grad_in/out", "time_s"]]
        for result in self.results:
            if result.error is not None or not result.history:
                rows.append([result.label, "failed", "", "", "", "", "", ""])
                continue
            final = result.history[-1]
            ratio = gradient_ratio(result.history[0])
            rows.append([
                result.label, _fmt(final["train_loss"]), _pct(final["train_accuracy"]),
                _fmt(final["val_loss"]), _pct(final["val_accuracy"]),
                "-" if result.epochs_to_target is None else str(result.epochs_to_target),
                "-" if ratio is None else f"{ratio:.2g}", f"{result.seconds:.2f}"])
        text = format_table(rows)
        errors = [f"{r.label}: {r.error}" for r in self.results if r.error is not None]
        if errors:
            text += "\n\nfailed:\n" + "\n".join(f"  {line}" for line in errors)
        return text

    def best(self) -> VariantResult | None:
        """The variant with the best final validation accuracy (loss for regression)."""
        done = [r for r in self.results if r.error is None and r.history]
        if not done:
            return None
        if done[0].history[-1]["val_accuracy"] is not None:
            return max(done, key=lambda r: (r.history[-1]["val_accuracy"],
                                            -r.history[-1]["val_loss"]))
        return min(done, key=lambda r: r.history[-1]["val_loss"])


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


# ----------------------------------------------------------------------------- --vary
def _split_top_level(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def _parse_item(item: str, path: str) -> dict[str, Any] | None:
    from ..config import parse_yaml_value

    if item.lower() in _NONE:
        return None
    if "(" not in item:
        return {"name": item}
    if not item.endswith(")"):
        raise ConfigError([ConfigIssue(path, f"expected name(key=value, ...), got {item!r}")])
    name, _, inner = item[:-1].partition("(")
    entry: dict[str, Any] = {"name": name.strip()}
    for pair in _split_top_level(inner):
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError([ConfigIssue(path, f"expected key=value, got {pair!r}")])
        try:
            entry[key.strip()] = parse_yaml_value(value)
        except ConfigError:
            raise ConfigError([ConfigIssue(path, f"cannot read the value of {pair[:60]!r}")]
                              ) from None
    return entry


def parse_vary(text: str) -> tuple[str, list[tuple[str, dict[str, Any] | None]]]:
    """``"optimizer=sgd(lr=0.1),adam"`` to ``("optimizer", [(label, entry), ...])``.

    Raises:
        ConfigError: no ``=``, an unknown kind, an empty list or a malformed item.
    """
    kind, sep, values = text.partition("=")
    kind = kind.strip()
    if not sep:
        raise ConfigError([ConfigIssue("vary", f"expected KIND=a,b,c, got {text!r}")])
    if kind not in KINDS:
        raise ConfigError([ConfigIssue("vary", f"unknown kind {kind!r}; one of: "
                                               f"{', '.join(KINDS)}")])
    items = [item for item in _split_top_level(values) if item]
    if not items:
        raise ConfigError([ConfigIssue(f"vary.{kind}", "no values given")])
    return kind, [(item, _parse_item(item, f"vary.{kind}")) for item in items]


def _is_data_scaler(spec: Spec) -> bool:
    from ..config import build

    try:
        built = build(spec, backend="numpy", num_features=1)
    except (OptiplugError, TypeError, ValueError):
        return False
    return hasattr(built, "fit") and hasattr(built, "transform")


def variants(base: Recipe, vary: list[tuple[str, list[tuple[str, dict[str, Any] | None]]]]
             ) -> list[Variant]:
    """Every combination of the ``vary`` items applied to ``base``.

    Raises:
        ConfigError: every invalid item, with paths ``vary.<kind>.<index>...``.
    """
    issues: list[ConfigIssue] = []
    options: list[list[tuple[str, str, dict[str, Any] | None]]] = []
    for kind, items in vary:
        row = []
        for index, (label, entry) in enumerate(items):
            try:
                with_technique(base, kind, entry, is_data_scaler=_is_data_scaler)
            except ConfigError as exc:
                issues.extend(exc.prefixed(f"vary.{kind}.{index}").issues)
            row.append((kind, label, entry))
        options.append(row)
    if issues:
        raise ConfigError(issues)
    result = []
    for combination in itertools.product(*options):
        recipe = base
        for kind, _, entry in combination:
            recipe = with_technique(recipe, kind, entry, is_data_scaler=_is_data_scaler)
        if len(combination) == 1:
            label = combination[0][1]
        else:
            label = " ".join(f"{kind}={label}" for kind, label, _ in combination)
        result.append(Variant(label, recipe))
    return result


def installed_optimizers(backend: str) -> tuple[list[str], list[str]]:
    """Optimizers usable with their default hyperparameters on ``backend``, and the others
    (with the reason), so ``compare`` can say which it left out.

    Namespaced techniques (a bridged catalogue such as ``pto.<name>``: over a hundred
    optimizers) are compared only when named with ``--vary``; one line says how many."""
    from ..config import to_spec
    from ..registry import default_registry

    registry = default_registry()
    usable, skipped = [], []
    conflicted = {c.name for c in registry.conflicts() if c.kind == "optimizer"}
    names = registry.names("optimizer")
    namespaced = sorted({n.split(".", 1)[0] for n in names if "." in n})
    for prefix in namespaced:
        count = sum(n.startswith(prefix + ".") for n in names)
        skipped.append(f"{count} {prefix}.* optimizers (name them: --vary "
                       f"optimizer={prefix}.<name>,...)")
    for name in names:
        if "." in name:
            continue
        if name in conflicted:
            try:
                registry.get("optimizer", name)      # OPTIPLUG_PREFER may resolve it
            except OptiplugError:
                skipped.append(f"{name} (provided by more than one plugin: choose one with "
                               f"OPTIPLUG_PREFER='optimizer.{name}=<distribution>' or disable "
                               f"one with OPTIPLUG_DISABLED_PLUGINS=<distribution>:<entry "
                               f"point>; `optiplug doctor` lists them)")
                continue
        try:
            technique = registry.get("optimizer", name)
            to_spec({"name": name}, kind="optimizer", registry=registry)
        except OptiplugError as exc:
            reason = "; ".join(line.strip() for line in str(exc).splitlines()[-2:])
            skipped.append(f"{name} (needs settings: {reason})")
            continue
        if backend not in technique.builders:
            skipped.append(f"{name} (no {backend} backend)")
            continue
        if (getattr(technique.spec, "closure_driven", False)
                and not getattr(technique.spec, "loop_closure", False)):
            skipped.append(f"{name} (closure-driven: the training loop has no closure)")
            continue
        usable.append(name)
    return usable, skipped


def _on_epoch(display: ProgressDisplay | None, events: TensorBoardLog | None) -> Any:
    def on_epoch(trainer: Trainer, record: dict[str, Any]) -> None:
        if events is not None:
            events.add_epoch(record)
        if display is not None:
            display.epoch(record)

    return on_epoch


def _event_folders(out: Path, labels: list[str]) -> list[Path]:
    """One TensorBoard run folder per variant under ``out``, unique even for equal labels."""
    folders: list[Path] = []
    taken: set[str] = set()
    for label in labels:
        name, counter = run_name(label), 1
        while name in taken:
            counter += 1
            name = f"{run_name(label)}-{counter}"
        taken.add(name)
        folders.append(out / name)
    return folders


def _epochs_to_target(history: list[dict[str, Any]], recipe: Recipe) -> int | None:
    for record in history:
        if record["val_accuracy"] is not None:
            if record["val_accuracy"] >= recipe.train.target_accuracy:
                return int(record["epoch"])
        elif recipe.train.target_loss is not None and \
                record["val_loss"] <= recipe.train.target_loss:
            return int(record["epoch"])
    return None


def compare(recipe: Recipe | dict[str, Any] | str | os.PathLike[str] | None = None,
            vary: list[str] | tuple[str, ...] = (), *, out: str | os.PathLike[str] | None = None,
            backend: str | None = None, epochs: int | None = None, progress: bool = True,
            bar: bool | None = None, tensorboard: str | os.PathLike[str] | None = None,
            stream: TextIO | None = None) -> CompareResult:
    """Train every variant of ``recipe`` and write the table and the overlaid curves.

    Args:
        recipe: The base recipe; the default digits recipe if ``None``.
        vary: ``KIND=a,b,c`` strings; none compares every installed optimizer.
        out: Folder for ``compare.csv``, ``compare.json``, ``curves.png`` and ``config.yaml``
            (default ``runs/compare-<name>-<timestamp>``).
        backend: Override ``train.backend``.
        epochs: Override ``train.epochs``.
        progress: Show progress on ``stream`` (stderr); ``False`` shows nothing.
        bar: Per-batch progress bars, one per variant (tqdm): ``None`` when ``stream`` is a
            terminal, else one plain line per finished variant.
        tensorboard: Also write TensorBoard event files, one run per variant, into
            ``tensorboard/<out folder name>/<variant>/`` (needs ``tensorboard``).
        stream: Where progress goes (``sys.stderr`` by default).

    Raises:
        ConfigError: invalid recipe or ``--vary`` items (every bad path listed).
        MissingPackageError: ``tensorboard`` is asked for but not installed (checked first).
    """
    if tensorboard is not None:
        require_tensorboard()
    base = load_recipe(recipe)
    if backend is not None or epochs is not None:
        data = recipe_to_dict(base)
        if backend is not None:
            data["train"]["backend"] = backend
        if epochs is not None:
            data["train"]["epochs"] = epochs
        base = parse_recipe(data)
    if base.train.backend == "torch":
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            raise ConfigError([ConfigIssue("train.backend", (
                "the torch backend needs PyTorch: pip install 'optiplug[torch]'"))])
    skipped: list[str] = []
    if vary:
        parsed = [parse_vary(text) for text in vary]
    else:
        names, skipped = installed_optimizers(base.train.backend)
        if not names:
            raise ConfigError([ConfigIssue("optimizer", (
                f"no optimizer is installed for the {base.train.backend} backend"))])
        parsed = [("optimizer", [(name, {"name": name}) for name in names])]
    runs = variants(base, parsed)
    out_dir = Path(out) if out is not None else default_run_dir(f"compare-{base.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "config.yaml", _yaml_dump(recipe_to_dict(base)))
    stream = stream if stream is not None else sys.stderr
    datasets: dict[str, Dataset] = {}
    results: list[VariantResult] = []
    width = max(len(v.label) for v in runs)
    tensorboard_dir = None if tensorboard is None else Path(tensorboard) / out_dir.name
    event_folders = ([None] * len(runs) if tensorboard_dir is None else
                     _event_folders(tensorboard_dir, [v.label for v in runs]))
    for variant, event_folder in zip(runs, event_folders, strict=True):
        result = VariantResult(label=variant.label, recipe=recipe_to_dict(variant.recipe))
        results.append(result)
        display: ProgressDisplay | None = None
        events = None
        try:
            key = json.dumps(recipe_to_dict(variant.recipe)["data"], sort_keys=True) + \
                variant.recipe.train.dtype
            if key not in datasets:
                datasets[key] = load_dataset(variant.recipe.data,
                                             dtype=variant.recipe.train.dtype)
            trainer = Trainer(variant.recipe, data=datasets[key])
            if progress:
                display = progress_display(variant.recipe.train.epochs,
                                           trainer.batches_per_epoch, stream=stream, bar=bar,
                                           label=variant.label.ljust(width), per_epoch=False)
            if event_folder is not None:
                events = TensorBoardLog(event_folder)
            # Training time only: building may include one-time library imports (torch.optim
            # imports its compiler on first use) that would be charged to the first variant.
            started = time.perf_counter()
            trainer.fit(on_epoch=_on_epoch(display, events),
                        on_batch=None if display is None else display.batch)
            result.seconds = time.perf_counter() - started
            result.history = trainer.history
            result.epochs_to_target = _epochs_to_target(trainer.history, variant.recipe)
        except Exception as exc:  # one broken variant must not end the rest
            # Config and numeric failures speak for themselves; anything else (a plugin's bug)
            # is named by its type, as the CLI's --debug would show it.
            known = isinstance(exc, (OptiplugError, ArithmeticError, ValueError))
            message = " ".join(str(exc).split())
            result.error = message if known else f"{type(exc).__name__}: {message}"
            if display is not None:
                display.close()
                display = None
            if progress:
                stream.write(f"{variant.label}: failed: {result.error}\n")
        finally:
            if display is not None:
                display.close()
            if events is not None:
                events.close()
    target = "target" if base.task == "regression" and base.train.target_loss is None else (
        f"{base.train.target_accuracy:.0%}" if base.task == "classification"
        else f"loss<={base.train.target_loss:g}")
    outcome = CompareResult(out_dir=out_dir, results=results, target=target, skipped=skipped,
                            tensorboard_dir=tensorboard_dir)
    _write(outcome, base)
    return outcome


def _write(outcome: CompareResult, base: Recipe) -> None:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                     "epochs_to_target", "seconds", "error"])
    for result in outcome.results:
        final = result.history[-1] if result.history else {}
        writer.writerow([result.label, final.get("train_loss", ""),
                         _blank(final.get("train_accuracy")), final.get("val_loss", ""),
                         _blank(final.get("val_accuracy")), _blank(result.epochs_to_target),
                         f"{result.seconds:.4f}", result.error or ""])
    write_text_atomic(outcome.out_dir / "compare.csv", buffer.getvalue())
    document = {"target": outcome.target, "skipped": outcome.skipped,
                "variants": [{"label": r.label, "seconds": r.seconds,
                              "epochs_to_target": r.epochs_to_target, "error": r.error,
                              "history": r.history, "recipe": r.recipe}
                             for r in outcome.results]}
    write_text_atomic(outcome.out_dir / "compare.json", json.dumps(document, indent=2) + "\n")
    series = {r.label: r.history for r in outcome.results if r.history}
    if series:
        note = plot_or_skip(outcome.out_dir / "curves.png", series, overlay=True,
                            title=f"{base.name}: validation (solid) and train (dotted) per "
                                  f"variant ({base.train.backend})")
        if note is not None:
            outcome.notes.append(note)
            return
        plot_gradients(outcome.out_dir / "gradients.png", series,
                       title=f"{base.name}: weight-gradient norm by layer per variant "
                             f"({base.train.backend})")


def _blank(value: Any) -> Any:
    return "" if value is None else value
