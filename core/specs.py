"""Specs: the frozen, validated pydantic models that describe one configured technique.

Every technique has a spec class that subclasses the base of its kind and declares
``name: Literal["<technique>"] = "<technique>"`` (the discriminator) plus its hyperparameters,
each typed, constrained and described. Specs are strict: ``"0.1"`` is not a number and ``1`` is
not a boolean, lists become tuples (specs are frozen), unknown keys are rejected, and NaN or
infinity is never a valid hyperparameter. ``type(spec)(**spec.model_dump())`` and
``optiplug.build(spec.model_dump())`` give the same spec back.
"""

from __future__ import annotations

import fnmatch
import math
import re
import threading
import typing
import weakref
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    SerializeAsAny,
    WithJsonSchema,
    model_validator,
)

__all__ = [
    "KINDS",
    "ActivationSpec",
    "Beta",
    "ClipNormType",
    "InitializerSpec",
    "Interval",
    "Kind",
    "NonNegativeFloat",
    "NonNegativeInt",
    "Nonfinite",
    "NormalizerSpec",
    "OptimizerSpec",
    "ParamGroupRule",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "Role",
    "SchedulerConfig",
    "SchedulerSpec",
    "Spec",
    "describe_fields",
    "spec_base",
]

Kind = Literal["optimizer", "initializer", "activation", "normalizer", "scheduler"]
KINDS: Final[tuple[Kind, ...]] = ("optimizer", "initializer", "activation", "normalizer",
                                   "scheduler")

# Shared constrained types. Floats are always finite; strictness comes from the model config.
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Beta = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]
"""A decay rate ``0 <= beta < 1`` (moment coefficients, momentum)."""
PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


def _lists_to_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_lists_to_tuples(item) for item in value)
    return value


class Spec(BaseModel):
    """Base of every technique spec: frozen, strict, no unknown keys.

    Subclasses of a kind base set ``name`` to a ``Literal`` of the technique's name.
    """

    # Attribute docstrings describe the fields; they are read lazily by describe_fields (for
    # schemas and `optiplug show`), not at class creation, which would triple its cost.
    # defer_build: the validator is made on first validation, so listing plugins stays cheap.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, validate_default=False,
                              allow_inf_nan=False, defer_build=True)

    kind: str
    name: str

    spec_kind: ClassVar[Kind]
    policy_fields: ClassVar[frozenset[str]] = frozenset()
    """Fields that choose a policy around the computation rather than its numbers: the
    conformance kit does not require that moving them changes a result."""

    @model_validator(mode="before")
    @classmethod
    def _sequences_as_tuples(cls, data: Any) -> Any:
        # Config files give lists; frozen specs hold tuples (hashable, immutable).
        if isinstance(data, dict):
            return {key: _lists_to_tuples(value) for key, value in data.items()}
        return data

    @classmethod
    def technique_name(cls) -> str:
        """The technique name this spec class is the discriminator of."""
        default = cls.model_fields["name"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__qualname__} must declare name: Literal['...'] = '...'")
        return default

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """JSON Schema with every field described by its attribute docstring."""
        describe_fields(cls)
        return super().model_json_schema(*args, **kwargs)

    def hyperparameters(self) -> dict[str, Any]:
        """The spec's values without ``kind`` and ``name``."""
        return {k: v for k, v in self.model_dump().items() if k not in ("kind", "name")}


Role = Literal["bias", "norm", "1d"]
"""Parameter roles a param-group rule may select (see :mod:`optiplug.param_groups`)."""
Nonfinite = Literal["raise", "skip", "ignore"]
"""What an optimizer step does with a NaN/inf gradient."""
_SETTINGS: Final = ("lr", "lr_mult", "weight_decay")


