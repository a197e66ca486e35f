"""The building-block contract: transforms, the array-namespace shim, chains and groups.

A *transform* is one step of an update rule: it takes the incoming update ``u`` (at the start
of a chain, the gradient) and returns the next one, keeping whatever per-parameter state it
declares. A *chain* runs transforms in order and the optimizer adds the result to the
parameters: ``p += u``. Learning-rate scaling is itself a transform (``scale_by_learning_rate``),
so the sign and the step size are part of the chain, as in optax.

Each transform is written once against :class:`ArrayOps` (``xp``), a tiny namespace of in-place
array operations. The NumPy executor passes a cache-sized block of one parameter as an array
and implements ``xp`` with ufuncs writing into scratch blocks (``out=``); the torch executor
passes a whole param group as a *list* of tensors and implements ``xp`` with one
``torch._foreach_*`` call per operation. The same kernel therefore runs as a blocked NumPy loop
and as a multi-tensor torch kernel.

Two kinds of transforms exist:

- :class:`Transform`: an array kernel ``update(xp, u, state, ctx) -> u``.
- :class:`ScalarTransform`: multiplies the update by a scalar ``factor(ctx, norm)``. Executors
  never touch the arrays for it: the factor is carried along and folded into the next kernel
  that can absorb it (``add_decayed_weights``) or into the final ``p += factor * u``. Its
  ``factor`` may read the global L2 norm of the incoming update (``clip_by_global_norm``).
- :class:`PerTensorTransform`: multiplies each tensor's update by a factor computed from that
  tensor's statistics, the L2 norms of the parameter and of its incoming update
  (``scale_by_trust_ratio`` as in LAMB and LARS). Executors compute the norms of whole tensors,
  however the NumPy backend blocks and packs them, and call
  :meth:`PerTensorTransform.tensor_factor` once per tensor.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["ArrayOps", "Arrays", "Chain", "ChainLike", "Labeler", "MultiTransform",
           "PerTensorTransform", "Ratio", "ScalarTransform", "StepContext", "Transform",
           "as_chain", "label_params", "register_transform", "run_transform", "settle",
           "transform_class", "transform_names"]

Arrays = Any
"""One operand of :class:`ArrayOps`: a NumPy block (``ndarray``) or a list of torch tensors."""
Scalar = float
Labeler = Callable[[str, Any], str]
"""``labeler(param_name, param) -> label``: which chain of a :class:`MultiTransform` to use."""


class ArrayOps(Protocol):
    """The array namespace a transform kernel is written against (``xp``).

    Methods ending in ``_`` work in place on their first argument and return nothing. The
    others return new arrays owned by this step (scratch), which the kernel may then modify in
    place. The incoming update ``u`` and the state may be read freely; before modifying ``u``
    in place call :meth:`writable`, which copies it unless the step already owns it (``u`` may
    be the gradient, or a state array an earlier transform returned).
    """

    def owns(self, a: Arrays) -> bool:
        """Whether ``a`` is scratch this step made (and so may be modified in place)."""
        ...

    def writable(self, a: Arrays) -> Arrays:
        """``a`` itself if this step owns it (scratch), else a scratch copy."""
        ...

    def ratio(self, a: Arrays, b: Arrays) -> Arrays:
        """``a / b`` left unevaluated, to be *returned* as the update and nothing else.

        The executor evaluates it only when the next kernel needs it, and otherwise fuses it
        into the parameter step (``p += scale * a / b``, torch's ``addcdiv_``), saving a pass
        over memory. ``a`` and ``b`` must not change afterwards in this step.
        """
        ...

    def empty_like(self, a: Arrays) -> Arrays:
        """Uninitialized scratch shaped like ``a``."""
        ...

    def copy(self, a: Arrays) -> Arrays:
        """A scratch copy of ``a``."""
        ...

    def mul(self, a: Arrays, b: Arrays | Scalar) -> Arrays:
        """``a * b`` in new scratch."""
        ...

    def add(self, a: Arrays, b: Arrays, alpha: Scalar = 1.0) -> Arrays:
        """``a + alpha * b`` in new scratch."""
        ...

    def div(self, a: Arrays, b: Arrays, out: Arrays | None = None) -> Arrays:
        """``a / b``; written into ``out`` (which must be owned scratch) where the backend can."""
        ...

    def sqrt(self, a: Arrays) -> Arrays:
        """``sqrt(a)`` in new scratch."""
        ...

    def copy_(self, a: Arrays, b: Arrays) -> None:
        """``a[...] = b``."""
        ...

    def mul_(self, a: Arrays, b: Arrays | Scalar) -> None:
        """``a *= b``."""
        ...

    def add_(self, a: Arrays, b: Arrays | Scalar, alpha: Scalar = 1.0) -> None:
        """``a += alpha * b`` (``b`` arrays) or ``a += b`` (``b`` a scalar)."""
        ...

    def div_(self, a: Arrays, b: Arrays | Scalar) -> None:
        """``a /= b``."""
        ...

    def lerp_(self, a: Arrays, b: Arrays, weight: Scalar) -> None:
        """``a += weight * (b - a)`` (an exponential moving average of ``b``)."""
        ...

    def addcmul_(self, a: Arrays, b: Arrays, c: Arrays, value: Scalar = 1.0) -> None:
        """``a += value * b * c``."""
        ...

    def addcdiv_(self, a: Arrays, b: Arrays, c: Arrays, value: Scalar = 1.0) -> None:
        """``a += value * b / c``."""
        ...

    def sqrt_(self, a: Arrays) -> None:
        """``a = sqrt(a)``."""
        ...

    def maximum_(self, a: Arrays, b: Arrays) -> None:
        """``a = maximum(a, b)`` elementwise."""
        ...

    def sign_(self, a: Arrays) -> None:
        """``a = sign(a)`` (-1, 0 or 1) elementwise."""
        ...

    def abs_(self, a: Arrays) -> None:
        """``a = |a|`` elementwise."""
        ...

    def clamp_(self, a: Arrays, low: Scalar, high: Scalar) -> None:
        """``a = clip(a, low, high)`` elementwise."""
        ...

    def sum_of_squares(self, a: Arrays) -> float:
        """``sum(a ** 2)`` over every element (accumulated in float64 where it matters)."""
        ...


class Ratio:
    """An unevaluated ``num / den`` update (see :meth:`ArrayOps.ratio`)."""

    __slots__ = ("den", "num")

    def __init__(self, num: Arrays, den: Arrays) -> None:
        self.num = num
        self.den = den


class StepContext:
    """What a kernel knows besides its update and state, for the parameters it is given.

    The update in flight is ``scale * (u + params_coef * params)``: scalar factors and added
    multiples of the parameters stay pending until a kernel needs plain arrays, so a chain
    ending in ``add_decayed_weights, scale_by_learning_rate`` costs one ``p *= 1 - lr * wd``
    and no pass over ``u``.

    Attributes:
        params: The parameters (same layout as ``u``: a block, or a list of tensors). Read only.
        step: This update's number for these parameters, from 1.
        group: The param group: ``lr`` (schedulers write it), ``weight_decay`` when a
            param-group rule set it, ``label`` and the rest. Read only.
        scale: Pending factor on the update. ``1.0`` when a kernel starts, unless its class sets
            ``handles_scale``; any kernel may set it to defer a factor on what it returns.
        params_coef: Pending multiple of the parameters added to ``u``; ``0.0`` when a kernel
            starts unless its class sets ``handles_scale``.
    """

    __slots__ = ("group", "params", "params_coef", "scale", "step")

    def __init__(self, params: Arrays, step: int, group: Mapping[str, Any]) -> None:
        self.params = params
        self.step = step
        self.group = group
        self.scale = 1.0
        self.params_coef = 0.0


def settle(xp: ArrayOps, u: Arrays, ctx: StepContext, *, keep_scale: bool = False) -> Arrays:
    """Evaluate what is pending on ``u`` into plain arrays and reset ``ctx`` to match.

    Args:
        keep_scale: Leave ``ctx.scale`` pending (only the ratio and ``params_coef`` are
            evaluated).
    """
    if isinstance(u, Ratio):
        u = xp.div(u.num, u.den, out=u.den)
    if ctx.params_coef != 0.0:
        u = xp.writable(u)
        xp.add_(u, ctx.params, alpha=ctx.params_coef)
        ctx.params_coef = 0.0
    if ctx.scale != 1.0 and not keep_scale:
        if xp.owns(u):
            xp.mul_(u, ctx.scale)
        else:
            u = xp.mul(u, ctx.scale)
        ctx.scale = 1.0
    return u


def run_transform(transform: Transform, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
                  ctx: StepContext) -> Arrays:
    """Run one array kernel, evaluating what is pending first unless it handles that itself."""
    if not transform.handles_scale and (ctx.scale != 1.0 or ctx.params_coef != 0.0
                                        or isinstance(u, Ratio)):
        u = settle(xp, u, ctx)
    return transform.update(xp, u, state, ctx)


class Transform(BaseModel):
    """Base of array-kernel transforms; subclasses are frozen, strict pydantic models.

    A subclass declares ``name: Literal["..."] = "..."`` (its config name), its
    hyperparameters as typed, constrained, documented fields, the names of its
    per-parameter state arrays in :attr:`state_names`, and implements :meth:`update`.
    """

    # Field descriptions come from attribute docstrings, read lazily by
    # optiplug.specs.describe_fields (schemas, `optiplug show`), not at class creation.
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str

    state_names: ClassVar[tuple[str, ...]] = ()
    """Per-parameter state arrays, shaped like the parameter; passed to :meth:`update`."""
    handles_scale: ClassVar[bool] = False
    """Whether :meth:`update` takes ``u`` as it is in flight: possibly a :class:`Ratio`, with
    ``ctx.scale`` and ``ctx.params_coef`` pending (else they are evaluated first)."""

    @model_validator(mode="before")
    @classmethod
    def _sequences_as_tuples(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {key: tuple(value) if isinstance(value, list) else value
                    for key, value in data.items()}
        return data

    @classmethod
    def transform_name(cls) -> str:
        """The config name of this transform (its ``name`` default)."""
        default = cls.model_fields["name"].default
        if not isinstance(default, str):
            raise TypeError(f"{cls.__qualname__} must declare name: Literal['...'] = '...'")
        return default

    def initial_value(self, state_name: str) -> float:
        """The value state array ``state_name`` starts at (``0.0``)."""
        return 0.0

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        """Return the next update from ``u``, updating ``state`` in place.

        Args:
            xp: The array namespace.
            u: The incoming update (read only unless made :meth:`ArrayOps.writable`).
            state: This transform's state arrays, in :attr:`state_names` order.
            ctx: Parameters, step number and param group.
        """
        raise NotImplementedError

    def __or__(self, other: ChainLike) -> Chain:
        return as_chain(self) | other


class ScalarTransform(Transform):
    """A transform that multiplies the update by a scalar; it never touches the arrays."""

    needs_norm: ClassVar[bool] = False
    """Whether :meth:`factor` needs the global L2 norm of the incoming update (over every
    parameter the chain updates)."""

    def factor(self, ctx: StepContext, norm: float) -> float:
        """The factor for the parameters of ``ctx.group`` this step (``ctx.params`` is unset).

        Args:
            ctx: Step number and param group.
            norm: The global L2 norm of the incoming update if :attr:`needs_norm`, else NaN.
        """
        raise NotImplementedError

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        raise TypeError("a ScalarTransform is applied through factor(), never update()")


class PerTensorTransform(Transform):
    """A transform that multiplies each tensor's update by a factor of its own.

    The public per-tensor hook: a subclass implements :meth:`tensor_factor` from the L2 norm of
    the parameter tensor and of the update arriving at this transform (every factor before it
    applied). Executors take both norms over whole tensors (in float64 on NumPy) and never
    hand a kernel a part of a tensor for it, so a per-tensor rule needs no backend code.
    """

    def tensor_factor(self, ctx: StepContext, param_norm: float, update_norm: float) -> float:
        """The factor of one tensor's update this step.

        Args:
            ctx: Step number and param group (``ctx.params`` is unset).
            param_norm: L2 norm of the parameter tensor.
            update_norm: L2 norm of the incoming update of that tensor.
        """
        raise NotImplementedError

    def update(self, xp: ArrayOps, u: Arrays, state: Sequence[Arrays],
               ctx: StepContext) -> Arrays:
        raise TypeError("a PerTensorTransform is applied through tensor_factor(), never update()")


class Chain:
    """Transforms applied in order; the optimizer adds the result to the parameters.

    Per-parameter state is keyed ``"<transform name>.<state name>"`` (``"scale_by_adam.mu"``),
    with ``#2``, ``#3`` appended to the transform name when it repeats.
    """

    __slots__ = ("state_keys", "transforms")

    def __init__(self, transforms: Iterable[Transform]) -> None:
        flat: list[Transform] = []
        for item in transforms:
            if isinstance(item, Chain):
                flat.extend(item.transforms)
            elif isinstance(item, Transform):
                flat.append(item)
            else:
                raise TypeError(f"a chain holds transforms, got {type(item).__name__}")
        self.transforms: tuple[Transform, ...] = tuple(flat)
        seen: dict[str, int] = {}
        keys: list[tuple[str, ...]] = []
        for transform in self.transforms:
            seen[transform.name] = seen.get(transform.name, 0) + 1
            prefix = transform.name if seen[transform.name] == 1 else \
                f"{transform.name}#{seen[transform.name]}"
            keys.append(tuple(f"{prefix}.{state}" for state in transform.state_names))
        self.state_keys: tuple[tuple[str, ...], ...] = tuple(keys)
        """Per transform, the keys of its state arrays in the optimizer's state."""

    def all_state_keys(self) -> tuple[str, ...]:
        """Every state key of the chain, in order."""
        return tuple(key for keys in self.state_keys for key in keys)

    def stages(self) -> list[tuple[int, int]]:
        """``(start, stop)`` index ranges split before each transform that needs a norm (the
        global one, or per-tensor ones)."""
        cuts = [0] + [i for i, t in enumerate(self.transforms)
                      if i > 0 and (isinstance(t, PerTensorTransform)
                                    or (isinstance(t, ScalarTransform) and t.needs_norm))]
        return [(start, stop) for start, stop in zip(cuts, [*cuts[1:], len(self.transforms)],
                                                     strict=True)]

    def needs_staging(self) -> bool:
        """Whether a norm is taken after an array kernel, or per tensor (so updates must be
        materialized)."""
        seen_kernel = False
        for transform in self.transforms:
            if isinstance(transform, PerTensorTransform):
                return True
            if isinstance(transform, ScalarTransform):
                if transform.needs_norm and seen_kernel:
                    return True
            else:
                seen_kernel = True
        return False

    def to_config(self) -> list[dict[str, Any]]:
        """The chain as config entries (``[{"name": "scale_by_adam", "b1": 0.9, ...}, ...]``)."""
        return [transform.model_dump() for transform in self.transforms]

    def __or__(self, other: ChainLike) -> Chain:
        return Chain([*self.transforms, *as_chain(other).transforms])

    def __iter__(self) -> Any:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chain) and other.transforms == self.transforms

    def __hash__(self) -> int:
        return hash(self.transforms)

    def __repr__(self) -> str:
        return f"chain({', '.join(repr(t) for t in self.transforms)})"


