"""Chains as configs: the spec fields, the builders, and named chains registered as optimizers.

A chain config lists transforms by name, each validated by its own strict model, so a bad
entry is reported at its path (``transforms.1.b1``)::

    {"name": "chain", "lr": 0.001,
     "transforms": [{"name": "clip_by_global_norm", "max_norm": 1.0},
                    {"name": "scale_by_adam", "b1": 0.9},
                    {"name": "scale_by_learning_rate"}]}

``transforms`` may instead map labels to chains, with ``labels`` mapping parameter-name
patterns to labels (parameters no pattern matches use the ``default`` chain).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema

from ..errors import ConfigError, ConfigIssue
from ..registry import Registry, default_registry
from ..specs import OptimizerSpec, PositiveFloat
from ..technique import Technique
from . import _blocks
from ._base import (
    Chain,
    ChainLike,
    MultiTransform,
    Transform,
    as_chain,
    transform_class,
    transform_names,
)

__all__ = ["ChainSpecBase", "ChainTransforms", "NamedChainSpec", "TransformEntry",
           "build_numpy", "build_torch", "chain_optimizer", "chain_technique", "register_chain",
           "register_chain_config"]

_BUILTIN_BLOCKS = (_blocks.ScaleByAdam, _blocks.ScaleByMomentum, _blocks.ScaleByRms,
                   _blocks.AddDecayedWeights, _blocks.Clip, _blocks.ClipByGlobalNorm,
                   _blocks.ScaleByLearningRate, _blocks.Scale, _blocks.ScaleByTrustRatio,
                   _blocks.ClipByTensorNorm)
_BuiltinEntry = Annotated[Union[_BUILTIN_BLOCKS], Field(discriminator="name")]  # type: ignore[valid-type]  # noqa: UP007


class FrozenDict(dict[str, Any]):
    """A read-only, hashable dict, so specs holding mappings stay hashable and serializable."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(self.items()))

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler
                                     ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(cls, handler(dict[str, Any]))

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a spec's mapping is read-only; build a new spec instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only
    __ior__ = _read_only


def _to_transform(value: Any) -> Transform:
    if isinstance(value, Transform):
        return value
    if not isinstance(value, Mapping):
        raise PydanticCustomError("transform_type", "a transform is a mapping with a 'name' "
                                                    "(got {kind})",
                                  {"kind": type(value).__name__})
    name = value.get("name")
    cls = transform_class(name) if isinstance(name, str) else None
    if cls is None:
        import difflib

        close = difflib.get_close_matches(str(name), transform_names(), n=2)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ValidationError.from_exception_data("transform", [InitErrorDetails(
            type=PydanticCustomError("unknown_transform",
                                     "unknown transform {name}; {hint}known: {known}",
                                     {"name": repr(name), "hint": hint,
                                      "known": ", ".join(transform_names())}),
            loc=("name",), input=name)])
    return cls.model_validate(dict(value))


TransformEntry = Annotated[
    Transform,
    PlainValidator(_to_transform, json_schema_input_type=_BuiltinEntry),
    PlainSerializer(lambda transform: transform.model_dump(), return_type=dict),
]
"""One transform in a config: ``{"name": "scale_by_adam", ...}`` or a Transform object."""

_SEQUENCE = TypeAdapter(tuple[TransformEntry, ...])
_BY_LABEL = TypeAdapter(dict[str, tuple[TransformEntry, ...]])
_LABELS = TypeAdapter(dict[str, str], config=ConfigDict(strict=True))


def _as_tuple(value: Any) -> Any:
    if isinstance(value, Chain):
        return value.transforms
    if isinstance(value, list):
        return tuple(value)
    return value


def _validate_transforms(value: Any) -> tuple[Transform, ...] | FrozenDict:
    if isinstance(value, MultiTransform):
        value = {label: chain.transforms for label, chain in value.chains.items()}
    if isinstance(value, Mapping):
        if not value:
            raise PydanticCustomError("empty_chains", "give at least one labelled chain")
        return FrozenDict(_BY_LABEL.validate_python(
            {str(k): _as_tuple(v) for k, v in value.items()}))
    if isinstance(value, Transform):
        value = (value,)
    return _SEQUENCE.validate_python(_as_tuple(value))