class ParamGroupRule(BaseModel):
    """One param-group rule: which parameters (all selectors given must hold) get which settings.

    ``{"role": "bias", "weight_decay": 0.0}`` or ``{"match": "encoder.*", "lr_mult": 0.1}``.
    """

    # Field descriptions: attribute docstrings, read lazily by optiplug.specs.describe_fields.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, defer_build=True)

    match: str | None = None
    """``fnmatch`` pattern the whole parameter name must match (``"encoder.*"``)."""
    regex: str | None = None
    """Regular expression searched in the parameter name (``"\\.bias$"``)."""
    role: Role | None = None
    """``bias``, ``norm`` (normalization-layer weight) or ``1d`` (at most one dimension)."""
    lr: PositiveFloat | None = None
    """Learning rate of the selected parameters."""
    lr_mult: PositiveFloat | None = None
    """Multiplier of the optimizer's learning rate for the selected parameters."""
    weight_decay: NonNegativeFloat | None = None
    """Weight decay of the selected parameters (``0.0``: no decay)."""

    @model_validator(mode="after")
    def _complete(self) -> ParamGroupRule:
        if self.match is None and self.regex is None and self.role is None:
            raise ValueError("a rule needs at least one of 'match', 'regex' or 'role'")
        if self.lr is None and self.lr_mult is None and self.weight_decay is None:
            raise ValueError("a rule must set at least one of 'lr', 'lr_mult' or "
                             "'weight_decay'")
        if self.lr is not None and self.lr_mult is not None:
            raise ValueError("give 'lr' or 'lr_mult', not both")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        return self

    def selects(self, name: str, roles: frozenset[str]) -> bool:
        """Whether this rule selects the parameter ``name`` having ``roles``."""
        if self.match is not None and not fnmatch.fnmatchcase(name, self.match):
            return False
        if self.regex is not None and re.search(self.regex, name) is None:
            return False
        return self.role is None or self.role in roles

    def describe(self) -> str:
        """``match='head.*', role=bias`` for messages and the dry-run table."""
        parts = [f"{key}={value!r}" for key in ("match", "regex", "role")
                 if (value := getattr(self, key)) is not None]
        return ", ".join(parts)

    def settings(self) -> dict[str, float]:
        """The settings this rule makes (``lr``, ``lr_mult``, ``weight_decay``)."""
        return {key: value for key in _SETTINGS if (value := getattr(self, key)) is not None}


ClipNormType = PositiveFloat | Literal["inf"]
"""The ``p`` of a ``p``-norm: a positive number, or ``"inf"`` for the largest magnitude
(a string, as specs hold no infinite numbers: ``clip_grad_norm_type: inf`` in YAML)."""
_GROUPING_FIELDS: Final = frozenset({"param_groups", "decay_bias_and_norm", "layer_decay",
                                     "layer_patterns"})
_CLIP_FIELDS: Final = ("clip_grad_norm", "clip_grad_norm_type", "clip_grad_value")


