"""``optiplug new KIND NAME``: write a plugin package skeleton that installs and passes the kit.

The skeleton is a complete distribution: ``pyproject.toml`` with the ``optiplug.plugins`` entry
point, a ``src/`` package holding the technique file (docstring, spec, NumPy builder, torch
builder, hookimpl) with a small but real technique of the kind, a README, and tests that check
the technique against a reference and run the conformance kit. Replace the math, keep the shape.
``--into PATH`` adds the technique to an existing distribution instead.

The templates are files installed with the package (``optiplug/scaffold_templates/``:
``common/`` and one folder per kind, ``string.Template`` placeholders such as ``$name``).
"""

from __future__ import annotations

import keyword
import re
import string
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import argparse

__all__ = ["add_commands", "scaffold"]

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")

_TEMPLATES: Final = "scaffold_templates"
"""Package-data folder of the templates: ``common/`` and one folder per kind."""


def template(kind_or_common: str, file_name: str) -> str | None:
    """The text of one template file (``None`` if that kind has no such file)."""
    from importlib.resources import files

    resource = files("optiplug").joinpath(_TEMPLATES, kind_or_common, file_name + ".tmpl")
    return resource.read_text(encoding="utf-8") if resource.is_file() else None


def _optiplug_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("optiplug")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0.1"


def _check_name(kind: str, name: str) -> None:
    from .specs import KINDS

    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; one of: {', '.join(KINDS)}")
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(f"invalid technique name {name!r}: use lowercase letters, digits and "
                         f"underscores, starting with a letter")


def installed_collision(kind: str, name: str) -> str | None:
    """Who already provides ``kind``/``name`` in this environment, or ``None``."""
    from .registry import default_registry

    registry = default_registry()
    if name not in registry.names(kind):
        return None
    try:
        origin = registry.get(kind, name).origin
    except Exception:
        return "more than one installed distribution"
    return origin.describe() if origin is not None else "an in-process registration"


def _values(kind: str, name: str, dist: str, package: str) -> dict[str, str]:
    return {"kind": kind, "name": name, "dist": dist, "package": package,
            "cls": "".join(part.capitalize() for part in name.split("_") if part),
            "title": name.replace("_", " ").capitalize(),
            "optiplug_version": _optiplug_version()}


def _technique_files(kind: str, name: str, package: Path) -> dict[Path, str]:
    files = {package / f"{name}.py": template(kind, "technique.py"),
             Path("tests") / f"test_{name}.py": template(kind, "test_technique.py"),
             package / f"_torch_{name}.py": template(kind, "torch_helper.py")}
    return {path: text for path, text in files.items() if text is not None}


def _write(root: Path, files: dict[Path, str], values: dict[str, str]) -> list[Path]:
    rendered = {root / relative: string.Template(text).substitute(values)
                for relative, text in files.items()}
    written = []
    for path, text in rendered.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def scaffold(kind: str, name: str, directory: str | Path | None = None, *,
             force: bool = False) -> list[Path]:
    """Write the plugin package skeleton for technique ``kind``/``name``.

    Args:
        kind: One of optimizer, initializer, activation, normalizer, scheduler.
        name: The technique's name: lowercase letters, digits and underscores, starting with a
            letter (it becomes a module name).
        directory: Where to write it; ``optiplug-<name>`` in the current directory by default.
            It must not exist or be empty.
        force: Write it even when an installed technique has the same kind and name (the two
            would conflict when both are installed).

    Returns:
        The files written.

    Raises:
        ValueError: bad kind or name, the name is taken by an installed technique (without
            ``force``), or the directory is not empty.
    """
    _check_name(kind, name)
    _refuse_collision(kind, name, force)
    dist = "optiplug-" + name.replace("_", "-")
    root = Path(directory) if directory is not None else Path(dist)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ValueError(f"{root} exists and is not an empty directory")
    values = _values(kind, name, dist, f"optiplug_{name}")
    package = Path("src") / values["package"]
    files: dict[Path, str] = {
        Path("pyproject.toml"): _common("pyproject.toml"),
        Path("README.md"): _common("README.md"),
        package / "__init__.py": _common("__init__.py"),
        package / "py.typed": "",
        **_technique_files(kind, name, package),
        Path("tests") / "test_conformance.py": _common("test_conformance.py"),
    }
    return _write(root, files, values)


