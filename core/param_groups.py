"""Param groups from config: rules by parameter name and role that set lr and weight decay.

A rule selects parameters by an ``fnmatch`` pattern on the name (``match``), a regular expression
searched in the name (``regex``) and/or a role (``role``), all given selectors must hold, and
sets ``lr``, ``lr_mult`` (a multiplier of the optimizer's lr) and/or ``weight_decay``::

    optimizer:
      name: adamw
      lr: 0.001
      weight_decay: 0.05
      param_groups:
        - {role: bias, weight_decay: 0.0}
        - {role: norm, weight_decay: 0.0}
        - {match: "head.*", lr_mult: 10.0}

Roles: ``bias`` (the last name component ends with ``bias``), ``norm`` (the scale of a
normalization layer: a one-dimensional ``weight``, or a ``weight``/``gamma``/``scale`` under a
name component such as ``norm``, ``bn1``, ``ln_f``) and ``1d`` (at most one dimension). Roles
are read from each parameter's name and shape only, so an ``nn.Module``, its
``named_parameters()`` and a ``{name: param}`` dict of the same model get the same groups, and
the dry-run table always shows what the built optimizer does.

A rule that matches no parameter is an error, and so is a parameter that two rules give
different values of the same setting (``lr`` and ``lr_mult`` count as the same setting).
:func:`param_groups` returns the groups together with a dry-run table of what each parameter
gets, for ``optiplug.param_groups(...)`` and the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

from pydantic import model_validator

from .errors import ConfigError, ConfigIssue
from .specs import OptimizerSpec, ParamGroupRule, Role

__all__ = ["ForeachChoiceSpec", "GroupRow", "KernelChoiceSpec", "ParamGroupList",
           "ParamGroupRule", "ParamGroups", "Role", "StandardOptimizerSpec", "dry_run",
           "holds_params", "named_params", "normalize_params", "param_groups"]

_NORM_COMPONENT = re.compile(r"(norm|^bn\d*$|^ln(_\w+)?\d*$|^gn\d*$)", re.IGNORECASE)
_NORM_WEIGHT_NAMES = frozenset({"weight", "gamma", "scale"})


StandardOptimizerSpec = OptimizerSpec
"""Former name of :class:`optiplug.OptimizerSpec` (which now holds ``param_groups`` and
``nonfinite``); kept as an alias."""


class ForeachChoiceSpec(OptimizerSpec):
    """:class:`optiplug.OptimizerSpec` plus torch's ``foreach`` kernel choice, for techniques
    whose torch builder returns a ``torch.optim`` class without a fused kernel.

    ``None`` (the default) lets optiplug pick the fastest kernel that is correct for every
    gradient pattern; ``True``/``False`` are passed to torch as given. The NumPy backend has
    one kernel: there only ``None`` and ``False`` are accepted.
    """

    policy_fields: ClassVar[frozenset[str]] = OptimizerSpec.policy_fields | {"foreach"}

    foreach: bool | None = None
    """torch's multi-tensor kernel: ``True`` use it, ``False`` never, ``None`` optiplug picks."""

    def optimizer_arguments(self) -> dict[str, Any]:
        """As :meth:`optiplug.OptimizerSpec.optimizer_arguments`, without unset kernel keys."""
        arguments = super().optimizer_arguments()
        for key in ("fused", "foreach"):
            if key in arguments and arguments[key] is None:
                del arguments[key]
        return arguments


class KernelChoiceSpec(ForeachChoiceSpec):
    """:class:`ForeachChoiceSpec` plus torch's ``fused`` kernel choice, for techniques whose
    torch builder returns a ``torch.optim`` class that has a fused kernel."""

    policy_fields: ClassVar[frozenset[str]] = ForeachChoiceSpec.policy_fields | {"fused"}

    fused: bool | None = None
    """torch's fused kernel: ``True`` use it, ``False`` never, ``None`` optiplug picks."""

    @model_validator(mode="after")
    def _one_kernel(self) -> KernelChoiceSpec:
        if self.fused and self.foreach:
            raise ValueError("fused and foreach cannot both be true: pick one kernel")
        return self