class OptimizerSpec(Spec):
    """Base of optimizer specs: a learning rate, param groups, gradient clipping and the
    nonfinite policy.

    Every optimizer, builtin or third-party, subclasses this. A builder passes
    :meth:`group_params` (the params split into groups by the rules, the default no-decay
    filter and layer-wise lr decay) and :meth:`optimizer_arguments` (every hyperparameter,
    ``nonfinite`` and the clipping options included) to its optimizer class: a subclass of
    ``optiplug.backends.numpy.NumpyOptimizer`` or of a ``torch.optim.Optimizer`` with
    ``optiplug.backends.torch.TorchOptimizer`` mixed in, which apply the policy, clip the
    gradients and key the state by parameter name.
    """

    spec_kind: ClassVar[Kind] = "optimizer"
    policy_fields: ClassVar[frozenset[str]] = frozenset({"nonfinite", *_GROUPING_FIELDS,
                                                         *_CLIP_FIELDS})
    """Fields that choose what happens around the update (policy), not the update itself: the
    conformance kit does not require that changing them changes a finite step's result."""
    closure_driven: ClassVar[bool] = False
    """``step`` takes a closure that re-evaluates the loss, possibly several times a step (as
    ``torch.optim.LBFGS``): on torch it sets the ``.grad`` s and returns the loss, on NumPy it
    returns ``(loss, grads)``. Gradients cannot be clipped before such a step."""
    loop_closure: ClassVar[bool] = False
    """A closure-driven optimizer the training loop (``optiplug run``/``compare``) can drive:
    it hands ``step`` a closure over the current batch."""
    single_group: ClassVar[bool] = False
    """The optimizer takes one param group only (as ``torch.optim.LBFGS``)."""
    missing_grad_as_zero: ClassVar[bool] = False
    """A ``None`` gradient counts as zeros in a direction that couples the parameters (L-BFGS,
    as ``torch.optim.LBFGS``): once the optimizer has history, such a parameter may move."""
    agreement_steps: ClassVar[int | None] = None
    """Steps over which the conformance kit holds the NumPy and torch backends to its float64
    tolerance (``None``: its default, 20). Set it only for an algorithm that amplifies last-bit
    differences in sums (L-BFGS: each step runs up to 20 iterations, and ``y = g - g_prev``
    cancels), and document why next to it."""

    kind: Literal["optimizer"] = "optimizer"
    lr: PositiveFloat = 1e-3
    """Learning rate (step size), > 0."""
    param_groups: tuple[ParamGroupRule, ...] = ()
    """Param-group rules by name pattern and role setting lr, lr_mult and weight_decay."""
    decay_bias_and_norm: bool = False
    """Also decay biases and normalization weights (roles ``bias`` and ``norm``). By default
    (``false``) they get ``weight_decay: 0`` when the optimizer has a ``weight_decay`` > 0 and
    is built from named parameters (a model, ``named_parameters()``, a ``{name: param}``
    dict), as timm's ``filter_bias_and_bn`` does; a rule setting their ``weight_decay`` wins."""
    layer_decay: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    """Layer-wise lr decay (BEiT, timm): the top layer keeps its lr, each layer below gets
    ``layer_decay`` times the lr of the layer above. ``None``: off."""
    layer_patterns: tuple[str, ...] = ()
    """Regular expressions, one per layer from the bottom up, that say which layer a
    parameter is in (the first that matches; the rest form the top layer). Empty: layers are
    found from the parameter names (the numbered blocks of the model)."""
    clip_grad_norm: PositiveFloat | None = None
    """Clip the gradients of all the optimizer's parameters to this total norm before each
    step (``torch.nn.utils.clip_grad_norm_``). ``None``: no clipping."""
    clip_grad_norm_type: ClipNormType = 2.0
    """The ``p`` of the total ``p``-norm of :attr:`clip_grad_norm` (``"inf"``: the largest
    magnitude)."""
    clip_grad_value: PositiveFloat | None = None
    """Clip every gradient element to ``[-value, value]`` before each step
    (``torch.nn.utils.clip_grad_value_``). ``None``: no clipping."""
    nonfinite: Nonfinite = "ignore"
    """On a NaN/inf gradient: ``raise`` (naming the parameter), ``skip`` the whole step
    (params and state untouched), or ``ignore`` (apply it, like torch)."""

    @model_validator(mode="after")
    def _one_clipping(self) -> OptimizerSpec:
        if self.clip_grad_norm is not None and self.clip_grad_value is not None:
            raise ValueError("give clip_grad_norm or clip_grad_value, not both")
        if type(self).closure_driven and self.clipping():
            raise ValueError("this optimizer evaluates its closure several times within a "
                             "step, so its gradients cannot be clipped before the step: leave "
                             "clip_grad_norm and clip_grad_value unset")
        for index, pattern in enumerate(self.layer_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"layer_patterns.{index}: invalid regex {pattern!r}: "
                                 f"{exc}") from None
        return self

    def clipping(self) -> dict[str, Any]:
        """The gradient-clipping options that are set, as optimizer keyword arguments
        (empty when neither :attr:`clip_grad_norm` nor :attr:`clip_grad_value` is)."""
        if self.clip_grad_norm is not None:
            norm_type = self.clip_grad_norm_type
            return {"clip_grad_norm": self.clip_grad_norm,
                    "clip_grad_norm_type": math.inf if norm_type == "inf" else norm_type}
        if self.clip_grad_value is not None:
            return {"clip_grad_value": self.clip_grad_value}
        return {}

    def optimizer_arguments(self) -> dict[str, Any]:
        """Keyword arguments for the optimizer classes: every hyperparameter but the grouping
        fields, with the clipping options only when clipping is set (so an optimizer class
        that predates them keeps working)."""
        return {**{key: value for key, value in self.hyperparameters().items()
                   if key not in _GROUPING_FIELDS and key not in _CLIP_FIELDS},
                **self.clipping()}

    def grouping_spec(self) -> OptimizerSpec:
        """The spec whose grouping fields decide the param groups: this one (a wrapper
        optimizer returns its base's, so dry runs show what the base builds)."""
        return self

    def group_params(self, params: Any) -> Any:
        """``params`` split into groups by :attr:`param_groups`, the default no-decay filter
        (:attr:`decay_bias_and_norm`) and :attr:`layer_decay`; unchanged when none applies.

        Raises:
            ConfigError: a rule or layer pattern matches nothing, two rules conflict on a
                parameter, or layer decay is asked of parameters without names.
        """
        from .param_groups import ParamGroupList, spec_param_groups

        grouped = spec_param_groups(self, params)
        if grouped is None:
            return params
        return ParamGroupList(grouped.groups, grads=getattr(params, "grads", None))


