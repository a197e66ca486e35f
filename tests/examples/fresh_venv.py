"""Fresh virtual environments for install tests, offline and fast.

``FreshVenv.create(root)`` makes a new venv (without its own pip: the current environment's pip
installs into it through ``pip --python``) and lets it see the current environment's
dependencies (numpy, pydantic, pluggy, PyYAML, torch, pytest, setuptools, ...) through a
``.pth`` file pointing at a folder of symlinks to them, leaving out optiplug itself and every
optiplug plugin distribution. Packages under test are then installed for real with
``pip install --no-deps --no-build-isolation --no-index`` from copies of their sources: nothing
is downloaded (torch least of all) and the working tree gets no build artifacts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "optiplug-extras"
# Never borrowed from the current environment: what the tests install, pip (it runs from the
# current environment) and caches.
_NOT_BORROWED = ("optiplug", "__editable__", "pip", "__pycache__")
_SOURCE_NOISE = shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist", "*.egg-info",
                                       ".pytest_cache", ".mypy_cache", ".ruff_cache")


def _borrowed(entry: Path) -> bool:
    name = entry.name.lower().replace("-", "_")
    return not name.startswith(_NOT_BORROWED) and not name.endswith(".pth")


def copy_source(source: Path, destination: Path) -> Path:
    """Copy a project to ``destination`` without caches or build outputs; returns it."""
    if source == REPO:
        destination.mkdir(parents=True)
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (source / name).exists():
                shutil.copy2(source / name, destination / name)
        for folder in ("core", "plugins"):
            shutil.copytree(source / folder, destination / folder, ignore=_SOURCE_NOISE)
        return destination
    shutil.copytree(source, destination, ignore=_SOURCE_NOISE)
    return destination


@dataclass(frozen=True)
class FreshVenv:
    """A virtual environment under ``root`` with the current environment's dependencies."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "venv" / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    @classmethod
    def create(cls, root: Path) -> FreshVenv:
        """Create the venv (with pip) and make the current dependencies visible in it."""
        made = cls(root)
        venv.EnvBuilder(with_pip=False, clear=True).create(root / "venv")
        shared = root / "borrowed"
        shared.mkdir()
        for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
            if _borrowed(entry):
                (shared / entry.name).symlink_to(entry)
        site = made.run_python("import sysconfig; print(sysconfig.get_paths()['purelib'])")
        Path(site.strip(), "_optiplug_test_borrowed.pth").write_text(f"{shared}\n",
                                                                     encoding="utf-8")
        return made

    def env(self) -> dict[str, str]:
        """The process environment for commands in this venv (no inherited Python paths)."""
        environment = {key: value for key, value in os.environ.items()
                       if not key.startswith(("PYTHON", "OPTIPLUG_", "PIP_", "VIRTUAL_ENV"))}
        environment["PATH"] = f"{self.bin}{os.pathsep}{environment.get('PATH', '')}"
        environment["VIRTUAL_ENV"] = str(self.root / "venv")
        environment["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        return environment

    def run(self, *args: str | Path, check: bool = True, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run a command with this venv's ``bin`` first on ``PATH``."""
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                              env=self.env(), cwd=cwd or self.root, timeout=timeout,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {done.returncode}\n"
                                 f"stdout:\n{done.stdout[-4000:]}\nstderr:\n"
                                 f"{done.stderr[-4000:]}")
        return done

    def run_python(self, code: str, *args: str) -> str:
        """Run ``python -c code`` in the venv; returns its standard output."""
        return self.run(self.python, "-c", code, *args).stdout

    def pip_install(self, *sources: Path) -> None:
        """Install projects from copies of ``sources``, offline, without dependencies."""
        copies = []
        for index, source in enumerate(sources):
            copies.append(copy_source(source, self.root / "src" / f"{index}-{source.name}"))
        self.run(*self._pip, "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                 *copies)

    def pip_uninstall(self, *distributions: str) -> None:
        """``pip uninstall -y`` in the venv."""
        self.run(*self._pip, "uninstall", "-y", "-q", *distributions)

    @property
    def _pip(self) -> tuple[str, ...]:
        return (sys.executable, "-m", "pip", "--python", str(self.python))

    def optiplug_list(self) -> list[dict[str, object]]:
        """``optiplug list --json`` run by the venv's own console script."""
        rows: list[dict[str, object]] = json.loads(self.run(self.bin / "optiplug", "list",
                                                            "--json").stdout)
        return rows

    def kit_plugin_args(self) -> Sequence[str]:
        """``-p optiplug.testing.pytest_plugin`` unless optiplug's ``pytest11`` entry point is
        installed (then pytest loads it already and ``-p`` would register it twice)."""
        found = self.run_python(
            "from importlib.metadata import entry_points;"
            "print(any(ep.value == 'optiplug.testing.pytest_plugin' "
            "for ep in entry_points(group='pytest11')))").strip()
        return [] if found == "True" else ["-p", "optiplug.testing.pytest_plugin"]

