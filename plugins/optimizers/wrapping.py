"""Shared machinery of the optimizer wrappers (``lookahead``, ``ema``): not a technique itself.

A wrapper's config names any registered optimizer as its ``base``, validated by that optimizer's
own spec, so a bad value is reported at its path (``base.lr``)::

    {"name": "lookahead", "base": {"name": "adamw", "lr": 1e-3}, "k": 5, "alpha": 0.5}

The base optimizer is built by its technique's builder over the same params; the wrapper shares
its ``param_groups`` (schedulers and param-group edits reach the base), and its ``state_dict``
holds the base's next to its own arrays, keyed by parameter name.

Wrappers that keep weights for evaluation (slow weights, averages) follow the schedule-free
protocol: ``opt.eval()`` swaps those weights into the parameters before evaluating and
``opt.train()`` swaps the training weights back before the next step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, PlainSerializer, PlainValidator, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

import optiplug
from optiplug.backends.numpy import NumpyOptimizer
from optiplug.param_groups import StandardOptimizerSpec

__all__ = ["BaseOptimizer", "NumpyWrapper", "WrapperSpec", "build_base", "split_wrapper_part",
           "with_wrapper_part"]

Array = NDArray[Any]
StepHook = Callable[[Any, tuple[Any, ...], dict[str, Any]], Any]


def _to_optimizer_spec(value: Any) -> optiplug.OptimizerSpec:
    if isinstance(value, optiplug.OptimizerSpec):
        return value
    if not isinstance(value, Mapping):
        raise PydanticCustomError("optimizer_config", "the base optimizer is a mapping with a "
                                                      "'name' (got {kind})",
                                  {"kind": type(value).__name__})
    try:
        spec = optiplug.to_spec(dict(value), kind="optimizer")
    except optiplug.ConfigError as exc:
        details = [InitErrorDetails(
            type=PydanticCustomError("invalid_optimizer", "{message}",
                                     {"message": issue.message}),
            loc=tuple(issue.path.split(".")) if issue.path else (), input=value)
            for issue in exc.issues]
        raise ValidationError.from_exception_data("base", details) from None
    if not isinstance(spec, optiplug.OptimizerSpec):
        raise PydanticCustomError("optimizer_config", "the base must be an optimizer")
    return spec


BaseOptimizer = Annotated[
    optiplug.OptimizerSpec,
    PlainValidator(_to_optimizer_spec, json_schema_input_type=dict[str, Any]),
    PlainSerializer(lambda spec: spec.model_dump(), return_type=dict),
    Field(examples=[{"name": "adamw", "lr": 1e-3}], validate_default=True),
]
"""A nested optimizer config (``{"name": "adamw", "lr": 1e-3}``), validated by its own spec."""


class WrapperSpec(StandardOptimizerSpec):
    """Base of wrapper specs: the wrapped optimizer, and an optional lr that overrides its lr.

    ``param_groups`` rules, the grouping fields (``decay_bias_and_norm``, ``layer_decay``,
    ``layer_patterns``), gradient clipping and the ``nonfinite`` policy given to the wrapper
    act on the base.
    """

    base: BaseOptimizer = Field(default_factory=lambda: _to_optimizer_spec({"name": "adamw"}))
    """The wrapped optimizer's config: any registered optimizer (``{"name": "adamw", ...}``);
    AdamW with its defaults when left out."""
    lr: optiplug.PositiveFloat | None = None  # type: ignore[assignment]
    """Learning rate of the base optimizer, overriding the base config's; left out (``None``):
    the base config's own (the validated spec then holds that value)."""

    @model_validator(mode="after")
    def _lr_from_base(self) -> WrapperSpec:
        if self.lr is None:
            # The spec is frozen; filling in a default at validation is what pydantic allows.
            object.__setattr__(self, "lr", self.base.lr)
        return self

    def base_spec(self, *, nonfinite: bool = True) -> optiplug.OptimizerSpec:
        """The base spec, with :attr:`lr` applied, and the wrapper's ``param_groups`` rules,
        grouping and clipping fields and (with ``nonfinite``) its ``nonfinite`` policy where
        the wrapper's spec sets them."""
        updates: dict[str, Any] = {}
        if self.lr != self.base.lr:
            updates["lr"] = self.lr
        forwarded = (("param_groups", ()), ("decay_bias_and_norm", False),
                     ("layer_decay", None), ("layer_patterns", ()), ("clip_grad_norm", None),
                     ("clip_grad_norm_type", 2.0), ("clip_grad_value", None),
                     ("nonfinite", "ignore"))
        for key, default in forwarded if nonfinite else forwarded[:-1]:
            value = getattr(self, key, default)
            if value != default and key in type(self.base).model_fields:
                updates[key] = value
        if not updates:
            return self.base
        return type(self.base).model_validate({**self.base.model_dump(), **updates})

    def grouping_spec(self) -> optiplug.OptimizerSpec:
        """The base spec: its settings (with the wrapper's forwarded) decide the groups."""
        return self.base_spec().grouping_spec()


