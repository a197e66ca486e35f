"""Bridge to pytorch_optimizer: its optimizers and schedulers as ``pto.<name>`` techniques.

What: every optimizer of ``pytorch_optimizer.optimizer.OPTIMIZER_LIST`` and every scheduler of
``pytorch_optimizer.lr_scheduler.LR_SCHEDULER_LIST`` that can be built from a config, under
pytorch_optimizer's own lower-case names with the prefix ``pto.`` (``pto.lion``,
``pto.adabelief``, ``pto.cosine_annealing_with_warmup``), on the torch backend only.

When: to try the long tail of published optimizers through optiplug's configs, CLI and
``compare`` without writing a plugin for each. optiplug's own techniques (both backends,
tested against references) remain the first choice where both exist.

How: the spec of each technique is derived from the class's ``__init__`` signature, read from
the installed source without importing pytorch_optimizer or torch (listing stays cheap):

- types: ``float``, ``int``, ``bool``, ``str``, ``Literal``, ``X | None``, tuples (``Betas``
  accepts 2 or 3 values) and lists (given as lists, held as tuples); ``torch.Tensor`` in a
  union is dropped (``lr: float | Tensor`` is a float). A parameter of any other type (a
  callable, a ``torch.dtype``, a process group) keeps the class's default and is not
  configurable; a class that *needs* one (a model, another optimizer, a scheduler, a lambda)
  is not bridged.
- defaults: the signature's defaults (a ``None`` default makes the type optional).
- bounds: read from the class's own validation in ``__init__``: pytorch_optimizer's
  ``validate_learning_rate`` (``>= 0``), ``validate_non_negative`` (``>= 0``),
  ``validate_positive`` (``> 0``), ``validate_range`` (its interval), ``validate_betas``
  (each beta in ``[0, 1)`` unless the call says otherwise) and ``validate_options`` (a
  ``Literal``); torch's ``if not 0.0 <= x: raise`` checks the same way.
- descriptions: the ``Args:`` section of the class docstring.

The builder mixes :class:`optiplug.backends.torch.TorchOptimizer` into the class (named
params, param-group rules, state loaded by name, the ``nonfinite`` policy) and passes the
spec's values as keyword arguments: the update itself is pytorch_optimizer's, unchanged.

Reference: Hyeongchan Kim, pytorch_optimizer (https://github.com/kozistr/pytorch_optimizer),
version 4.1; each technique's reference names its class.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, create_model

import optiplug

PREFIX = "pto."
"""The namespace of bridged techniques: ``pto.lion`` is pytorch_optimizer's ``lion``."""
DISTRIBUTION = "pytorch_optimizer"

_MISSING: Any = object()
# Arguments the spec never carries: the params/optimizer slot and torch's resume counter.
_SKIPPED = frozenset({"self", "params", "optimizer"})
# Torch's schedulers that are meant to step after every batch; the rest step per epoch.
_BATCH_SCHEDULERS = frozenset({
    "cyclic", "one_cycle", "cosine", "linear", "poly", "rex", "warmup_stable_decay",
    "cosine_annealing_with_warmup"})


class _Unsupported(Exception):
    """A type that a config cannot give (a callable, a tensor, a model)."""


@dataclass(frozen=True)
class _Parameter:
    name: str
    annotation: ast.expr | None
    default: Any
    description: str


@dataclass(frozen=True)
class _Source:
    """A class or factory as read from its module's source."""

    module: str
    qualname: str
    node: ast.ClassDef | ast.FunctionDef


# ------------------------------------------------------------------------- reading the source
def installed() -> bool:
    """Whether pytorch_optimizer is installed and importable (looked up, not imported)."""
    try:
        return importlib.util.find_spec(DISTRIBUTION) is not None
    except (ImportError, ValueError):  # an import hook refusing it
        return False


@functools.cache
def _package_root(top: str) -> Path | None:
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _module_file(module: str) -> Path | None:
    top, *rest = module.split(".")
    root = _package_root(top)
    if root is None:
        return None
    path = root.joinpath(*rest)
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


