"""Specs: the frozen, validated pydantic models that describe one configured technique.

Every technique has a spec class that subclasses the base of its kind and declares
``name: Literal["<technique>"] = "<technique>"`` (the discriminator) plus its hyperparameters,
each typed, constrained and described. Specs are strict: ``"0.1"`` is not a number and ``1`` is
not a boolean, lists become tuples (specs are frozen), unknown keys are rejected, and NaN or
infinity is never a valid hyperparameter. ``type(spec)(**spec.model_dump())`` and
``optiplug.build(spec.model_dump())`` give the same spec back.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "KINDS",
    "ActivationSpec",
    "Beta",
    "InitializerSpec",
    "Kind",
    "NonNegativeFloat",
    "NonNegativeInt",
    "NormalizerSpec",
    "OptimizerSpec",
    "PositiveFloat",
    "PositiveInt",
    "Probability",
    "SchedulerSpec",
    "Spec",
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

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True,
                              use_attribute_docstrings=True, validate_default=False)

    kind: str
    name: str

    spec_kind: ClassVar[Kind]

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

    def hyperparameters(self) -> dict[str, Any]:
        """The spec's values without ``kind`` and ``name``."""
        return {k: v for k, v in self.model_dump().items() if k not in ("kind", "name")}


class OptimizerSpec(Spec):
    """Base of optimizer specs: every optimizer has a learning rate."""

    spec_kind: ClassVar[Kind] = "optimizer"
    kind: Literal["optimizer"] = "optimizer"
    lr: PositiveFloat = 1e-3
    """Learning rate (step size), > 0."""


class InitializerSpec(Spec):
    """Base of weight-initializer specs."""

    spec_kind: ClassVar[Kind] = "initializer"
    kind: Literal["initializer"] = "initializer"


class ActivationSpec(Spec):
    """Base of activation-function specs."""

    spec_kind: ClassVar[Kind] = "activation"
    kind: Literal["activation"] = "activation"


class NormalizerSpec(Spec):
    """Base of normalizer specs (data scalers and normalization layers)."""

    spec_kind: ClassVar[Kind] = "normalizer"
    kind: Literal["normalizer"] = "normalizer"


class SchedulerSpec(Spec):
    """Base of learning-rate scheduler specs."""

    spec_kind: ClassVar[Kind] = "scheduler"
    kind: Literal["scheduler"] = "scheduler"


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
