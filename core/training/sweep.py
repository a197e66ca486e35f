"""``optiplug sweep``: hyperparameter search whose space comes from the specs themselves.

Every numeric hyperparameter of a spec already declares its bounds (``lr > 0``,
``0 <= beta < 1``). A sweep searches:

- the fields whose spec declares a search range (``Field(json_schema_extra={"search": {"low":
  1e-4, "high": 1e-1, "log": True}})``);
- by default, the optimizer's ``lr`` (log scale, the recipe's value divided and multiplied by
  10) and ``weight_decay`` where the optimizer has one (log scale, 1e-6 to 0.1);
- what the recipe's ``sweep.space`` says, which narrows (``{low, high, log}``), fixes (a
  number) or adds (a dotted path such as ``optimizer.betas.1``) any dimension, always inside
  the bounds the spec declares.

``--vary optimizer=adam,adamw,lion`` makes the technique itself a categorical dimension, each
choice with its own space. The engine is Optuna (TPE sampling, median pruning on the
per-epoch validation metric); the study lives in a journal file in the sweep folder unless
``--storage`` names another (an Optuna RDB URL such as ``sqlite:///study.db`` or
``postgresql://...``, or a journal file path), so several processes or machines can work on
one study. Running the same command again resumes the study until it holds ``--trials``
finished trials. The folder gets ``trials.csv``, ``best.yaml`` (the best trial's recipe:
``optiplug run best.yaml`` reproduces it exactly), ``history.png`` and ``importance.png`` (or
``parallel.png``).

A recipe's sweep settings::

    sweep:
      trials: 20
      metric: val_loss            # val_accuracy is maximized, losses minimized
      space:
        optimizer.lr: {low: 1.0e-4, high: 0.3, log: true}
        optimizer.weight_decay: 0.0          # fixed
        optimizer.betas.1: {low: 0.9, high: 0.9999}
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from pydantic import BaseModel, ConfigDict, Field

from ..config import load_config, to_spec
from ..errors import ConfigError, ConfigIssue
from ..specs import Spec
from .checkpoint import write_text_atomic
from .compare import parse_vary
from .recipe import Recipe, parse_recipe, recipe_to_dict
from .run import _yaml_dump, default_run_dir, format_table

__all__ = ["Dimension", "SweepConfig", "SweepResult", "search_space", "sweep"]

_METRICS: Final = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
_DEFAULT_LOG_RANGES: Final = {"weight_decay": (1e-6, 0.1)}
_LR_SPREAD: Final = 10.0


class SweepConfig(BaseModel):
    """The ``sweep:`` section of a recipe (all optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    trials: int = Field(default=20, gt=0)
    """Finished trials (complete or pruned) the study should hold."""
    metric: Literal["val_loss", "val_accuracy", "train_loss", "train_accuracy"] = "val_loss"
    """The final-epoch metric to optimize: accuracies are maximized, losses minimized."""
    space: dict[str, Any] = Field(default_factory=dict)
    """Dotted path (``optimizer.lr``) to ``{low, high, log}`` (search there) or a number
    (fixed)."""


@dataclass(frozen=True)
class Dimension:
    """One searched hyperparameter.

    Attributes:
        path: Dotted path in the recipe (``optimizer.lr``, ``optimizer.betas.1``).
        low: Smallest value searched.
        high: Largest value searched.
        log: Sample on a log scale.
        integer: An integer hyperparameter.
    """

    path: str
    low: float
    high: float
    log: bool = False
    integer: bool = False


@dataclass
class SweepResult:
    """What :func:`sweep` returns."""

    out_dir: Path
    study: Any
    metric: str
    best_recipe: dict[str, Any] | None

    def table(self, top: int = 5) -> str:
        """The best ``top`` finished trials, best first."""
        import optuna

        done = [t for t in self.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        done.sort(key=lambda t: t.value, reverse=self.study.direction.name == "MAXIMIZE")
        keys = sorted({key for t in done[:top] for key in t.params})
        rows = [["trial", self.metric, *keys]]
        for trial in done[:top]:
            rows.append([f"#{trial.number}", f"{trial.value:.4g}",
                         *(_cell(trial.params.get(key)) for key in keys)])
        states = [t.state.name.lower() for t in self.study.trials]
        counts = ", ".join(f"{states.count(s)} {s}" for s in sorted(set(states)))
        return format_table(rows) + f"\n{len(states)} trials: {counts}"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _bounds(annotation: Any, metadata: Sequence[Any]) -> tuple[float, float, bool, bool]:
    """(low, high, low_open, high_open) from annotated_types constraints; +-inf if none."""
    low, high, low_open, high_open = -math.inf, math.inf, False, False
    for item in [*metadata, *getattr(annotation, "__metadata__", ())]:
        for constraint in getattr(item, "metadata", [item]):
            if hasattr(constraint, "gt") and constraint.gt is not None:
                low, low_open = float(constraint.gt), True
            if hasattr(constraint, "ge") and constraint.ge is not None:
                low, low_open = float(constraint.ge), False
            if hasattr(constraint, "lt") and constraint.lt is not None:
                high, high_open = float(constraint.lt), True
            if hasattr(constraint, "le") and constraint.le is not None:
                high, high_open = float(constraint.le), False
    return low, high, low_open, high_open


def _numeric(annotation: Any) -> type | None:
    """``float`` or ``int`` when ``annotation`` is one (possibly Annotated/Optional)."""
    base = typing.get_origin(annotation)
    if base is typing.Annotated:
        return _numeric(typing.get_args(annotation)[0])
    if annotation in (float, int):
        return annotation  # type: ignore[no-any-return]
    if base in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        kinds = [k for k in (_numeric(a) for a in typing.get_args(annotation)) if k]
        return kinds[0] if len(kinds) == 1 else None
    return None


def _field_at(spec_class: type[Spec], parts: list[str]) -> tuple[Any, Sequence[Any], Any] | None:
    """(annotation, metadata, search declaration) of a field or of one tuple element."""
    field = spec_class.model_fields.get(parts[0])
    if field is None:
        return None
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    annotation, metadata = field.annotation, field.metadata
    if len(parts) == 2 and parts[1].isdigit():
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        index = int(parts[1])
        element = args[0] if len(args) == 1 else (args[index] if index < len(args) else None)
        if element is None:
            return None
        return element, (), None
    if len(parts) != 1:
        return None
    return annotation, metadata, extra.get("search")


def _dimension(path: str, found: tuple[Any, Sequence[Any], Any], declared: Mapping[str, Any],
               issues: list[ConfigIssue], where: str) -> Dimension | None:
    annotation, metadata, _ = found
    number = _numeric(annotation)
    if number is None:
        issues.append(ConfigIssue(where, f"{path} is not a number, so it cannot be searched"))
        return None
    low_bound, high_bound, low_open, high_open = _bounds(annotation, metadata)
    try:
        low, high = float(declared["low"]), float(declared["high"])
    except (KeyError, TypeError, ValueError):
        issues.append(ConfigIssue(where, "give {low: ..., high: ...} numbers, or one number to "
                                         "fix the value"))
        return None
    log = bool(declared.get("log", False))
    problems = []
    if not low < high:
        problems.append(f"low {low:g} must be below high {high:g}")
    if low < low_bound or (low_open and low == low_bound):
        problems.append(f"low {low:g} is outside the spec's bound "
                        f"({'>' if low_open else '>='} {low_bound:g})")
    if high > high_bound or (high_open and high == high_bound):
        problems.append(f"high {high:g} is outside the spec's bound "
                        f"({'<' if high_open else '<='} {high_bound:g})")
    if log and low <= 0:
        problems.append("a log scale needs low > 0")
    if problems:
        issues.append(ConfigIssue(where, "; ".join(problems)))
        return None
    return Dimension(path, low, high, log, number is int)


def search_space(spec: Spec, kind: str, space: Mapping[str, Any] | None = None
                 ) -> tuple[list[Dimension], dict[str, Any]]:
    """The dimensions searched for one technique, and the values the user fixed.

    Args:
        spec: The technique's validated spec (its values centre the default ``lr`` range).
        kind: Its section in the recipe (``optimizer``, ``scheduler``).
        space: The recipe's ``sweep.space`` (dotted paths from the recipe's top).

    Returns:
        ``(dimensions, fixed)``: what to sample, and path -> value set as given.

    Raises:
        ConfigError: a path names no numeric field, or a range leaves the spec's bounds.
    """
    spec_class = type(spec)
    issues: list[ConfigIssue] = []
    chosen: dict[str, Mapping[str, Any]] = {}
    for name, field in spec_class.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        declared = extra.get("search")
        if isinstance(declared, Mapping):
            chosen[name] = declared
    if kind == "optimizer":
        lr = getattr(spec, "lr", None)
        if isinstance(lr, float) and "lr" not in chosen:
            chosen["lr"] = {"low": lr / _LR_SPREAD, "high": lr * _LR_SPREAD, "log": True}
        for name, (low, high) in _DEFAULT_LOG_RANGES.items():
            if name in spec_class.model_fields and name not in chosen:
                chosen[name] = {"low": low, "high": high, "log": True}
    fixed: dict[str, Any] = {}
    for path, value in (space or {}).items():
        head, _, rest = str(path).partition(".")
        if head != kind:
            continue
        if not rest:
            issues.append(ConfigIssue(f"sweep.space.{path}", "name a field: KIND.FIELD"))
            continue
        if _field_at(spec_class, rest.split(".")) is None:
            issues.append(ConfigIssue(f"sweep.space.{path}", (
                f"{spec.name!r} has no numeric hyperparameter {rest!r}")))
            continue
        if isinstance(value, Mapping):
            chosen[rest] = value
        else:
            chosen.pop(rest, None)
            fixed[f"{kind}.{rest}"] = value
    dimensions = []
    for rest, searched in chosen.items():
        found = _field_at(spec_class, rest.split("."))
        assert found is not None
        dimension = _dimension(f"{kind}.{rest}", found, searched, issues,
                               f"sweep.space.{kind}.{rest}")
        if dimension is not None:
            dimensions.append(dimension)
    if issues:
        raise ConfigError(issues)
    return dimensions, fixed


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    target: Any = data
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    last = parts[-1]
    if isinstance(target, (list, tuple)):
        items = list(target)
        items[int(last)] = value
        _set(data, ".".join(parts[:-1]), items)
    else:
        target[last] = value


def _storage(storage: str | None, out_dir: Path) -> Any:
    import optuna

    if storage is None or not any(storage.startswith(prefix) for prefix in (
            "sqlite:", "postgresql", "mysql", "oracle", "mssql")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage.removeprefix("journal:")) if storage else out_dir / "study.journal"
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(storage)


def _load_sweep_recipe(source: str | os.PathLike[str] | Mapping[str, Any]
                       ) -> tuple[Recipe, SweepConfig]:
    from pydantic import ValidationError

    text_source = None
    if isinstance(source, (str, os.PathLike)):
        text_source = os.fspath(source)
        document = dict(load_config(text_source))
    else:
        document = dict(source)
    raw = document.pop("sweep", None) or {}
    try:
        settings = SweepConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([ConfigIssue("sweep." + ".".join(map(str, e["loc"])), e["msg"])
                           for e in exc.errors()], source=text_source) from None
    return parse_recipe(document, source=text_source), settings


def sweep(recipe: str | os.PathLike[str] | Mapping[str, Any], *, trials: int | None = None,
          vary: Sequence[str] = (), storage: str | None = None, study_name: str | None = None,
          out: str | os.PathLike[str] | None = None, metric: str | None = None,
          seed: int | None = None, backend: str | None = None, epochs: int | None = None,
          progress: bool = True, stream: TextIO | None = None) -> SweepResult:
    """Search the recipe's hyperparameters with Optuna until the study holds ``trials``.

    Args:
        recipe: A recipe file or mapping, optionally with a ``sweep:`` section.
        trials: Finished trials the study should hold (default ``sweep.trials``, 20).
        vary: ``KIND=a,b,c``: the technique of that kind becomes a categorical dimension.
        storage: Optuna storage URL or journal file; default ``OUT/study.journal``.
        study_name: Default: the recipe's name.
        out: The sweep folder (default ``runs/sweep-<name>-<time>``).
        metric: Overrides ``sweep.metric``.
        seed: Seeds the sampler (reproducible with one worker); default: not seeded, so
            workers sharing a study draw different points.
        backend: Overrides ``train.backend``.
        epochs: Overrides ``train.epochs``.
        progress: One line per finished trial on ``stream`` (stderr).

    Raises:
        ConfigError: the recipe, its sweep section or a ``--vary`` item is invalid (nothing has
            been trained then).
    """
    import optuna

    base, settings = _load_sweep_recipe(recipe)
    data = recipe_to_dict(base)
    if backend is not None:
        data["train"]["backend"] = backend
    if epochs is not None:
        data["train"]["epochs"] = epochs
    base = parse_recipe(data)
    metric = metric or settings.metric
    if metric not in _METRICS:
        raise ConfigError([ConfigIssue("sweep.metric", f"one of {', '.join(_METRICS)}")])
    target = trials if trials is not None else settings.trials
    choices: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
    for text in vary:
        kind, items = parse_vary(text)
        choices[kind] = items
    # Every space is built (and so validated) before the first trial trains.
    spaces: dict[tuple[str, str | None], tuple[list[Dimension], dict[str, Any]]] = {}
    for kind in ("optimizer", "scheduler"):
        entries: list[tuple[str | None, Any]] = [*choices.get(kind, [])] or [
            (None, data.get(kind))]
        for label, entry in entries:
            if entry is not None:
                spaces[(kind, label)] = search_space(to_spec(dict(entry), kind=kind), kind,
                                                     settings.space)
    out_dir = Path(out) if out is not None else default_run_dir(f"sweep-{base.name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    direction: Literal["minimize", "maximize"] = (
        "maximize" if metric.endswith("accuracy") else "minimize")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=study_name or base.name, storage=_storage(storage, out_dir),
        direction=direction, load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1))
    stream = stream if stream is not None else sys.stderr
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)

    def objective(trial: optuna.Trial) -> float:
        return _train_trial(trial, base, choices, spaces, metric, stream if progress else None)

    def enough(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        if len(study.get_trials(deepcopy=False, states=finished)) >= target:
            study.stop()

    while len(study.get_trials(deepcopy=False, states=finished)) < target:
        study.optimize(objective, n_trials=1, callbacks=[enough], catch=(ConfigError,))
    best = _write(study, out_dir, metric)
    return SweepResult(out_dir=out_dir, study=study, metric=metric, best_recipe=best)


def _train_trial(trial: Any, base: Recipe, choices: Mapping[str, Any],
                 spaces: Mapping[tuple[str, str | None], tuple[list[Dimension], dict[str, Any]]],
                 metric: str, stream: TextIO | None) -> float:
    import optuna

    from .loop import Trainer

    data = copy.deepcopy(recipe_to_dict(base))
    for kind in ("optimizer", "scheduler"):
        label = None
        if kind in choices:
            entries = dict(choices[kind])
            label = trial.suggest_categorical(kind, list(entries))
            data[kind] = None if entries[label] is None else dict(entries[label])
        if data.get(kind) is None:
            continue
        dimensions, fixed = spaces[(kind, label)]
        for path, value in fixed.items():
            _set(data, path, value)
        for dimension in dimensions:
            # Each choice has its own parameters: adam's lr and sgd's lr are two dimensions.
            field = dimension.path.split(".", 1)[1]
            name = dimension.path if label is None else f"{label}.{field}"
            if dimension.integer:
                value = trial.suggest_int(name, math.ceil(dimension.low),
                                          math.floor(dimension.high), log=dimension.log)
            else:
                value = trial.suggest_float(name, dimension.low, dimension.high,
                                            log=dimension.log)
            _set(data, dimension.path, value)
    recipe = parse_recipe(data)
    trial.set_user_attr("recipe", recipe_to_dict(recipe))
    trial.set_user_attr("worker", os.getpid())
    trainer = Trainer(recipe)
    value = math.nan

    def report(trainer: Trainer, record: dict[str, Any]) -> None:
        nonlocal value
        value = record[metric]
        if value is None or not math.isfinite(value):
            raise optuna.TrialPruned(f"{metric} is {value} at epoch {trainer.epoch}")
        trial.report(value, trainer.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {trainer.epoch}")

    try:
        trainer.fit(on_epoch=report)
    except optuna.TrialPruned:
        if stream is not None:
            stream.write(f"trial {trial.number}: pruned ({metric} {value:.4g})\n")
        raise
    if stream is not None:
        stream.write(f"trial {trial.number}: {metric} {value:.4g}\n")
    return float(value)


def _write(study: Any, out_dir: Path, metric: str) -> dict[str, Any] | None:
    import optuna

    trials = study.get_trials(deepcopy=False)
    keys = sorted({key for t in trials for key in t.params})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["number", "state", metric, *keys])
    for t in trials:
        writer.writerow([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                         *("" if t.params.get(k) is None else t.params[k] for k in keys)])
    write_text_atomic(out_dir / "trials.csv", buffer.getvalue())
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    best_recipe: dict[str, Any] = study.best_trial.user_attrs["recipe"]
    write_text_atomic(out_dir / "best.yaml", _yaml_dump(best_recipe))
    _plots(study, out_dir)
    return best_recipe


def _plots(study: Any, out_dir: Path) -> None:
    """history.png, and importance.png (parallel.png when importances cannot be computed)."""
    import warnings

    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as plots
    except ImportError:
        return
    from .checkpoint import atomic_write

    def save(name: str, draw: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            axes = draw(study)
        figure = getattr(axes, "figure", None) or plt.gcf()
        figure.tight_layout()
        atomic_write(out_dir / name, lambda file: figure.savefig(file, format="png", dpi=110))
        plt.close(figure)

    save("history.png", plots.plot_optimization_history)
    try:
        save("importance.png", plots.plot_param_importances)
    except (RuntimeError, ValueError, ZeroDivisionError):
        save("parallel.png", plots.plot_parallel_coordinate)