_DEFINITION = re.compile(r"^(?:async\s+)?(?:class|def)\s+(\w+)")


@functools.cache
def _split(module: str) -> tuple[ast.Module, dict[str, str | ast.stmt]] | None:
    """A module's top-level statements other than definitions (parsed), and its class and
    function definitions by name (source text, parsed on demand).

    Parsing only what is asked for keeps reading ~120 modules cheap. The text is cut at lines
    starting in column 0; when that cut does not parse (a multi-line string in column 0), the
    whole module is parsed instead.
    """
    path = _module_file(module)
    if path is None:
        return None
    text = path.read_text(encoding="utf-8")
    chunks: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        starts = line[:1] not in ("", " ", "\t", "\n", "\r", ")", "]", "}", "#", "'", '"')
        if starts and not (chunks and chunks[-1][-1].startswith("@")):
            chunks.append([line])
        elif chunks:
            chunks[-1].append(line)
    definitions: dict[str, str | ast.stmt] = {}
    statements: list[str] = []
    for chunk in chunks:
        header = next((line for line in chunk if not line.startswith("@")), "")
        match = _DEFINITION.match(header)
        if match:
            definitions[match.group(1)] = "".join(chunk)
        else:
            statements.append("".join(chunk))
    try:
        return ast.parse("".join(statements)), definitions
    except SyntaxError:
        whole = ast.parse(text, filename=str(path))
        return whole, {node.name: node for node in whole.body
                       if isinstance(node, (ast.ClassDef, ast.FunctionDef))}


_METHOD = re.compile(r"^    (?:@|(?:async\s+)?def\s+(\w+))")


def _without_methods(chunk: str) -> str:
    """A class's source with every method but ``__init__`` cut out (only it is read)."""
    kept: list[str] = []
    keep = True
    pending: list[str] = []
    for line in chunk.splitlines(keepends=True):
        match = _METHOD.match(line)
        if match and match.group(1) is None:  # a decorator: decided by the def below it
            pending.append(line)
            continue
        if match:
            keep = match.group(1) == "__init__"
            if keep:
                kept.extend(pending)
            pending = []
        if keep:
            kept.append(line)
    return "".join(kept)


def _tree(module: str) -> ast.Module | None:
    split = _split(module)
    return None if split is None else split[0]


@functools.cache
def _definition(module: str, name: str) -> ast.ClassDef | ast.FunctionDef | None:
    split = _split(module)
    found = None if split is None else split[1].get(name)
    if isinstance(found, str):
        try:
            found = ast.parse(_without_methods(found)).body[-1]
        except SyntaxError:
            try:
                found = ast.parse(found).body[-1]
            except SyntaxError:
                return None
    return found if isinstance(found, (ast.ClassDef, ast.FunctionDef)) else None


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    path = _module_file(module)
    package = module if path is not None and path.name == "__init__.py" else \
        module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _find(module: str, name: str, depth: int = 0) -> _Source | None:
    """The definition of ``name`` as seen from ``module``, following re-exports."""
    tree = _tree(module)
    if tree is None or depth > 8:
        return None
    definition = _definition(module, name)
    if definition is not None:
        return _Source(module, name, definition)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _find(_absolute(module, node), alias.name, depth + 1)
    return None


def _init(source: _Source) -> ast.FunctionDef | None:
    if isinstance(source.node, ast.FunctionDef):
        return source.node
    for node in source.node.body:
        if isinstance(node, ast.FunctionDef) and node.name == "__init__":
            return node
    return None


def _alias(source: _Source, name: str) -> ast.expr | None:
    """The expression of a module-level type alias (``VARIANTS = Literal[...]``)."""
    tree = _tree(source.module)
    for node in tree.body if tree is not None else ():
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name) and node.targets[0].id == name:
            return node.value
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and \
                node.target.id == name and node.value is not None:
            return node.value
        if isinstance(node, ast.ImportFrom) and any(
                (a.asname or a.name) == name for a in node.names):
            imported = next(a.name for a in node.names if (a.asname or a.name) == name)
            return _alias(_Source(_absolute(source.module, node), imported, source.node),
                          imported)
    return None