class GroupRow(NamedTuple):
    """One line of the dry-run table: what one parameter gets."""

    name: str
    shape: tuple[int, ...]
    roles: tuple[str, ...]
    group: int
    lr: float | None
    weight_decay: float | None
    rules: tuple[int, ...]


class ParamGroups(NamedTuple):
    """What :func:`param_groups` returns.

    Attributes:
        groups: Param-group dicts for an optimizer: ``{"params": [(name, param), ...], ...}``
            with only the settings that rules changed (the optimizer fills in the rest).
        table: The dry-run table, one line per parameter, ready to print.
        rows: The same table as data.
    """

    groups: list[dict[str, Any]]
    table: str
    rows: tuple[GroupRow, ...]


class ParamGroupList(list[dict[str, Any]]):
    """What optimizer builders receive as ``params``: param-group dicts with named parameters.

    Each group is ``{"params": [(name, param), ...], <setting>: ...}`` (bare parameters when
    the user named none). Made by
    :func:`normalize_params`. ``grads`` is the ``{name: array}`` gradient dict of a NumPy layer
    the params came from (``None`` otherwise), which a NumPy optimizer adopts.
    """

    grads: dict[str, Any] | None

    def __init__(self, groups: Iterable[dict[str, Any]] = (), *,
                 grads: dict[str, Any] | None = None) -> None:
        super().__init__(groups)
        self.grads = grads


def _is_leaf(value: Any) -> bool:
    """An array or tensor (anything with a shape and a dtype), not a container of them."""
    return hasattr(value, "shape") and hasattr(value, "dtype")


def holds_params(params: Any) -> bool:
    """Whether ``params`` holds parameters :func:`normalize_params` knows: arrays or tensors,
    a model with ``named_parameters()`` or a NumPy layer, in any of the contract's forms."""
    from .backends import first_leaf

    if isinstance(params, ParamGroups):
        return True
    leaf = first_leaf(params)
    return leaf is not None and (_is_leaf(leaf) or hasattr(leaf, "named_parameters")
                                 or isinstance(getattr(leaf, "params", None), Mapping))


def _is_group(value: Any) -> bool:
    return isinstance(value, Mapping) and "params" in value