ChainLike = Chain | Transform | Sequence[Transform]


def as_chain(value: ChainLike) -> Chain:
    """A :class:`Chain` from a chain, one transform, or a sequence of transforms."""
    if isinstance(value, Chain):
        return value
    if isinstance(value, Transform):
        return Chain([value])
    return Chain(value)


class MultiTransform:
    """Different chains for different parameters, chosen by a label per parameter.

    A parameter's label comes from its param group's ``"label"`` key when set, else from
    ``labels``: a callable ``labels(name, param) -> label`` or a mapping of ``fnmatch``
    patterns on parameter names to labels (the first matching pattern wins). Parameters
    without a label use the chain labelled ``default``.

    Args:
        transforms: Label to chain (or transform, or sequence of transforms).
        labels: How to label parameters, see above.
        default: The label of parameters nothing else labels.
    """

    __slots__ = ("chains", "default", "labels")

    def __init__(self, transforms: Mapping[str, ChainLike],
                 labels: Labeler | Mapping[str, str] | None = None,
                 default: str = "default") -> None:
        if not transforms:
            raise ValueError("multi_transform needs at least one chain")
        self.chains: dict[str, Chain] = {str(k): as_chain(v) for k, v in transforms.items()}
        self.labels = labels
        self.default = default
        if isinstance(labels, Mapping):
            unknown = sorted(set(labels.values()) - set(self.chains))
            if unknown:
                raise ValueError(f"labels name chains {unknown} that multi_transform lacks; "
                                 f"it has {sorted(self.chains)}")

    def label_of(self, name: str, param: Any, group_label: str | None) -> str:
        """The label of parameter ``name``.

        Raises:
            ValueError: the label has no chain.
        """
        label = group_label
        if label is None:
            if callable(self.labels):
                label = self.labels(name, param)
            elif isinstance(self.labels, Mapping):
                label = next((lab for pattern, lab in self.labels.items()
                              if fnmatch.fnmatchcase(name, pattern)), None)
        label = self.default if label is None else label
        if label not in self.chains:
            raise ValueError(f"parameter {name!r} is labelled {label!r}, which has no chain; "
                             f"the chains are {sorted(self.chains)}")
        return label

    def __repr__(self) -> str:
        return f"multi_transform({self.chains!r}, labels={self.labels!r})"


