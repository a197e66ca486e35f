"""The builtins use only what a third party can: no technique module imports a private optiplug
name, and the public spec base carries every optimizer feature."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import optiplug
from optiplug.param_groups import StandardOptimizerSpec

REPO = Path(__file__).resolve().parents[2]
TECHNIQUE_FILES = sorted([*REPO.glob("plugins/*/*.py"),
                          *REPO.glob("examples/optiplug-extras/src/optiplug_extras/*.py")])


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules = [node.module] if node.level == 0 else [f"<relative>.{node.module}"]
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            modules, names = [alias.name for alias in node.names], []
        else:
            continue
        for module in modules:
            if module.startswith("<relative>"):
                found.append(module)
            elif module == "optiplug" or module.startswith("optiplug."):
                parts = module.split(".")
                found += [module for part in parts if part.startswith("_")]
                found += [f"{module}.{name}" for name in names if name.startswith("_")]
    return found


@pytest.mark.parametrize("path", TECHNIQUE_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_technique_files_import_only_public_optiplug_names(path: Path) -> None:
    assert _private_imports(path) == []


def test_the_private_import_scan_catches_what_it_must(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("from optiplug.backends._torch_optim import NamedParamsOptimizer\n"
                     "from optiplug.config import _hashable\nimport optiplug._x\n",
                     encoding="utf-8")
    assert _private_imports(probe) == ["optiplug.backends._torch_optim",
                                       "optiplug.config._hashable", "optiplug._x"]


def test_the_public_optimizer_spec_has_rules_and_the_nonfinite_policy() -> None:
    fields = optiplug.OptimizerSpec.model_fields
    assert {"lr", "param_groups", "nonfinite"} <= set(fields)
    assert StandardOptimizerSpec is optiplug.OptimizerSpec
    assert optiplug.OptimizerSpec.policy_fields == {
        "nonfinite", "param_groups", "decay_bias_and_norm", "layer_decay", "layer_patterns",
        "clip_grad_norm", "clip_grad_norm_type", "clip_grad_value"}
    for technique in optiplug.registry().techniques("optimizer"):
        assert issubclass(technique.spec, optiplug.OptimizerSpec), technique.name
