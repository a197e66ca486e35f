"""A third party's optimizer trained by optiplug's own loop (``run``/``compare``), in-process and
pip-installed: builders receive the normalized params of the builder contract, never a raw
``nn.Module``, and one failing variant is a row of the comparison, not its end.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import yaml

import optiplug
from optiplug.param_groups import ParamGroupList
from optiplug.training.compare import compare
from tests.training.conftest import small_recipe, without_seconds


class PlainSGD(torch.optim.Optimizer):
    """A third party's torch optimizer written on ``torch.optim.Optimizer`` alone."""

    def __init__(self, params: Any, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.add_(param.grad, alpha=-group["lr"])


class PlainSpec(optiplug.OptimizerSpec):
    """Plain gradient descent from a third party."""

    name: Literal["plain_sgd"] = "plain_sgd"


class BrokenSpec(optiplug.OptimizerSpec):
    """An optimizer whose torch builder has a bug."""

    name: Literal["broken_sgd"] = "broken_sgd"


RECEIVED: list[Any] = []


def assert_record_close(mine: dict[str, Any], expected: dict[str, Any], rel: float) -> None:
    """An epoch's record agrees with another's: flat metrics with ``approx``, and the per-layer
    ``layers`` statistics (a nested dict, which ``approx`` does not take) value by value."""
    assert set(mine) == set(expected)
    flat = {key: value for key, value in mine.items() if key != "layers"}
    assert flat == pytest.approx({key: value for key, value in expected.items()
                                  if key != "layers"}, rel=rel)
    if "layers" in expected:
        assert set(mine["layers"]) == set(expected["layers"])
        for layer, stats in expected["layers"].items():
            assert mine["layers"][layer] == pytest.approx(stats, rel=rel), layer


def _build_plain(spec: PlainSpec, params: Any) -> PlainSGD:
    # A copy: torch.optim.Optimizer rewrites the group dicts it is given.
    RECEIVED.append((type(params), [dict(group, params=list(group["params"]))
                                    for group in params]))
    return PlainSGD(params, lr=spec.lr)


def _build_broken(spec: BrokenSpec, params: Any) -> Any:
    raise TypeError("'TorchMLP' object is not iterable")


@pytest.fixture
def third_party() -> Iterator[None]:
    registry = optiplug.registry()
    registry.register(optiplug.Technique(kind="optimizer", name="plain_sgd", spec=PlainSpec,
                                         builders={"torch": _build_plain},
                                         summary="plain SGD from a third party"))
    registry.register(optiplug.Technique(kind="optimizer", name="broken_sgd", spec=BrokenSpec,
                                         builders={"torch": _build_broken},
                                         summary="a buggy third-party optimizer"))
    RECEIVED.clear()
    yield
    registry.unregister("optimizer.plain_sgd")
    registry.unregister("optimizer.broken_sgd")


def test_loop_hands_a_third_party_builder_named_param_groups_and_trains_like_sgd(
        third_party: None, tmp_path: Path) -> None:
    outcome = compare(small_recipe(epochs=2, backend="torch"),
                      ["optimizer=plain_sgd(lr=0.05),sgd(lr=0.05)"], out=tmp_path / "c",
                      progress=False)
    plain, builtin = outcome.results
    assert (plain.error, builtin.error) == (None, None)
    # The contract: param groups of (name, parameter) pairs, named as the model names them.
    [(kind, params)] = RECEIVED
    assert issubclass(kind, ParamGroupList) and len(params) == 1
    names = [name for name, _ in params[0]["params"]]
    assert names == ["layers.0.linear.weight", "layers.0.linear.bias", "output.weight",
                     "output.bias"]
    assert all(isinstance(p, torch.nn.Parameter) for _, p in params[0]["params"])
    # Plain SGD is torch's SGD without momentum: every epoch's metrics agree.
    for mine, reference in zip(without_seconds(plain.history),
                               without_seconds(builtin.history), strict=True):
        assert_record_close(mine, reference, rel=1e-6)
    assert plain.history[-1]["train_loss"] < plain.history[0]["train_loss"]


def test_a_failing_variant_is_a_failed_row_and_the_cli_exits_1(
        third_party: None, tmp_path: Path, recipe_file: Callable[..., Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    from optiplug.cli import main

    path = recipe_file(small_recipe(epochs=1, backend="torch"))
    code = main(["compare", str(path), "--vary", "optimizer=broken_sgd,sgd(lr=0.05)",
                 "--out", str(tmp_path / "c"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith(("broken_sgd", "sgd"))}
    assert rows["broken_sgd"] == ["failed"]
    assert "broken_sgd: TypeError: 'TorchMLP' object is not iterable" in out
    document = json.loads((tmp_path / "c" / "compare.json").read_text())
    broken, trained = document["variants"]
    assert broken["error"] == "TypeError: 'TorchMLP' object is not iterable"
    assert trained["error"] is None and len(trained["history"]) == 1
    # The surviving variant trained exactly as it does alone.
    alone = compare(small_recipe(epochs=1, backend="torch"), ["optimizer=sgd(lr=0.05)"],
                    out=tmp_path / "alone", progress=False)
    assert without_seconds(trained["history"]) == without_seconds(alone.results[0].history)


def test_every_variant_training_means_exit_0(tmp_path: Path,
                                             recipe_file: Callable[..., Path]) -> None:
    from optiplug.cli import main

    path = recipe_file(small_recipe(epochs=1))
    assert main(["compare", str(path), "--vary", "optimizer=sgd,adam", "--out",
                 str(tmp_path / "c"), "--quiet"]) == 0


REFERENCE_SCRIPT = textwrap.dedent("""
    import json, sys
    import optiplug
    from optiplug.training.loop import Trainer
    from optiplug.training.recipe import parse_recipe
    from optiplug_extras._torch_lion import Lion

    recipe = parse_recipe(json.loads(sys.argv[1]))
    trainer = Trainer(recipe)
    spec = recipe.optimizer_spec()
    # The same optimizer built the plain torch way, from model.parameters().
    trainer.runner.optimizer = Lion(trainer.runner.model.parameters(), lr=spec.lr,
                                    betas=spec.betas, weight_decay=spec.weight_decay)
    trainer.fit()
    print(json.dumps(trainer.history))
""")


@pytest.mark.slow
def test_pip_installed_lion_trains_in_compare_on_torch(tmp_path: Path) -> None:
    from tests.examples.fresh_venv import EXAMPLE, REPO, FreshVenv

    environment = FreshVenv.create(tmp_path / "venv")
    environment.pip_install(REPO, EXAMPLE)
    recipe = small_recipe(epochs=2, backend="torch", dtype="float64")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    done = environment.run(environment.bin / "optiplug", "compare", str(path), "--vary",
                           "optimizer=lion_extras(lr=0.001),adam", "--out", str(tmp_path / "c"),
                           "--quiet")
    assert "lion_extras(lr=0.001)" in done.stdout and "failed" not in done.stdout
    document = json.loads((tmp_path / "c" / "compare.json").read_text())
    lion = document["variants"][0]
    assert lion["error"] is None
    recipe["optimizer"] = {"name": "lion_extras", "lr": 0.001}
    reference = json.loads(environment.run_python(REFERENCE_SCRIPT, json.dumps(recipe)))
    for mine, expected in zip(without_seconds(lion["history"]), without_seconds(reference),
                              strict=True):
        assert_record_close(mine, expected, rel=1e-12)
    assert np.isfinite(lion["history"][-1]["train_loss"])
