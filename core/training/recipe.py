"""Training recipes: one validated document that says what to train, how, and on what data.

A recipe is a YAML, TOML or JSON file (or a mapping) with five sections::

    name: digits
    data:                         # an embedded dataset: no download
      dataset: digits             # digits | moons | spirals | regression
      validation_split: 0.2
      seed: 0
      normalizer: {name: standardize}     # a data scaler from the registry, or null
    model:                        # an MLP: every hidden layer names its techniques
      layers:
        - units: 128
          initializer: {name: he_normal}
          activation: {name: relu}
          normalizer: null                # or a normalization layer (batch_norm, ...)
      output_initializer: null    # defaults to the last hidden layer's initializer
      loss: null                  # cross_entropy for classification, mse for regression
    optimizer: {name: adam, lr: 0.001}
    scheduler: null
    param_groups: []              # rules of optiplug.param_groups, merged into the optimizer
    train: {epochs: 30, batch_size: 32, seed: 0, backend: numpy}

A technique entry is a technique config (``{name: adam, lr: 0.001}``) or just its name
(``adam``). Every technique entry is validated by its plugin's spec, and every bad value in the
whole recipe is reported in one :class:`~optiplug.ConfigError` with its path
(``model.layers.0.activation.name``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    SkipValidation,
    ValidationError,
    field_validator,
    model_validator,
)

from ..config import _short, apply_overrides, load_config, plain_config, suggest_key, to_spec
from ..errors import ConfigError, ConfigIssue
from ..param_groups import ParamGroupRule
from ..specs import NonNegativeFloat, NonNegativeInt, PositiveInt, Probability, Spec

__all__ = ["DEFAULT_RECIPE", "DataConfig", "LayerConfig", "ModelConfig", "Recipe",
           "TrainConfig", "fingerprint", "load_recipe", "parse_recipe", "recipe_to_dict",
           "technique_entries", "with_technique"]

DATASETS: Final = ("digits", "moons", "spirals", "regression")
Dataset = Literal["digits", "moons", "spirals", "regression"]

# The recipe `optiplug run` and `optiplug compare` use when given none. Shipped as code because
# the core package carries no data files; examples/recipes/digits.yaml is the same document.
DEFAULT_RECIPE: Final[dict[str, Any]] = {
    "name": "digits",
    "data": {
        "dataset": "digits",
        "validation_split": 0.2,
        "seed": 0,
        "normalizer": {"name": "standardize"},
    },
    "model": {
        "layers": [
            {"units": 128, "initializer": {"name": "he_normal"},
             "activation": {"name": "relu"}},
        ],
        "output_initializer": {"name": "xavier_uniform"},
    },
    "optimizer": {"name": "adam", "lr": 0.001},
    "scheduler": None,
    "train": {"epochs": 30, "batch_size": 32, "seed": 0, "backend": "numpy"},
}

TechniqueSpec = Annotated[SerializeAsAny[Spec], SkipValidation]
"""A technique entry, already turned into its spec by :func:`parse_recipe`."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              use_attribute_docstrings=True, arbitrary_types_allowed=True)

    @model_validator(mode="before")
    @classmethod
    def _lists_as_tuples(cls, data: Any) -> Any:
        # Files give lists; the frozen sections hold tuples.
        if isinstance(data, Mapping):
            return {key: tuple(value) if isinstance(value, list) else value
                    for key, value in data.items()}
        return data


class DataConfig(_Section):
    """Which embedded dataset, how much of it, how it is split and scaled."""

    dataset: Dataset = "digits"
    """``digits`` (8x8 handwritten digits bundled with scikit-learn, 10 classes), ``moons`` (two
    interleaving half circles), ``spirals`` (``classes`` interleaved spiral arms) or
    ``regression`` (a smooth nonlinear function of ``features`` inputs plus noise)."""
    samples: PositiveInt | None = None
    """Number of samples: all 1797 digits, or 1000 for a synthetic dataset, when left out."""
    noise: NonNegativeFloat = 0.1
    """Standard deviation of the Gaussian noise of the synthetic datasets."""
    classes: Annotated[int, Field(ge=2, le=10)] = 3
    """Number of spiral arms (``spirals`` only)."""
    features: Annotated[int, Field(ge=1, le=1024)] = 8
    """Number of input features (``regression`` only)."""
    validation_split: Annotated[float, Field(gt=0, lt=1)] = 0.2
    """Fraction of the samples held out for validation."""
    seed: int = 0
    """Seed of the synthetic data and of the train/validation split."""
    normalizer: TechniqueSpec | None = None
    """Input scaler from the registry (``standardize``, ``min_max``), fitted on the training
    split; ``null`` for none."""


