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

Two defaults of the field come on top of the rules, in this order of precedence:

1. **No weight decay on biases and normalization weights** (roles ``bias`` and ``norm``),
   as timm's ``filter_bias_and_bn`` and pytorch_optimizer's ``get_optimizer_parameters`` do,
   when the optimizer's ``weight_decay`` is > 0 and the parameters have names. A rule that
   sets a parameter's ``weight_decay`` wins over it; ``decay_bias_and_norm=True`` turns it off.
   The table marks the parameters it applies to with ``no_decay`` in the ``rules`` column.
   Unnamed parameters (a plain list of tensors) are not filtered, as ``torch.optim`` does not.
2. **Layer-wise lr decay** (``layer_decay``): the top layer keeps its lr and each layer below
   gets ``layer_decay`` times the lr of the layer above; the factor multiplies whatever lr the
   parameter has after the rules (``lr`` or ``lr_mult``). Layers come from
   ``layer_patterns`` (regular expressions, bottom up) or from the names (see
   :func:`layer_map`). The table then shows each parameter's ``layer`` and ``lr_scale``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, NamedTuple

from pydantic import model_validator

from .errors import ConfigError, ConfigIssue
from .specs import OptimizerSpec, ParamGroupRule, Role

__all__ = ["NO_DECAY_ROLES", "ForeachChoiceSpec", "GroupRow", "KernelChoiceSpec",
           "ParamGroupList", "ParamGroupRule", "ParamGroups", "Role", "StandardOptimizerSpec",
           "dry_run", "holds_params", "layer_map", "named_params", "normalize_params",
           "param_groups", "spec_param_groups"]

_NORM_COMPONENT = re.compile(r"(norm|^bn\d*$|^ln(_\w+)?\d*$|^gn\d*$)", re.IGNORECASE)
_NORM_WEIGHT_NAMES = frozenset({"weight", "gamma", "scale"})
NO_DECAY_ROLES: Final[frozenset[str]] = frozenset({"bias", "norm"})
"""The roles that get no weight decay by default (see ``decay_bias_and_norm``)."""


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
    """One line of the dry-run table: what one parameter gets.

    ``lr`` is the parameter's lr with every rule and its layer's ``lr_scale`` applied;
    ``no_decay`` says the default filter gave it ``weight_decay`` 0; ``layer`` is its layer
    (counted from the bottom) when layer decay is on, else ``None``.
    """

    name: str
    shape: tuple[int, ...]
    roles: tuple[str, ...]
    group: int
    lr: float | None
    weight_decay: float | None
    rules: tuple[int, ...]
    lr_scale: float = 1.0
    no_decay: bool = False
    layer: int | None = None


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
    items, owners, _ = _flatten(params)
    return items, owners


def _flatten(params: Any) -> tuple[list[tuple[str, Any]], dict[str, str], bool]:
    """:func:`named_params`, and whether the parameters came with names."""
    owners: dict[str, str] = {}
    named = True
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
            if _has_settings(listed):
                raise ConfigError("param-group rules need a flat set of parameters, not "
                                  "param-group dicts with their own settings")
            listed = [item for group in normalize_params(listed) for item in group["params"]]
        named = any(_is_named(item) for item in listed)
        items = [item if _is_named(item) else (str(index), item)  # type: ignore[misc]
                 for index, item in enumerate(listed)]
    names = [name for name, _ in items]
    if len(set(names)) != len(names):
        repeated = sorted({name for name in names if names.count(name) > 1})
        raise ConfigError(f"parameter names repeat: {', '.join(repeated)}")
    return items, owners, named


def _has_settings(params: Any) -> bool:
    """Whether ``params`` holds param-group dicts with settings of their own (``lr``, ...)."""
    if isinstance(params, ParamGroups):
        return False
    groups = ([params] if isinstance(params, Mapping) and "params" in params else
              params if isinstance(params, list) else [])
    return any(isinstance(group, Mapping) and bool(set(group) - {"params", "param_names"})
               for group in groups)


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


