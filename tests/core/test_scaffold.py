"""``optiplug new``: every kind's skeleton is discovered through its entry point, passes the
conformance kit and its own reference tests unchanged, installed by pip or from its source."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import optiplug
from optiplug.cli import main
from optiplug.scaffold import scaffold
from optiplug.testing import CheckSkipped, conformance_checks

KINDS = ("optimizer", "scheduler", "initializer", "activation", "normalizer")


@pytest.fixture
def clean_modules() -> Iterator[None]:
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("optiplug_"):
            del sys.modules[name]


def _with_dist_info(project: Path, dist: str, entry_point: str, module: str) -> Path:
    """A dist-info next to the project's ``src`` package, as an editable install makes one."""
    src = project / "src"
    info = src / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[optiplug.plugins]\n{entry_point} = {module}\n",
                                           encoding="utf-8")
    return src


def _run_all(checks: list[optiplug.testing.Check]) -> tuple[list[str], list[str]]:
    passed, skipped = [], []
    for check in checks:
        try:
            check.function()
        except CheckSkipped:
            skipped.append(check.id)
        else:
            passed.append(check.id)
    return passed, skipped


@pytest.mark.parametrize("kind", KINDS)
def test_new_skeleton_passes_the_conformance_kit_from_its_source(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: None) -> None:
    name = f"src_{kind}"
    assert main(["new", kind, name, "--dir", str(tmp_path / "project")]) == 0
    project = tmp_path / "project"
    src = _with_dist_info(project, f"optiplug-src-{kind}", f"{kind}.{name}",
                          f"optiplug_{name}.{name}")
    monkeypatch.syspath_prepend(str(src))
    importlib.invalidate_caches()
    registry = optiplug.Registry()
    technique = registry.get(kind, name)
    assert technique.origin is not None
    assert technique.origin.distribution == f"optiplug-src-{kind}"
    checks = conformance_checks(f"optiplug-src-{kind}", registry=registry)
    passed, skipped = _run_all(checks)
    assert skipped == []
    expected = {"spec", "schema", "build[numpy]", "build[torch]", "numpy without torch",
                "numpy vs torch"}
    assert expected <= {check.split("::")[1] for check in passed}
    assert len(passed) == len(checks)


def test_new_writes_a_complete_distribution(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["new", "optimizer", "fancy_sgd"]) == 0
    root = tmp_path / "optiplug-fancy-sgd"
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml",
                     "src/optiplug_fancy_sgd/__init__.py",
                     "src/optiplug_fancy_sgd/_torch_fancy_sgd.py",
                     "src/optiplug_fancy_sgd/fancy_sgd.py",
                     "src/optiplug_fancy_sgd/py.typed",
                     "tests/test_conformance.py", "tests/test_fancy_sgd.py"]
    pyproject = (root / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points."optiplug.plugins"]' in pyproject
    assert '"optimizer.fancy_sgd" = "optiplug_fancy_sgd.fancy_sgd"' in pyproject
    assert 'name = "optiplug-fancy-sgd"' in pyproject
    assert "optiplug-fancy-sgd" in capsys.readouterr().out
    technique_file = (root / "src/optiplug_fancy_sgd/fancy_sgd.py").read_text(encoding="utf-8")
    assert "import torch" not in technique_file.split("def build_torch")[0]


@pytest.mark.parametrize(("args", "message"), [
    (["new", "optimiser", "x"], "unknown kind 'optimiser'"),
    (["new", "optimizer", "Bad-Name"], "invalid technique name 'Bad-Name'"),
    (["new", "optimizer", "class"], "invalid technique name 'class'"),
])
def test_new_rejects_bad_kinds_and_names(args: list[str], message: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ValueError, match="not an empty directory"):
        scaffold("activation", "mine", tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_new_skeletons_pip_install_and_pass_their_own_tests(tmp_path: Path) -> None:
    projects = [scaffold(kind, f"pip_{kind}", tmp_path / kind)[0].parent for kind in KINDS]
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "--target", str(target), *map(str, projects)],
                   check=True, capture_output=True, text=True, timeout=300)
    for kind in KINDS:
        assert (target / f"optiplug_pip_{kind}-0.1.0.dist-info" / "entry_points.txt").is_file()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *sys.path])}
    env.pop("PYTEST_ADDOPTS", None)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--import-mode=importlib", *(str(p / "tests") for p in projects)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          check=False)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "skipped" not in summary and "failed" not in summary