def _dump_transforms(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {label: [t.model_dump() for t in chain] for label, chain in value.items()}
    return [t.model_dump() for t in value]


ChainTransforms = Annotated[
    Any,
    PlainValidator(_validate_transforms, json_schema_input_type=Union[  # noqa: UP007
        list[_BuiltinEntry], dict[str, list[_BuiltinEntry]]]),
    PlainSerializer(_dump_transforms),
]
"""A chain (list of transforms) or a mapping of labels to chains."""

Labels = Annotated[
    Any,
    PlainValidator(lambda value: FrozenDict(_LABELS.validate_python(value)),
                   json_schema_input_type=dict[str, str]),
    PlainSerializer(dict),
]
"""``{fnmatch pattern on parameter names: label}``, kept in order (first match wins)."""


def _make(transforms: Any, labels: Mapping[str, str]) -> Chain | MultiTransform:
    if isinstance(transforms, Mapping):
        return MultiTransform(transforms, labels=dict(labels) or None)
    return Chain(transforms)


def _check_labels(transforms: Any, labels: Mapping[str, str]) -> None:
    if not isinstance(transforms, Mapping):
        if labels:
            raise ValueError("'labels' needs 'transforms' to map labels to chains")
        return
    unknown = sorted(set(labels.values()) - set(transforms))
    if unknown:
        raise ValueError(f"labels name chains {unknown} that 'transforms' lacks; it has "
                         f"{sorted(transforms)}")


class ChainSpecBase(OptimizerSpec):
    """Fields of a chain optimizer config (the ``chain`` technique's spec subclasses it)."""

    transforms: ChainTransforms
    """The transforms, applied in order (``[{"name": "scale_by_adam"}, ...]``), or a mapping
    of labels to such lists for different chains on different parameters."""
    labels: Labels = FrozenDict({})
    """``fnmatch`` pattern on parameter names to label (first match wins); parameters no
    pattern matches, and no param group labels, use the ``default`` chain."""

    @model_validator(mode="after")
    def _labels_known(self) -> ChainSpecBase:
        _check_labels(self.transforms, self.labels)
        return self

    def to_transform(self) -> Chain | MultiTransform:
        """The chain (or labelled chains) this spec describes."""
        return _make(self.transforms, self.labels)


Target = tuple[str | None, int, str]
"""Where a chain hyperparameter goes: (label or ``None``, transform index, field name)."""


class NamedChainSpec(OptimizerSpec):
    """Base of the specs :func:`register_chain` makes: ``lr`` and the hyperparameters the chain
    declares are spec fields; the rest of the chain is fixed."""

    chain_transform: ClassVar[Chain | MultiTransform]
    chain_hyperparameters: ClassVar[Mapping[str, tuple[Target, ...]]] = {}
    """Spec field name to the transform fields it sets."""

    def to_transform(self) -> Chain | MultiTransform:
        """The registered chain with this spec's hyperparameters put into its transforms."""
        if not self.chain_hyperparameters:
            return self.chain_transform
        chains: dict[str | None, list[Transform]] = (
            {label: list(chain.transforms)
             for label, chain in self.chain_transform.chains.items()}
            if isinstance(self.chain_transform, MultiTransform)
            else {None: list(self.chain_transform.transforms)})
        for field_name, targets in self.chain_hyperparameters.items():
            value = getattr(self, field_name)
            for label, index, transform_field in targets:
                current = chains[label][index]
                chains[label][index] = type(current).model_validate(
                    {**current.model_dump(), transform_field: value})
        if isinstance(self.chain_transform, MultiTransform):
            return MultiTransform({str(k): Chain(v) for k, v in chains.items()},
                                  labels=self.chain_transform.labels,
                                  default=self.chain_transform.default)
        return Chain(chains[None])


def _resolve_target(transform: Chain | MultiTransform, path: str) -> Target:
    """``[label/]transform[#n].field`` to a :data:`Target`.

    Raises:
        ValueError: the path names no transform field of the chain.
    """
    label: str | None = None
    rest = path
    if isinstance(transform, MultiTransform):
        label, slash, rest = path.partition("/")
        if not slash or label not in transform.chains:
            raise ValueError(f"{path!r}: with labelled chains write 'label/transform.field', "
                             f"label one of {sorted(transform.chains)}")
        chain = transform.chains[label]
    else:
        chain = transform
    name, dot, field_name = rest.partition(".")
    if not dot:
        raise ValueError(f"{path!r}: write 'transform.field' (e.g. 'scale_by_adam.b1')")
    name, _, repeat = name.partition("#")
    wanted = int(repeat) if repeat.isdigit() else 1
    seen = 0
    for index, item in enumerate(chain.transforms):
        if item.name == name:
            seen += 1
            if seen == wanted:
                if field_name == "name" or field_name not in type(item).model_fields:
                    fields = [f for f in type(item).model_fields if f != "name"]
                    raise ValueError(f"{path!r}: {name} has no field {field_name!r}; its "
                                     f"fields are {fields}")
                return label, index, field_name
    names = [item.name for item in chain.transforms]
    raise ValueError(f"{path!r}: the chain has no transform {rest.partition('.')[0]!r}; it has "
                     f"{names}")


def _hyperparameter_fields(transform: Chain | MultiTransform,
                           hyperparameters: Mapping[str, str | Sequence[str]]
                           ) -> tuple[dict[str, Any], dict[str, tuple[Target, ...]]]:
    """Spec fields (typed, constrained, described as in the transform) and their targets.

    Raises:
        ConfigError: a path names nothing, a name is taken by the optimizer spec itself, or
            one hyperparameter's targets disagree on type or default.
    """
    from ..specs import describe_fields

    issues: list[ConfigIssue] = []
    fields: dict[str, Any] = {}
    targets: dict[str, tuple[Target, ...]] = {}
    reserved = set(OptimizerSpec.model_fields)
    for field_name, paths in hyperparameters.items():
        where = f"hyperparameters.{field_name}"
        if not field_name.isidentifier() or field_name in reserved:
            issues.append(ConfigIssue(where, f"{field_name!r} cannot be a hyperparameter name "
                                             f"(reserved: {sorted(reserved)})"))
            continue
        listed = [paths] if isinstance(paths, str) else list(paths)
        resolved: list[Target] = []
        for path in listed:
            try:
                resolved.append(_resolve_target(transform, path))
            except ValueError as exc:
                issues.append(ConfigIssue(where, str(exc)))
        if not resolved or len(resolved) != len(listed):
            if not listed:
                issues.append(ConfigIssue(where, "give at least one 'transform.field' path"))
            continue
        infos = []
        for label, index, transform_field in resolved:
            owner = (transform.chains[label] if isinstance(transform, MultiTransform)
                     and label is not None else transform)
            assert isinstance(owner, Chain)
            item = owner.transforms[index]
            describe_fields(type(item))
            infos.append((type(item).model_fields[transform_field],
                          getattr(item, transform_field)))
        (info, default), *others = infos
        if any(other.annotation != info.annotation or other.metadata != info.metadata
               or value != default for other, value in others):
            issues.append(ConfigIssue(where, "its transform fields differ in type, constraints "
                                             "or current value"))
            continue
        annotation = (Annotated[(info.annotation, *info.metadata)]
                      if info.metadata else info.annotation)
        description = info.description or f"Sets {', '.join(listed)}."
        fields[field_name] = (annotation, Field(default=default, description=description))
        targets[field_name] = tuple(resolved)
    if issues:
        raise ConfigError(issues)
    return fields, targets


ChainSpecLike = ChainSpecBase | NamedChainSpec


def build_numpy(spec: ChainSpecLike, params: Any) -> Any:
    """A :class:`~optiplug.transforms.NumpyChainOptimizer` for ``spec``."""
    from ._numpy import NumpyChainOptimizer

    return NumpyChainOptimizer(spec.group_params(params), spec.to_transform(), lr=spec.lr,
                               nonfinite=spec.nonfinite, **spec.clipping())


def build_torch(spec: ChainSpecLike, params: Any) -> Any:
    """A ``torch.optim.Optimizer`` (:class:`~optiplug.transforms.TorchChainOptimizer`)."""
    from ._torch import TorchChainOptimizer

    return TorchChainOptimizer(spec.group_params(params), spec.to_transform(), lr=spec.lr,
                               nonfinite=spec.nonfinite, **spec.clipping())


def _config_error(exc: ValidationError, prefix: str = "") -> ConfigError:
    issues = []
    for error in exc.errors(include_url=False):
        path = ".".join([*([prefix] if prefix else []), *(str(p) for p in error["loc"])])
        issues.append(ConfigIssue(path, error["msg"]))
    return ConfigError(issues)


def chain_technique(name: str,
                    transforms: ChainLike | Mapping[str, ChainLike] | Sequence[Any], *,
                    summary: str, lr: float = 1e-3, labels: Mapping[str, str] | None = None,
                    reference: str = "",
                    hyperparameters: Mapping[str, str | Sequence[str]] | None = None
                    ) -> Technique:
    """The optimizer :class:`~optiplug.Technique` of a chain, ready to register or to return
    from a plugin's ``optiplug_optimizers()`` hook.

    Args:
        name: The optimizer's name (``optiplug.optimizer(name, params, lr=...)``).
        transforms: Transform objects or config entries (``{"name": "scale_by_adam"}``), a
            chain, or a mapping of labels to chains.
        summary: One or two sentences for ``optiplug list``.
        lr: Default learning rate of the new optimizer's spec.
        labels: Parameter-name patterns to labels, when ``transforms`` is a mapping.
        reference: Paper or documentation the rule follows.
        hyperparameters: Spec fields of the new optimizer, each naming the transform fields it
            sets: ``{"b1": "scale_by_adam.b1", "weight_decay":
            "add_decayed_weights.weight_decay"}`` (``transform#2.field`` for a repeated
            transform, ``label/transform.field`` with labelled chains, a list to set several).
            Each field gets the transform field's type, constraints and description, and the
            value in ``transforms`` as its default.

    Raises:
        ConfigError: an invalid transform (with its path), label or hyperparameter.
    """
    try:
        validated = _validate_transforms(transforms)
    except ValidationError as exc:
        raise _config_error(exc, "transforms") from None
    try:
        _check_labels(validated, labels or {})
    except ValueError as exc:
        raise ConfigError([ConfigIssue("labels", str(exc))]) from None
    made = _make(validated, labels or {})
    fields, targets = _hyperparameter_fields(made, hyperparameters or {})
    spec = create_model(
        "".join(part.title() for part in name.replace("-", "_").split("_")) + "Spec",
        __base__=NamedChainSpec, __doc__=summary, __module__=__name__,
        name=(Literal[name], name),  # type: ignore[arg-type]
        lr=(PositiveFloat, Field(default=lr, description="Learning rate.")),
        **fields)
    spec.chain_transform = made
    spec.chain_hyperparameters = targets
    return Technique(kind="optimizer", name=name, spec=spec,
                     builders={"numpy": build_numpy, "torch": build_torch},
                     summary=summary, reference=reference)


def register_chain(name: str, transforms: ChainLike | Mapping[str, ChainLike] | Sequence[Any],
                   *, summary: str, lr: float = 1e-3, labels: Mapping[str, str] | None = None,
                   reference: str = "",
                   hyperparameters: Mapping[str, str | Sequence[str]] | None = None,
                   registry: Registry | None = None, override: bool = False) -> Technique:
    """Register a chain in-process as an optimizer of its own, built by name like any other.

    Takes the arguments of :func:`chain_technique`, plus:

    Args:
        registry: Defaults to the process-wide registry.
        override: Replace an optimizer already registered under ``name``.

    Returns:
        The registered :class:`~optiplug.Technique`.

    Raises:
        ConfigError: an invalid transform (with its path) or label.
        PluginError: ``name`` is taken and ``override`` is false.
    """
    technique = chain_technique(name, transforms, summary=summary, lr=lr, labels=labels,
                                reference=reference, hyperparameters=hyperparameters)
    (registry or default_registry()).register(technique, override=override)
    return technique


class _NamedChainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_\-]*$")]
    summary: Annotated[str, Field(min_length=1)]
    reference: str = ""
    lr: PositiveFloat = 1e-3
    transforms: ChainTransforms
    labels: Labels = FrozenDict({})
    hyperparameters: dict[str, str | tuple[str, ...]] = {}