def build_base(spec: WrapperSpec, backend: str, params: Any) -> Any:
    """Build the base optimizer of ``spec`` for ``backend`` over ``params``.

    Its builder is called directly: lifecycle hooks see the wrapper, not the optimizer inside.
    The wrapper's ``nonfinite`` policy goes to a NumPy base; a torch wrapper applies it itself
    (one check of the gradients before the base steps).

    Raises:
        ConfigError: the base optimizer has no builder for ``backend`` (path ``base``).
    """
    base = spec.base_spec(nonfinite=backend != "torch")
    technique = optiplug.registry().get("optimizer", base.name)
    builder = technique.builders.get(backend)
    if builder is None:
        raise optiplug.ConfigError([optiplug.ConfigIssue("base", (
            f"optimizer {base.name!r} has no {backend!r} backend; it has: "
            f"{', '.join(technique.backends)}"))])
    return builder(base, params=params)


class _Handle:
    """What the hook registration methods return: ``remove()`` unregisters the hook."""

    __slots__ = ("_hooks", "_key")
    _next: ClassVar[int] = 0

    def __init__(self, hooks: dict[int, StepHook], hook: StepHook) -> None:
        self._hooks = hooks
        self._key = _Handle._next
        _Handle._next += 1
        hooks[self._key] = hook

    def remove(self) -> None:
        """Unregister the hook (a second call does nothing)."""
        self._hooks.pop(self._key, None)

    def __enter__(self) -> _Handle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


