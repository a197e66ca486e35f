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

Roles: ``bias`` (the last name component ends with ``bias``), ``norm`` (the weight of a
normalization layer: its module class name contains ``Norm`` when an ``nn.Module`` is given,
else a name component such as ``norm``, ``bn1``, ``ln_f``) and ``1d`` (at most one dimension).

A rule that matches no parameter is an error, and so is a parameter that two rules give
different values of the same setting (``lr`` and ``lr_mult`` count as the same setting).
:func:`param_groups` returns the groups together with a dry-run table of what each parameter
gets, for ``optiplug.param_groups(...)`` and the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import ConfigError, ConfigIssue
from .specs import OptimizerSpec, ParamGroupRule, Role

__all__ = ["GroupRow", "ParamGroupRule", "ParamGroups", "Role", "StandardOptimizerSpec",
           "dry_run", "named_params", "param_groups"]

_NORM_COMPONENT = re.compile(r"(norm|^bn\d*$|^ln(_\w+)?\d*$|^gn\d*$)", re.IGNORECASE)
_NORM_WEIGHT_NAMES = frozenset({"weight", "gamma", "scale"})


StandardOptimizerSpec = OptimizerSpec
"""Former name of :class:`optiplug.OptimizerSpec` (which now holds ``param_groups`` and
``nonfinite``); kept as an alias."""


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


def named_params(params: Any) -> tuple[list[tuple[str, Any]], dict[str, str]]:
    """Flatten params-like input to ``[(name, param)]`` and the owning module class per name.

    Accepts an ``nn.Module`` (``named_parameters()``), an object with a ``params`` mapping (a
    NumPy layer), a ``{name: param}`` mapping, ``(name, param)`` pairs, or plain parameters
    (named ``"0"``, ``"1"``, ...).

    Raises:
        ConfigError: param-group dicts are given (rules need a flat parameter list) or a name
            repeats.
    """
    owners: dict[str, str] = {}
    if hasattr(params, "named_parameters") and hasattr(params, "named_modules"):
        for module_name, module in params.named_modules():
            for param_name, _ in module.named_parameters(recurse=False):
                full = f"{module_name}.{param_name}" if module_name else param_name
                owners[full] = type(module).__name__
        items: list[tuple[str, Any]] = list(params.named_parameters())
    elif isinstance(getattr(params, "params", None), Mapping):
        items = list(params.params.items())
    elif isinstance(params, Mapping):
        if "params" in params:
            raise ConfigError("param-group rules need a flat set of parameters, not a "
                              "param-group dict")
        items = list(params.items())
    else:
        listed = list(params) if isinstance(params, Iterable) else [params]
        if any(isinstance(item, Mapping) for item in listed):
            raise ConfigError("param-group rules need a flat set of parameters, not "
                              "param-group dicts")
        items = [item if _is_named(item) else (str(index), item)
                 for index, item in enumerate(listed)]
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ConfigError(f"parameter names repeat: {', '.join(repeated)}")
    return items, owners


def _is_named(item: Any) -> bool:
    return isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)


def _roles(name: str, param: Any, owner: str | None) -> frozenset[str]:
    roles = set()
    components = name.split(".")
    last = components[-1]
    if last.lower().endswith("bias"):
        roles.add("bias")
    if len(tuple(getattr(param, "shape", ()))) <= 1:
        roles.add("1d")
    if last.lower() in _NORM_WEIGHT_NAMES:
        if owner is not None:
            is_norm = "Norm" in owner
        else:
            is_norm = any(_NORM_COMPONENT.search(part) for part in components[:-1])
        if is_norm:
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
    items, owners = named_params(params)
    base_lr = defaults.get("lr")
    base_decay = defaults.get("weight_decay")
    issues: list[ConfigIssue] = []
    hits = [0] * len(parsed)
    resolved: list[tuple[str, Any, frozenset[str], dict[str, float], tuple[int, ...]]] = []
    for name, param in items:
        roles = _roles(name, param, owners.get(name))
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