def normalize_params(params: Any, backend: str | None = None, *, start: int = 0
                     ) -> ParamGroupList:
    """Bring any params-like input to the one form optimizer builders receive.

    This is the builder contract's normalization (see ``optiplug_optimizers`` in
    :mod:`optiplug.hookspecs`); ``optiplug.build``, the training loop and the torch optimizer
    base classes all go through it.

    Args:
        params: An array or tensor; a list of them; ``(name, param)`` pairs or
            ``named_parameters()``; a ``{name: param}`` dict; an ``nn.Module`` or any model
            with ``named_parameters()``; a NumPy layer (its ``params`` dict, its ``grads`` kept);
            a param-group dict or a list of them (``{"params": <any of these>, "lr": ...}``,
            optionally with ``param_names``); or what :func:`param_groups` returns.
        backend: The backend being built for (``"torch"`` adds torch's checks); detected
            from the parameters when ``None``.
        start: The position the first unnamed parameter gets (an optimizer adding a group
            continues its own count).

    Returns:
        A :class:`ParamGroupList`. Names are kept as given: parameters are ``(name, param)``
        pairs when any parameter was named (the unnamed ones then named by position, ``"0"``,
        ``"1"``, ... across groups), and bare parameters when none was (as torch keeps them).

    Raises:
        ConfigError: the same array or tensor listed twice (in one group or two); a group
            without ``params``; groups mixed with bare parameters; for torch, an integer or
            boolean tensor, or a ``meta`` tensor, naming the parameter.
    """
    grads = getattr(params, "grads", None)
    if isinstance(params, ParamGroups):
        params = params.groups
    if _is_group(params):
        raw_groups: list[Any] = [params]
    elif (isinstance(params, Mapping) or _is_leaf(params) or hasattr(params, "named_parameters")
          or isinstance(getattr(params, "params", None), Mapping)):
        raw_groups = [{"params": params}]
    else:
        if isinstance(params, (str, bytes)) or not isinstance(params, Iterable):
            raise ConfigError(f"params must be parameters or param groups, got "
                              f"{type(params).__name__}")
        listed = list(params)
        if listed and all(isinstance(item, Mapping) for item in listed):
            raw_groups = listed
        elif any(isinstance(item, Mapping) for item in listed):
            raise ConfigError("params mixes param-group dicts with bare parameters: give all "
                              "parameters in groups, or none")
        else:
            raw_groups = [{"params": listed}]
    counter = start
    owners: dict[int, str] = {}
    collected: list[tuple[dict[str, Any], list[tuple[str | None, Any]], int]] = []
    for index, group in enumerate(raw_groups):
        if "params" not in group:
            raise ConfigError(f"param group {index} has no 'params' key (a param group is "
                              f"{{'params': [...], 'lr': ...}})")
        first = counter
        named, counter = _named_items(group["params"], group.get("param_names"), counter)
        for position, (name, param) in enumerate(named, start=first):
            label = name if name is not None else str(position)
            if id(param) in owners:
                raise ConfigError(f"parameter {label!r} is the same {type(param).__name__} as "
                                  f"parameter {owners[id(param)]!r}: list each parameter once")
            owners[id(param)] = label
            _check_torch_param(label, param)
        settings = {key: value for key, value in group.items()
                    if key not in ("params", "param_names")}
        collected.append((settings, named, first))
    # Names as the user gave them; where some are named, the rest are named by position
    # (torch takes all named or none); where none are, none (torch's positional state).
    any_named = any(name is not None for _, named, _ in collected for name, _ in named)
    groups = ParamGroupList(grads=grads if isinstance(grads, dict) else None)
    for settings, named, first in collected:
        params = [(name if name is not None else str(position), param) if any_named else param
                  for position, (name, param) in enumerate(named, start=first)]
        groups.append({"params": params, **settings})
    return groups


def _named_items(params: Any, names: Sequence[str] | None, counter: int
                 ) -> tuple[list[tuple[str | None, Any]], int]:
    items: list[tuple[str | None, Any]]
    if hasattr(params, "named_parameters"):
        items = list(params.named_parameters())
        return items, counter + len(items)
    if isinstance(getattr(params, "params", None), Mapping):
        params = params.params
    if isinstance(params, Mapping):
        items = [(str(name), value) for name, value in params.items()]
        return items, counter + len(items)
    listed = [params] if _is_leaf(params) else list(params)
    if names is not None:
        if isinstance(names, (str, bytes)) or len(names) != len(listed):
            raise ConfigError("param_names and params differ in length")
        return [(str(name), value) for name, value in zip(names, listed, strict=True)], \
            counter + len(listed)
    items = [item if _is_named(item) else (None, item) for item in listed]
    return items, counter + len(items)


def _check_torch_param(name: str, param: Any) -> None:
    """torch's parameters must hold data and be floating point (or complex), as NumPy's."""
    if not callable(getattr(param, "is_floating_point", None)):
        return
    if getattr(param, "is_meta", False):
        raise ConfigError(f"parameter {name!r} is a meta tensor (a shape without data): "
                          f"materialize the model first, e.g. model.to_empty(device='cpu') "
                          f"and initialize it")
    if not (param.is_floating_point() or param.is_complex()):
        raise ConfigError(f"parameter {name!r} has dtype {param.dtype}; optimizers update "
                          f"floating-point tensors (use .float() or leave it out)")