def param_groups(params: Any, rules: Sequence[ParamGroupRule | Mapping[str, Any]] = (), *,
                 lr: float | None = None, weight_decay: float | None = None,
                 decay_bias_and_norm: bool = False, layer_decay: float | None = None,
                 layer_patterns: Sequence[str] = ()) -> ParamGroups:
    """Split ``params`` into param groups by ``rules`` and the defaults, and make the dry-run
    table.

    Args:
        params: An ``nn.Module``, ``named_parameters()``, a ``{name: param}`` mapping, a NumPy
            layer, ``(name, param)`` pairs or plain parameters (named by position).
        rules: :class:`ParamGroupRule` objects or mappings validated into them.
        lr: The optimizer's lr: the table shows it for parameters no rule changes, and
            ``lr_mult`` and ``layer_decay`` multiply it.
        weight_decay: The optimizer's weight decay; when > 0, biases and normalization
            weights get 0 unless ``decay_bias_and_norm`` or a rule sets theirs.
        decay_bias_and_norm: Decay biases and normalization weights too (no default filter).
        layer_decay: Layer-wise lr decay factor in ``(0, 1]``; ``None``: off.
        layer_patterns: Regular expressions, one per layer from the bottom up (see
            :func:`layer_map`); empty: layers from the names.

    Returns:
        :class:`ParamGroups`: ``groups`` for the optimizer, ``table`` to print, ``rows``.

    Raises:
        ConfigError: a rule is invalid or matches no parameter, two rules conflict on one
            parameter, ``lr_mult`` or ``layer_decay`` is used without a base ``lr``, a layer
            pattern matches no parameter (path ``layer_patterns.N``), or ``layer_decay`` is
            given parameters without names (path ``layer_decay``).
    """
    parsed = _parse_rules(rules)
    items, _, named = _flatten(params)
    base_lr, base_decay = lr, weight_decay
    filtering = (not decay_bias_and_norm and named and isinstance(base_decay, (int, float))
                 and base_decay > 0)
    issues: list[ConfigIssue] = []
    layers: list[int] | None = None
    scales: list[float] = []
    if layer_decay is not None:
        if not named:
            raise ConfigError([ConfigIssue("layer_decay", (
                "layer-wise lr decay needs named parameters to find the layers: give the "
                "model, named_parameters() or a {name: param} dict"))])
        if base_lr is None:
            issues.append(ConfigIssue("layer_decay", "layer_decay needs the optimizer's lr"))
        layers, count = layer_map([name for name, _ in items], layer_patterns)
        scales = [float(layer_decay) ** (count - 1 - index) for index in range(count)]
    hits = [0] * len(parsed)
    resolved: list[tuple[str, Any, frozenset[str], dict[str, float], tuple[int, ...], bool,
                         float, int | None]] = []
    for position, (name, param) in enumerate(items):
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
        no_decay = filtering and "weight_decay" not in settings and bool(roles & NO_DECAY_ROLES)
        if no_decay:
            settings["weight_decay"] = 0.0
        layer = None if layers is None else layers[position]
        scale = 1.0 if layer is None else scales[layer]
        if scale != 1.0 and base_lr is not None:
            settings["lr"] = settings.get("lr", float(base_lr)) * scale
        resolved.append((name, param, roles, settings, tuple(matched), no_decay, scale, layer))
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
    for name, param, roles, settings, rule_indices, no_decay, scale, layer in resolved:
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
                             rules=rule_indices, lr_scale=scale, no_decay=no_decay,
                             layer=layer))
    return ParamGroups(groups=groups, table=_render(rows, layered=layers is not None),
                       rows=tuple(rows))


def layer_map(names: Sequence[str], patterns: Sequence[str] = ()) -> tuple[list[int], int]:
    """The layer of each parameter name, counted from the bottom, and the number of layers.

    With ``patterns`` (regular expressions, one per layer from the bottom up), a name is in
    the layer of the first pattern found in it (``re.search``); names no pattern finds form
    one more layer on top (a classifier head, say).

    Without, layers come from the names, in the order the parameters are given (a model's
    ``named_parameters()`` follow its definition): a name's *block* is its prefix up to its
    first all-digit component (``blocks.3.attn.qkv.weight`` -> ``blocks.3``, ``0.weight`` ->
    ``0``), and each block is a layer. Unnumbered parameters before the first block (a stem:
    ``patch_embed``, ``pos_embed``) form layer 0, those after the last block (a final norm
    and head) the top layer, and those between blocks join the block before them. Names with
    no numbered component at all (``fc1.weight``, ``fc2.bias``) are grouped by their first
    component, each group a layer. So an ``nn.Module``, its ``named_parameters()`` and a
    ``{name: array}`` dict of the same model get the same layers.

    Raises:
        ConfigError: a pattern finds no parameter it would place (path ``layer_patterns.N``).
    """
    count: int
    if patterns:
        compiled = [re.compile(pattern) for pattern in patterns]
        found = [next((index for index, pattern in enumerate(compiled) if pattern.search(name)),
                      len(compiled)) for name in names]
        unused = [index for index in range(len(compiled)) if index not in found]
        if unused:
            raise ConfigError([ConfigIssue(f"layer_patterns.{index}", (
                f"pattern {patterns[index]!r} places no parameter (an earlier pattern may "
                f"take them); the parameters are: {_preview(list(names))}"))
                for index in unused])
        count = len(compiled) + (len(compiled) in found)
        return found, count
    blocks = [_block(name) for name in names]
    if all(block is None for block in blocks):
        firsts = {name.split(".")[0]: None for name in names}
        order = {first: index for index, first in enumerate(firsts)}
        return [order[name.split(".")[0]] for name in names], len(order)
    last_numbered = max(index for index, block in enumerate(blocks) if block is not None)
    stem = blocks[0] is None
    ids: dict[str, int] = {}
    layers: list[int] = []
    current = 0
    for index, block in enumerate(blocks):
        if block is not None:
            if block not in ids:
                ids[block] = len(ids) + int(stem)
            current = ids[block]
        elif index > last_numbered:
            current = len(ids) + int(stem)
        layers.append(current)
    return layers, max(layers) + 1