class InitializerSpec(Spec):
    """Base of weight-initializer specs.

    An initializer may declare the moments of what it draws for a shape (torch's layout
    ``(out, in, *kernel)``) by overriding :meth:`expected_mean` and :meth:`expected_variance`;
    the conformance kit then checks the samples of both backends against them.
    """

    spec_kind: ClassVar[Kind] = "initializer"
    kind: Literal["initializer"] = "initializer"

    def expected_mean(self, shape: tuple[int, ...]) -> float | None:
        """Mean of the elements drawn for ``shape``; ``None`` when not declared."""
        return None

    def expected_variance(self, shape: tuple[int, ...]) -> float | None:
        """Variance of the elements drawn for ``shape``; ``None`` when not declared."""
        return None

    def example_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Weight shapes the conformance kit draws with (``(out, in, *kernel)``): a linear and
        a convolution weight. An initializer that takes only 2-D weights returns 2-D ones."""
        return ((256, 512), (64, 32, 3, 3))


class ActivationSpec(Spec):
    """Base of activation-function specs."""

    spec_kind: ClassVar[Kind] = "activation"
    kind: Literal["activation"] = "activation"


class NormalizerSpec(Spec):
    """Base of normalizer specs (data scalers and normalization layers)."""

    spec_kind: ClassVar[Kind] = "normalizer"
    kind: Literal["normalizer"] = "normalizer"

    def example_input_shape(self, batch: int, num_features: int) -> tuple[int, ...]:
        """The input shape the conformance kit feeds a layer of this spec: ``(batch,
        num_features)``; a normalizer over N-D inputs returns its layout (``(N, C, L)``)."""
        return (batch, num_features)


Interval = Literal["batch", "epoch"]
"""When a training loop steps a scheduler: after every batch, or once per epoch."""


class SchedulerSpec(Spec):
    """Base of learning-rate scheduler specs.

    A scheduler declares in :attr:`interval` whether it is meant to step after every batch
    (warm-ups, cycles, anything counted in optimizer steps) or once per epoch (after the
    validation pass); the training loop, ``optiplug show`` and the framework helpers read it.
    :attr:`steps_on_metric` marks schedulers whose ``step`` takes the monitored metric.
    """

    spec_kind: ClassVar[Kind] = "scheduler"
    kind: Literal["scheduler"] = "scheduler"

    interval: ClassVar[Interval] = "epoch"
    """The declared stepping interval of the technique (a recipe may override it)."""
    steps_on_metric: ClassVar[bool] = False
    """Whether ``step`` takes the monitored metric (then it can only step per epoch)."""

    def step_interval(self) -> Interval:
        """The interval this configured scheduler steps at: :attr:`interval` by default.

        Schedulers made of other schedulers override it to derive theirs from the children.
        """
        return self.interval


def _nested_validator(kind: Kind, base: type[Spec]) -> Callable[[Any], Spec]:
    """The validator of one nested technique config of ``kind`` (a mapping or a spec).

    Errors keep their place: a bad ``T_max`` in the second child of ``schedulers`` is reported
    at ``schedulers.1.T_max``. Names resolve in the process-wide registry (where builders
    build the children too), which holds every installed plugin and in-process registrations.
    """

    def validate(value: Any) -> Spec:
        from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

        from .errors import ConfigError
        from .registry import default_registry

        if isinstance(value, base):
            return value

        def fail(issues: list[tuple[tuple[str, ...], str, Any]]) -> ValidationError:
            return ValidationError.from_exception_data(kind, [
                InitErrorDetails(type=PydanticCustomError(f"nested_{kind}", message),
                                 loc=loc, input=given) for loc, message, given in issues])

        if not isinstance(value, Mapping):
            raise fail([((), f"must be a {kind} config, a mapping with 'name', not a "
                             f"{type(value).__name__}", value)])
        given_kind, name = value.get("kind", kind), value.get("name")
        if not (isinstance(given_kind, str) and given_kind == kind):  # an array's == is no bool
            raise fail([(("kind",), f"a nested {kind} must be a {kind}", given_kind)])
        if not isinstance(name, str):
            raise fail([(("name",), f"missing or not a string: which {kind} to use", name)])
        try:
            technique = default_registry().get(kind, name)
        except ConfigError as exc:
            raise fail([((issue.path,), issue.message, name) for issue in exc.issues]) from None
        spec = technique.spec.model_validate({**value, "kind": kind})
        assert isinstance(spec, base)
        return spec

    return validate


def _nested_schema(kind: Kind) -> WithJsonSchema:
    return WithJsonSchema({"type": "object", "required": ["name"],
                           "properties": {"name": {"type": "string"}},
                           "description": f"A registered {kind}'s config."})


SchedulerConfig = Annotated[SchedulerSpec, PlainValidator(_nested_validator(
    "scheduler", SchedulerSpec)), SerializeAsAny(), _nested_schema("scheduler")]
"""A field type holding another registered scheduler, given as a nested config
(``{name: cosine, T_max: 10}``) or a spec; errors are reported at the nested path."""


_described: set[type[BaseModel]] = set()
_describe_lock = threading.Lock()
# Attribute docstrings per class, read once: every model's MRO repeats the shared bases, and
# inspect.getsource parses a class's whole module to find it.
_class_docs: weakref.WeakKeyDictionary[type, dict[str, str]] = weakref.WeakKeyDictionary()


def describe_fields(model: type[BaseModel]) -> None:
    """Set each field's description from its attribute docstring, once per model class.

    Covers the class's bases and the models nested in its field types, and rebuilds the
    validator schema so JSON Schema shows the descriptions. Fields with a description given
    explicitly (``Field(description=...)``) are left alone; classes whose source is not
    available (defined in a REPL) keep their fields undescribed.
    """
    with _describe_lock:
        _describe(model)


def _describe(model: type[BaseModel]) -> None:
    if model in _described:
        return
    _described.add(model)
    docs: dict[str, str] = {}
    for klass in reversed(model.__mro__):
        if isinstance(klass, type) and issubclass(klass, BaseModel) and klass is not BaseModel:
            known = _class_docs.get(klass)
            if known is None:
                known = _class_docs[klass] = _attribute_docstrings(klass)
            docs.update(known)
    changed = False
    for field_name, field in model.model_fields.items():
        for nested in [*_models_in(field.annotation),
                       *(m for meta in field.metadata for m in _models_in(meta))]:
            _describe(nested)
        if field.description is None and field_name in docs:
            field.description = docs[field_name]
            changed = True
    if changed:
        model.model_rebuild(force=True)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    # Validators may name the schema's input type (pydantic's json_schema_input_type).
    shown = getattr(annotation, "json_schema_input_type", None)
    args = (*typing.get_args(annotation), *([shown] if shown is not None else []))
    return [m for arg in args for m in _models_in(arg)]


def _attribute_docstrings(klass: type) -> dict[str, str]:
    import ast
    import inspect
    import itertools

    node = _class_definition(klass)
    if node is None:
        return {}
    docs = {}
    for statement, following in itertools.pairwise(node.body):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            docs[statement.target.id] = inspect.cleandoc(following.value.value)
    return docs


# Per source file: its lines as linecache holds them, and its classes by qualified name.
_source_classes: dict[str, tuple[list[str], dict[str, Any]]] = {}


def _class_definition(klass: type) -> Any:
    """The ``ast.ClassDef`` of ``klass`` in its source file, or None where there is none.

    What :func:`inspect.getsource` finds (the first class of that qualified name, functions'
    classes under ``<locals>``), but each file is parsed once, not once per class asked for.
    """
    import ast
    import inspect
    import linecache

    try:
        filename = inspect.getsourcefile(klass)
    except TypeError:  # a builtin or REPL class
        return None
    if filename is None:
        return None
    linecache.checkcache(filename)
    lines = linecache.getlines(filename, vars(inspect.getmodule(klass) or klass))
    cached = _source_classes.get(filename)
    if cached is None or cached[0] is not lines:
        classes: dict[str, Any] = {}
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            tree = ast.Module(body=[], type_ignores=[])

        def walk(node: Any, prefix: str) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.ClassDef):
                    name = f"{prefix}{child.name}"
                    classes.setdefault(name, child)
                    walk(child, f"{name}.")
                elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                    walk(child, f"{prefix}{child.name}.<locals>.")
                else:
                    walk(child, prefix)

        walk(tree, "")
        cached = _source_classes[filename] = (lines, classes)
    return cached[1].get(klass.__qualname__)


_BASES: Final[dict[str, type[Spec]]] = {
    "optimizer": OptimizerSpec,
    "initializer": InitializerSpec,
    "activation": ActivationSpec,
    "normalizer": NormalizerSpec,
    "scheduler": SchedulerSpec,
}


def spec_base(kind: str) -> type[Spec]:
    """The spec base class of ``kind``.

    Raises:
        KeyError: ``kind`` is not one of :data:`KINDS`.
    """
    return _BASES[kind]