class LayerConfig(_Section):
    """One hidden layer: ``linear -> normalizer (optional) -> activation``."""

    units: PositiveInt
    """Number of output features of the layer."""
    initializer: TechniqueSpec
    """Initializer of the layer's weight (biases start at zero)."""
    activation: TechniqueSpec
    """Activation after the (normalized) linear map."""
    normalizer: TechniqueSpec | None = None
    """Normalization layer between the linear map and the activation, or ``null``."""


class ModelConfig(_Section):
    """A multilayer perceptron: hidden layers, then a linear output layer."""

    layers: tuple[LayerConfig, ...] = ()
    """The hidden layers, first to last (none: a linear model)."""
    output_initializer: TechniqueSpec | None = None
    """Initializer of the output layer's weight; the last hidden layer's when left out."""
    loss: Literal["cross_entropy", "mse"] | None = None
    """``cross_entropy`` (softmax) for classification, ``mse`` for regression; chosen from the
    dataset when left out."""

    @model_validator(mode="after")
    def _output_initializer(self) -> ModelConfig:
        if not self.layers and self.output_initializer is None:
            raise ValueError("output_initializer is required when layers is empty")
        return self


class TrainConfig(_Section):
    """How long and in what steps to train, on which backend."""

    epochs: PositiveInt = 20
    """Number of passes over the training split."""
    batch_size: Any = 32
    """Samples per step: ``full`` (batch gradient descent), 1 (stochastic) or N (mini-batch)."""
    seed: int = 0
    """Seed of the weight initialization and of the shuffling of every epoch."""
    backend: Literal["numpy", "torch"] = "numpy"
    """``numpy`` (optiplug's NumPy layers and optimizers; no torch needed) or ``torch``."""
    dtype: Literal["float32", "float64"] = "float32"
    """Floating-point type of the data, weights and optimizer state."""
    threads: PositiveInt | None = 1
    """Threads of the math library while training (torch's intra-op threads; BLAS threads
    through ``threadpoolctl`` when installed); ``null`` keeps the library's default. Small
    models train fastest on one thread."""
    scheduler_interval: Literal["epoch", "batch"] | None = None
    """Step the scheduler once per ``epoch`` (after validation) or once per ``batch``;
    ``null``: as the scheduler declares (``optiplug show scheduler NAME``)."""
    layer_stats: bool = True
    """Record per-layer weight-gradient norms and activation statistics every epoch
    (``layers`` in the metrics, ``layers.csv``, ``gradients.png``); reading them does not
    change training."""
    checkpoint_every: NonNegativeInt = 1
    """Write a checkpoint every this many epochs (and after the last); 0 for none."""
    target_accuracy: Probability = 0.95
    """Validation accuracy whose first epoch ``optiplug compare`` reports (classification)."""
    target_loss: NonNegativeFloat | None = None
    """Validation loss whose first epoch ``optiplug compare`` reports (regression)."""

    @field_validator("batch_size", mode="plain")
    @classmethod
    def _batch_size(cls, value: Any) -> int | str:
        if value == "full" or (isinstance(value, int) and not isinstance(value, bool)
                               and value > 0):
            return value  # type: ignore[no-any-return]
        raise ValueError(f"must be a positive integer or 'full', got {_short(value)}")