class NumpyWrapper(NumpyOptimizer):
    """A NumPy optimizer around another: shares its groups and grads, adds per-parameter arrays.

    Subclasses set :attr:`arrays` (the names of their per-parameter arrays, created by
    :meth:`initial_arrays`) and implement :meth:`after_base_step`; :attr:`eval_array` names the
    array :meth:`eval` swaps into the parameters.
    """

    arrays: ClassVar[tuple[str, ...]] = ()
    eval_array: ClassVar[str | None] = None

    def __init__(self, base: NumpyOptimizer, options: Mapping[str, Any]) -> None:
        groups = [{"params": list(zip(group["param_names"], group["params"], strict=True))}
                  for group in base.param_groups]
        super().__init__(groups, {}, threads=1)
        self.base = base
        self.options = dict(options)
        self.param_groups = base.param_groups
        self.defaults = base.defaults
        self.grads = base.grads
        self.steps = 0
        self.evaluating = False
        self._pre_hooks: dict[int, StepHook] = {}
        self._post_hooks: dict[int, StepHook] = {}
        self.state = {name: self.initial_arrays(param) for name, param in self._wrapped_pairs()}

    def _wrapped_pairs(self) -> list[tuple[str, Array]]:
        return [(name, param) for group in self.param_groups
                for name, param in zip(group["param_names"], group["params"], strict=True)]

    def initial_arrays(self, param: Array) -> dict[str, Array]:
        """The wrapper's arrays of one parameter at construction."""
        return {key: param.copy() for key in self.arrays}

    stepped_only: ClassVar[bool] = False
    """Update only the parameters that had a gradient this step (not absent or ``None`` in
    ``grads``: torch.optim leaves a parameter whose ``grad`` is ``None`` untouched); else
    every one."""

    def after_base_step(self, params: Sequence[Array], arrays: Mapping[str, Sequence[Array]],
                        ) -> None:
        """Update the parameters and the wrapper's arrays after the base optimizer stepped."""
        raise NotImplementedError

    # ---------------------------------------------------------------------------- the API
    def register_step_pre_hook(self, hook: StepHook) -> Any:
        """Call ``hook(optimizer, args, kwargs)`` before every step (torch's signature)."""
        return _Handle(self._pre_hooks, hook)

    def register_step_post_hook(self, hook: StepHook) -> Any:
        """Call ``hook(optimizer, args, kwargs)`` after every step (torch's signature)."""
        return _Handle(self._post_hooks, hook)

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero the base optimizer's held gradients."""
        self.base.zero_grad(set_to_none)

    def step(self, grads: Any = None) -> None:
        """One step of the base optimizer, then the wrapper's update.

        Raises:
            RuntimeError: in evaluation mode (call :meth:`train` first).
        """
        if self.evaluating:
            raise RuntimeError(f"{type(self).__name__} is in evaluation mode (eval() swapped "
                               f"the evaluation weights in): call train() before step()")
        args: tuple[Any, ...] = (grads,) if grads is not None else ()
        kwargs: dict[str, Any] = {}
        for hook in list(self._pre_hooks.values()):
            result = hook(self, args, kwargs)
            if result is not None:
                args, kwargs = result
        grads = kwargs.get("grads", args[0] if args else None)
        skipped = self.base.skipped_steps
        try:
            self.base.step(grads)
        finally:
            self.skipped_steps = self.base.skipped_steps
        if self.base.skipped_steps == skipped:
            self.steps += 1
            named = self._wrapped_pairs()
            if self.stepped_only and isinstance(grads, Mapping):
                named = [(name, param) for name, param in named
                         if grads.get(name) is not None]
            self.after_base_step([param for _, param in named],
                                 {key: [self.state[name][key] for name, _ in named]
                                  for key in self.arrays})
        for hook in list(self._post_hooks.values()):
            hook(self, (grads,) if grads is not None else (), {})

    def eval(self) -> None:
        """Swap the evaluation weights into the parameters (until :meth:`train`)."""
        if not self.evaluating:
            self._swap()
            self.evaluating = True

    def train(self) -> None:
        """Swap the training weights back into the parameters (after :meth:`eval`)."""
        if self.evaluating:
            self._swap()
            self.evaluating = False

    def _swap(self) -> None:
        if self.eval_array is None:
            return
        for name, param in self._wrapped_pairs():
            other = self.state[name][self.eval_array]
            held = param.copy()
            np.copyto(param, other)
            np.copyto(other, held)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state dict, with this wrapper's part put first in its
        ``"wrappers"`` list (options, step count and arrays by parameter name).

        Raises:
            RuntimeError: in evaluation mode (call :meth:`train` first).
        """
        if self.evaluating:
            raise RuntimeError("call train() before state_dict(): eval() swapped the "
                               "evaluation weights into the parameters")
        return with_wrapper_part(self.base.state_dict(), self, {
            name: {key: value.copy() for key, value in entry.items()}
            for name, entry in self.state.items()})

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a :meth:`state_dict`; nothing changes if any part does not fit.

        Raises:
            ConfigError: another optimizer's state, other options, a missing, extra or
                misshapen array, or a base state that does not load.
        """
        own, base_state = split_wrapper_part(state_dict, self, self.state, np.ndarray)
        self.base.load_state_dict(base_state)
        for name, entry in own["state"].items():
            for key, value in entry.items():
                np.copyto(self.state[name][key], value, casting="same_kind")
        self.steps = int(own["steps"])


