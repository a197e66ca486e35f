"""The docs are a contract: every code block in README.md, CONTRIBUTING.md and docs/*.md runs.

- ```python blocks of one file run in order in one namespace, in a fresh process whose working
  directory is a temporary folder where ``examples/`` is reachable.
- ```console blocks: each line starting with ``$ `` is a command; the lines below it, up to the
  next command, are shown output, and each must appear in the real output in that order (a line
  ``...`` stands for any lines). ```bash blocks: every line is a command (comments and ``\\``
  continuations as bash reads them); their output is not checked. Commands run with the
  project's virtual environment first on ``PATH``, in the same kind of temporary folder.
- ```yaml / ```toml blocks are parsed; a technique config, a sectioned config or a recipe is
  validated as the project reads it; a named-chain file is registered in a fresh registry.
- A block whose first line is a comment naming a file (``# train.yaml``) is also written to
  that file in the doc's working directory (one per doc file, shared by its blocks), so the
  commands shown next to it can use it.
- A block right after ``<!-- doc-test: skip REASON -->`` is not run; REASON is reported.
  ``<!-- doc-test: xfail REASON -->`` runs it and expects it to fail (strict: once it passes,
  the marker must go), for a known defect named in REASON.

``optiplug-extras`` (the example third-party distribution) is installed for the commands and
Python blocks onto ``PYTHONPATH`` of a temporary folder, never into the environment itself.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import optiplug

REPO = Path(__file__).resolve().parents[1]
DOCS = (REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md")))
_MARKER = re.compile(r"<!--\s*doc-test:\s*(skip|xfail)\s+(.+?)\s*-->")
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_RUN = ("python", "console", "bash", "yaml", "toml")


@dataclass
class Block:
    """One fenced code block of a doc file."""

    path: Path
    line: int
    language: str
    text: str
    skip: str | None = None
    xfail: str | None = None

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}:{self.language}"


@dataclass
class Command:
    """One shell command of a console or bash block, and its shown output (console)."""

    text: str
    shown: list[str] = field(default_factory=list)


def doc_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` in a language this test runs, with its marker."""
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        start = index
        indent = len(fence.group(1))
        index += 1
        body: list[str] = []
        while index < len(lines) and not lines[index].strip().startswith("```"):
            body.append(lines[index][indent:])     # blocks inside list items are indented
            index += 1
        index += 1
        language = fence.group(2)
        if language not in _RUN:
            continue
        previous = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.search(previous)
        block = Block(path, start + 1, language, "\n".join(body) + "\n")
        if marker is not None:
            setattr(block, marker.group(1), marker.group(2))
        blocks.append(block)
    return blocks


ALL_BLOCKS = [block for doc in DOCS for block in doc_blocks(doc)]


def commands(block: Block) -> list[Command]:
    """The commands of a console block (``$ `` lines with their shown output) or bash block."""
    if block.language == "bash":
        return [Command(block.text)]
    found: list[Command] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            found.append(Command(line[2:]))
        elif found and line.strip():
            found[-1].shown.append(line.rstrip())
    return found


def shown_in(shown: list[str], output: str) -> str | None:
    """``None`` if every shown line appears in ``output`` in order, else the first missing."""
    real = [" ".join(line.split()) for line in output.splitlines()]
    position = 0
    for line in shown:
        if line.strip() == "...":
            continue
        wanted = " ".join(line.split())
        while position < len(real) and wanted not in real[position]:
            position += 1
        if position == len(real):
            return line
        position += 1
    return None