class Recipe(_Section):
    """A whole training recipe (see the module docstring for the file format)."""

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")] = \
        "recipe"
    """Short name, used for run folders."""
    data: DataConfig = DataConfig()
    """The dataset."""
    model: ModelConfig
    """The network."""
    optimizer: TechniqueSpec
    """The optimizer, with its hyperparameters."""
    scheduler: TechniqueSpec | None = None
    """A learning-rate scheduler, or ``null``."""
    param_groups: tuple[ParamGroupRule, ...] = ()
    """Param-group rules (lr, lr_mult, weight_decay by parameter name or role), merged into the
    optimizer's own ``param_groups``. Parameter names: ``layers.0.linear.weight``,
    ``layers.0.norm.bias``, ``output.weight``, ..."""
    train: TrainConfig = TrainConfig()
    """The training loop."""

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.model.loss == "cross_entropy" and self.data.dataset == "regression":
            raise ValueError("model.loss cross_entropy needs a classification dataset; use mse "
                             "for regression")
        return self

    def optimizer_spec(self) -> Spec:
        """The optimizer's spec with the recipe's ``param_groups`` rules appended to its own.

        Raises:
            ConfigError: there are rules but the optimizer takes none.
        """
        optimizer = self.optimizer
        if not self.param_groups:
            return optimizer
        if "param_groups" not in type(optimizer).model_fields:
            raise ConfigError([ConfigIssue("param_groups", (
                f"optimizer {optimizer.name!r} takes no param-group rules"))])
        own = tuple(getattr(optimizer, "param_groups", ()))
        return to_spec({**optimizer.model_dump(exclude={"param_groups"}),
                        "param_groups": [*own, *self.param_groups]}, kind="optimizer")

    @property
    def task(self) -> Literal["classification", "regression"]:
        """What the dataset asks for."""
        return "regression" if self.data.dataset == "regression" else "classification"

    @property
    def loss(self) -> Literal["cross_entropy", "mse"]:
        """The loss actually used."""
        if self.model.loss is not None:
            return self.model.loss
        return "mse" if self.task == "regression" else "cross_entropy"


