"""``sgd`` speaks torch.optim.SGD's vocabulary (momentum, dampening, nesterov) on both backends,
while ``momentum`` and ``nesterov`` stay named techniques."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import optiplug

torch = pytest.importorskip("torch")

SETTINGS: list[dict[str, Any]] = [
    {"lr": 0.1},
    {"lr": 0.1, "momentum": 0.9},
    {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01},
    {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1},
    {"lr": 0.02, "momentum": 0.5, "nesterov": True, "maximize": True},
]
SHAPES = {"w": (5, 3), "b": (3,), "late": (4,)}
STEPS = 7


def _grads(seed: int = 0) -> list[dict[str, np.ndarray | None]]:
    """Gradients per step; ``late`` gets its first gradient at step 3 and skips step 5."""
    rng = np.random.default_rng(seed)
    steps = []
    for step in range(STEPS):
        grads: dict[str, np.ndarray | None] = {
            name: rng.standard_normal(shape) for name, shape in SHAPES.items()}
        if step < 3 or step == 5:
            grads["late"] = None
        steps.append(grads)
    return steps


def _torch_reference(settings: dict[str, Any], start: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    params = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
              for name, value in start.items()}
    opt = torch.optim.SGD(list(params.values()), **settings)
    for grads in _grads():
        for name, param in params.items():
            grad = grads[name]
            param.grad = None if grad is None else torch.tensor(grad, dtype=torch.float64)
        opt.step()
    return {name: param.detach().numpy() for name, param in params.items()}


def _start() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_sgd_with_torch_options_matches_torch_sgd_on_numpy(settings: dict[str, Any]) -> None:
    expected = _torch_reference(settings, _start())
    params = _start()
    opt = optiplug.optimizer("sgd", params, **settings)
    for grads in _grads():
        opt.step(grads)
    for name in SHAPES:
        np.testing.assert_allclose(params[name], expected[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("settings", SETTINGS, ids=[str(s) for s in SETTINGS])
def test_sgd_with_torch_options_matches_torch_sgd_on_torch(settings: dict[str, Any]) -> None:
    expected = _torch_reference(settings, _start())
    params = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True)
              for name, value in _start().items()}
    opt = optiplug.optimizer("sgd", list(params.items()), **settings)
    for grads in _grads():
        for name, param in params.items():
            grad = grads[name]
            param.grad = None if grad is None else torch.tensor(grad, dtype=torch.float64)
        opt.step()
    for name, param in params.items():
        np.testing.assert_allclose(param.detach().numpy(), expected[name], rtol=1e-12,
                                   atol=1e-12)


@pytest.mark.parametrize(("technique", "settings"), [
    ("momentum", {"lr": 0.1, "momentum": 0.9}),
    ("nesterov", {"lr": 0.1, "momentum": 0.9}),
])
def test_the_named_techniques_stay_and_equal_sgd_with_the_same_options(
        technique: str, settings: dict[str, Any]) -> None:
    named = _start()
    as_sgd = _start()
    opt_named = optiplug.optimizer(technique, named, **settings)
    opt_sgd = optiplug.optimizer("sgd", as_sgd, **settings,
                                 nesterov=technique == "nesterov")
    for grads in _grads():
        opt_named.step({k: v for k, v in grads.items() if k != "late"})
        opt_sgd.step({k: v for k, v in grads.items() if k != "late"})
    for name in ("w", "b"):
        np.testing.assert_array_equal(named[name], as_sgd[name])


@pytest.mark.parametrize(("settings", "path", "torch_refuses"), [
    ({"nesterov": True}, "nesterov", True),
    ({"nesterov": True, "momentum": 0.9, "dampening": 0.1}, "nesterov", True),
    ({"momentum": -0.1}, "momentum", True),
    # Stricter than torch, as the named momentum technique: momentum 1 never forgets and
    # diverges, dampening above 1 flips the gradient's sign.
    ({"momentum": 1.0}, "momentum", False),
    ({"dampening": 1.5}, "dampening", False),
])
def test_sgd_refuses_what_torch_refuses_with_the_path(settings: dict[str, Any], path: str,
                                                      torch_refuses: bool) -> None:
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.build({"optimizer": {"name": "sgd", **settings}}, params={"w": np.ones(2)})
    assert [issue.path for issue in info.value.issues] == [f"optimizer.{path}"]
    if path == "nesterov":
        assert "momentum > 0 and dampening = 0" in str(info.value)
    if torch_refuses:
        with pytest.raises(ValueError):
            torch.optim.SGD([torch.zeros(2, requires_grad=True)], lr=0.1, **settings)