def _base(source: _Source) -> _Source | None:
    if isinstance(source.node, ast.ClassDef) and source.node.bases:
        base = source.node.bases[0]
        if isinstance(base, ast.Name):
            return _find(source.module, base.id)
    return None


def _docstring(source: _Source) -> tuple[str, dict[str, str]]:
    """The summary line and the ``Args:`` descriptions of a class or function docstring."""
    text = ast.get_docstring(source.node) or ""
    summary = " ".join(text.split("\n\n")[0].split())
    args: dict[str, str] = {}
    lines = text.splitlines()
    if "Args:" in [line.strip() for line in lines]:
        start = [line.strip() for line in lines].index("Args:") + 1
        current = None
        for line in lines[start:]:
            if line.strip() and not line.startswith(" "):
                break
            match = re.match(r"^\s{2,}(\**\w+)(?: \([^)]*\))?:\s*(.*)$", line)
            if match and len(line) - len(line.lstrip()) <= 8:
                current = match.group(1)
                args[current] = match.group(2).strip()
            elif current and line.strip():
                args[current] += " " + line.strip()
    return summary, args


def _literal(node: ast.expr | None) -> Any:
    """The value of a constant default expression (``1e-3``, ``(0.9, 0.99)``, ``1.0 / 3``)."""
    if node is None:
        return _MISSING
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Div, ast.Mult, ast.Pow)):
        left, right = _literal(node.left), _literal(node.right)
        numbers = (int, float)
        if isinstance(left, numbers) and isinstance(right, numbers):
            if isinstance(node.op, ast.Div):
                return left / right if right else _MISSING
            return left * right if isinstance(node.op, ast.Mult) else left**right
    return _MISSING


def _parameters(source: _Source) -> tuple[list[_Parameter], bool]:
    """The keyword parameters of the class's ``__init__`` (or the factory), and whether it
    takes ``**kwargs``."""
    init, owner = _init(source), source
    for _ in range(5):  # a class without __init__ takes its base's
        if init is not None:
            break
        owner = _base(owner)  # type: ignore[assignment]
        if owner is None:
            return [], False
        init = _init(owner)
    if init is None:
        return [], False
    _, described = _docstring(source)
    arguments = init.args
    positional = [*arguments.posonlyargs, *arguments.args]
    defaults: list[Any] = [_MISSING] * (len(positional) - len(arguments.defaults)) + [
        _literal(d) if d is not None else _MISSING for d in arguments.defaults]
    entries = list(zip(positional, defaults, strict=True)) + [
        (arg, _literal(d) if d is not None else _MISSING)
        for arg, d in zip(arguments.kwonlyargs, arguments.kw_defaults, strict=True)]
    first = next((arg.arg for arg, _ in entries if arg.arg != "self"), None)
    if first not in ("params", "optimizer"):
        raise _Unsupported(f"it takes {first!r}, not params or an optimizer")
    found = []
    for arg, default in entries:
        if arg.arg in _SKIPPED:
            continue
        if default is _MISSING and entries_default_given(arguments, arg):
            default = _UNREADABLE
        found.append(_Parameter(arg.arg, arg.annotation, default, described.get(arg.arg, "")))
    return found, arguments.kwarg is not None


_UNREADABLE: Any = object()
"""A default that is an expression the source reader does not evaluate (``torch.float32``)."""


def entries_default_given(arguments: ast.arguments, arg: ast.arg) -> bool:
    """Whether ``arg`` has a default in the source (whatever its expression)."""
    positional = [*arguments.posonlyargs, *arguments.args]
    if arg in positional:
        return positional.index(arg) >= len(positional) - len(arguments.defaults)
    return arguments.kw_defaults[arguments.kwonlyargs.index(arg)] is not None


