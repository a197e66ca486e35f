"""The sdist is a complete source release: it holds the tests, examples, docs and constraints,
installs offline into a fresh virtual environment, and its own tests pass there."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples.fresh_venv import REPO, FreshVenv

pytestmark = pytest.mark.slow

_NOT_COPIED = shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.pyc", "build", "dist",
                                     "*.egg-info", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                                     ".hypothesis")
# A file of each thing a source release must carry to test itself.
REQUIRED = ("pyproject.toml", "MANIFEST.in", "LICENSE", "README.md", "CONTRIBUTING.md",
            "constraints.txt", "tests/conftest.py", "tests/core/test_param_groups.py",
            "tests/examples/fresh_venv.py", "docs/custom_optimizers.md",
            "examples/recipes/moons.yaml", "examples/optiplug-extras/pyproject.toml",
            "examples/optiplug-extras/src/optiplug_extras/lion.py", "core/py.typed",
            "plugins/optimizers/adam.py", "benchmarks")


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist built by setuptools' PEP 517 backend from a clean copy of the tree, offline."""
    root = tmp_path_factory.mktemp("sdist")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=_NOT_COPIED)
    out = root / "dist"
    code = ("import sys; from setuptools import build_meta; "
            "print(build_meta.build_sdist(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=source, text=True,
                          capture_output=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    return out / done.stdout.strip().splitlines()[-1]


def _members(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    top = names[0].split("/")[0]
    return {name.removeprefix(f"{top}/") for name in names}


def test_sdist_holds_what_its_tests_need(sdist: Path) -> None:
    members = _members(sdist)
    missing = [path for path in REQUIRED if path not in members]
    assert not missing, f"the sdist lacks {missing}"
    tracked = subprocess.run(["git", "ls-files", "tests", "docs", "examples"], cwd=REPO,
                             text=True, capture_output=True, check=False).stdout.split()
    if tracked:
        absent = [path for path in tracked if path not in members]
        assert not absent, f"the sdist lacks tracked files {absent[:10]}"
    assert not [m for m in members if "__pycache__" in m or m.endswith(".pyc")]


@pytest.fixture(scope="module")
def installed(sdist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[FreshVenv, Path]]:
    environment = FreshVenv.create(tmp_path_factory.mktemp("sdist-venv"))
    environment.run(sys.executable, "-m", "pip", "--python", str(environment.python), "install",
                    "--no-deps", "--no-build-isolation", "--no-index", "-q", sdist)
    unpacked = environment.root / "unpacked"
    with tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
    yield environment, next(unpacked.iterdir())


def test_sdist_installs_offline_and_its_own_tests_pass(installed: tuple[FreshVenv, Path]
                                                        ) -> None:
    environment, tree = installed
    where = environment.run_python("import optiplug; print(optiplug.__file__)")
    assert "site-packages" in where, where
    listed = {f"{row['kind']}.{row['name']}" for row in environment.optiplug_list()}
    assert {"optimizer.adam", "normalizer.batch_norm", "scheduler.cosine"} <= listed
    # The scaffold's templates are package data of the installed (not editable) package.
    environment.run(environment.bin / "optiplug", "new", "optimizer", "from_sdist", "--dir",
                    environment.root / "skeleton")
    assert (environment.root / "skeleton" / "src" / "optiplug_from_sdist" /
            "_torch_from_sdist.py").is_file()
    run = environment.run(environment.python, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "tests/core/test_param_groups.py", "tests/core/test_builtin_specs.py",
                          "tests/plugins/optimizers/test_optimizer_state.py", cwd=tree, check=False)
    summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.stderr
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary
