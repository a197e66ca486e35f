"""The ``optiplug`` command: list, show, schema, validate, doctor, and other modules' commands.

Errors print one line (``optiplug: error: ...``) and no traceback unless ``--debug`` is given.
Exit codes: 0 success, 1 failure (invalid config, broken plugins), 2 usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from .errors import OptiplugError

__all__ = ["CommandError", "add_overrides_argument", "main", "require_file"]

# Modules that add subcommands: each has ``add_commands(subparsers) -> None`` whose parsers set
# ``func=callable(args) -> int``. Missing modules are skipped, so the core CLI stays usable.
_COMMAND_MODULES: Final = ("optiplug.param_groups", "optiplug.training.cli", "optiplug.scaffold")


class _UsageError(Exception):
    """Bad command-line usage: exit status 2."""


class CommandError(OptiplugError):
    """A command cannot do its work (a file that does not exist): one line, exit status 1."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # `run recipe.yaml --quiet optimizer.lr=3e-4`: overrides may follow options.
        takes = hasattr(args, "overrides")
        unknown = [item for item in extra if not takes or "=" not in item or item[0] == "-"]
        if unknown:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        args.overrides = [*args.overrides, *extra]
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        result: int = args.func(args)
        return result
    except _UsageError as exc:
        print(f"optiplug: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("optiplug: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`optiplug list | head`): stop quietly, as other tools do.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        # A full disk, a permission, a path through a file: the system's reason and the path,
        # not an "internal error" (files are written atomically, so nothing is half-written).
        if args.debug:
            raise
        print(f"optiplug: error: {_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        from .errors import OptiplugError

        if isinstance(exc, OptiplugError):
            print(f"optiplug: error: {_one_line(exc)}", file=sys.stderr)
        else:
            print(f"optiplug: internal error: {type(exc).__name__}: {_one_line(exc)} "
                  f"(run with --debug for the traceback)", file=sys.stderr)
        return 1


def _os_error(exc: OSError) -> str:
    """``PATH: reason`` as the system words it (``No space left on device``)."""
    reason = exc.strerror or _one_line(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    return f"{' -> '.join(paths)}: {reason}" if paths else reason


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optiplug",
        description="A plugin registry of deep-learning optimization techniques.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--version", action="version", version=f"optiplug {_version()}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    p = sub.add_parser("list", help="list installed techniques with backends and providers")
    p.add_argument("--kind", help="only this kind (optimizer, initializer, ...)")
    p.add_argument("--distribution", metavar="DIST",
                   help="only techniques this distribution installed (e.g. optiplug)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="machine-readable output")
    form.add_argument("--markdown", action="store_true",
                      help="a Markdown table: kind, technique, backends, summary (the README's)")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("show", help="explain one technique and its hyperparameters")
    p.add_argument("kind", help="optimizer, initializer, activation, normalizer or scheduler")
    p.add_argument("name", help="the technique's name (see `optiplug list`)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("schema", help="JSON Schema for config files (for editors)")
    p.add_argument("technique", nargs="?", metavar="NAME",
                   help="only this technique's config (e.g. pto.lion; KIND.NAME when two "
                        "kinds have the name)")
    p.add_argument("--kind", help="only this kind")
    p.add_argument("-o", "--output", help="write to this file instead of standard output")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser(
        "validate", help="check a config or recipe file without building or training it",
        description="Check a file without building anything: one technique, a sectioned "
                    "config (optimizer:, scheduler:, ...) or a training recipe (what 'optiplug "
                    "run' takes). Exit 0 valid, 1 invalid (one line per bad path), 2 usage.")
    p.add_argument("file", help="the file to check (.yaml, .yml, .toml or .json)")
    add_overrides_argument(p)
    p.add_argument("--param-groups", metavar="SHAPES",
                   help="dry run of the optimizer's param-group rules over the parameters in "
                        "SHAPES (a YAML/TOML/JSON file mapping names to shapes): print which "
                        "parameter gets which lr and weight decay")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("doctor", help="report broken plugins and conflicts (exit 1 if any)")
    p.set_defaults(func=_cmd_doctor)

    for module_name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (module_name + ".").startswith(exc.name + "."):
                raise
            continue
        add: Callable[[Any], None] | None = getattr(module, "add_commands", None)
        if add is not None:
            add(sub)
    # `optiplug validate f.yaml --debug` as well as `optiplug --debug validate f.yaml`.
    for command in sub.choices.values():
        if not any("--debug" in action.option_strings for action in command._actions):
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show tracebacks on errors")
    return parser


def add_overrides_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``KEY=VALUE`` overrides positional (dotted paths into the config file)."""
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override a value of the file by its dotted path, e.g. "
                             "optimizer.lr=3e-4 train.epochs=5 (values read as YAML)")


def require_file(path: str) -> None:
    """Raise :class:`CommandError` unless ``path`` names an existing file.

    Every command that reads a config says the same thing, with the same exit status (1).
    """
    from pathlib import Path

    file = Path(path)
    if not file.exists():
        raise CommandError(f"no such file: {path}")
    if file.is_dir():
        raise CommandError(f"{path} is a directory, not a config file")


def split_overrides(first: str | None, overrides: list[str]) -> tuple[str | None, list[str]]:
    """``optiplug run train.epochs=5`` (no file: the default recipe) reads the would-be file
    name as an override when it is ``KEY=VALUE`` and no such file exists."""
    from pathlib import Path

    if first is not None and "=" in first and not Path(first).exists():
        return None, [first, *overrides]
    return first, overrides


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optiplug")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _registry() -> Any:
    from .registry import default_registry

    return default_registry()


def _check_kind(kind: str | None) -> None:
    import difflib

    from .specs import KINDS

    if kind is not None and kind not in KINDS:
        close = difflib.get_close_matches(kind.lower()[:100], KINDS, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise _UsageError(f"unknown kind {kind[:60]!r}{hint} Kinds: {', '.join(KINDS)}")


def _cmd_list(args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    catalog = _registry().catalog()
    rows = []
    conflicted = {(kind, name) for kind, name, _ in catalog.conflicts()}
    available = {b.name: b.available() for b in catalog.backends}
    for technique in catalog.entries(args.kind):
        origin = technique.origin
        if args.distribution and (origin is None or origin.distribution != args.distribution):
            continue
        rows.append({
            "kind": technique.kind,
            "name": technique.name,
            "backends": list(technique.backends),
            "missing_backends": [b for b in technique.backends if not available.get(b, False)],
            "distribution": origin.distribution if origin and origin.distribution else
            "(in-process)",
            "version": (origin.version if origin else None) or "",
            "plugin": origin.plugin if origin else "",
            "status": "conflict" if (technique.kind, technique.name) in conflicted else "ok",
            "summary": technique.summary,
        })
    for record in catalog.broken:
        kind, _, name = record.plugin.partition(".")
        if (args.kind and kind != args.kind) or (args.distribution
                                               and record.distribution != args.distribution):
            continue
        rows.append({
            "kind": kind if name else "?", "name": name or record.plugin, "backends": [],
            "missing_backends": [], "distribution": record.distribution or "(in-process)",
            "version": record.version or "", "plugin": record.plugin, "status": "broken",
            "summary": f"{record.phase}: {record.error}",
        })
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    if args.markdown:
        print("| kind | technique | backends | what it is for |\n|---|---|---|---|")
        for row in rows:
            summary = row["summary"].replace("|", "\\|")
            print(f"| {row['kind']} | `{row['name']}` | {', '.join(row['backends'])} "
                  f"| {summary} |")
        return 0
    table = [["KIND", "NAME", "BACKENDS", "DISTRIBUTION", "VERSION", "STATUS"]]
    for row in rows:
        backends = ",".join(b + ("(missing)" if b in row["missing_backends"] else "")
                            for b in row["backends"]) or "-"
        table.append([row["kind"], row["name"], backends, row["distribution"], row["version"],
                      row["status"]])
    _print_table(table)
    broken = [r for r in rows if r["status"] == "broken"]
    if broken:
        print(f"\n{len(broken)} broken plugin(s); run 'optiplug doctor' for details.")
    return 0


def _print_table(rows: list[list[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        out.write("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths,
                                                                          strict=True)).rstrip())
        out.write("\n")


def _cmd_show(args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    registry = _registry()
    catalog = registry.catalog()
    claims = [e for e in catalog.entries(args.kind) if e.name == args.name]
    if len(claims) != 1:
        registry.get(args.kind, args.name)  # the registry's own error: unknown or contested
        return _show_live(registry, args)  # a preference chose one claimant
    schema = catalog.section(f"spec:{args.kind}/{args.name}", lambda r: r.get(
        args.kind, args.name).spec.model_json_schema())
    return _print_show(args, claims[0], schema)


def _show_live(registry: Any, args: argparse.Namespace) -> int:
    from .catalog import CatalogEntry, interval_text

    live = registry.get(args.kind, args.name)
    text = interval_text(live.spec)
    entry = CatalogEntry(live.kind, live.name, tuple(live.backends), live.summary,
                         live.reference, live.origin,
                         getattr(live.spec, "interval", None) if text else None, text)
    return _print_show(args, entry, live.spec.model_json_schema())


def _print_show(args: argparse.Namespace, technique: Any, schema: dict[str, Any]) -> int:
    params = []
    for field_name, prop in schema.get("properties", {}).items():
        if field_name in ("kind", "name"):
            continue
        params.append({"name": field_name, "type": _schema_type(prop, schema),
                       "default": prop.get("default"), "constraint": _constraint(prop),
                       "description": " ".join(prop.get("description", "").split())})
    origin = technique.origin
    interval = technique.interval_text
    if args.json:
        json.dump({"kind": technique.kind, "name": technique.name, "summary": technique.summary,
                   "reference": technique.reference, "backends": list(technique.backends),
                   "provider": origin.describe() if origin else None,
                   # The declared default ("batch" or "epoch") for programs to read.
                   **({"interval": technique.interval} if interval else {}),
                   "hyperparameters": params}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"{technique.kind} {technique.name}: {technique.summary}")
    if technique.reference:
        print(f"reference: {technique.reference}")
    print(f"backends: {', '.join(technique.backends)}")
    if interval:
        print(f"steps: {interval}")
    if origin:
        print(f"provided by: {origin.describe()}")
    if not params:
        print("hyperparameters: none")
        return 0
    print("hyperparameters:")
    table = [["NAME", "TYPE", "DEFAULT", "CONSTRAINT", "DESCRIPTION"]]
    for param in params:
        default = "(required)" if param["default"] is None and param["name"] in schema.get(
            "required", ()) else json.dumps(param["default"])
        kind = param["type"] if len(param["type"]) <= 40 else param["type"][:37] + "..."
        table.append([param["name"], kind, default, param["constraint"] or "-",
                      param["description"]])
    _print_table(table)
    return 0


def _schema_type(prop: dict[str, Any], schema: dict[str, Any]) -> str:
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "enum" in prop:
        return " | ".join(json.dumps(v) for v in prop["enum"])
    if "const" in prop:
        return json.dumps(prop["const"])
    if "anyOf" in prop:
        return " | ".join(_schema_type(p, schema) for p in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array":
        if "prefixItems" in prop:
            return "[" + ", ".join(_schema_type(p, schema) for p in prop["prefixItems"]) + "]"
        return f"list[{_schema_type(prop.get('items', {}), schema)}]"
    constraint = _constraint(prop)
    return f"{kind} ({constraint})" if constraint and kind in ("number", "integer") and \
        prop is not schema and "default" not in prop else str(kind)


def _constraint(prop: dict[str, Any]) -> str:
    parts = []
    for key, symbol in (("exclusiveMinimum", ">"), ("minimum", ">="), ("exclusiveMaximum", "<"),
                        ("maximum", "<="), ("minItems", "items >="), ("maxItems", "items <=")):
        if key in prop and not (key.endswith("Items") and "prefixItems" in prop):
            parts.append(f"{symbol} {prop[key]}")
    for item in prop.get("prefixItems", []) or ([prop["items"]] if isinstance(
            prop.get("items"), dict) else []):
        inner = _constraint(item)
        if inner:
            parts.append(f"each {inner}")
            break
    return ", ".join(parts)


def _cmd_schema(args: argparse.Namespace) -> int:
    _check_kind(args.kind)
    from .config import json_schema

    catalog = _registry().catalog()
    if args.technique:
        kind, name = _schema_target(catalog, args.kind, args.technique)
        spec_schema = catalog.section(f"spec:{kind}/{name}", lambda r: r.get(
            kind, name).spec.model_json_schema())
        document = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                    **spec_schema, "title": f"optiplug {kind} {name}"}
    else:
        document = catalog.section(f"schema:{args.kind or '*'}",
                                   lambda r: json_schema(args.kind, registry=r))
    text = json.dumps(document, indent=2) + "\n"
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _schema_target(catalog: Any, kind: str | None, technique: str) -> tuple[str, str]:
    """``(kind, name)`` of ``optiplug schema NAME`` (``KIND.NAME`` or ``--kind`` choose)."""
    from .errors import ConfigError, ConfigIssue
    from .registry import _unknown_message

    head, _, rest = technique.partition(".")
    if kind is None and rest and any(e.kind == head and e.name == rest
                                     for e in catalog.techniques):
        return head, rest
    kinds = sorted({e.kind for e in catalog.entries(kind) if e.name == technique})
    if len(kinds) == 1:
        return kinds[0], technique
    if len(kinds) > 1:
        raise _UsageError(f"{technique!r} is a {' and a '.join(kinds)}: give --kind")
    known = [e.name for e in catalog.entries(kind)]
    raise ConfigError([ConfigIssue("name", _unknown_message("technique", technique, known))])


def _cmd_validate(args: argparse.Namespace) -> int:
    from .errors import ConfigError

    require_file(args.file)
    if args.param_groups:
        require_file(args.param_groups)
    try:
        what, specs = validate_document(args.file, args.overrides)
        table = _param_group_table(args.file, specs, args.param_groups) \
            if args.param_groups else None
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"{exc.source or args.file}: {issue}", file=sys.stderr)
        return 1
    names = ", ".join(f"{s.kind} {s.name}" for s in specs)
    print(f"{args.file}: valid {what}({names})")
    if table is not None:
        print(table)
    return 0


def validate_document(path: str, overrides: Sequence[str] = ()) -> tuple[str, list[Any]]:
    """Validate any file optiplug reads: a technique, a sectioned config, or a recipe.

    Returns:
        ``(what, specs)``: ``""`` for a technique or sectioned config, ``"recipe 'NAME' "`` for
        a recipe; the validated specs.

    Raises:
        ConfigError: every bad path, with the file as source.
    """
    from .config import apply_overrides, load_config, validate_config
    from .errors import ConfigError

    data = load_config(path)
    if overrides:
        data = apply_overrides(data, overrides, source=path)
    if _is_recipe(data):
        from .training.recipe import parse_recipe, technique_entries

        recipe = parse_recipe(data, source=path)
        return f"recipe {recipe.name!r} ", [recipe.optimizer_spec() if where == "optimizer"
                                            else spec for where, spec in technique_entries(recipe)]
    try:
        return "", validate_config(data)
    except ConfigError as exc:
        raise ConfigError(exc.issues, source=path) from None


def _is_recipe(data: Any) -> bool:
    """A training recipe has sections a technique config never has (model, data, train)."""
    return isinstance(data, dict) and bool({"model", "data", "train", "param_groups"} & set(data))


def _param_group_table(config_file: str, specs: list[Any], shapes_file: str) -> str:
    from .config import load_config
    from .errors import ConfigError, ConfigIssue
    from .param_groups import dry_run

    optimizers = [spec for spec in specs if spec.kind == "optimizer"]
    if not optimizers:
        raise ConfigError("--param-groups needs an optimizer in the config")
    shapes = load_config(shapes_file)
    bad = [name for name, shape in shapes.items() if not (
        isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape))]
    if bad:
        raise ConfigError([ConfigIssue(name, "a shape must be a list of non-negative ints")
                           for name in bad], source=shapes_file)
    try:
        return dry_run(optimizers[0], shapes).table
    except ConfigError as exc:
        sectioned = "optimizer" in load_config(config_file)
        raise (exc.prefixed("optimizer") if sectioned else exc) from None


def _cmd_doctor(args: argparse.Namespace) -> int:
    catalog = _registry().catalog()
    broken = catalog.broken
    conflicts = catalog.conflicts()
    missing = [b for b in catalog.backends if not b.available()]
    print(f"{len(catalog.techniques)} techniques from {len(catalog.plugins)} plugins, "
          f"backends: {', '.join(b.name for b in catalog.backends)}")
    for backend in missing:
        print(f"note: backend {backend.name!r} is not usable: {backend.module!r} is not installed")
    for record in broken:
        print(f"BROKEN: {record.describe()}")
    for kind, name, claimants in conflicts:
        who = " and ".join(e.origin.describe() if e.origin else "?" for e in claimants)
        print(f"CONFLICT: {kind} {name!r} is provided by {len(claimants)} plugins: {who}. "
              f"Choose one with OPTIPLUG_PREFER='{kind}.{name}=<distribution>' (or "
              f"Registry.prefer), or disable one with "
              f"OPTIPLUG_DISABLED_PLUGINS=<distribution>:<entry point>")
    if broken or conflicts:
        print(f"{len(broken)} broken plugin(s), {len(conflicts)} conflict(s)")
        return 1
    print("all plugins ok")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