# ----------------------------------------------------------------------------------- bounds
@dataclass
class _Bound:
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    options: tuple[str, ...] | None = None

    def field(self) -> Any:
        return Field(ge=self.ge, gt=self.gt, le=self.le, lt=self.lt)

    def empty(self) -> bool:
        return all(v is None for v in (self.ge, self.gt, self.le, self.lt))


def _interval(bound: _Bound, low: Any, high: Any, kind: str) -> None:
    if isinstance(low, (int, float)):
        if kind[0] == "[":
            bound.ge = low
        else:
            bound.gt = low
    if isinstance(high, (int, float)):
        if kind[1] == "]":
            bound.le = high
        else:
            bound.lt = high


def _call_argument(call: ast.Call, position: int, keyword: str, default: Any) -> Any:
    for item in call.keywords:
        if item.arg == keyword:
            return _literal(item.value)
    if len(call.args) > position:
        return _literal(call.args[position])
    return default


def _bounds(source: _Source, names: set[str]) -> dict[tuple[str, int | None], _Bound]:
    """Bounds per (parameter, element index) read from the validation in ``__init__``."""
    init = _init(source)
    bounds: dict[tuple[str, int | None], _Bound] = {}
    if init is None:
        return bounds

    def at(name: str, index: int | None = None) -> _Bound:
        return bounds.setdefault((name, index), _Bound())

    for node in ast.walk(init):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args \
                and isinstance(node.args[0], ast.Name) and node.args[0].id in names:
            method, name = node.func.attr, node.args[0].id
            if method == "validate_learning_rate" or method == "validate_non_negative":
                at(name).ge = 0.0
            elif method == "validate_positive":
                at(name).gt = 0.0
            elif method == "validate_non_positive":
                at(name).le = 0.0
            elif method == "validate_range":
                _interval(at(name), _call_argument(node, 2, "low", None),
                          _call_argument(node, 3, "high", None),
                          _call_argument(node, 4, "range_type", "[)"))
            elif method == "validate_betas":
                kind = _call_argument(node, 1, "beta_range_type", "[)")
                third = _call_argument(node, 2, "beta3_range_type", "[]")
                for index, interval in ((0, kind), (1, kind), (2, third)):
                    if isinstance(interval, str):
                        _interval(at(name, index), 0.0, 1.0, interval)
            elif method == "validate_options":
                options = _call_argument(node, 2, "options", None)
                if isinstance(options, (list, tuple)) and all(isinstance(o, str)
                                                              for o in options):
                    at(name).options = tuple(options)
        elif isinstance(node, ast.If) and isinstance(node.test, ast.UnaryOp) and \
                isinstance(node.test.op, ast.Not) and isinstance(node.test.operand, ast.Compare) \
                and any(isinstance(n, ast.Raise) for n in node.body):
            _compare_bounds(node.test.operand, names, at)
    return bounds


def _compare_bounds(compare: ast.Compare, names: set[str], at: Any) -> None:
    """``not 0.0 <= betas[0] < 1.0`` (torch's checks): the bounds on the named parameter."""
    operands = [compare.left, *compare.comparators]
    for (left, op, right) in zip(operands, compare.ops, operands[1:], strict=False):
        for value, target, flipped in ((left, right, False), (right, left, True)):
            key = _target(target, names)
            number = _literal(value)
            if key is None or not isinstance(number, (int, float)) or isinstance(number, bool):
                continue
            bound = at(*key)
            if isinstance(op, ast.LtE):
                setattr(bound, "le" if flipped else "ge", float(number))
            elif isinstance(op, ast.Lt):
                setattr(bound, "lt" if flipped else "gt", float(number))
            elif isinstance(op, ast.GtE):
                setattr(bound, "ge" if flipped else "le", float(number))
            elif isinstance(op, ast.Gt):
                setattr(bound, "gt" if flipped else "lt", float(number))


def _target(node: ast.expr, names: set[str]) -> tuple[str, int | None] | None:
    if isinstance(node, ast.Name) and node.id in names:
        return node.id, None
    if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and \
            node.value.id in names and isinstance(node.slice, ast.Constant) and \
            isinstance(node.slice.value, int):
        return node.value.id, node.slice.value
    return None


# ------------------------------------------------------------------------------------ types
_SCALARS: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str}
_DROPPED = frozenset({"Tensor", "torch.Tensor"})
_SEQUENCES = frozenset({"list", "List", "Sequence", "Iterable", "tuple", "Tuple"})


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def _members(node: ast.expr) -> Iterator[ast.expr]:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        yield from _members(node.left)
        yield from _members(node.right)
    elif isinstance(node, ast.Subscript) and _dotted(node.value) in ("Union", "typing.Union"):
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        for item in items:
            yield from _members(item)
    elif isinstance(node, ast.Subscript) and _dotted(node.value) in ("Optional",
                                                                    "typing.Optional"):
        yield from _members(node.slice)
        yield ast.Constant(None)
    else:
        yield node


def _python_type(node: ast.expr, bound: Any, alias: Any = lambda name: None) -> Any:
    """The pydantic type for an annotation; ``bound(index)`` gives an element's bound and
    ``alias(name)`` the expression a module-level type alias stands for."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _python_type(ast.parse(node.value, mode="eval").body, bound, alias)
    members = [m for m in _members(node) if _dotted(m) not in _DROPPED]
    if not members:
        raise _Unsupported("only tensors")
    if len(members) > 1:
        types = []
        for member in members:
            try:
                types.append(_python_type(member, bound, alias))
            except _Unsupported:
                continue  # `float | Callable`: the configurable part
        if not types:
            raise _Unsupported("no configurable member")
        return types[0] if len(types) == 1 else Union[tuple(types)]  # noqa: UP007
    [node] = members
    if isinstance(node, ast.Constant) and node.value is None:
        return type(None)
    name = _dotted(node)
    if name == "Betas":
        return Union[_tuple_of(float, 2, bound), _tuple_of(float, 3, bound)]  # noqa: UP007
    if name in _SCALARS:
        return _bounded(_SCALARS[name], bound(None))
    if isinstance(node, ast.Name) and (target := alias(node.id)) is not None:
        return _python_type(target, bound, lambda name: None)
    if isinstance(node, ast.Subscript):
        head = _dotted(node.value).rpartition(".")[2]
        items = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        if head == "Literal":
            values = [_literal(item) for item in items]
            if any(v is _MISSING for v in values):
                raise _Unsupported("literal")
            return Literal[tuple(values)]
        if head in _SEQUENCES:
            if head in ("tuple", "Tuple") and not (len(items) == 2 and isinstance(
                    items[1], ast.Constant) and items[1].value is Ellipsis):
                return tuple[tuple(_python_type(item, lambda _, i=i: bound(i), alias)
                                   for i, item in enumerate(items))]  # type: ignore[misc]
            return tuple[_python_type(items[0], lambda _: None, alias), ...]  # type: ignore[misc]
    raise _Unsupported(ast.unparse(node))


def _bounded(kind: type, bound: _Bound | None) -> Any:
    if bound is None:
        return kind
    if bound.options is not None and kind is str:
        return Literal[bound.options]
    if bound.empty() or kind not in (int, float):
        return kind
    return Annotated[kind, bound.field()]


def _tuple_of(kind: type, length: int, bound: Any) -> Any:
    return tuple[tuple(_bounded(kind, bound(i)) for i in range(length))]  # type: ignore[misc]


def _from_default(default: Any) -> ast.expr:
    """An annotation for an unannotated parameter, from its default's type."""
    if isinstance(default, bool | int | float | str):
        return ast.Name(type(default).__name__)
    if isinstance(default, tuple) and default and all(isinstance(v, float) for v in default):
        return ast.parse(f"tuple[{', '.join(['float'] * len(default))}]", mode="eval").body
    raise _Unsupported(f"default {default!r}")


# ------------------------------------------------------------------------------------ specs
class _EpochSchedulerSpec(optiplug.SchedulerSpec):
    """Base of bridged schedulers stepped once per epoch."""

    interval: ClassVar[optiplug.Interval] = "epoch"


class _BatchSchedulerSpec(optiplug.SchedulerSpec):
    """Base of bridged schedulers stepped after every batch."""

    interval: ClassVar[optiplug.Interval] = "batch"


@dataclass(frozen=True)
class Bridged:
    """One bridged class: where it lives and what its spec was derived from.

    Attributes:
        kind: ``optimizer`` or ``scheduler``.
        name: pytorch_optimizer's name (``lion``); the technique is ``pto.<name>``.
        module: Module defining the class (or scheduler factory).
        qualname: Its name there.
        accepted: The keyword arguments the builder passes (the spec's configurable fields).
        fixed: Arguments left at the class's default because a config cannot give them.
    """

    kind: str
    name: str
    module: str
    qualname: str
    accepted: frozenset[str]
    fixed: tuple[str, ...]


def _spec_class(kind: str, name: str, source: _Source) -> tuple[type[optiplug.Spec], Bridged]:
    parameters, takes_kwargs = _parameters(source)
    if kind == "scheduler" and takes_kwargs:
        # PolyScheduler(optimizer, poly_order, **kwargs) passes the rest to its base.
        base = _base(source)
        if base is not None:
            known = {p.name for p in parameters}
            parameters += [p for p in _parameters(base)[0] if p.name not in known]
    names = {p.name for p in parameters}
    bounds = _bounds(source, names)
    base = source
    for _ in range(3):  # validation may sit in a base's __init__ (the linear-warmup schedulers)
        base = _base(base)  # type: ignore[assignment]
        if base is None:
            break
        for key, bound in _bounds(base, names).items():
            bounds.setdefault(key, bound)
    spec_base: type[optiplug.Spec] = optiplug.OptimizerSpec if kind == "optimizer" else (
        _BatchSchedulerSpec if name in _BATCH_SCHEDULERS else _EpochSchedulerSpec)
    technique = f"{PREFIX}{name}"
    fields: dict[str, Any] = {"name": (Literal[technique], technique)}
    fixed: list[str] = []
    for parameter in parameters:
        reserved = (parameter.name in spec_base.model_fields and parameter.name != "lr") or (
            hasattr(spec_base, parameter.name) and parameter.name not in spec_base.model_fields)
        if reserved or parameter.name.startswith("model_") or parameter.default is _UNREADABLE:
            fixed.append(parameter.name)
            continue
        try:
            annotation = parameter.annotation if parameter.annotation is not None else \
                _from_default(parameter.default)
            kind_of = _python_type(annotation, lambda index, n=parameter.name:
                                   bounds.get((n, index)), functools.partial(_alias, source))
        except (_Unsupported, SyntaxError) as exc:
            if parameter.default is _MISSING:
                raise _Unsupported(f"needs {parameter.name!r} ({exc})") from None
            fixed.append(parameter.name)
            continue
        if parameter.default is None:
            kind_of = kind_of | None
        description = parameter.description or f"pytorch_optimizer's {parameter.name!r}."
        default = ... if parameter.default is _MISSING else parameter.default
        fields[parameter.name] = (kind_of, Field(default, description=description))
    if kind == "optimizer" and "lr" not in names:
        fields["lr"] = (type(None), Field(None, description=f"{source.qualname} takes no lr."))
    summary, _ = _docstring(source)
    spec = create_model(  # type: ignore[call-overload]
        f"Pto{source.qualname[:1].upper()}{source.qualname[1:]}Spec", __base__=spec_base,
        __module__=__name__, __doc__=f"pytorch_optimizer's {source.qualname}: {summary}",
        **fields)
    accepted = frozenset(n for n in fields if n != "name" and (n in names))
    return spec, Bridged(kind, name, source.module, source.qualname, accepted, tuple(fixed))


def _listed_optimizers() -> list[tuple[str, _Source | None]]:
    tree = _tree("pytorch_optimizer.optimizer")
    if tree is None:
        return []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.List):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "OPTIMIZER_LIST" for t in targets):
                return [(item.id.lower(), _find("pytorch_optimizer.optimizer", item.id))
                        for item in node.value.elts if isinstance(item, ast.Name)]
    return []


