"""The plugin fault matrix: real installed distributions that misbehave.

Each fault is a distribution with a dist-info folder and an entry point in ``optiplug.plugins``,
discovered by ``importlib.metadata`` exactly as a pip-installed package. For each fault:

- every builtin technique and a well-behaved third-party plugin keep working (and compute the
  right numbers);
- the registry records it as broken with its distribution and the cause;
- ``optiplug list`` marks it broken and ``optiplug doctor`` names the distribution and the cause
  and exits 1 (the real command, in a subprocess, with PYTHONPATH holding the fixtures);
- ``OPTIPLUG_STRICT_PLUGINS=1`` raises ``optiplug.PluginError`` naming the distribution.

Also: a plugin duplicating a builtin's name, a slow plugin with 8 threads racing the first
discovery, allow/deny lists and the warning for a name that matches nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optiplug
from optiplug.cli import main

TOY = '''
from typing import Literal
import optiplug


class {cls}(optiplug.OptimizerSpec):
    """A toy optimizer: p -= lr * scale * g."""
    name: Literal["{name}"] = "{name}"
    scale: optiplug.PositiveFloat = 1.0
    """Multiplies the gradient."""


def build_numpy(spec, params):
    return ("{name}", spec.lr * spec.scale, params)


def technique():
    return optiplug.Technique(kind="optimizer", name="{name}", spec={cls},
                              builders={{"numpy": build_numpy}}, summary="A toy.")
'''


def _toy(name: str, hook_body: str = "    return [technique()]\n",
         prelude: str = "", hook: str = "optiplug_optimizers") -> str:
    return (prelude + TOY.format(name=name, cls=f"{name.title().replace('_', '')}Spec")
            + f"\n\n@optiplug.hookimpl\ndef {hook}():\n{hook_body}")


@dataclass(frozen=True)
class Fault:
    """One misbehaving distribution.

    Attributes:
        dist: Distribution name.
        entry_point: Its entry-point name (``kind.name``).
        source: The plugin module's source.
        cause: Text the recorded error must contain.
        phase: Where it fails (``import``, ``register`` or a hook's name).
        target: The entry point's ``module[:attr]`` (defaults to the module).
    """

    dist: str
    entry_point: str
    source: str
    cause: str
    phase: str
    target: str | None = None

    @property
    def module(self) -> str:
        return "fault_" + self.dist.removeprefix("fault-").replace("-", "_")


FAULTS: list[Fault] = [
    Fault("fault-raises-on-import", "optimizer.fault_import",
          'raise RuntimeError("boom at import")\n', "RuntimeError: boom at import", "import"),
    Fault("fault-exits-on-import", "optimizer.fault_exit",
          "import sys\nsys.exit(3)\n", "SystemExit: 3", "import"),
    Fault("fault-raises-in-hook", "optimizer.fault_hook",
          _toy("fault_hook", '    raise ValueError("boom in hook")\n'),
          "ValueError: boom in hook", "optiplug_optimizers"),
    Fault("fault-returns-wrong-type", "optimizer.fault_type",
          _toy("fault_type", '    return "adam"\n'),
          "must return a list of Technique, got str", "optiplug_optimizers"),
    Fault("fault-returns-wrong-item", "optimizer.fault_item",
          _toy("fault_item", '    return [{"kind": "optimizer", "name": "fault_item"}]\n'),
          "got an item of type dict", "optiplug_optimizers"),
    Fault("fault-returns-wrong-kind", "optimizer.fault_kind",
          _toy("fault_kind", hook="optiplug_activations"),
          "it may only return activations", "optiplug_activations"),
    Fault("fault-invalid-descriptor", "optimizer.fault_descriptor",
          _toy("fault_descriptor",
               '    return [optiplug.Technique(kind="optimizer", name="other_name",\n'
               '                               spec=FaultDescriptorSpec,\n'
               '                               builders={"numpy": build_numpy}, summary="x")]\n'),
          "differs from technique name", "optiplug_optimizers"),
    Fault("fault-unbuildable-backend", "optimizer.fault_backend",
          _toy("fault_backend",
               '    return [optiplug.Technique(kind="optimizer", name="fault_backend",\n'
               '                               spec=FaultBackendSpec,\n'
               '                               builders={"pytorch": build_numpy},\n'
               '                               summary="Misspelt backend.")]\n'),
          "'pytorch', which no plugin provides", "optiplug_optimizers"),
    Fault("fault-missing-dependency", "optimizer.fault_dependency",
          "import optiplug_fault_package_that_is_not_installed  # noqa: F401\n",
          "ModuleNotFoundError: No module named 'optiplug_fault_package_that_is_not_installed'",
          "import"),
    Fault("fault-missing-attribute", "optimizer.fault_attribute", "VALUE = 1\n",
          "AttributeError", "import", target="fault_missing_attribute:no_such_object"),
    Fault("fault-unknown-hook", "optimizer.fault_unknown_hook",
          _toy("fault_unknown_hook", hook="optiplug_optimisers"),
          "unknown hook 'optiplug_optimisers'", "register"),
    Fault("fault-uses-registry-at-import", "optimizer.fault_reentrant",
          _toy("fault_reentrant", prelude='import optiplug\n'
                                          'BUILTINS = optiplug.registry().names("optimizer")\n'),
          "used the optiplug registry while plugins were being discovered", "import"),
]
FAULT_IDS = [fault.dist.removeprefix("fault-") for fault in FAULTS]

GOOD = Fault("fault-free", "optimizer.fault_free_toy", _toy("fault_free_toy"), "", "")
DUPLICATE = Fault("fault-duplicate", "optimizer.adam", _toy("adam"), "", "")
SLOW = Fault("fault-slow", "optimizer.slowpoke", _toy("slowpoke", prelude=(
    "import os, time\n"
    "with open(os.environ['OPTIPLUG_TEST_IMPORT_LOG'], 'a') as log:\n"
    "    log.write('imported\\n')\n"
    "time.sleep(0.5)\n")), "", "")


def install(make_dist: Callable[..., Path], fault: Fault) -> Path:
    """Install ``fault`` as a real distribution; returns its sys.path folder."""
    return make_dist(fault.dist, "1.0", entry_points={fault.entry_point: fault.target
                                                      or fault.module},
                     modules={fault.module: fault.source})


def builtin_keys(registry: optiplug.Registry) -> set[tuple[str, str]]:
    return {(t.kind, t.name) for t in registry.techniques()
            if t.origin is not None and t.origin.distribution == "optiplug"}


@pytest.fixture
def baseline(fresh_registry: Callable[..., optiplug.Registry]) -> set[tuple[str, str]]:
    """The builtin techniques a registry without any fault distribution has."""
    return builtin_keys(fresh_registry())


def assert_still_works(registry: optiplug.Registry, baseline: set[tuple[str, str]],
                       except_name: str | None = None) -> None:
    """Every builtin is there, the good plugin builds, and a builtin optimizer steps right."""
    have = {(t.kind, t.name) for t in registry.techniques()}
    assert {key for key in baseline if key[1] != except_name} <= have
    name, rate, _ = registry.build(optiplug.to_spec(
        {"kind": "optimizer", "name": "fault_free_toy", "lr": 0.5, "scale": 3.0},
        registry=registry), params=[np.zeros(1)])
    assert (name, rate) == ("fault_free_toy", 1.5)
    # Numbers from a builtin: one SGD step is p - lr * g exactly.
    param = np.array([1.0, -2.0, 3.0])
    grad = np.array([0.5, 0.25, -1.0])
    sgd = registry.build(optiplug.to_spec({"kind": "optimizer", "name": "sgd", "lr": 0.1},
                                          registry=registry), backend="numpy",
                         params={"w": param})
    sgd.step({"w": grad})
    np.testing.assert_array_equal(param, np.array([1.0, -2.0, 3.0]) - 0.1 * grad)


def use_registry(monkeypatch: pytest.MonkeyPatch, registry: optiplug.Registry) -> None:
    """Make ``optiplug.registry()`` and the in-process CLI use ``registry``."""
    for module in ("optiplug.registry", "optiplug.api", "optiplug.config"):
        monkeypatch.setattr(sys.modules[module], "default_registry", lambda: registry)


# ---------------------------------------------------------------------- one fault at a time
@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
def test_fault_is_recorded_and_every_other_technique_keeps_working(
        fault: Fault, make_dist: Callable[..., Path],
        fresh_registry: Callable[..., optiplug.Registry], baseline: set[tuple[str, str]],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    install(make_dist, GOOD)
    install(make_dist, fault)
    registry = fresh_registry()
    use_registry(monkeypatch, registry)  # what a plugin's optiplug.registry() call reaches
    assert_still_works(registry, baseline)
    records = [r for r in registry.broken() if r.distribution == fault.dist]
    assert len(records) == 1, registry.broken()
    record = records[0]
    assert (record.plugin, record.version, record.phase) == (fault.entry_point, "1.0",
                                                             fault.phase)
    assert fault.cause in record.error
    assert fault.dist in record.describe() and fault.cause in record.describe()
    kind, _, name = fault.entry_point.partition(".")
    with pytest.raises(optiplug.PluginError) as caught:
        registry.get(kind, name)
    assert caught.value.distribution == fault.dist and fault.cause in str(caught.value)

    assert main(["doctor"]) == 1
    doctor = capsys.readouterr().out
    line = next(line for line in doctor.splitlines() if fault.dist in line)
    assert line.startswith("BROKEN:") and fault.cause in line
    assert main(["list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    row = next(row for row in rows if row["distribution"] == fault.dist)
    assert (row["status"], row["kind"], row["name"]) == ("broken", kind, name)
    assert fault.cause in row["summary"]


@pytest.mark.parametrize("fault", FAULTS, ids=FAULT_IDS)
def test_strict_mode_raises_plugin_error_naming_the_distribution(
        fault: Fault, make_dist: Callable[..., Path],
        fresh_registry: Callable[..., optiplug.Registry],
        monkeypatch: pytest.MonkeyPatch) -> None:
    install(make_dist, GOOD)
    install(make_dist, fault)
    monkeypatch.setenv("OPTIPLUG_STRICT_PLUGINS", "1")
    registry = fresh_registry()
    use_registry(monkeypatch, registry)
    for _ in range(2):  # a failed discovery leaves nothing half-loaded: it fails again
        with pytest.raises(optiplug.PluginError) as caught:
            registry.names("optimizer")
        assert caught.value.distribution == fault.dist
        assert fault.cause in str(caught.value)
    monkeypatch.delenv("OPTIPLUG_STRICT_PLUGINS")
    registry.reload()
    assert "fault_free_toy" in registry.names("optimizer")


def test_a_plugin_that_exits_cannot_end_the_command(make_dist: Callable[..., Path]) -> None:
    root = install(make_dist, FAULTS[1])
    result = _cli("doctor", pythonpath=[root])
    assert result.returncode == 1
    assert "fault-exits-on-import 1.0" in result.stdout and "SystemExit: 3" in result.stdout


# ------------------------------------------------------------------- the real command line
def _cli(*args: str, pythonpath: list[Path], env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    environment["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    environment.update(env or {})
    return subprocess.run([sys.executable, "-m", "optiplug", *args], capture_output=True,
                          text=True, env=environment, timeout=120, check=False)


def test_cli_list_marks_every_fault_and_doctor_names_distribution_and_cause(
        make_dist: Callable[..., Path], tmp_path: Path) -> None:
    roots = [install(make_dist, fault) for fault in [*FAULTS, GOOD, DUPLICATE, SLOW]]
    env = {"OPTIPLUG_TEST_IMPORT_LOG": str(tmp_path / "imports.log")}

    listed = _cli("list", "--json", pythonpath=roots, env=env)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    by_dist: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_dist.setdefault(row["distribution"], []).append(row)
    for fault in FAULTS:
        (row,) = by_dist[fault.dist]
        assert row["status"] == "broken" and fault.cause in row["summary"], row
    assert [row["status"] for row in by_dist["fault-free"]] == ["ok"]
    assert [row["status"] for row in by_dist["fault-slow"]] == ["ok"]
    assert [row["status"] for row in by_dist["fault-duplicate"]] == ["conflict"]
    adam = [row for row in rows if (row["kind"], row["name"]) == ("optimizer", "adam")]
    assert sorted(row["distribution"] for row in adam) == ["fault-duplicate", "optiplug"]
    assert all(row["status"] == "ok" for row in rows if row["distribution"] == "optiplug"
               and row["name"] != "adam")

    table = _cli("list", pythonpath=roots, env=env)
    assert table.returncode == 0
    assert f"{len(FAULTS)} broken plugin(s)" in table.stdout

    doctor = _cli("doctor", pythonpath=roots, env=env)
    assert doctor.returncode == 1
    assert "Traceback" not in doctor.stdout + doctor.stderr
    lines = doctor.stdout.splitlines()
    for fault in FAULTS:
        (line,) = [line for line in lines if f"from {fault.dist} 1.0" in line]
        assert line.startswith("BROKEN:") and fault.cause in line
    conflict = next(line for line in lines if line.startswith("CONFLICT:"))
    assert "fault-duplicate 1.0" in conflict and "optiplug" in conflict
    assert f"{len(FAULTS)} broken plugin(s), 1 conflict(s)" in doctor.stdout

    strict = _cli("list", pythonpath=roots, env={**env, "OPTIPLUG_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1
    (line,) = strict.stderr.splitlines()
    assert line.startswith("optiplug: error: plugin ") and "Traceback" not in strict.stderr
    assert any(f"from {fault.dist} 1.0" in line for fault in FAULTS)


def test_doctor_passes_again_once_the_faults_are_disabled(make_dist: Callable[..., Path]
                                                          ) -> None:
    roots = [install(make_dist, fault) for fault in [*FAULTS, GOOD]]
    disabled = ",".join(fault.dist for fault in FAULTS)
    doctor = _cli("doctor", pythonpath=roots, env={"OPTIPLUG_DISABLED_PLUGINS": disabled})
    assert doctor.returncode == 0, doctor.stdout
    assert "all plugins ok" in doctor.stdout


# ------------------------------------------------------------------ a duplicated builtin
def test_a_plugin_duplicating_a_builtin_is_a_conflict_naming_both(
        make_dist: Callable[..., Path], fresh_registry: Callable[..., optiplug.Registry],
        baseline: set[tuple[str, str]], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    install(make_dist, GOOD)
    install(make_dist, DUPLICATE)
    registry = fresh_registry()
    assert_still_works(registry, baseline, except_name="adam")
    (conflict,) = registry.conflicts()
    assert (conflict.kind, conflict.name) == ("optimizer", "adam")
    with pytest.raises(optiplug.PluginError, match=r"fault-duplicate 1\.0") as caught:
        registry.get("optimizer", "adam")
    assert "optiplug" in str(caught.value) and "OPTIPLUG_PREFER" in str(caught.value)
    use_registry(monkeypatch, registry)
    assert main(["doctor"]) == 1
    assert "CONFLICT: optimizer 'adam'" in capsys.readouterr().out

    # Choosing the builtin gives torch's numbers back: one Adam step moves by lr * sign(g).
    monkeypatch.setenv("OPTIPLUG_PREFER", "optimizer.adam=optiplug")
    param = np.array([1.0, -1.0])
    adam = registry.build(optiplug.to_spec({"kind": "optimizer", "name": "adam", "lr": 0.01},
                                           registry=registry), params={"w": param})
    adam.step({"w": np.array([3.0, -0.5])})
    np.testing.assert_allclose(param, [1.0 - 0.01, -1.0 + 0.01], rtol=0, atol=1e-9)
    monkeypatch.setenv("OPTIPLUG_PREFER", "optimizer.adam=fault-duplicate")
    assert registry.get("optimizer", "adam").origin.distribution == "fault-duplicate"


# ------------------------------------------------------------- slow import, many threads
def test_eight_threads_racing_the_first_discovery_see_one_consistent_registry(
        make_dist: Callable[..., Path], fresh_registry: Callable[..., optiplug.Registry],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "imports.log"
    monkeypatch.setenv("OPTIPLUG_TEST_IMPORT_LOG", str(log))
    install(make_dist, GOOD)
    install(make_dist, SLOW)
    install(make_dist, FAULTS[0])
    registry = fresh_registry()
    barrier = threading.Barrier(8)
    results: list[Any] = [None] * 8
    errors: list[BaseException] = []

    def look(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            if index % 2:
                technique = registry.get("optimizer", "slowpoke")
            else:
                technique = optiplug.to_spec({"kind": "optimizer", "name": "slowpoke"},
                                             registry=registry)
                technique = registry.get(technique.kind, technique.name)
            results[index] = (technique, tuple(registry.names("optimizer")),
                              tuple((b.plugin, b.error) for b in registry.broken()))
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=look, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a lookup hung"
    assert not errors, errors
    first = results[0]
    assert all(result[0] is first[0] for result in results)
    assert all(result[1:] == first[1:] for result in results)
    assert {"slowpoke", "fault_free_toy", "sgd"} <= set(first[1])
    assert [plugin for plugin, _ in first[2]] == ["optimizer.fault_import"]
    assert log.read_text().splitlines() == ["imported"]  # imported exactly once
    name, rate, _ = registry.build(optiplug.to_spec(
        {"kind": "optimizer", "name": "slowpoke", "lr": 0.25}, registry=registry),
        params=[np.zeros(1)])
    assert (name, rate) == ("slowpoke", 0.25)


def test_a_slow_plugin_is_not_imported_by_import_optiplug(make_dist: Callable[..., Path],
                                                          tmp_path: Path) -> None:
    root = install(make_dist, SLOW)
    log = tmp_path / "imports.log"
    code = ("import sys, optiplug\n"
            "assert 'fault_slow' not in sys.modules and 'torch' not in sys.modules\n"
            "print(optiplug.spec('optimizer', 'slowpoke', lr=0.5).lr)\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    environment.update(PYTHONPATH=str(root), OPTIPLUG_TEST_IMPORT_LOG=str(log))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=environment, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.5"
    assert log.read_text().splitlines() == ["imported"]


# --------------------------------------------------------------- allow and deny lists
def test_allow_list_loads_only_the_named_plugins(make_dist: Callable[..., Path],
                                                 fresh_registry: Callable[..., optiplug.Registry],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    install(make_dist, GOOD)
    for fault in FAULTS[:3]:
        install(make_dist, fault)
    monkeypatch.setenv("OPTIPLUG_PLUGINS", "fault-free,optimizer.sgd")
    registry = fresh_registry()
    assert registry.names("optimizer") == ["fault_free_toy", "sgd"]
    assert registry.broken() == []
    with pytest.raises(optiplug.ConfigError, match="disabled by OPTIPLUG_PLUGINS"):
        registry.get("optimizer", "adam")


def test_deny_list_keeps_a_broken_plugin_out(make_dist: Callable[..., Path],
                                             fresh_registry: Callable[..., optiplug.Registry],
                                             baseline: set[tuple[str, str]],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    install(make_dist, GOOD)
    for fault in FAULTS:
        install(make_dist, fault)
    # Distribution names, a distribution pattern and an entry-point pattern.
    named = [f.dist for f in FAULTS if not f.dist.startswith(("fault-raises-", "fault-returns-"))]
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS",
                       ",".join(["fault_raises_*", "optimizer.fault_[ikt]*", *named]))
    registry = fresh_registry()
    assert not [r for r in registry.broken() if (r.distribution or "").startswith("fault-")]
    assert_still_works(registry, baseline)


def test_a_switch_naming_nothing_warns_with_the_name(
        fresh_registry: Callable[..., optiplug.Registry],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPTIPLUG_DISABLED_PLUGINS", "optimizer.adma")
    monkeypatch.setenv("OPTIPLUG_PLUGINS", "")
    registry = fresh_registry()
    with pytest.warns(optiplug.OptiplugWarning, match="'optimizer.adma'"):
        names = registry.names("optimizer")
    assert "adam" in names