def _common(file_name: str) -> str:
    text = template("common", file_name)
    assert text is not None, f"missing template common/{file_name}"
    return text


def _refuse_collision(kind: str, name: str, force: bool) -> None:
    owner = None if force else installed_collision(kind, name)
    if owner is not None:
        raise ValueError(f"{kind} {name!r} is already installed ({owner}); a plugin of the same "
                         f"name would conflict with it. Pick another name, or pass --force to "
                         f"write it anyway")


def add_to_distribution(kind: str, name: str, project: str | Path, *,
                        force: bool = False) -> list[Path]:
    """Add technique ``kind``/``name`` to the existing distribution at ``project``.

    Writes ``src/<package>/<name>.py`` (and its torch helper), ``tests/test_<name>.py`` and,
    when missing, ``tests/test_conformance.py``; adds the entry point to ``pyproject.toml``.

    Raises:
        ValueError: bad kind or name, a name collision (without ``force``), no
            ``pyproject.toml`` with a ``[project]`` name, no single package under ``src/``, or
            a file or entry point that already exists. Nothing is written then.
    """
    import tomllib

    _check_name(kind, name)
    _refuse_collision(kind, name, force)
    root = Path(project)
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        raise ValueError(f"{root} has no pyproject.toml: --into takes a distribution's folder")
    text = pyproject.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{pyproject} is not valid TOML: {exc}") from None
    dist = data.get("project", {}).get("name")
    if not isinstance(dist, str):
        raise ValueError(f"{pyproject} has no [project] name")
    packages = sorted(p.parent.name for p in (root / "src").glob("*/__init__.py"))
    if len(packages) != 1:
        raise ValueError(f"{root / 'src'} must hold exactly one package (found "
                         f"{packages or 'none'})")
    entry_points = data.get("project", {}).get("entry-points", {}).get("optiplug.plugins", {})
    key = f"{kind}.{name}"
    if key in entry_points:
        raise ValueError(f"{pyproject} already has the entry point {key!r}")
    values = _values(kind, name, dist, packages[0])
    package = Path("src") / packages[0]
    files = _technique_files(kind, name, package)
    if not (root / "tests" / "test_conformance.py").exists():
        files[Path("tests") / "test_conformance.py"] = _common("test_conformance.py")
    taken = [str(path) for path in files if (root / path).exists()]
    if taken:
        raise ValueError(f"{root} already has {', '.join(taken)}")
    line = f'"{key}" = "{packages[0]}.{name}"\n'
    header = '[project.entry-points."optiplug.plugins"]\n'
    if header in text:
        updated = text.replace(header, header + line, 1)
    else:
        updated = text.rstrip("\n") + "\n\n" + header + line
    written = _write(root, files, values)
    pyproject.write_text(updated, encoding="utf-8")
    return [*written, pyproject]


def _cmd_new(args: argparse.Namespace) -> int:
    import sys

    if args.into is not None and args.dir is not None:
        print("optiplug: error: give --dir (a new distribution) or --into (an existing one), "
              "not both", file=sys.stderr)
        return 2
    try:
        if args.into is not None:
            written = add_to_distribution(args.kind, args.name, args.into, force=args.force)
            root = Path(args.into)
        else:
            written = scaffold(args.kind, args.name, args.dir, force=args.force)
            root = written[0].parent
    except ValueError as exc:
        print(f"optiplug: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.kind} plugin '{args.name}' in {root}:")
    for path in written:
        print(f"  {path.relative_to(root)}")
    print(f"next: pip install -e {root} && pytest {root}")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``optiplug new KIND NAME [--dir DIR]`` to the ``optiplug`` command."""
    parser = subparsers.add_parser(
        "new", help="write a plugin package skeleton (spec, both backends, tests, pyproject)")
    parser.add_argument("kind", help="optimizer, initializer, activation, normalizer or "
                                     "scheduler")
    parser.add_argument("name", help="technique name (lowercase, digits, underscores)")
    parser.add_argument("--dir", help="target directory (default: ./optiplug-NAME)")
    parser.add_argument("--into", metavar="PATH",
                        help="add the technique to the existing distribution at PATH (its "
                             "pyproject.toml gets the entry point)")
    parser.add_argument("--force", action="store_true",
                        help="write it even if an installed technique has the same name")
    parser.set_defaults(func=_cmd_new)