@pytest.fixture(scope="session")
def extras_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """optiplug-extras installed (offline, no dependencies) into a folder for ``PYTHONPATH``."""
    target = tmp_path_factory.mktemp("extras-site")
    build = tmp_path_factory.mktemp("extras-build")
    import shutil

    source = shutil.copytree(REPO / "examples" / "optiplug-extras", build / "optiplug-extras",
                             ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                           "--no-build-isolation", "--no-index", "-q", "--target", str(target),
                           str(source)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return target


_FILE_BLOCK = re.compile(r"^#\s*([\w.\-/]+\.(?:ya?ml|toml|json|py))\s*$")


@pytest.fixture(scope="session")
def doc_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """Per doc file, one working directory shared by its blocks (created on first use)."""
    return {}


@pytest.fixture
def doc_cwd(request: pytest.FixtureRequest, doc_dirs: dict[Path, Path],
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The doc's working directory: ``examples/`` is the repository's, and every block whose
    first line names a file (``# train.yaml``) is written there, so commands can use it."""
    param = request.node.callspec.params
    doc = param["doc"] if "doc" in param else param["block"].path
    if doc not in doc_dirs:
        folder = tmp_path_factory.mktemp(doc.stem.lower())
        (folder / "examples").symlink_to(REPO / "examples", target_is_directory=True)
        for block in doc_blocks(doc):
            named = _FILE_BLOCK.match(block.text.splitlines()[0]) if block.text.strip() else None
            if named is not None:
                (folder / named.group(1)).parent.mkdir(parents=True, exist_ok=True)
                (folder / named.group(1)).write_text(block.text, encoding="utf-8")
        doc_dirs[doc] = folder
    return doc_dirs[doc]


def doc_env(extras: Path) -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("OPTIPLUG_", "PYTEST_"))}
    environment["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{environment['PATH']}"
    environment["PYTHONPATH"] = os.pathsep.join([str(extras), str(REPO)])
    environment["MPLBACKEND"] = "Agg"
    return environment


# Runs the Python blocks of one file in one namespace, reporting the first failing block. The
# blocks also go into a file, at their lines in the doc, behind a real module, so tracebacks
# point at doc lines and inspect.getsource works (attribute docstrings describe spec fields).
_RUNNER = """
import json, sys, traceback, types
blocks = json.load(open(sys.argv[1], encoding="utf-8"))
path = sys.argv[2]
lines = []
for line, source in blocks:
    lines += [""] * (line - len(lines)) + source.splitlines()
open(path, "w", encoding="utf-8").write("\\n".join(lines) + "\\n")
module = types.ModuleType("__doc_test__")
module.__file__ = path
sys.modules["__doc_test__"] = module
for line, source in blocks:
    try:
        exec(compile("\\n" * line + source, path, "exec"), module.__dict__)
    except BaseException:
        print(f"block at line {line} failed:", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def _same_worker(doc: Path) -> pytest.MarkDecorator:
    """The tests of one doc share its working folder and run in order: one xdist worker."""
    return pytest.mark.xdist_group(f"tests/test_docs.py:{doc.name}")


def _python_files() -> list[Any]:
    return [pytest.param(doc, marks=_same_worker(doc), id=doc.name) for doc in DOCS
            if any(b.language == "python" for b in doc_blocks(doc))]


@pytest.mark.parametrize("doc", _python_files())
def test_python_blocks_run_in_order_in_one_namespace(doc: Path, doc_cwd: Path,
                                                     extras_path: Path) -> None:
    blocks = [b for b in doc_blocks(doc) if b.language == "python"]
    runnable = [(b.line, b.text) for b in blocks if b.skip is None]
    failing = [b for b in blocks if b.xfail is not None]
    assert not failing, "xfail is for commands; split the Python block or fix it"
    script = doc_cwd / f".{doc.stem}-blocks.json"
    script.write_text(json.dumps(runnable), encoding="utf-8")
    source = doc_cwd / f"{doc.stem.replace('.', '_')}_blocks.py"
    done = subprocess.run([sys.executable, "-c", _RUNNER, str(script), str(source)], cwd=doc_cwd,
                          env=doc_env(extras_path), capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, f"{doc.name}: {done.stderr[-4000:]}"


_COMMAND_BLOCKS = [pytest.param(b, marks=_same_worker(b.path), id=b.id) for b in ALL_BLOCKS
                   if b.language in ("console", "bash")]


@pytest.mark.parametrize("block", _COMMAND_BLOCKS)
def test_commands_run_and_print_what_the_docs_show(block: Block, doc_cwd: Path,
                                                   extras_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"doc-test skip: {block.skip}")
    failures = []
    for command in commands(block):
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command.text], cwd=doc_cwd,
                              env=doc_env(extras_path), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
        output = done.stdout
        if done.returncode != 0:
            failures.append(f"$ {command.text}\nexit {done.returncode}\n{output[-3000:]}")
            continue
        missing = shown_in(command.shown, output)
        if missing is not None:
            failures.append(f"$ {command.text}\nshown line not in the output: {missing!r}\n"
                            f"{output[-3000:]}")
    if block.xfail is not None:
        if not failures:
            pytest.fail(f"{block.id} passes now: remove its doc-test xfail ({block.xfail})")
        pytest.xfail(f"{block.xfail}: {failures[0][:300]}")
    assert not failures, "\n\n".join(failures)


_CONFIG_BLOCKS = [b for b in ALL_BLOCKS if b.language in ("yaml", "toml")]


def _config_role(data: object) -> str:
    if not isinstance(data, dict):
        return "data"
    if "transforms" in data and "summary" in data:
        return "named chain"
    if {"data", "model", "train"} & set(data):
        return "recipe"
    if "kind" in data or (data and set(data) <= {*optiplug.KINDS, "param_groups"}):
        return "config"
    return "data"


# Validates one config file as the project reads it, with optiplug-extras installed.
_VALIDATE = """
import sys
import optiplug
role, path = sys.argv[1:3]
if role == "config":
    assert optiplug.validate_config(path), "no technique in the config"
elif role == "recipe":
    from optiplug.training import load_recipe
    load_recipe(path)
else:
    from optiplug.registry import Registry
    from optiplug.transforms import register_chain_config
    register_chain_config(path, registry=Registry(autoload=False))
"""


@pytest.mark.parametrize("block", _CONFIG_BLOCKS, ids=lambda block: block.id)
def test_config_blocks_parse_and_validate(block: Block, tmp_path: Path,
                                          extras_path: Path) -> None:
    if block.skip is not None:
        pytest.skip(f"doc-test skip: {block.skip}")
    suffix = ".yaml" if block.language == "yaml" else ".toml"
    path = tmp_path / f"block{suffix}"
    path.write_text(block.text, encoding="utf-8")
    data = yaml.safe_load(block.text) if suffix == ".yaml" else tomllib.loads(block.text)
    role = _config_role(data)
    if role == "data":
        return              # parsed: a snippet of another file (pyproject entry points, ...)
    done = subprocess.run([sys.executable, "-c", _VALIDATE, role, str(path)], cwd=tmp_path,
                          env=doc_env(extras_path), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"{block.id} ({role}): {done.stderr[-3000:]}"


def test_every_skip_in_the_docs_gives_a_reason() -> None:
    skipped = [block for block in ALL_BLOCKS if block.skip is not None]
    report = "\n".join(f"{block.id}: {block.skip}" for block in skipped)
    print(f"{len(skipped)} of {len(ALL_BLOCKS)} doc blocks skipped:\n{report}")
    assert all(len(block.skip.split()) >= 3 for block in skipped), report  # type: ignore[union-attr]


def test_shown_output_matching_keeps_order_and_dots() -> None:
    output = "a 1\nb   2\nc 3\n"
    assert shown_in(["a 1", "...", "c 3"], output) is None
    assert shown_in(["b 2"], output) is None
    assert shown_in(["c 3", "a 1"], output) == "a 1"
    assert shown_in(["d"], output) == "d"


def test_console_blocks_split_commands_from_their_output() -> None:
    block = Block(Path("x.md"), 1, "console", "$ optiplug list\nadam\n...\n$ optiplug doctor\n")
    parsed = commands(block)
    assert [c.text for c in parsed] == ["optiplug list", "optiplug doctor"]
    assert parsed[0].shown == ["adam", "..."]
    assert shlex.split(parsed[1].text) == ["optiplug", "doctor"]


def test_cli_subcommands_and_positionals_have_help() -> None:
    import argparse

    from optiplug.cli import _parser

    parser = _parser()
    missing: list[str] = []

    def walk(current: argparse.ArgumentParser, prefix: str) -> None:
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                helps = {choice.dest: choice.help for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if not helps.get(name):
                        missing.append(f"{prefix} {name}: no help")
                    walk(sub, f"{prefix} {name}")
            elif not action.option_strings and not action.help:
                missing.append(f"{prefix} {action.dest}: positional without help")

    walk(parser, "optiplug")
    assert not missing, missing