# ------------------------------------------------------------------------------------ parsing
def _technique_slots(data: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Paths (as key tuples) of every technique entry present in a raw recipe, with its kind."""
    yield ("optimizer",), "optimizer"
    yield ("scheduler",), "scheduler"
    section = data.get("data")
    if isinstance(section, Mapping):
        yield ("data", "normalizer"), "normalizer"
    model = data.get("model")
    if isinstance(model, Mapping):
        yield ("model", "output_initializer"), "initializer"
        layers = model.get("layers")
        if isinstance(layers, list | tuple):
            for index, layer in enumerate(layers):
                if isinstance(layer, Mapping):
                    for key in ("initializer", "activation", "normalizer"):
                        yield ("model", "layers", index, key), key


def _get(data: Any, path: tuple[str | int, ...]) -> tuple[bool, Any]:
    for key in path:
        if isinstance(key, int):
            if not isinstance(data, list | tuple) or key >= len(data):
                return False, None
        elif not isinstance(data, Mapping) or key not in data:
            return False, None
        data = data[key]
    return True, data


def _set(data: Any, path: tuple[str | int, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


def _dotted(path: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in path)


def _technique_spec(entry: Any, kind: str) -> Spec:
    if isinstance(entry, str):
        entry = {"name": entry}
    return to_spec(entry, kind=kind)


def parse_recipe(data: Mapping[str, Any] | Recipe, *, source: str | None = None) -> Recipe:
    """Validate a recipe mapping (every technique entry by its plugin's spec).

    Raises:
        ConfigError: listing every bad path of the recipe.
    """
    if isinstance(data, Recipe):
        return data
    data = plain_config(data)
    if not isinstance(data, Mapping):
        raise ConfigError(f"a recipe must be a mapping, got {type(data).__name__}",
                          source=source)
    resolved: dict[str, Any] = _thaw(data)
    issues: list[ConfigIssue] = []
    technique_paths: list[str] = []
    for path, kind in _technique_slots(resolved):
        present, entry = _get(resolved, path)
        if not present or entry is None or isinstance(entry, Spec):
            continue
        try:
            _set(resolved, path, _technique_spec(entry, kind))
        except ConfigError as exc:
            issues.extend(exc.prefixed(_dotted(path)).issues)
            technique_paths.append(_dotted(path))
    recipe: Recipe | None = None
    try:
        recipe = Recipe.model_validate(resolved)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            dotted = _dotted(error["loc"])
            # A technique entry already reported by its plugin's spec is not reported twice.
            if any(dotted == bad or dotted.startswith(bad + ".") for bad in technique_paths):
                continue
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = "unknown key" + suggest_key(Recipe, tuple(error["loc"]))
            elif error["type"] == "missing":
                message = "missing (required)"
            elif error["type"] == "value_error":
                message = message.removeprefix("Value error, ")
            elif "input" in error and not isinstance(error["input"], Mapping | Spec):
                message = f"{message} (got {_short(error['input'])})"
            issues.append(ConfigIssue(dotted, message))
    if recipe is not None and not issues:
        issues.extend(_check_techniques(recipe))
    if issues:
        raise ConfigError(issues, source=source)
    assert recipe is not None
    try:
        recipe.optimizer_spec()
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=source) from None
    return recipe


def _check_techniques(recipe: Recipe) -> list[ConfigIssue]:
    """Issues that need the whole recipe: a technique lacking the recipe's backend."""
    from ..registry import default_registry

    registry = default_registry()
    issues = []
    backend = recipe.train.backend
    for path, spec in technique_entries(recipe):
        technique = registry.get(spec.kind, spec.name)
        if (getattr(technique.spec, "closure_driven", False)
                and not getattr(technique.spec, "loop_closure", False)):
            issues.append(ConfigIssue(path, (
                f"{spec.kind} {spec.name!r} is closure-driven (each step re-evaluates the loss "
                f"through step(closure)); the training loop steps once per batch without a "
                f"closure: use it in your own loop, or pick another optimizer")))
        if backend not in technique.builders:
            issues.append(ConfigIssue(path, f"{spec.kind} {spec.name!r} has no {backend!r} "
                                            f"backend (train.backend); it has: "
                                            f"{', '.join(technique.backends)}"))
    return issues


def load_recipe(source: str | os.PathLike[str] | Mapping[str, Any] | Recipe | None = None,
                overrides: Sequence[str] = ()) -> Recipe:
    """A validated recipe from a YAML/TOML/JSON file, a mapping, or the default digits recipe.

    Args:
        source: The recipe; the default digits recipe when ``None``.
        overrides: ``dotted.path=value`` settings applied before validation, as on the command
            line (``optimizer.lr=3e-4``, ``train.epochs=5``); see
            :func:`optiplug.config.apply_overrides`.

    Raises:
        ConfigError: unreadable file, malformed override or invalid recipe, listing every bad
            path.
    """
    if isinstance(source, Recipe):
        if not overrides:
            return source
        source = recipe_to_dict(source)
    name: str | None = None
    data: Mapping[str, Any]
    if source is None:
        data = DEFAULT_RECIPE
    elif isinstance(source, str | os.PathLike):
        name = str(source)
        data = load_config(source)
    else:
        data = plain_config(source)
    if overrides:
        data = _thaw(data)
        # `optimizer: adam` takes `optimizer.lr=...` as `optimizer: {name: adam}` would.
        for path, _ in _technique_slots(data):
            present, entry = _get(data, path)
            if present and isinstance(entry, str):
                _set(data, path, {"name": entry})
        data = apply_overrides(data, overrides, source=name)
    return parse_recipe(data, source=name)


def technique_entries(recipe: Recipe) -> list[tuple[str, Spec]]:
    """Every technique entry of ``recipe`` as ``(dotted path, spec)``."""
    entries: list[tuple[str, Spec]] = [("optimizer", recipe.optimizer)]
    if recipe.scheduler is not None:
        entries.append(("scheduler", recipe.scheduler))
    if recipe.data.normalizer is not None:
        entries.append(("data.normalizer", recipe.data.normalizer))
    for index, layer in enumerate(recipe.model.layers):
        entries.append((f"model.layers.{index}.initializer", layer.initializer))
        entries.append((f"model.layers.{index}.activation", layer.activation))
        if layer.normalizer is not None:
            entries.append((f"model.layers.{index}.normalizer", layer.normalizer))
    if recipe.model.output_initializer is not None:
        entries.append(("model.output_initializer", recipe.model.output_initializer))
    return entries


# --------------------------------------------------------------------------------- dumping
def _plain(value: Any) -> Any:
    if isinstance(value, Spec):
        return {key: _plain(item) for key, item in _spec_dump(value).items() if key != "kind"}
    if isinstance(value, _Section):
        return {key: _plain(getattr(value, key)) for key in type(value).model_fields}
    if isinstance(value, BaseModel):
        return _plain(value.model_dump())
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _spec_dump(spec: Spec) -> dict[str, Any]:
    """Every hyperparameter of ``spec``, or only those differing from the defaults when the
    full dump does not validate back into the same spec (a spec whose defaults conflict)."""
    full = spec.model_dump()
    try:
        if to_spec(full, kind=spec.kind) == spec:
            return full
    except ConfigError:
        pass
    return spec.model_dump(exclude_defaults=True) | {"name": spec.name}


def _thaw(value: Any) -> Any:
    """A deep, mutable copy (dicts and lists) of a recipe mapping."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_thaw(item) for item in value]
    return copy.copy(value) if not isinstance(value, Spec) else value


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as plain data (every default filled in), valid input to
    :func:`parse_recipe`."""
    result: dict[str, Any] = {}
    for field_name in Recipe.model_fields:
        result[field_name] = _plain(getattr(recipe, field_name))
    return result


def fingerprint(recipe: Recipe) -> str:
    """A hash of everything that shapes a run's numbers but the number of epochs (and how often
    to checkpoint), so a run may be resumed for longer but not with another model or data."""
    plain = recipe_to_dict(recipe)
    for key in ("epochs", "checkpoint_every", "target_accuracy", "target_loss", "layer_stats"):
        plain["train"].pop(key, None)
    plain.pop("name", None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# ------------------------------------------------------------------------------ variations
def with_technique(recipe: Recipe, kind: str, entry: Mapping[str, Any] | str | None,
                   *, is_data_scaler: Callable[[Spec], bool] | None = None) -> Recipe:
    """``recipe`` with technique ``entry`` put wherever ``kind`` applies.

    - ``optimizer``, ``scheduler``: the recipe's optimizer or scheduler (scheduler ``None``:
      no scheduler).
    - ``initializer``: every layer's initializer and the output initializer.
    - ``activation``: every hidden layer's activation.
    - ``normalizer``: every hidden layer's normalizer (``None``: no normalization layers), or
      the data normalizer when ``is_data_scaler(spec)`` says the technique is a data scaler.

    Raises:
        ConfigError: the entry is invalid, or ``None`` where ``kind`` needs a technique.
    """
    spec = None if entry is None else _technique_spec(entry, kind)
    data = recipe_to_dict(recipe)
    plain = None if spec is None else _plain(spec)
    if kind in ("optimizer", "scheduler"):
        if spec is None and kind == "optimizer":
            raise ConfigError([ConfigIssue("optimizer", "a recipe needs an optimizer")])
        data[kind] = plain
    elif kind == "initializer":
        if spec is None:
            raise ConfigError([ConfigIssue("initializer", "every layer needs an initializer")])
        for layer in data["model"]["layers"]:
            layer["initializer"] = plain
        data["model"]["output_initializer"] = plain
    elif kind == "activation":
        if spec is None:
            raise ConfigError([ConfigIssue("activation", "every layer needs an activation; "
                                                         "use identity for none")])
        for layer in data["model"]["layers"]:
            layer["activation"] = plain
    elif kind == "normalizer":
        if spec is not None and is_data_scaler is not None and is_data_scaler(spec):
            data["data"]["normalizer"] = plain
        else:
            for layer in data["model"]["layers"]:
                layer["normalizer"] = plain
    else:
        raise ConfigError([ConfigIssue("kind", f"unknown kind {kind!r}")])
    return parse_recipe(data)
