"""torch glue for optimizer builders: real ``torch.optim`` optimizers, named params, named state.

Imported only by torch builders (it imports torch). Each class here is the torch class of the
same name with :class:`NamedParamsOptimizer` mixed in, so it is a ``torch.optim.Optimizer``
(schedulers, ``GradScaler``, ``ZeroRedundancyOptimizer(params, optimizer_class=cls)`` work) that
also:

- takes named params in every form: an ``nn.Module``, ``named_parameters()``, a
  ``{name: tensor}`` dict, ``(name, tensor)`` pairs, or param-group dicts holding any of these
  (torch then keeps ``param_names`` in each group);
- uses torch's fastest kernel for the device and dtype: ``fused=True`` where the class has a
  fused kernel for every parameter, else torch's own choice (foreach on accelerators);
- loads state by parameter name when both sides carry names, so a checkpoint loads correctly
  after the parameters are reordered, and rejects a mismatch (missing or extra parameter,
  wrong shape, another optimizer's state) with a :class:`~optiplug.ConfigError` before
  changing anything;
- applies the ``nonfinite`` policy (``raise``, ``skip`` or ``ignore``) to NaN/inf gradients.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from itertools import chain
from typing import Any, ClassVar, Final

import torch
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

from ..errors import ConfigError
from ._numpy_optim import SCHEDULER_GROUP_KEYS, NonfiniteGradientError

__all__ = ["SGD", "Adadelta", "Adagrad", "Adam", "AdamW", "NamedParamsOptimizer", "RMSprop",
           "torch_params"]

_IMPLEMENTATION_KEYS: Final = frozenset({"params", "param_names", "foreach", "fused",
                                         "capturable", "differentiable"})
_KERNEL_KEYS: Final = ("fused", "foreach")
_ALGORITHM_KEYS: Final = ("amsgrad", "nesterov", "centered", "decoupled_weight_decay")
_NONFINITE: Final = ("raise", "skip", "ignore")


def torch_params(params: Any) -> list[Any]:
    """Normalize params-like input to what ``torch.optim.Optimizer`` takes, keeping names.

    An ``nn.Module`` and a ``{name: tensor}`` mapping become ``(name, tensor)`` pairs; inside
    param-group dicts too. Iterators are consumed into lists.
    """
    if isinstance(params, torch.nn.Module):
        return list(params.named_parameters())
    if isinstance(params, torch.Tensor):
        return [params]
    if isinstance(params, Mapping):
        if "params" in params:
            return [_group(params)]
        return [(str(name), value) for name, value in params.items()]
    listed = list(params)
    return [_group(item) if isinstance(item, Mapping) else item for item in listed]


def _group(group: Mapping[str, Any]) -> dict[str, Any]:
    normalized = dict(group)
    inner = normalized["params"]
    if isinstance(inner, torch.nn.Module):
        normalized["params"] = list(inner.named_parameters())
    elif isinstance(inner, Mapping):
        normalized["params"] = [(str(name), value) for name, value in inner.items()]
    elif isinstance(inner, torch.Tensor):
        normalized["params"] = [inner]
    else:
        normalized["params"] = list(inner)
    return normalized


def _tensors(params: list[Any]) -> Iterable[Any]:
    for item in params:
        if isinstance(item, dict):
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
        **kwargs: The torch class's own arguments.
    """

    torch_class: ClassVar[type[torch.optim.Optimizer]]
    fused_unsupported: ClassVar[frozenset[str] | None] = None
    """Device types without this class's fused kernel; ``None``: the class has none."""

    def __init__(self, params: Any, *args: Any, nonfinite: str = "ignore",
                 **kwargs: Any) -> None:
        if nonfinite not in _NONFINITE:
            raise ConfigError(f"nonfinite must be one of {', '.join(_NONFINITE)}, "
                              f"got {nonfinite!r}")
        params = torch_params(params)
        if (self.fused_unsupported is not None and kwargs.get("fused") is None
                and kwargs.get("foreach") is None and not kwargs.get("differentiable")):
            devices = set(_get_fused_kernels_supported_devices()) - self.fused_unsupported
            tensors = list(_tensors(params))
            if tensors and all(type(p) in (torch.Tensor, torch.nn.Parameter)
                               and p.device.type in devices and torch.is_floating_point(p)
                               and not p.is_sparse for p in tensors):
                kwargs["fused"] = True
        self.nonfinite = nonfinite
        self.skipped_steps = 0
        super().__init__(params, *args, **kwargs)

    def state_shape(self, key: str, param: torch.Tensor) -> tuple[int, ...]:
        """Shape of state tensor ``key`` of ``param`` that loading checks: the parameter's;
        override for state of another shape (Adafactor's row and column factors)."""
        return tuple(param.shape)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["nonfinite"] = getattr(self, "nonfinite", "ignore")
        state["skipped_steps"] = getattr(self, "skipped_steps", 0)
        return state

    def step(self, closure: Callable[[], float] | None = None) -> Any:
        """One optimization step (torch's), guarded by the ``nonfinite`` policy."""
        inner = self.torch_class.step
        # The class's step is wrapped with the hook runner once; hooks already ran around us.
        if getattr(inner, "hooked", False):
            inner = inner.__wrapped__  # type: ignore[attr-defined]
        if getattr(self, "nonfinite", "ignore") == "ignore":
            return inner(self, closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self._grads_finite():
            self.skipped_steps += 1
            return loss
        inner(self)
        return loss

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
        both checked on load."""
        state = super().state_dict()
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
            "param_names" in g for g in self.param_groups)
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
    """``torch.optim.SGD`` with named params and state (fused where available)."""

    torch_class = torch.optim.SGD
    fused_unsupported = frozenset()


class Adagrad(NamedParamsOptimizer, torch.optim.Adagrad):
    """``torch.optim.Adagrad`` with named params and state (fused on CPU)."""

    torch_class = torch.optim.Adagrad
    fused_unsupported = frozenset({"cuda"})


class RMSprop(NamedParamsOptimizer, torch.optim.RMSprop):
    """``torch.optim.RMSprop`` with named params and state."""

    torch_class = torch.optim.RMSprop


class Adadelta(NamedParamsOptimizer, torch.optim.Adadelta):
    """``torch.optim.Adadelta`` with named params and state."""

    torch_class = torch.optim.Adadelta


class Adam(NamedParamsOptimizer, torch.optim.Adam):
    """``torch.optim.Adam`` with named params and state (fused where available)."""

    torch_class = torch.optim.Adam
    fused_unsupported = frozenset()


class AdamW(NamedParamsOptimizer, torch.optim.AdamW):
    """``torch.optim.AdamW`` with named params and state (fused where available)."""

    torch_class = torch.optim.AdamW
    fused_unsupported = frozenset()
