"""torch glue for optimizer builders: real ``torch.optim`` optimizers, named params, named state.

Imported only by torch builders (it imports torch). Each class here is the torch class of the
same name with :class:`NamedParamsOptimizer` mixed in, so it is a ``torch.optim.Optimizer``
(schedulers, ``GradScaler``, ``ZeroRedundancyOptimizer(params, optimizer_class=cls)`` work) that
also:

- takes params in every form of the builder contract (see ``optiplug_optimizers`` in
  :mod:`optiplug.hookspecs`): an ``nn.Module``, ``named_parameters()``, a ``{name: tensor}``
  dict, plain tensors (named by position), param-group dicts holding any of these, or what
  ``optiplug.param_groups`` returns; ``add_param_group`` takes the same forms, so a group of
  ``new_head.parameters()`` joins an optimizer built from ``named_parameters()``;
- refuses, with a :class:`~optiplug.ConfigError` naming the parameter, a parameter listed twice,
  integer or boolean tensors and ``meta`` tensors;
- picks torch's fastest kernel that is correct for every gradient pattern when the user leaves
  ``fused`` and ``foreach`` unset (``None``): ``fused=True`` where the class has a fused kernel
  for every parameter; else, on the CPU, ``foreach=True`` for a param group of small tensors
  where the class declares it faster (``foreach_max_numel``, decided once per group when it
  is added); else torch's own choice. Given ``True``/``False``, torch gets them as they
  are. The state dict records what the user asked for, not the kernel picked, so plain
  ``torch.optim`` loading it keeps its own default;
- loads state by parameter name when both sides carry names, so a checkpoint loads correctly
  after the parameters are reordered, and rejects a mismatch (missing or extra parameter,
  wrong shape, another optimizer's state) with a :class:`~optiplug.ConfigError` before
  changing anything;
- applies the ``nonfinite`` policy (``raise``, ``skip`` or ``ignore``) to NaN/inf gradients;
- clips the gradients before every step when asked (``clip_grad_norm``/``clip_grad_value``)
  with ``torch.nn.utils.clip_grad_norm_``/``clip_grad_value_`` over every parameter of the
  optimizer, after the ``nonfinite`` check (so a skipped step leaves ``.grad`` untouched);
  like those functions it clips ``.grad`` in place.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Any, ClassVar, Final

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from ..errors import ConfigError
from ..param_groups import normalize_params
from ._clip import checked_clipping
from ._numpy_optim import SCHEDULER_GROUP_KEYS, NonfiniteGradientError

__all__ = ["FOREACH_MAX_NUMEL", "SGD", "Adadelta", "Adagrad", "Adam", "AdamW",
           "NamedParamsOptimizer", "RMSprop", "torch_params"]

_IMPLEMENTATION_KEYS: Final = frozenset({"params", "param_names", "foreach", "fused",
                                         "capturable", "differentiable"})
_KERNEL_KEYS: Final = ("fused", "foreach")
_ALGORITHM_KEYS: Final = ("amsgrad", "nesterov", "centered", "decoupled_weight_decay")
_NONFINITE: Final = ("raise", "skip", "ignore")


def torch_params(params: Any, *, start: int = 0) -> list[dict[str, Any]]:
    """Normalize params-like input to param groups of ``(name, tensor)`` pairs.

    :func:`optiplug.param_groups.normalize_params` for the torch backend: the form every
    optimizer builder receives, which ``torch.optim.Optimizer`` takes as it is.

    Raises:
        ConfigError: a parameter listed twice, an integer, boolean or ``meta`` tensor.
    """
    return normalize_params(params, "torch", start=start)


def _tensors(params: list[Any]) -> Iterable[Any]:
    for item in params:
        if isinstance(item, Mapping):
            yield from _tensors(item["params"])
        elif isinstance(item, tuple):
            yield item[1]
        else:
            yield item


class NamedParamsOptimizer(torch.optim.Optimizer):
    """Mixin put before a ``torch.optim`` class: named params, fused default, named state.

    Args:
        params: Anything :func:`torch_params` accepts.
        nonfinite: On a NaN/inf gradient: ``"raise"`` ``NonfiniteGradientError`` naming the
            parameter, ``"skip"`` the step (counted in ``skipped_steps``), or ``"ignore"``
            (torch's behaviour).
        clip_grad_norm, clip_grad_norm_type, clip_grad_value: Gradient clipping before every
            step (see the module docstring); ``None``: none.
        **kwargs: The torch class's own arguments.
    """

    torch_class: ClassVar[type[torch.optim.Optimizer]]
    """The ``torch.optim.Optimizer`` whose ``step`` does the math; when a subclass does not set
    it, the first such class after the mixin in the MRO (``class Lion(TorchOptimizer,
    LionAlgorithm)`` gets ``LionAlgorithm``)."""
    fused_unsupported: ClassVar[frozenset[str] | None] = None
    """Device types without this class's fused kernel; ``None``: the class has none."""
    step_in_state: ClassVar[bool] = True
    """Whether the torch class keeps a ``step`` count in each parameter's state (SGD does
    not), for :func:`optiplug.convert_state`."""
    foreach_max_numel: ClassVar[int | None] = None
    """For a class without a fused kernel on the CPU: the largest mean tensor size (elements)
    of a param group for which its foreach kernel is picked over torch's CPU default, the
    for-loop (measured faster up to there: ``benchmarks/optimizers.py --kernel-layouts``);
    ``None``: always torch's default. Decided once per group, when the group is added."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "torch_class" in cls.__dict__:
            return
        mro = cls.__mro__
        algorithm = next((klass for klass in mro[mro.index(NamedParamsOptimizer) + 1:]
                          if issubclass(klass, torch.optim.Optimizer)
                          and klass is not torch.optim.Optimizer), None)
        if algorithm is not None:
            cls.torch_class = algorithm

    def __init__(self, params: Any, *args: Any, nonfinite: str = "ignore",
                 clip_grad_norm: float | None = None, clip_grad_norm_type: float = 2.0,
                 clip_grad_value: float | None = None, **kwargs: Any) -> None:
        self.clipping = checked_clipping(clip_grad_norm, clip_grad_norm_type, clip_grad_value)
        if nonfinite not in _NONFINITE:
            raise ConfigError(f"nonfinite must be one of {', '.join(_NONFINITE)}, "
                              f"got {nonfinite!r}")
        if kwargs.get("fused") and self.fused_unsupported is None:
            raise ConfigError(f"fused: torch has no fused {self.torch_class.__name__} kernel; "
                              f"leave fused unset (or false)")
        if self.fused_unsupported is None:
            kwargs.pop("fused", None)
        groups = torch_params(params)
        self._kernel_request = {key: kwargs.get(key) for key in _KERNEL_KEYS}
        self._kernel_requests: list[dict[str, Any]] = []
        self._complete_groups: set[int] = set()
        kwargs.update(self._kernel_choice(groups, kwargs))
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        super().__init__(groups, *args, **kwargs)

    def _kernel_choice(self, groups: list[dict[str, Any]], kwargs: Mapping[str, Any]
                       ) -> dict[str, Any]:
        """The kernel keys to add when the user left both unset: fused where every parameter
        can take it (``fused_unsupported`` names the device types that cannot)."""
        if (self.fused_unsupported is None or kwargs.get("fused") is not None
                or kwargs.get("foreach") is not None or kwargs.get("differentiable")):
            return {}
        devices = set(_get_fused_kernels_supported_devices()) - self.fused_unsupported
        tensors = list(_tensors(groups))
        if tensors and all(type(p) in (torch.Tensor, torch.nn.Parameter)
                           and p.device.type in devices and torch.is_floating_point(p)
                           and not p.is_sparse for p in tensors):
            return {"fused": True}
        return {}

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``, taking every params form (see the module docstring).

        A group follows the optimizer's naming: in an optimizer built from named parameters,
        unnamed ones are named by their position among all parameters (so a group of
        ``head.parameters()`` joins an optimizer built from ``named_parameters()``); in one
        built from bare tensors, a named group's names are dropped.

        Raises:
            ConfigError: a parameter already optimized or listed twice, an integer, boolean
                or ``meta`` tensor.
        """
        if not isinstance(param_group, Mapping):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        existing: list[tuple[str, Any]] = []
        for own in self.param_groups:
            names = own.get("param_names")
            for i, param in enumerate(own["params"]):
                existing.append((names[i] if names else str(len(existing)), param))
        [group] = torch_params(param_group, start=len(existing))
        named = bool(self.param_groups) and "param_names" in self.param_groups[0]
        items = [item if isinstance(item, tuple) else (str(len(existing) + i), item)
                 for i, item in enumerate(group["params"])]
        ids = {id(param): name for name, param in existing}
        for name, param in items:
            if id(param) in ids:
                raise ConfigError(f"parameter {name!r} is already optimized (as "
                                  f"{ids[id(param)]!r} in another param group): list each "
                                  f"parameter once")
        # torch takes groups all named or all unnamed: follow the optimizer's first groups
        # (a group of head.parameters() joins a named optimizer under positional names).
        if self.param_groups:
            group["params"] = items if named else [param for _, param in items]
        request = getattr(self, "_kernel_request", {})
        requested = {key: param_group.get(key, request.get(key)) for key in _KERNEL_KEYS}
        if all(value is None for value in requested.values()):
            group.update(self._layout_kernel([param for _, param in items]))
        super().add_param_group(group)
        self._kernel_requests.append(requested)

    def _layout_kernel(self, params: list[Any]) -> dict[str, Any]:
        """The kernel key for a new group whose kernel the user left unset: ``foreach`` on
        the CPU where the group's layout is one where it measured faster than the for-loop
        (see :attr:`foreach_max_numel`); nothing (torch's own choice) elsewhere. Both kernels
        skip parameters without a gradient and keep each parameter's own step count, so they
        agree for every gradient pattern."""
        limit = self.foreach_max_numel
        defaults = getattr(self, "defaults", {})
        if (limit is None or not params or "foreach" not in defaults
                or defaults.get("fused") or defaults.get("differentiable")):
            return {}
        if not all(type(p) in (torch.Tensor, torch.nn.Parameter) and p.device.type == "cpu"
                   and torch.is_floating_point(p) and not p.is_sparse for p in params):
            return {}
        mean_numel = sum(p.numel() for p in params) / len(params)
        return {"foreach": True} if mean_numel <= limit else {}

    def state_shape(self, key: str, param: torch.Tensor) -> tuple[int, ...]:
        """Shape of state tensor ``key`` of ``param`` that loading checks: the parameter's;
        override for state of another shape (Adafactor's row and column factors)."""
        return tuple(param.shape)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["nonfinite"] = getattr(self, "nonfinite", "ignore")
        state["clipping"] = getattr(self, "clipping", None)
        state["skipped_steps"] = getattr(self, "skipped_steps", 0)
        state["_kernel_request"] = getattr(self, "_kernel_request", {})
        state["_kernel_requests"] = getattr(self, "_kernel_requests", [])
        state["_complete_groups"] = set()
        return state

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """One optimization step (torch's), guarded by the ``nonfinite`` policy."""
        inner = self.torch_class.step
        # The class's step is wrapped with the hook runner once; hooks already ran around us.
        if getattr(inner, "hooked", False):
            inner = inner.__wrapped__  # type: ignore[attr-defined]
        unsafe = self._groups_unsafe_for_fused()
        for group in unsafe:
            group["fused"] = False
        clipping = getattr(self, "clipping", None)
        try:
            if getattr(self, "nonfinite", "ignore") == "ignore" and clipping is None:
                return inner(self, closure)
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            if getattr(self, "nonfinite", "ignore") != "ignore" and not self._grads_finite():
                self.skipped_steps += 1
                return loss
            if clipping is not None:
                self._clip_grads(clipping)
            inner(self)
            return loss
        finally:
            for group in unsafe:
                group["fused"] = True

    def _clip_grads(self, clipping: Mapping[str, float]) -> None:
        """Clip every parameter's ``.grad`` in place with torch's own functions."""
        params = [p for group in self.param_groups for p in group["params"]]
        if "clip_value" in clipping:
            torch.nn.utils.clip_grad_value_(params, clipping["clip_value"])
        else:
            torch.nn.utils.clip_grad_norm_(params, clipping["max_norm"], clipping["norm_type"])

    def _groups_unsafe_for_fused(self) -> list[dict[str, Any]]:
        """Fused groups whose fused kernel would be wrong this step (none but in ``SGD``)."""
        return []

    def _grads_finite(self) -> bool:
        named = [(names[i] if names else f"group {g}, param {i}", p.grad)
                 for g, group in enumerate(self.param_groups)
                 for names in [group.get("param_names")]
                 for i, p in enumerate(group["params"]) if p.grad is not None]
        if not named:
            return True
        flags = torch.stack([grad.isfinite().all().to("cpu") for _, grad in named])
        if bool(flags.all()):
            return True
        if self.nonfinite == "raise":
            bad = [name for (name, _), ok in zip(named, flags.tolist(), strict=True) if not ok]
            raise NonfiniteGradientError(f"gradient of parameter {bad[0]!r} is not finite (NaN "
                                         f"or infinity); nothing was updated")
        return False

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, plus ``"optimizer"`` (the torch class name) and ``"technique"``
        (the registry name, e.g. ``momentum``; several techniques share ``torch.optim.SGD``),
        both checked on load. ``fused``/``foreach`` hold what the user asked for (``None``
        when optiplug picked the kernel)."""
        state = super().state_dict()
        # What the user asked for, not what optiplug picked: plain torch.optim loading this
        # state then keeps its own default kernel instead of being switched to fused.
        requests = getattr(self, "_kernel_requests", [])
        for group, request in zip(state["param_groups"], requests, strict=False):
            for key, value in request.items():
                if key in group:
                    group[key] = value
        state["optimizer"] = self.torch_class.__name__
        technique = getattr(self, "optiplug_technique", None)
        if technique is not None:
            state["technique"] = technique
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict, by parameter name when both sides carry ``param_names``.

        Raises:
            ConfigError: another optimizer's state, missing or extra parameters, groups that
                differ, or a state tensor whose shape differs from its parameter's. Nothing is
                changed then.
        """
        remapped = self._checked_state_dict(state_dict)
        kernels: list[dict[str, Any]] = [{key: group[key] for key in _KERNEL_KEYS if key in group}
                   for group in self.param_groups]
        for group, own in zip(remapped["param_groups"], kernels, strict=True):
            group.update(own)
        super().load_state_dict(remapped)
        for group, own in zip(self.param_groups, kernels, strict=True):
            group.update(own)
        self._complete_groups = set()

    def _checked_state_dict(self, state_dict: Mapping[str, Any]) -> dict[str, Any]:
        def fail(message: str) -> ConfigError:
            return ConfigError(f"cannot load optimizer state: {message}")

        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(
                state_dict):
            raise fail("expected a dict with 'state' and 'param_groups' (from state_dict())")
        kind = state_dict.get("optimizer")
        if kind is not None and kind != self.torch_class.__name__:
            raise fail(f"it is the state of {kind}, not of {self.torch_class.__name__}")
        saved_technique = state_dict.get("technique")
        own_technique = getattr(self, "optiplug_technique", None)
        if None not in (saved_technique, own_technique) and saved_technique != own_technique:
            raise fail(f"it is the state of optimizer {saved_technique!r}, not of "
                       f"{own_technique!r}")
        raw_groups, saved_state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(raw_groups, (list, tuple)) or not all(
                isinstance(group, Mapping) and isinstance(group.get("params"), (list, tuple))
                and isinstance(group.get("param_names", []), (list, tuple))
                for group in raw_groups):
            raise fail("'param_groups' must be a list of dicts, each with a 'params' list")
        if not isinstance(saved_state, Mapping) or not all(
                isinstance(entry, Mapping) for entry in saved_state.values()):
            raise fail("'state' must map each parameter to a dict of its state")
        saved_groups = [dict(group) for group in raw_groups]
        named = all("param_names" in g for g in saved_groups) and all(
            "param_names" in g for g in self.param_groups) and all(
            len(set(names)) == len(names) for names in (
                [n for g in saved_groups for n in g["param_names"]],
                [n for g in self.param_groups for n in g["param_names"]]))
        if named:
            saved_groups, saved_state = self._by_name(saved_groups, saved_state, fail)
        elif len(saved_groups) != len(self.param_groups) or any(
                len(s["params"]) != len(g["params"])
                for s, g in zip(saved_groups, self.param_groups, strict=False)):
            raise fail("the saved param groups differ in number or size from this optimizer's")
        problems: list[str] = []
        params = list(chain.from_iterable(g["params"] for g in self.param_groups))
        names = list(chain.from_iterable(
            g.get("param_names") or [f"param {i}" for i in range(len(g["params"]))]
            for g in self.param_groups))
        ids = list(chain.from_iterable(g["params"] for g in saved_groups))
        for index, (own, saved) in enumerate(zip(self.param_groups, saved_groups,
                                                 strict=True)):
            unknown = sorted(set(saved) - set(own) - _IMPLEMENTATION_KEYS - SCHEDULER_GROUP_KEYS)
            if unknown:
                problems.append(f"the saved group {index} has hyperparameters {unknown} that "
                                f"{self.torch_class.__name__} does not have (another "
                                f"optimizer's state)")
            for key in _ALGORITHM_KEYS:
                if key in own and key in saved and own[key] != saved[key]:
                    problems.append(f"param group {index} has {key}={own[key]!r}, the saved "
                                    f"state {key}={saved[key]!r} (another algorithm)")
        for saved_id, param, name in zip(ids, params, names, strict=True):
            entry = saved_state.get(saved_id)
            if entry is None:
                continue
            for key, value in entry.items():
                if (key != "step" and isinstance(value, torch.Tensor) and value.dim() > 0
                        and tuple(value.shape) != (shape := self.state_shape(key, param))):
                    problems.append(f"state {key!r} of {name!r} has shape {tuple(value.shape)}"
                                    f", expected {shape}")
        if problems:
            raise fail("; ".join(problems))
        # Copies: torch would alias the source's tensors, so two optimizers loaded from one live
        # state dict would then step each other's state.
        state = {key: {name: value.clone() if isinstance(value, torch.Tensor)
                       else copy.deepcopy(value) for name, value in entry.items()}
                 for key, entry in saved_state.items()}
        return {"state": state, "param_groups": saved_groups}

    def _by_name(self, saved_groups: list[dict[str, Any]], saved_state: Mapping[Any, Any],
                 fail: Callable[[str], ConfigError]
                 ) -> tuple[list[dict[str, Any]], dict[Any, Any]]:
        saved_names = [n for g in saved_groups for n in g["param_names"]]
        own_names = [n for g in self.param_groups for n in g["param_names"]]
        missing = sorted(set(own_names) - set(saved_names))
        extra = sorted(set(saved_names) - set(own_names))
        if missing or extra:
            parts = ([f"no saved state for parameters {missing}"] if missing else []) + (
                [f"saved state has unknown parameters {extra}"] if extra else [])
            raise fail("; ".join(parts))
        where = {name: (index, position) for index, group in enumerate(saved_groups)
                 for position, name in enumerate(group["param_names"])}
        groups: list[dict[str, Any]] = []
        state: dict[Any, Any] = {}
        new_id = 0
        for index, own in enumerate(self.param_groups):
            origins = {where[name][0] for name in own["param_names"]}
            origin = saved_groups[next(iter(origins))]
            if len(origins) != 1 or len(origin["param_names"]) != len(own["param_names"]):
                raise fail(f"param group {index} ({own['param_names']}) differs from the saved "
                           f"groups")
            group = {k: copy.deepcopy(v) for k, v in origin.items()
                     if k not in ("params", "param_names")}
            group["param_names"] = list(own["param_names"])
            group["params"] = []
            for name in own["param_names"]:
                saved_index, position = where[name]
                saved_id = saved_groups[saved_index]["params"][position]
                if saved_id in saved_state:
                    state[new_id] = saved_state[saved_id]
                group["params"].append(new_id)
                new_id += 1
            groups.append(group)
        return groups, state


class SGD(NamedParamsOptimizer, torch.optim.SGD):
    """``torch.optim.SGD`` with named params and state (fused where available).

    torch's fused SGD kernel creates momentum buffers only when no parameter has one yet: a
    step where one parameter gets its first gradient after others already have buffers (a
    branch unused at first, a layer unfrozen later, alternating updates) fails inside it. Such
    a step runs with torch's default kernel instead (the one ``torch.optim.SGD`` uses, exact
    for every pattern); every other step stays fused.
    """

    torch_class = torch.optim.SGD
    fused_unsupported = frozenset()
    step_in_state = False

    def _groups_unsafe_for_fused(self) -> list[dict[str, Any]]:
        unsafe = []
        complete = self._complete_groups
        state = self.state
        for index, group in enumerate(self.param_groups):
            if not group.get("fused") or group["momentum"] == 0 or index in complete:
                continue
            with_buffer = without_buffer = False
            all_buffers = True
            for param in group["params"]:
                has = param in state and "momentum_buffer" in state[param]
                all_buffers = all_buffers and has
                if param.grad is not None:
                    with_buffer = with_buffer or has
                    without_buffer = without_buffer or not has
            if all_buffers:
                complete.add(index)
            elif with_buffer and without_buffer:
                unsafe.append(group)
        return unsafe


class Adagrad(NamedParamsOptimizer, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with named params and state (fused on CPU)."""

    torch_class = torch.optim.Adagrad
    fused_unsupported = frozenset({"cuda"})


FOREACH_MAX_NUMEL: Final = 16384
"""Where torch's CPU foreach kernel beats its for-loop (RMSprop, RAdam, NAdam, Adamax, Rprop;
Adadelta up to half of it): groups of tensors of at most 16 Ki elements on average (64 KiB in
float32), where the for-loop's per-tensor Python work is a large part of the step. Above it
both kernels are memory-bound and the for-loop wins: it runs each tensor's operations while the
tensor is in the cache, where foreach streams every operation over the whole group (and its
group-sized temporaries) from memory. Measured on 1M to 10M float32 params
(``benchmarks/optimizers.py --kernel-layouts``, docs/performance.md): foreach faster at 3,333
elements per tensor, about even at 10,000, the for-loop faster from 20,000."""


class RMSprop(NamedParamsOptimizer, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` with named params and state (foreach on CPU for small tensors,
    see :data:`FOREACH_MAX_NUMEL`)."""

    torch_class = torch.optim.RMSprop
    foreach_max_numel = FOREACH_MAX_NUMEL


class Adadelta(NamedParamsOptimizer, torch.optim.Adadelta):
    """``torch.optim.Adadelta`` with named params and state (foreach on CPU for small tensors,
    see :data:`FOREACH_MAX_NUMEL`)."""

    torch_class = torch.optim.Adadelta
    # Its foreach kernel keeps two group-sized temporaries through a dozen passes: the
    # for-loop measured 1.06-1.13x faster already at 10,000 elements per tensor.
    foreach_max_numel = FOREACH_MAX_NUMEL // 2


class Adam(NamedParamsOptimizer, torch.optim.Adam):
    """``torch.optim.Adam`` with named params and state (fused where available)."""

    torch_class = torch.optim.Adam
    fused_unsupported = frozenset()


class AdamW(NamedParamsOptimizer, torch.optim.AdamW):
    """``torch.optim.AdamW`` with named params and state (fused where available)."""

    torch_class = torch.optim.AdamW
    fused_unsupported = frozenset()
