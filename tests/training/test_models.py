"""The NumPy MLP trains exactly like the torch MLP (torch autograd is the reference)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from optiplug.training.data import load_dataset
from optiplug.training.model_numpy import NumpyRunner, cross_entropy, mse
from optiplug.training.recipe import parse_recipe

from .conftest import small_recipe

torch = pytest.importorskip("torch")


def _recipe(**changes: Any) -> Any:
    recipe = small_recipe(dtype="float64")
    layer = recipe["model"]["layers"][0]
    layer.update({"normalizer": {"name": "batch_norm"}, "activation": {"name": "tanh"}})
    second = copy.deepcopy(layer)
    second.update({"units": 16, "normalizer": {"name": "layer_norm"},
                   "activation": {"name": "gelu"}})
    recipe["model"]["layers"].append(second)
    recipe["optimizer"] = {"name": "momentum", "lr": 0.05}
    recipe["scheduler"] = {"name": "step", "step_size": 1, "gamma": 0.5}
    for key, value in changes.items():
        recipe[key] = value
    return parse_recipe(recipe)


def _train_both(recipe: Any, epochs: int) -> tuple[Any, Any]:
    from optiplug.training.model_torch import TorchRunner

    data = load_dataset(recipe.data, dtype="float64")
    numpy_runner = NumpyRunner(recipe, data)
    torch_runner = TorchRunner(recipe, data)
    # Same starting weights: the NumPy model's, copied into the torch model by name.
    torch_runner.model.load_state_dict(
        {name: torch.from_numpy(value) for name, value in
         numpy_runner.model.state_dict().items()})
    rng = np.random.default_rng(0)
    for _ in range(epochs):
        order = rng.permutation(len(data.x_train))
        for runner in (numpy_runner, torch_runner):
            runner.train_epoch(order, 32)
            runner.scheduler.step()
    return numpy_runner, torch_runner


def test_numpy_training_matches_torch_autograd_with_norm_layers() -> None:
    numpy_runner, torch_runner = _train_both(_recipe(), epochs=2)
    expected = torch_runner.model.state_dict()
    state = numpy_runner.model.state_dict()
    assert set(state) == set(expected)
    for name, value in state.items():
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=name)
    for split in ("train", "val"):
        numpy_loss, numpy_accuracy = numpy_runner.evaluate(split)
        torch_loss, torch_accuracy = torch_runner.evaluate(split)
        assert numpy_loss == pytest.approx(torch_loss, rel=1e-10)
        assert numpy_accuracy == torch_accuracy


def test_numpy_regression_training_matches_torch_mse() -> None:
    recipe = _recipe(data={"dataset": "regression", "samples": 200, "features": 3,
                           "normalizer": {"name": "standardize"}})
    numpy_runner, torch_runner = _train_both(recipe, epochs=1)
    expected = torch_runner.model.state_dict()
    for name, value in numpy_runner.model.state_dict().items():
        np.testing.assert_allclose(value, expected[name].numpy(), rtol=1e-9, atol=1e-11,
                                   err_msg=name)
    assert numpy_runner.evaluate("val")[1] is None


def test_loss_gradients_match_torch() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(7, 4)) * 30  # large logits: stable softmax needed
    target = rng.integers(0, 4, size=7)
    reference_logits = torch.tensor(logits, requires_grad=True)
    reference = torch.nn.functional.cross_entropy(reference_logits, torch.tensor(target))
    reference.backward()
    loss, _, correct = cross_entropy(logits, target, grad=False)
    _, grad, _ = cross_entropy(logits.copy(), target, grad=True)
    assert loss == pytest.approx(reference.item(), rel=1e-12)
    assert correct == int((logits.argmax(1) == target).sum())
    np.testing.assert_allclose(grad, reference_logits.grad.numpy(), rtol=1e-10, atol=1e-15)

    output, goal = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    reference_output = torch.tensor(output, requires_grad=True)
    reference = torch.nn.functional.mse_loss(reference_output, torch.tensor(goal))
    reference.backward()
    assert mse(output, goal, grad=False)[0] == pytest.approx(reference.item(), rel=1e-12)
    np.testing.assert_allclose(mse(output.copy(), goal, grad=True)[1],
                               reference_output.grad.numpy(), rtol=1e-12)
