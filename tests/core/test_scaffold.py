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


# ------------------------------------------------------------ templates, names, --into
def test_templates_are_package_files_that_render_to_valid_python() -> None:
    import ast
    import string
    from importlib.resources import files

    from optiplug.scaffold import template

    folder = files("optiplug").joinpath("scaffold_templates")
    assert sorted(entry.name for entry in folder.iterdir()) == sorted(["common", *KINDS])
    values = {"kind": "optimizer", "name": "probe", "dist": "optiplug-probe",
              "package": "optiplug_probe", "cls": "Probe", "title": "Probe",
              "optiplug_version": "0.1"}
    for kind in KINDS:
        for file_name in ("technique.py", "test_technique.py", "torch_helper.py"):
            text = template(kind, file_name)
            if text is None:
                assert file_name == "torch_helper.py"
                continue
            tree = ast.parse(string.Template(text).substitute({**values, "kind": kind}))
            imported = {alias.name for node in ast.walk(tree)
                        if isinstance(node, (ast.Import, ast.ImportFrom))
                        for alias in node.names} | {
                node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
            private = [name for name in imported if name and (name == "optiplug" or
                                                              name.startswith("optiplug."))
                       and any(part.startswith("_") for part in name.split("."))]
            assert not private, (kind, file_name, private)
    rendered = string.Template(template("common", "pyproject.toml") or "").substitute(values)
    import tomllib

    assert tomllib.loads(rendered)["project"]["entry-points"]["optiplug.plugins"] == {
        "optimizer.probe": "optiplug_probe.probe"}


def test_new_refuses_the_name_of_an_installed_technique_unless_forced(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "adam"
    assert main(["new", "optimizer", "adam", "--dir", str(target)]) == 2
    err = capsys.readouterr().err
    assert "optimizer 'adam' is already installed (optiplug 0.1.0" in err
    assert "--force" in err
    assert not target.exists()
    assert main(["new", "optimizer", "adam", "--dir", str(target), "--force"]) == 0
    assert (target / "src" / "optiplug_adam" / "adam.py").is_file()


def test_new_into_adds_a_technique_to_an_existing_distribution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_modules: None) -> None:
    import tomllib

    project = tmp_path / "project"
    assert main(["new", "activation", "into_act", "--dir", str(project)]) == 0
    assert main(["new", "optimizer", "into_opt", "--into", str(project)]) == 0
    pyproject = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["entry-points"]["optiplug.plugins"] == {
        "activation.into_act": "optiplug_into_act.into_act",
        "optimizer.into_opt": "optiplug_into_act.into_opt"}
    package = project / "src" / "optiplug_into_act"
    assert (package / "into_opt.py").is_file() and (package / "_torch_into_opt.py").is_file()
    assert (project / "tests" / "test_into_opt.py").is_file()
    # A second time: the entry point exists, nothing is written.
    before = (project / "pyproject.toml").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"already has the entry point 'optimizer\.into_opt'"):
        from optiplug.scaffold import add_to_distribution

        add_to_distribution("optimizer", "into_opt", project)
    assert (project / "pyproject.toml").read_text(encoding="utf-8") == before
    # Both techniques load from the one distribution and pass the kit.
    src = project / "src"
    info = src / "optiplug_into_act-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: optiplug-into-act\n"
                                   "Version: 0.1.0\n", encoding="utf-8")
    (info / "entry_points.txt").write_text(
        "[optiplug.plugins]\nactivation.into_act = optiplug_into_act.into_act\n"
        "optimizer.into_opt = optiplug_into_act.into_opt\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(src))
    importlib.invalidate_caches()
    registry = optiplug.Registry()
    checks = conformance_checks("optiplug-into-act", registry=registry)
    assert {check.subject for check in checks} == {"activation.into_act", "optimizer.into_opt"}
    passed, skipped = _run_all(checks)
    assert len(passed) == len(checks), skipped


def test_new_into_refuses_a_folder_that_is_not_a_distribution(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    assert main(["new", "optimizer", "lost", "--into", str(tmp_path)]) == 2
    assert "has no pyproject.toml" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