def _block(name: str) -> str | None:
    parts = name.split(".")
    for index, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:index + 1])
    return None


class _Shape:
    """Stands in for a parameter when only its shape is known (dry runs from the CLI)."""

    __slots__ = ("shape",)

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(int(d) for d in shape)


def dry_run(spec: OptimizerSpec, params: Any) -> ParamGroups:
    """What an optimizer config does to ``params``' groups, without building it: its
    ``param_groups`` rules, the default no-decay filter and layer-wise lr decay.

    Args:
        spec: A validated optimizer spec (a wrapper's base decides, see
            :meth:`optiplug.OptimizerSpec.grouping_spec`).
        params: Anything :func:`param_groups` takes, or a ``{name: shape}`` mapping (a list of
            ints per name), so a CLI can dry-run from a shapes file.

    Raises:
        ConfigError: as :func:`param_groups`, with paths such as ``param_groups.0`` and
            ``layer_decay``.
    """
    if isinstance(params, Mapping) and params and all(
            isinstance(v, (list, tuple)) and all(isinstance(d, int) for d in v)
            for v in params.values()):
        params = {name: _Shape(shape) for name, shape in params.items()}
    return _spec_groups(spec.grouping_spec(), params)


def spec_param_groups(spec: OptimizerSpec, params: Any) -> ParamGroups | None:
    """The groups an optimizer spec makes of ``params`` (what
    :meth:`optiplug.OptimizerSpec.group_params` builds), or ``None`` when nothing applies:
    no rules and no layer decay, and the no-decay filter off, not applicable (no
    ``weight_decay`` > 0) or given unnamed parameters or param-group dicts of the user's own.

    Raises:
        ConfigError: as :func:`param_groups`, with paths such as ``param_groups.0``.
    """
    decay = getattr(spec, "weight_decay", None)
    filtering = (not getattr(spec, "decay_bias_and_norm", True)
                 and isinstance(decay, (int, float)) and decay > 0)
    if not spec.param_groups and getattr(spec, "layer_decay", None) is None:
        if not filtering or _has_settings(params) or not _names_known(params):
            return None
    elif getattr(spec, "layer_decay", None) is not None and _has_settings(params):
        raise ConfigError([ConfigIssue("layer_decay", (
            "layer-wise lr decay needs one flat set of named parameters (a model, "
            "named_parameters() or a {name: param} dict), not param-group dicts with settings "
            "of their own"))])
    return _spec_groups(spec, params)


def _names_known(params: Any) -> bool:
    """Whether ``params`` names its parameters, read without consuming an iterator (one that
    is not a list, tuple or mapping counts as unnamed: the no-decay filter then stays off)."""
    if isinstance(params, ParamGroups) or hasattr(params, "named_parameters") or isinstance(
            getattr(params, "params", None), Mapping):
        return True
    if isinstance(params, Mapping):
        return "params" not in params or "param_names" in params or _names_known(
            params["params"])
    if isinstance(params, (list, tuple)):
        return any(_is_named(item) or (isinstance(item, Mapping) and _names_known(item))
                   for item in params)
    return False


def _spec_groups(spec: OptimizerSpec, params: Any) -> ParamGroups:
    try:
        return param_groups(params, getattr(spec, "param_groups", ()), lr=spec.lr,
                            weight_decay=getattr(spec, "weight_decay", None),
                            decay_bias_and_norm=getattr(spec, "decay_bias_and_norm", True),
                            layer_decay=getattr(spec, "layer_decay", None),
                            layer_patterns=getattr(spec, "layer_patterns", ()))
    except ConfigError as exc:
        # Rule issues are reported under param_groups; layer_decay/layer_patterns are fields.
        raise ConfigError([issue if issue.path.startswith(("layer_decay", "layer_patterns"))
                           else ConfigIssue(f"param_groups.{issue.path}" if issue.path
                                            else "param_groups", issue.message)
                           for issue in exc.issues], source=exc.source) from None


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


def _render(rows: Sequence[GroupRow], layered: bool = False) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:g}"

    header: tuple[str, ...] = ("parameter", "shape", "roles", "group",
                               *(("layer",) if layered else ()), "lr",
                               *(("lr_scale",) if layered else ()), "weight_decay", "rules")
    lines = [header] + [
        (row.name, "x".join(str(d) for d in row.shape) or "scalar", ",".join(row.roles) or "-",
         str(row.group), *((str(row.layer),) if layered else ()), number(row.lr),
         *((f"{row.lr_scale:.6g}",) if layered else ()), number(row.weight_decay),
         ",".join([*(str(i) for i in row.rules), *(("no_decay",) if row.no_decay else ())])
         or "-")
        for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                      strict=True)).rstrip()
                     for line in lines)
