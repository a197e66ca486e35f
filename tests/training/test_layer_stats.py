"""Per-layer gradient norms and activation statistics: equal to torch autograd, free of side
effects on training, and showing vanishing and exploding gradients where theory says."""

from __future__ import annotations

import copy
import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from optiplug.training.loop import Trainer
from optiplug.training.recipe import parse_recipe
from optiplug.training.run import run

from .conftest import small_recipe, without_seconds

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "recipes"


def _recipe(backend: str, **train: Any) -> Any:
    recipe = small_recipe(**{"epochs": 1, "batch_size": "full", "dtype": "float64",
                             "backend": backend, **train})
    recipe["model"]["layers"] = [
        {"units": 16, "initializer": {"name": "xavier_normal"}, "activation": {"name": "tanh"}},
        {"units": 8, "initializer": {"name": "he_normal"}, "activation": {"name": "relu"}}]
    recipe["optimizer"] = {"name": "sgd", "lr": 0.1}
    return parse_recipe(recipe)


def _autograd_reference(trainer: Trainer, state: dict[str, Any]) -> dict[str, dict[str, float]]:
    """One full-batch forward and backward in torch autograd from ``state`` (the weights the
    epoch started from): each layer's weight-gradient norm and activation mean and std."""
    from optiplug.training.model_torch import TorchMLP

    recipe = trainer.recipe
    model = TorchMLP(recipe, trainer.data.num_features, trainer.data.num_outputs,
                     torch.Generator(), torch.float64)
    model.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in state.items()})
    activations: list[torch.Tensor] = []
    for block in model.layers:
        block.activation.register_forward_hook(lambda m, i, o: activations.append(o.detach()))
    x = torch.as_tensor(trainer.data.x_train)
    h = x
    for block in model.layers:
        h = block(h)
    loss = torch.nn.functional.cross_entropy(model.output(h),
                                             torch.as_tensor(trainer.data.y_train))
    loss.backward()
    expected = {}
    for index, block in enumerate(model.layers):
        values = activations[index]
        expected[f"layers.{index}"] = {
            "grad_norm": float(block.linear.weight.grad.norm()),
            "act_mean": float(values.mean()), "act_std": float(values.std(unbiased=False))}
    expected["output"] = {"grad_norm": float(model.output.weight.grad.norm())}
    return expected


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_layer_statistics_equal_torch_autograd(backend: str):
    trainer = Trainer(_recipe(backend))
    state = {k: v.detach().numpy().copy() if hasattr(v, "detach") else np.array(v, copy=True)
             for k, v in trainer.runner.model.state_dict().items()}
    record = trainer.run_epoch()
    expected = _autograd_reference(trainer, state)
    assert list(record["layers"]) == ["layers.0", "layers.1", "output"]
    for name, values in expected.items():
        for key, value in values.items():
            assert record["layers"][name][key] == pytest.approx(value, rel=1e-10), (name, key)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_recording_statistics_leaves_training_bit_identical(backend: str):
    on = Trainer(_recipe(backend, epochs=3, batch_size=32))
    off = Trainer(_recipe(backend, epochs=3, batch_size=32, layer_stats=False))
    on.fit()
    off.fit()
    assert [{k: v for k, v in r.items() if k != "layers"} for r in without_seconds(on.history)] \
        == without_seconds(off.history)
    assert all("layers" not in r for r in off.history)
    theirs = off.runner.model.state_dict()
    for key, value in on.runner.model.state_dict().items():
        if hasattr(value, "detach"):
            assert torch.equal(value, theirs[key]), key
        else:
            np.testing.assert_array_equal(value, theirs[key])


def _first_epoch_profile(initializer: dict[str, Any]) -> list[float]:
    import yaml

    recipe = yaml.safe_load((EXAMPLES / "deep.yaml").read_text(encoding="utf-8"))
    recipe["train"]["epochs"] = 1
    recipe["model"]["layers"] = [dict(layer, initializer=initializer)
                                 for layer in recipe["model"]["layers"]]
    recipe["model"]["output_initializer"] = initializer
    trainer = Trainer(parse_recipe(copy.deepcopy(recipe)))
    record = trainer.run_epoch()
    return [entry["grad_norm"] for entry in record["layers"].values()]


def test_deep_recipe_shows_vanishing_exploding_and_stable_gradients():
    # ReLU layers of width 32 scale activations by std * sqrt(32 / 2) per layer: 0.04 for
    # std=0.01 (vanishing towards the input), 4 for std=1 (exploding), 1 for He's std.
    vanishing = _first_epoch_profile({"name": "normal", "std": 0.01})
    assert vanishing[0] / vanishing[-1] < 1e-6
    exploding = _first_epoch_profile({"name": "normal", "std": 1.0})
    stable = _first_epoch_profile({"name": "he_normal"})
    assert min(exploding) > 1e4 * max(stable)
    assert 0.1 < stable[0] / stable[-1] < 10
    assert all(math.isfinite(v) for v in stable)


def test_run_writes_layers_csv_and_gradients_png(tmp_path: Path):
    result = run(_recipe("numpy", epochs=2, batch_size=32), out=tmp_path / "r", progress=False)
    with (result.run_dir / "layers.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [(r["epoch"], r["layer"]) for r in rows] == [
        (e, n) for e in ("1", "2") for n in ("layers.0", "layers.1", "output")]
    assert float(rows[0]["grad_norm"]) == result.history[0]["layers"]["layers.0"]["grad_norm"]
    assert rows[2]["act_mean"] == ""  # the output layer has no activation
    assert (result.run_dir / "gradients.png").read_bytes().startswith(b"\x89PNG")