def _listed_schedulers() -> list[tuple[str, _Source | None]]:
    module = "pytorch_optimizer.lr_scheduler"
    tree = _tree(module)
    if tree is None:
        return []
    members: dict[str, str] = {}
    found: list[tuple[str, _Source | None]] = []
    enum = _definition(module, "SchedulerType")
    for item in enum.body if isinstance(enum, ast.ClassDef) else ():
        if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
            members[_dotted(item.targets[0])] = str(item.value.value)
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "LR_SCHEDULER_LIST" for t in targets):
                for key, value in zip(node.value.keys, node.value.values, strict=True):
                    if isinstance(key, ast.Attribute) and isinstance(value, ast.Name):
                        found.append((members.get(key.attr, key.attr.lower()),
                                      _find(module, value.id)))
    return found


@functools.cache
def catalogue() -> tuple[dict[str, tuple[type[optiplug.Spec], Bridged]], dict[str, str]]:
    """Every bridged technique by ``kind.name``, and every class left out with the reason.

    Read from the installed source (nothing is imported); cached for the process.
    """
    bridged: dict[str, tuple[type[optiplug.Spec], Bridged]] = {}
    left_out: dict[str, str] = {}
    for kind, listed in (("optimizer", _listed_optimizers()),
                         ("scheduler", _listed_schedulers())):
        for name, source in listed:
            key = f"{kind}.{PREFIX}{name}"
            if source is None:
                left_out[key] = "its definition was not found in the installed source"
                continue
            try:
                bridged[key] = _spec_class(kind, name, source)
            except _Unsupported as exc:
                left_out[key] = str(exc)
    return bridged, left_out


# --------------------------------------------------------------------------------- builders
@functools.cache
def _resolve(module: str, qualname: str) -> Any:
    return getattr(importlib.import_module(module), qualname)


@functools.cache
def _with_named_params(algorithm: type) -> type:
    from optiplug.backends.torch import TorchOptimizer

    return type(algorithm.__name__, (TorchOptimizer, algorithm), {
        "__module__": __name__,
        "__doc__": f"pytorch_optimizer's {algorithm.__name__} with optiplug's named params."})


def _builder(bridged: Bridged) -> optiplug.Builder:
    if bridged.kind == "optimizer":
        def build_torch(spec: optiplug.OptimizerSpec, params: Any) -> Any:
            algorithm = _with_named_params(_resolve(bridged.module, bridged.qualname))
            arguments = {key: value for key, value in spec.optimizer_arguments().items()
                         if key in bridged.accepted or key == "nonfinite"}
            return algorithm(spec.group_params(params), **arguments)

        return build_torch

    def build_scheduler(spec: optiplug.SchedulerSpec, optimizer: Any) -> Any:
        factory = _resolve(bridged.module, bridged.qualname)
        arguments = {key: value for key, value in spec.hyperparameters().items()
                     if key in bridged.accepted}
        return factory(optimizer, **arguments)

    return build_scheduler


def techniques(kind: str) -> list[optiplug.Technique]:
    """The bridged techniques of ``kind`` (none when pytorch_optimizer is not installed)."""
    if not installed():
        return []
    bridged, _ = catalogue()
    found = []
    for spec, info in bridged.values():
        if info.kind != kind:
            continue
        summary = (spec.__doc__ or "").partition(": ")[2] or info.qualname
        note = f" Fixed at pytorch_optimizer's default: {', '.join(info.fixed)}." \
            if info.fixed else ""
        found.append(optiplug.Technique(
            kind=kind, name=f"{PREFIX}{info.name}", spec=spec,
            builders={"torch": _builder(info)},
            summary=f"{summary} (pytorch_optimizer's {info.qualname}; torch only.){note}",
            reference=f"pytorch_optimizer: {info.module}.{info.qualname}"))
    return found


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return techniques("optimizer")


@optiplug.hookimpl
def optiplug_schedulers() -> list[optiplug.Technique]:
    return techniques("scheduler")