class _Wrapper(Protocol):
    options: dict[str, Any]
    steps: int


def with_wrapper_part(base_state: dict[str, Any], wrapper: _Wrapper,
                      arrays: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``base_state`` (the base optimizer's state dict) with ``wrapper``'s part put first in
    its ``"wrappers"`` list: options, step count and ``arrays`` (``{name: {key: array}}``)."""
    own = {"optimizer": type(wrapper).__qualname__, "options": dict(wrapper.options),
           "steps": wrapper.steps, "state": dict(arrays)}
    return {**base_state, "wrappers": [own, *base_state.get("wrappers", [])]}


def split_wrapper_part(state_dict: Any, wrapper: _Wrapper,
                       current: Mapping[str, Mapping[str, Any]], array_type: type
                       ) -> tuple[Mapping[str, Any], dict[str, Any]]:
    """Check ``state_dict`` (from :func:`with_wrapper_part`) against ``wrapper`` and its
    ``current`` arrays (``{name: {key: array}}``, of ``array_type``); return the wrapper's part
    and the base optimizer's state dict.

    Raises:
        ConfigError: another optimizer's state, other options, a missing, extra or misshapen
            array, listing every problem.
    """
    problems = _wrapper_problems(state_dict, wrapper, current, array_type)
    if problems:
        raise optiplug.ConfigError("cannot load optimizer state: " + "; ".join(problems))
    own, *inner = state_dict["wrappers"]
    base_state = {key: value for key, value in state_dict.items() if key != "wrappers"}
    if inner:
        base_state["wrappers"] = inner
    return own, base_state


def _wrapper_problems(state_dict: Any, wrapper: _Wrapper,
                      current: Mapping[str, Mapping[str, Any]], array_type: type) -> list[str]:
    name_of = type(wrapper).__qualname__
    noun, article = ("array", "an") if array_type is np.ndarray else ("tensor", "a")
    wrappers = state_dict.get("wrappers") if isinstance(state_dict, Mapping) else None
    if not isinstance(wrappers, list) or not wrappers or not isinstance(wrappers[0], Mapping):
        return ["expected a dict from state_dict() with a 'wrappers' list (the state of "
                f"{name_of})"]
    own = wrappers[0]
    if not {"optimizer", "options", "steps", "state"} <= set(own):
        return ["the wrapper's part lacks 'optimizer', 'options', 'steps' or 'state'"]
    if own["optimizer"] != name_of:
        return [f"it is the state of {own['optimizer']}, not of {name_of}"]
    if not isinstance(own["options"], Mapping) or dict(own["options"]) != wrapper.options:
        return [f"it was saved with {own['options']}, this optimizer has {wrapper.options}"]
    if not isinstance(own["steps"], int) or own["steps"] < 0:
        return [f"the step count {own['steps']!r} is not a non-negative integer"]
    saved = own["state"]
    if not isinstance(saved, Mapping) or set(saved) != set(current):
        return [f"the saved {noun}s are not for this optimizer's parameters {sorted(current)}"]
    problems = []
    for name, entry in saved.items():
        own_entry = current[name]
        if not isinstance(entry, Mapping) or set(entry) != set(own_entry):
            problems.append(f"the saved {noun}s of {name!r} are not {sorted(own_entry)}")
            continue
        for key, value in entry.items():
            shape = tuple(own_entry[key].shape)
            if not isinstance(value, array_type) or tuple(value.shape) != shape:
                problems.append(f"the saved {key!r} of {name!r} is not {article} {noun} of "
                                f"shape {shape}")
    return problems