def label_params(transform: MultiTransform,
                 groups: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Split named param groups so each holds parameters of one label (stored as ``label``).

    Args:
        transform: The chains and labelling.
        groups: Groups whose ``params`` are ``(name, param)`` pairs.
    """
    result: list[dict[str, Any]] = []
    for group in groups:
        by_label: dict[str, list[tuple[str, Any]]] = {}
        for name, param in group["params"]:
            label = transform.label_of(name, param, group.get("label"))
            by_label.setdefault(label, []).append((name, param))
        for label, named in by_label.items():
            result.append({**group, "params": named, "label": label})
    return result


_TRANSFORMS: dict[str, type[Transform]] = {}


def register_transform(cls: type[Transform]) -> type[Transform]:
    """Make a transform class usable by name in configs (``{"name": ..., ...}``).

    Usable as a class decorator. Registering another class under a taken name replaces it.

    Raises:
        TypeError: ``cls`` is not a :class:`Transform` subclass with a ``name`` literal.
    """
    if not (isinstance(cls, type) and issubclass(cls, Transform)):
        raise TypeError(f"register_transform takes a Transform subclass, got {cls!r}")
    _TRANSFORMS[cls.transform_name()] = cls
    return cls


def transform_class(name: str) -> type[Transform] | None:
    """The transform class registered under ``name``, if any."""
    return _TRANSFORMS.get(name)


def transform_names() -> list[str]:
    """Sorted names of the registered transforms."""
    return sorted(_TRANSFORMS)
