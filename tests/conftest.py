"""Shared fixtures: real installed distributions (dist-info with entry points) on sys.path."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

import optiplug

# The pytorch_optimizer bridge (a dev dependency) adds ~140 pto.* techniques with
# pytorch_optimizer's own semantics; the suite's "every installed technique" checks are about
# optiplug's techniques. tests/plugins/test_pto_bridge.py enables it in its own registry, and
# commands run in subprocesses (which drop OPTIPLUG_* variables) see it.
os.environ.setdefault("OPTIPLUG_DISABLED_PLUGINS", "bridge.pytorch_optimizer")

MakeDist = Callable[..., Path]


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