def register_chain_config(config: Mapping[str, Any] | str | os.PathLike[str], *,
                          registry: Registry | None = None, override: bool = False
                          ) -> Technique:
    """Register a named chain from a config file (YAML, TOML, JSON) or mapping::

        name: clipped_adamw
        summary: AdamW with global-norm clipping.
        lr: 0.001
        transforms:
          - {name: clip_by_global_norm, max_norm: 1.0}
          - {name: scale_by_adam}
          - {name: add_decayed_weights, weight_decay: 0.01}
          - {name: scale_by_learning_rate}
        hyperparameters: {weight_decay: add_decayed_weights.weight_decay}

    Raises:
        ConfigError: every bad path of the file.
        PluginError: the name is taken and ``override`` is false.
    """
    from ..config import load_config

    source = None
    if isinstance(config, (str, os.PathLike)):
        source = str(config)
        config = load_config(config)
    try:
        parsed = _NamedChainConfig.model_validate(
            {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    except ValidationError as exc:
        raise ConfigError(_config_error(exc).issues, source=source) from None
    try:
        return register_chain(parsed.name, parsed.transforms, summary=parsed.summary,
                              lr=parsed.lr, labels=parsed.labels, reference=parsed.reference,
                              hyperparameters=parsed.hyperparameters, registry=registry,
                              override=override)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=source) from None


def chain_optimizer(transform: ChainLike | MultiTransform, params: Any, *, lr: float = 1e-3,
                    backend: str | None = None, registry: Registry | None = None,
                    **options: Any) -> Any:
    """Build an optimizer from a chain object through the registry's ``chain`` technique.

    The optimizer is built exactly as ``optiplug.build({"name": "chain", ...})`` would, so
    lifecycle hooks apply. A :class:`~optiplug.transforms.MultiTransform` whose labels are a
    callable is resolved here into labelled param groups (``params`` must then be flat).

    Args:
        transform: A chain, a transform, a sequence of transforms or a multi-transform.
        params: Parameters as for any optimizer.
        lr: Default learning rate.
        backend: ``"numpy"`` or ``"torch"``; detected from ``params`` when left out.
        registry: Defaults to the process-wide registry.
        **options: Further spec fields (``param_groups``, ``nonfinite``).
    """
    from ..config import build
    from ..param_groups import named_params

    labels: Mapping[str, str] = {}
    if isinstance(transform, MultiTransform):
        chains: Any = {label: chain.transforms for label, chain in transform.chains.items()}
        if callable(transform.labels):
            items, _ = named_params(params)
            grouped: dict[str, list[tuple[str, Any]]] = {}
            for item_name, param in items:
                grouped.setdefault(transform.label_of(item_name, param, None), []).append(
                    (item_name, param))
            params = [{"params": named, "label": label} for label, named in grouped.items()]
        elif isinstance(transform.labels, Mapping):
            labels = transform.labels
        if transform.default != "default":
            chains["default"] = chains[transform.default]
    else:
        chains = as_chain(transform).transforms
    config = {"kind": "optimizer", "name": "chain", "lr": lr, "transforms": chains,
              "labels": dict(labels), **options}
    return build(config, backend=backend, registry=registry, params=params)
