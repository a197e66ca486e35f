"""The pytorch_optimizer bridge: ``pto.<name>`` techniques against pytorch_optimizer itself."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optiplug

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")


@pytest.fixture(scope="module")
def registry() -> optiplug.Registry:
    """A registry with the bridge enabled (tests/conftest.py disables it for the suite)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("OPTIPLUG_DISABLED_PLUGINS", raising=False)
        patch.delenv("OPTIPLUG_PLUGINS", raising=False)
        fresh = optiplug.Registry()
        fresh.techniques()
    return fresh


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(),
                               torch.nn.Linear(7, 3)).double()


def _trajectory(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                steps: int = 30) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    seen = []
    for _ in range(steps):
        inputs = torch.randn(8, 5, generator=generator, dtype=torch.float64)
        optimizer.zero_grad()
        model(inputs).pow(2).mean().backward()
        optimizer.step()
        seen.append(torch.cat([p.detach().flatten().clone() for p in model.parameters()]))
    return seen


@pytest.mark.parametrize(("name", "cls", "config"), [
    ("lion", "Lion", {"lr": 1e-3, "betas": [0.8, 0.95], "weight_decay": 0.1}),
    ("adabelief", "AdaBelief", {"lr": 1e-2, "weight_decay": 1e-3, "rectify": True}),
    ("ranger21", "Ranger21", {"num_iterations": 30, "lr": 1e-2}),
])
def test_pto_optimizer_follows_pytorch_optimizer_exactly_in_float64(name, cls, config,
                                                                    registry):
    ours_model, theirs_model = _model(0), _model(0)
    ours = optiplug.build({"kind": "optimizer", "name": f"pto.{name}", **config},
                          params=ours_model, registry=registry)
    direct = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
    # Built from a model, optiplug leaves biases out of weight decay (timm's default).
    reference = getattr(pytorch_optimizer, cls)
    decay = config.get("weight_decay",
                       inspect.signature(reference).parameters["weight_decay"].default)
    groups = ([{"params": [p for n, p in theirs_model.named_parameters()
                           if not n.endswith("bias")]},
               {"params": [p for n, p in theirs_model.named_parameters() if n.endswith("bias")],
                "weight_decay": 0.0}]
              if decay else theirs_model.parameters())
    theirs = reference(groups, **direct)
    for a, b in zip(_trajectory(ours_model, ours), _trajectory(theirs_model, theirs),
                    strict=True):
        assert torch.equal(a, b)
    start = torch.cat([p.detach().flatten() for p in _model(0).parameters()])
    assert (a - start).abs().max() > 1e-3  # the optimizers did move the weights


def test_pto_scheduler_gives_pytorch_optimizers_lr_sequence(registry):
    def lrs(scheduler: object, optimizer: torch.optim.Optimizer) -> list[float]:
        seen = []
        for _ in range(40):
            optimizer.step()
            scheduler.step()  # type: ignore[attr-defined]
            seen.append(optimizer.param_groups[0]["lr"])
        return seen

    config = {"first_cycle_steps": 10, "max_lr": 0.1, "min_lr": 1e-3, "warmup_steps": 3,
              "gamma": 0.5}
    ours_opt = torch.optim.SGD(_model(0).parameters(), lr=0.1)
    ours = optiplug.build({"kind": "scheduler", "name": "pto.cosine_annealing_with_warmup",
                           **config}, optimizer=ours_opt, registry=registry)
    theirs_opt = torch.optim.SGD(_model(0).parameters(), lr=0.1)
    theirs = pytorch_optimizer.CosineAnnealingWarmupRestarts(theirs_opt, **config)
    assert lrs(ours, ours_opt) == lrs(theirs, theirs_opt)
    spec = registry.get("scheduler", "pto.cosine_annealing_with_warmup").spec
    assert spec.interval == "batch"


def test_every_bridged_spec_default_is_the_signature_default(registry):
    """The source reader against the live classes: same names, same defaults."""
    from pytorch_optimizer.lr_scheduler import LR_SCHEDULERS
    from pytorch_optimizer.optimizer import OPTIMIZERS

    checked = 0
    for kind, classes in (("optimizer", OPTIMIZERS), ("scheduler", LR_SCHEDULERS)):
        names = {n.removeprefix("pto.") for n in registry.names(kind) if n.startswith("pto.")}
        assert names <= set(classes) and len(names) >= len(classes) - 3
        for name in names:
            target = classes[name]
            signature = inspect.signature(target.__init__ if isinstance(target, type)
                                          else target)
            fields = registry.get(kind, f"pto.{name}").spec.model_fields
            for parameter in signature.parameters.values():
                if parameter.name in fields and parameter.name not in ("kind", "name"):
                    expected = parameter.default
                    got = fields[parameter.name].default
                    if expected is inspect.Parameter.empty:
                        assert fields[parameter.name].is_required(), (name, parameter.name)
                    else:
                        assert got == expected, (name, parameter.name, got, expected)
                    checked += 1
    assert checked > 600


