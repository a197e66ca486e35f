"""Shared fixtures (real installed distributions on sys.path) and the suite's xdist set-up.

The suite runs in parallel with pytest-xdist (``pytest -n auto``, the README's command). Workers
are separate processes, so registries, environment variables and ``monkeypatch`` never collide;
what they share is on disk and made safe where it is written: every test writes under its own
``tmp_path``, the listing cache (``OPTIPLUG_CACHE_DIR``) and numba's kernel cache are written
atomically (a temporary file, then a rename), so two workers compiling the same kernel on a
cold cache both end with a valid one, and ports come from the kernel (port 0). Tests go one by
one to whichever worker is free, except two kinds of groups, each run on one worker in order:

- the tests of a module that use a module-, class- or package-scoped fixture (often a trained
  model, a subprocess run or a fresh venv: built once, not once per worker);
- tests marked ``xdist_group``: the tests of one doc file in tests/test_docs.py (its blocks
  share a working folder, as a reader's shell does).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import optiplug

# The pytorch_optimizer bridge (a dev dependency) adds ~140 pto.* techniques with
# pytorch_optimizer's own semantics; the suite's "every installed technique" checks are about
# optiplug's techniques. tests/plugins/test_pto_bridge.py enables it in its own registry, and
# commands run in subprocesses (which drop OPTIPLUG_* variables) see it.
os.environ.setdefault("OPTIPLUG_DISABLED_PLUGINS", "bridge.pytorch_optimizer")

MakeDist = Callable[..., Path]

# Fixture scopes that outlive one test: their users stay on one xdist worker.
_SHARED_SCOPES = frozenset({"class", "module", "package"})
_GROUPS_FOLDER = "optiplug_xdist_groups"


def _shares_a_fixture(item: pytest.Item) -> bool:
    """Whether ``item`` requests (directly or through its fixtures) a fixture that outlives it.

    Autouse fixtures do not count: they are set-up that every test of a folder gets anyway.
    """
    fixture_info = getattr(item, "_fixtureinfo", None)
    if fixture_info is None:
        return False
    seen: set[str] = set()
    pending = list(fixture_info.argnames)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        definitions = fixture_info.name2fixturedefs.get(name)
        if definitions:
            if definitions[-1].scope in _SHARED_SCOPES:
                return True
            pending.extend(definitions[-1].argnames)
    return False


def _group_of(item: pytest.Item) -> str | None:
    """The xdist group of ``item``: its ``xdist_group`` mark, else its module if it shares a
    module-scoped fixture, else none (the test goes to whichever worker is free)."""
    mark = item.get_closest_marker("xdist_group")
    if mark is not None:
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return item.nodeid.split("::")[0] if _shares_a_fixture(item) else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """xdist worker: tell the controller the groups of the collected tests (see _Scheduling).

    xdist's own ``--dist loadgroup`` passes groups by renaming node ids, which pytest 9.2's
    structured node ids no longer allow (pytest-xdist issue #1386), so the groups travel in a
    file per worker in a folder the controller made.
    """
    worker_input = getattr(config, "workerinput", None)
    if worker_input is None or _GROUPS_FOLDER not in worker_input:
        return
    groups = {item.nodeid: group for item in items if (group := _group_of(item)) is not None}
    target = Path(worker_input[_GROUPS_FOLDER]) / f"{worker_input['workerid']}.json"
    target.write_text(json.dumps(groups), encoding="utf-8")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: where each worker writes the groups of its tests."""
    folder = getattr(node.config, "_optiplug_xdist_groups", None)
    if folder is None:
        folder = node.config._optiplug_xdist_groups = tempfile.mkdtemp(prefix="optiplug-xdist-")
    node.workerinput[_GROUPS_FOLDER] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = getattr(config, "_optiplug_xdist_groups", None)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist controller: the suite's scheduler for ``-n N`` (unless ``--dist`` names another).

    Tests are handed out one by one to whichever worker is free, except the tests of one group
    (see the module docstring), which go to one worker together, in collection order.
    """
    if config.getoption("dist") not in ("load", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _Scheduling(LoadScopeScheduling):  # type: ignore[misc]
        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:
                # Called only once every worker has collected (and so written its file).
                self._groups = {}
                for path in Path(config._optiplug_xdist_groups).glob("*.json"):
                    self._groups.update(json.loads(path.read_text(encoding="utf-8")))
            return self._groups.get(nodeid, nodeid)

    return _Scheduling(config, log)


@pytest.fixture
def make_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeDist]:
    """Write a real distribution into a fresh sys.path entry and return that folder.

    ``make_dist("acme-opt", "1.2", entry_points={"optimizer.x": "acme_x"},
    modules={"acme_x": "source"})`` creates ``acme_opt-1.2.dist-info`` with METADATA and
    entry_points.txt (group ``optiplug.plugins`` unless ``group`` is given) plus the modules, so
    ``importlib.metadata`` discovers it exactly as it would a pip-installed package.
    """
    created: list[str] = []

    def make(name: str, version: str = "1.0", *, entry_points: Mapping[str, str],
             modules: Mapping[str, str], group: str = optiplug.ENTRY_POINT_GROUP) -> Path:
        root = tmp_path / f"site-{name}"
        root.mkdir()
        info = root / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8")
        lines = [f"[{group}]"] + [f"{ep} = {target}" for ep, target in entry_points.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for module, source in modules.items():
            (root / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
            created.append(module)
        monkeypatch.syspath_prepend(str(root))
        importlib.invalidate_caches()
        return root

    yield make
    for module in created:
        sys.modules.pop(module, None)


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Callable[..., optiplug.Registry]:
    """A factory for new registries that discover again (environment read at first use)."""
    for variable in ("OPTIPLUG_STRICT_PLUGINS", "OPTIPLUG_DISABLE_PLUGIN_AUTOLOAD",
                     "OPTIPLUG_PLUGINS", "OPTIPLUG_DISABLED_PLUGINS", "OPTIPLUG_PREFER"):
        monkeypatch.delenv(variable, raising=False)

    def make(**kwargs: object) -> optiplug.Registry:
        return optiplug.Registry(**kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
def cold_then_warm(tmp_path: Path) -> Callable[[str], list[list[str]]]:
    """Run a script in two fresh processes that share a new, empty kernel cache (numba
    engine): the first compiles, the second should load. Returns each run's stdout words."""
    import subprocess

    def run(code: str) -> list[list[str]]:
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path),
               "OPTIPLUG_NUMPY_KERNELS": "numba"}
        env.pop("NUMBA_CACHE_DIR", None)
        return [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                               text=True, check=True).stdout.split() for _ in range(2)]

    return run
