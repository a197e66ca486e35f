"""The example plugin distribution pip-installed next to optiplug in a fresh virtual environment:
listed with its distribution and version, built from config files on both backends, passing the
conformance kit, and gone after ``pip uninstall``."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples.fresh_venv import EXAMPLE, REPO, FreshVenv

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshVenv]:
    environment = FreshVenv.create(tmp_path_factory.mktemp("third-party"))
    environment.pip_install(REPO, EXAMPLE)
    yield environment


def _extras(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {f"{row['kind']}.{row['name']}": row for row in rows
            if row["name"] in ("lion_extras", "squareplus")}


def test_optiplug_list_shows_the_extras_with_distribution_and_version(
        installed: FreshVenv) -> None:
    extras = _extras(installed.optiplug_list())
    assert sorted(extras) == ["activation.squareplus", "optimizer.lion_extras"]
    for key, row in extras.items():
        assert row["distribution"] == "optiplug-extras"
        assert row["version"] == "0.1.0"
        assert row["plugin"] == key
        assert row["status"] == "ok"
        assert row["backends"] == ["numpy", "torch"]
    shown = installed.run(installed.bin / "optiplug", "show", "optimizer", "lion_extras").stdout
    assert "provided by: optiplug-extras 0.1.0 (entry point 'optimizer.lion_extras')" in shown


BUILD_SCRIPT = textwrap.dedent("""
    import json, math, sys
    import numpy as np, torch
    import optiplug
    import optiplug.backends.torch

    lion_file, activation_file = sys.argv[1:3]
    g = np.array([0.5, -2.0, 0.0, 3.0])
    out = {}
    param = np.ones(4)
    opt = optiplug.build(lion_file, params=[param])
    opt.step([g])
    tensor = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    topt = optiplug.build(lion_file, params=[tensor])
    tensor.grad = torch.tensor(g)
    topt.step()
    out["lion"] = [type(opt).__name__, param.tolist(),
                   isinstance(topt, optiplug.backends.torch.TorchOptimizer)
                   and isinstance(topt, torch.optim.Optimizer), tensor.detach().tolist()]
    x = np.linspace(-3, 3, 7)
    act = optiplug.build(activation_file, backend="numpy")
    tact = optiplug.build(activation_file, backend="torch")
    out["squareplus"] = [act(x).tolist(), tact(torch.tensor(x)).tolist(),
                         [(v + math.sqrt(v * v + 4.0)) / 2 for v in x]]
    print(json.dumps(out))
""")


def test_extras_build_from_config_files_on_both_backends(installed: FreshVenv,
                                                         tmp_path: Path) -> None:
    lion = tmp_path / "lion.yaml"
    lion.write_text("optimizer:\n  name: lion_extras\n  lr: 0.1\n  betas: [0.9, 0.99]\n"
                    "  weight_decay: 0.5\n", encoding="utf-8")
    activation = tmp_path / "squareplus.json"
    activation.write_text(json.dumps({"kind": "activation", "name": "squareplus"}),
                          encoding="utf-8")
    result = json.loads(installed.run_python(BUILD_SCRIPT, str(lion), str(activation)))
    name, numpy_param, torch_public_base, torch_param = result["lion"]
    assert name == "NumpyLion"
    assert torch_public_base is True
    # First step from m = 0: p (1 - lr wd) - lr sign((1 - b1) g).
    expected = [1 * (1 - 0.1 * 0.5) - 0.1 * s for s in (1.0, -1.0, 0.0, 1.0)]
    assert numpy_param == pytest.approx(expected, rel=1e-15)
    assert torch_param == pytest.approx(expected, rel=1e-15)
    numpy_out, torch_out, formula = result["squareplus"]
    assert numpy_out == pytest.approx(formula, rel=1e-12)
    assert torch_out == pytest.approx(formula, rel=1e-12)


def test_conformance_kit_passes_on_the_installed_extras(installed: FreshVenv) -> None:
    # An empty folder: the kit adds the only tests.
    empty = installed.root / "kit-run"
    empty.mkdir()
    kit = installed.run(installed.python, "-m", "pytest", *installed.kit_plugin_args(),
                        "--optiplug-conformance=optiplug-extras", "-q", "-p",
                        "no:cacheprovider", "--rootdir", empty, cwd=empty)
    summary = kit.stdout.strip().splitlines()[-1]
    # lion: spec, schema, 2 builds, no torch, 2x state_dict, 2x lr, 2x hooks, 2x None
    # gradients, 2x gradient clipping, 2x training loop, 2x hyperparameters, numpy vs torch;
    # squareplus: spec, schema, 2 builds, no torch, gradient, 2x hyperparameters (its b:
    # the example activation used to be mish, which has none), numpy vs torch.
    assert re.fullmatch(r"29 passed in [\d.]+s", summary), kit.stdout[-3000:]
    own_tests = installed.root / "src" / "1-optiplug-extras" / "tests"
    suite = installed.run(installed.python, "-m", "pytest", own_tests, "-q", "-p",
                          "no:cacheprovider", cwd=own_tests.parent)
    assert " passed" in suite.stdout and "failed" not in suite.stdout


def test_pip_uninstall_removes_the_extras(installed: FreshVenv) -> None:
    installed.pip_uninstall("optiplug-extras")
    assert _extras(installed.optiplug_list()) == {}
    missing = installed.run(installed.bin / "optiplug", "show", "optimizer", "lion_extras",
                            check=False)
    assert missing.returncode == 1
    assert "unknown optimizer 'lion_extras'" in missing.stderr
    assert "Traceback" not in missing.stderr