def test_bounds_come_from_pytorch_optimizers_validation_and_fail_before_any_tensor(registry):
    spec = registry.get("optimizer", "pto.lion").spec
    schema = spec.model_json_schema()["properties"]
    assert schema["lr"]["default"] == 1e-4 and schema["lr"]["minimum"] == 0.0
    betas = schema["betas"]["anyOf"][0]["prefixItems"]
    assert betas[1] == {"minimum": 0.0, "exclusiveMaximum": 1.0, "type": "number"}
    assert schema["weight_decay"]["minimum"] == 0.0
    # pytorch_optimizer itself refuses the same values.
    with pytest.raises(ValueError, match="beta2"):
        pytorch_optimizer.Lion(_model(0).parameters(), betas=(0.9, 1.5))
    model = _model(0)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(optiplug.ConfigError) as error:
        optiplug.build({"optimizer": {"name": "pto.lion", "betas": [0.9, 1.5], "lr": -1.0,
                                      "weight_decay": -0.1}}, params=model,
                       registry=registry)
    paths = {issue.path for issue in error.value.issues}
    assert {"optimizer.lr", "optimizer.weight_decay"} <= paths
    assert any(p.startswith("optimizer.betas") and p.endswith(".1") for p in paths)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    # Validation reads the source only: a config is checked without importing torch.
    code = ("import sys, optiplug\ntry:\n    optiplug.validate_config({'optimizer': "
            "{'name': 'pto.lion', 'lr': -1.0}})\nexcept optiplug.ConfigError as e:\n"
            "    print(e.issues[0].path)\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(), timeout=120, check=True).stdout.split()
    assert out == ["optimizer.lr", "False"]


def test_numpy_backend_is_refused_with_the_backends_it_has(registry):
    import numpy as np

    with pytest.raises(optiplug.ConfigError, match="no 'numpy' backend; it has: torch"):
        optiplug.build({"kind": "optimizer", "name": "pto.lion"}, params=[np.zeros(3)],
                       registry=registry)


def test_cli_exports_and_compares_pto_techniques(tmp_path: Path):
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "optiplug", *args], capture_output=True,
                              text=True, env={**_env(), "OPTIPLUG_CACHE_DIR": str(tmp_path)},
                              timeout=300, check=False, cwd=tmp_path)

    # (`optiplug list` and `show` of pto.lion: tests/core/test_listing_cache.py)
    schema = json.loads(cli("schema", "pto.lion").stdout)
    assert schema["properties"]["name"]["const"] == "pto.lion"
    assert schema["properties"]["betas"]["default"] == [0.9, 0.99]
    compared = cli("compare", "--backend", "torch", "--epochs", "1", "--quiet",
                   "--vary", "optimizer=pto.adabelief,adamw", "data.samples=200",
                   "--out", str(tmp_path / "c"))
    assert compared.returncode == 0, compared.stderr
    rows = {line.split()[0]: line.split() for line in compared.stdout.splitlines()[2:4]}
    assert set(rows) == {"pto.adabelief", "adamw"}
    assert all(0.0 < float(row[1]) < 10.0 for row in rows.values())


BLOCKER = """
import importlib.abc, sys
import numpy as np
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "pytorch_optimizer" or name.startswith("pytorch_optimizer."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
import optiplug
registry = optiplug.registry()
names = registry.names("optimizer") + registry.names("scheduler")
print(sum(n.startswith("pto.") for n in names), len(registry.broken()),
      "adam" in names, type(optiplug.optimizer("adam", {"w": np.ones(2)})).__name__)
"""


def test_bridge_contributes_nothing_and_breaks_nothing_without_pytorch_optimizer():
    out = subprocess.run([sys.executable, "-c", BLOCKER], capture_output=True, text=True,
                         env=_env(), timeout=120, check=True).stdout.split()
    assert out[:3] == ["0", "0", "True"]
    assert out[3] == "NumpyAdam"


def test_the_bridge_lists_nearly_all_of_pytorch_optimizer(registry):
    from pytorch_optimizer.lr_scheduler import LR_SCHEDULERS
    from pytorch_optimizer.optimizer import OPTIMIZERS

    bridged = [n for kind in ("optimizer", "scheduler") for n in registry.names(kind)
               if n.startswith("pto.")]
    assert len(bridged) == len(OPTIMIZERS) + len(LR_SCHEDULERS) - 5 == 139
    assert not registry.broken()


def test_bare_compare_leaves_the_bridged_catalogue_out_and_says_how_to_name_it(registry,
                                                                             monkeypatch):
    import importlib

    from optiplug.training.compare import installed_optimizers

    monkeypatch.setattr(importlib.import_module("optiplug.registry"), "_default", registry)
    usable, skipped = installed_optimizers("torch")
    native = [n for n in registry.names("optimizer") if not n.startswith("pto.")]
    assert not any(n.startswith("pto.") for n in usable)
    assert set(usable) <= set(native) and "adamw" in usable
    bridged = sum(n.startswith("pto.") for n in registry.names("optimizer"))
    assert f"{bridged} pto.* optimizers (name them: --vary optimizer=pto.<name>,...)" in skipped