def named_params(params: Any) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    """Flatten params-like input to ``[(name, param)]`` and the owning module class per name.

    Accepts an ``nn.Module`` (``named_parameters()``), an object with a ``params`` mapping (a
    NumPy layer), a ``{name: param}`` mapping, ``(name, param)`` pairs, plain parameters
    (named ``"0"``, ``"1"``, ...), or param groups without settings of their own (what
    :func:`normalize_params` makes of a flat input).

    Raises:
        ConfigError: param-group dicts with settings are given (rules need a flat parameter
            list) or a name repeats.
    """
    owners: dict[str, str] = {}
    if isinstance(params, ParamGroups):
        params = params.groups
    if hasattr(params, "named_parameters") and hasattr(params, "named_modules"):
        for module_name, module in params.named_modules():
            for param_name, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{param_name}" if module_name else param_name
                owners[full] = type(module).__name__
        items: list[tuple[str, Any]] = list(params.named_parameters())
    elif isinstance(getattr(params, "params", None), Mapping):
        items = list(params.params.items())
    elif isinstance(params, Mapping) and "params" not in params:
        items = list(params.items())
    else:
        listed = ([params] if isinstance(params, Mapping) else
                  list(params) if isinstance(params, Iterable) and not _is_leaf(params)
                  else [params])
        if any(isinstance(item, Mapping) for item in listed):
            if any(set(item) - {"params", "param_names"} for item in listed
                   if isinstance(item, Mapping)):
                raise ConfigError("param-group rules need a flat set of parameters, not "
                                  "param-group dicts with their own settings")
            flat = [item for group in normalize_params(listed) for item in group["params"]]
            items = [item if _is_named(item) else (str(index), item)
                     for index, item in enumerate(flat)]
        else:
            items = [item if _is_named(item) else (str(index), item)  # type: ignore[misc]
                     for index, item in enumerate(listed)]
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ConfigError(f"parameter names repeat: {', '.join(repeated)}")
    return items, owners


def _is_named(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def _roles(name: str, param: Any) -> frozenset[str]:
    roles = set()
    components = name.split(".")
    last = components[-1].lower()
    ndim = len(tuple(getattr(param, "shape", ())))
    if last.endswith("bias"):
        roles.add("bias")
    if ndim <= 1:
        roles.add("1d")
    if (last == "weight" and ndim == 1) or (last in _NORM_WEIGHT_NAMES and any(
            _NORM_COMPONENT.search(part) for part in components[:-1])):
        roles.add("norm")
    return frozenset(roles)


def param_groups(params: Any, rules: Sequence[ParamGroupRule | Mapping[str, Any]],
                 **defaults: Any) -> ParamGroups:
    """Split ``params`` into param groups by ``rules`` and make the dry-run table.

    Args:
        params: An ``nn.Module``, ``named_parameters()``, a ``{name: param}`` mapping, a NumPy
            layer, ``(name, param)`` pairs or plain parameters (named by position).
        rules: :class:`ParamGroupRule` objects or mappings validated into them.
        **defaults: The optimizer's own ``lr`` and ``weight_decay``: the table shows them for
            parameters no rule changes, and ``lr_mult`` multiplies ``lr``.

    Returns:
        :class:`ParamGroups`: ``groups`` for the optimizer, ``table`` to print, ``rows``.

    Raises:
        ConfigError: a rule is invalid or matches no parameter, two rules conflict on one
            parameter, or ``lr_mult`` is used without a base ``lr``.
    """
    parsed = _parse_rules(rules)
    items, _ = named_params(params)
    base_lr = defaults.get("lr")
    base_decay = defaults.get("weight_decay")
    issues: list[ConfigIssue] = []
    hits = [0] * len(parsed)
    resolved: list[tuple[str, Any, frozenset[str], dict[str, float], tuple[int, ...]]] = []
    for name, param in items:
        roles = _roles(name, param)
        settings: dict[str, float] = {}
        source: dict[str, int] = {}
        matched: list[int] = []
        for index, rule in enumerate(parsed):
            if not rule.selects(name, roles):
                continue
            hits[index] += 1
            matched.append(index)
            for key, value in rule.settings().items():
                slot = "lr" if key == "lr_mult" else key
                if slot in source and (settings.get(key) != value or key not in settings):
                    other = source[slot]
                    issues.append(ConfigIssue(str(index), (
                        f"parameter {name!r} is matched by rule {other} "
                        f"({parsed[other].describe()}) and rule {index} ({rule.describe()}), "
                        f"which set different {slot}")))
                    continue
                settings[key] = value
                source[slot] = index
        if "lr_mult" in settings:
            if base_lr is None:
                issues.append(ConfigIssue(str(source["lr"]), (
                    "lr_mult needs the optimizer's lr")))
            else:
                settings["lr"] = float(base_lr) * settings.pop("lr_mult")
        resolved.append((name, param, roles, settings, tuple(matched)))
    for index, count in enumerate(hits):
        if count == 0:
            issues.append(ConfigIssue(str(index), (
                f"rule ({parsed[index].describe()}) matches no parameter; the parameters are: "
                f"{_preview([name for name, _ in items])}")))
    if issues:
        raise ConfigError(issues)

    group_index: dict[tuple[tuple[str, float], ...], int] = {}
    groups: list[dict[str, Any]] = []
    rows: list[GroupRow] = []
    for name, param, roles, settings, rule_indices in resolved:
        signature = tuple(sorted(settings.items()))
        if signature not in group_index:
            group_index[signature] = len(groups)
            groups.append({"params": [], **settings})
        position = group_index[signature]
        groups[position]["params"].append((name, param))
        rows.append(GroupRow(name=name, shape=tuple(int(d) for d in getattr(param, "shape", ())),
                             roles=tuple(sorted(roles)), group=position,
                             lr=settings.get("lr", base_lr),
                             weight_decay=settings.get("weight_decay", base_decay),
                             rules=rule_indices))
    return ParamGroups(groups=groups, table=_render(rows), rows=tuple(rows))


class _Shape:
    """Stands in for a parameter when only its shape is known (dry runs from the CLI)."""

    __slots__ = ("shape",)

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(d) for d in shape)


