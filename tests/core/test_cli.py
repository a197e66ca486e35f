"""The optiplug command: exit codes, one-line errors, machine-readable output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optiplug
from optiplug.cli import main
from tests.core import plugin_sources as src


def run_cli(*args: str, env: dict[str, str] | None = None,
            pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    environment.update(env or {})
    if pythonpath is not None:
        environment["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "optiplug", *args], capture_output=True,
                          text=True, env=environment, timeout=120, check=False)


def test_list_json_names_every_technique_with_backends_and_distribution(capsys):
    assert main(["list", "--json", "--kind", "activation"]) == 0
    rows = json.loads(capsys.readouterr().out)
    relu = next(row for row in rows if row["name"] == "relu")
    assert relu["backends"] == ["numpy", "torch"]
    assert (relu["distribution"], relu["version"], relu["status"]) == (
        "optiplug", optiplug.__version__, "ok")
    assert {row["kind"] for row in rows} == {"activation"}


def test_show_lists_hyperparameters_with_type_default_and_constraint(capsys, fresh_registry,
                                                                     monkeypatch):
    from tests.core.test_config import TOY

    registry = fresh_registry()
    registry.register(TOY)
    # optiplug.registry is the function registry(); the module lives in sys.modules.
    monkeypatch.setattr(sys.modules["optiplug.registry"], "default_registry", lambda: registry)
    assert main(["show", "optimizer", "toy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("optimizer toy: A toy optimizer.")
    line = next(line for line in out.splitlines() if line.startswith("eps"))
    assert "1e-08" in line and "> 0" in line and "Denominator guard." in line
    assert main(["show", "optimizer", "toy", "--json"]) == 0
    params = {p["name"]: p for p in json.loads(capsys.readouterr().out)["hyperparameters"]}
    assert params["betas"]["default"] == [0.9, 0.999]
    assert params["betas"]["constraint"] == "each >= 0, < 1"


def test_validate_exit_codes_and_one_line_per_bad_path(tmp_path: Path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("activation:\n  name: relu\n", encoding="utf-8")
    assert main(["validate", str(good)]) == 0
    assert "valid (activation relu)" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("activation:\n  name: relu\n  slope: 1\noptimiser: {}\n", encoding="utf-8")
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{bad}: activation.slope: unknown key (not a hyperparameter of this "
                   f"technique)",
                   f"{bad}: optimiser: unknown section 'optimiser'; did you mean 'optimizer'? "
                   f"Sections: optimizer, initializer, activation, normalizer, scheduler"]
    # A missing file is a failure, said as `run` says it (exit 1), not a usage error.
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 1
    assert capsys.readouterr().err == (
        f"optiplug: error: no such file: {tmp_path / 'missing.yaml'}\n")
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2


def test_errors_are_one_line_without_traceback_unless_debug():
    result = run_cli("show", "activation", "rleu")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "optiplug: error: invalid config: name: unknown activation 'rleu'; did you mean "
        "'relu' or 'relu6' or 'prelu'? Known: " +
        ", ".join(optiplug.registry().names("activation"))]
    debug = run_cli("--debug", "show", "activation", "rleu")
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_schema_writes_a_json_schema_file(tmp_path: Path):
    out = tmp_path / "schema.json"
    assert main(["schema", "-o", str(out)]) == 0
    schema = json.loads(out.read_text(encoding="utf-8"))
    assert schema["title"] == "optiplug config"
    assert set(schema["properties"]) <= set(optiplug.KINDS)
    assert main(["schema", "--kind", "nope"]) == 2


def test_doctor_names_a_broken_distribution_and_fails(make_dist, tmp_path: Path):
    root = make_dist("bad-dist", "0.3", entry_points={"activation.bad": "bad_plugin"},
                     modules={"bad_plugin": src.RAISES_ON_IMPORT})
    result = run_cli("doctor", pythonpath=root)
    assert result.returncode == 1
    assert ("BROKEN: plugin 'activation.bad' from bad-dist 0.3 is broken (import): "
            "RuntimeError: boom at import") in result.stdout
    listed = run_cli("list", "--json", pythonpath=root)
    assert listed.returncode == 0
    row = next(r for r in json.loads(listed.stdout) if r["plugin"] == "activation.bad")
    assert (row["status"], row["distribution"]) == ("broken", "bad-dist")
    strict = run_cli("list", env={"OPTIPLUG_STRICT_PLUGINS": "1"}, pythonpath=root)
    assert strict.returncode == 1 and "bad-dist" in strict.stderr
    assert "Traceback" not in strict.stderr


def test_doctor_passes_when_every_builtin_loads():
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout
    assert "all plugins ok" in result.stdout


def test_validate_dry_runs_param_group_rules_over_a_shapes_file(tmp_path: Path, capsys):
    config = tmp_path / "opt.yaml"
    config.write_text("optimizer:\n  name: adamw\n  lr: 0.001\n  weight_decay: 0.05\n"
                      "  param_groups:\n    - {role: bias, weight_decay: 0.0}\n"
                      "    - {match: 'head.*', lr_mult: 10.0}\n", encoding="utf-8")
    shapes = tmp_path / "shapes.json"
    shapes.write_text(json.dumps({"body.weight": [64, 32], "body.bias": [64],
                                  "head.weight": [10, 64]}), encoding="utf-8")
    assert main(["validate", str(config), "--param-groups", str(shapes)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["body.weight"][3:6] == ["0", "0.001", "0.05"]
    assert rows["body.bias"][3:6] == ["1", "0.001", "0"]
    assert rows["head.weight"][3:6] == ["2", "0.01", "0.05"]
    config.write_text(config.read_text(encoding="utf-8").replace("head.*", "tail.*"),
                      encoding="utf-8")
    assert main(["validate", str(config), "--param-groups", str(shapes)]) == 1
    assert capsys.readouterr().err.startswith(
        f"{config}: optimizer.param_groups.1: rule (match='tail.*') matches no parameter")