def dry_run(spec: OptimizerSpec, params: Any) -> ParamGroups:
    """What an optimizer config's ``param_groups`` rules do to ``params``, without building it.

    Args:
        spec: A validated optimizer spec (its ``param_groups``, ``lr`` and ``weight_decay``).
        params: Anything :func:`param_groups` takes, or a ``{name: shape}`` mapping (a list of
            ints per name), so a CLI can dry-run from a shapes file.

    Raises:
        ConfigError: as :func:`param_groups`, with paths under ``param_groups``.
    """
    if isinstance(params, Mapping) and params and all(
            isinstance(v, (list, tuple)) and all(isinstance(d, int) for d in v)
            for v in params.values()):
        params = {name: _Shape(shape) for name, shape in params.items()}
    rules = getattr(spec, "param_groups", ())
    try:
        return param_groups(params, rules, lr=spec.lr,
                            weight_decay=getattr(spec, "weight_decay", None))
    except ConfigError as exc:
        raise exc.prefixed("param_groups") from None


def _parse_rules(rules: Sequence[ParamGroupRule | Mapping[str, Any]]) -> list[ParamGroupRule]:
    from pydantic import ValidationError

    parsed: list[ParamGroupRule] = []
    issues: list[ConfigIssue] = []
    if isinstance(rules, (str, bytes, Mapping)):
        raise ConfigError("param-group rules must be a list of rules")
    for index, rule in enumerate(rules):
        if isinstance(rule, ParamGroupRule):
            parsed.append(rule)
            continue
        try:
            parsed.append(ParamGroupRule.model_validate(rule))
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                path = ".".join([str(index), *(str(part) for part in error["loc"])])
                issues.append(ConfigIssue(path, error["msg"]))
    if issues:
        raise ConfigError(issues)
    return parsed


def _preview(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _render(rows: Sequence[GroupRow]) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    header = ("parameter", "shape", "roles", "group", "lr", "weight_decay", "rules")
    lines = [header] + [
        (row.name, "x".join(str(d) for d in row.shape) or "scalar", ",".join(row.roles) or "-",
         str(row.group), number(row.lr), number(row.weight_decay),
         ",".join(str(i) for i in row.rules) or "-")
        for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                      strict=True)).rstrip()
                     for line in lines)
