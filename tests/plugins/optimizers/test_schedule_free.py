"""Schedule-free AdamW and SGD against the paper's x/y/z sequences and pytorch_optimizer.

The reference keeps the average ``x`` and the base sequence ``z`` explicitly (Defazio et al.
2024, Algorithm 1) and evaluates the gradient at ``y = (1 - beta) z + beta x``; the optimizers
keep ``y`` in the parameters, so the trajectory compared is ``y`` while training and ``x`` after
``eval()``. Two param groups, gradients ``None`` on some steps (the first ones included), a
warm-up, and a state-dict round trip.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import optiplug

from . import trajectory
from .trajectory import as_numpy, as_torch, split_groups

torch = pytest.importorskip("torch")

Array = np.ndarray
STEPS = 25
NAMES = ("w", "b", "v")
GROUPS = (("w", "b"), ("v",))
NO_GRAD = {"b": {0, 1, 9}, "v": {4}}



def initial() -> dict[str, Array]:
    rng = np.random.default_rng(5)
    return {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4),
            "v": rng.standard_normal(6)}


def gradients(params: dict[str, Array], step: int, drop: bool = True) -> dict[str, Any]:
    """Gradient of a noisy, coupled quartic at ``params``; ``None`` where :data:`NO_GRAD`."""
    rng = np.random.default_rng(900 + step)
    grads: dict[str, Any] = {n: p + 0.2 * p**3 + 0.3 * rng.standard_normal(p.shape)
                             for n, p in params.items()}
    grads["w"] = grads["w"] + 0.1 * np.outer(params["b"], np.ones(3))
    if drop:
        for name, steps in NO_GRAD.items():
            if step in steps:
                grads[name] = None
    return grads


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "schedule_free_adamw": ({"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-8,
                             "weight_decay": 0.05, "warmup_steps": 4},
                            {"lr": 0.02, "weight_decay": 0.0}),
    "schedule_free_sgd": ({"lr": 0.1, "momentum": 0.85, "weight_decay": 0.02,
                           "warmup_steps": 3},
                          {"lr": 0.04, "weight_decay": 0.0}),
}
VARIANTS = [("schedule_free_adamw", {}), ("schedule_free_adamw", {"r": 1.0}),
            ("schedule_free_sgd", {}), ("schedule_free_sgd", {"weight_lr_power": 1.0})]


def reference(name: str, hyper: dict[str, Any], overrides: dict[str, Any], drop: bool = True,
              steps: int = STEPS) -> tuple[list[dict[str, Array]], dict[str, Array]]:
    """The y trajectory and the final x of Algorithm 1, with x and z kept explicitly."""
    adam = name == "schedule_free_adamw"
    y = initial()
    x: dict[str, Array] = {}
    z: dict[str, Array] = {}
    v: dict[str, Array] = {}
    group_hp = [hyper, {**hyper, **overrides}]
    sums = [0.0, 0.0]
    lr_max = [-1.0, -1.0]
    trajectory = []
    for step in range(steps):
        k = step + 1
        grads = gradients(y, step, drop)
        for index, names in enumerate(GROUPS):
            hp = group_hp[index]
            beta = hp["betas"][0] if adam else hp["momentum"]
            warmup = hp["warmup_steps"]
            lr = hp["lr"] * (k / warmup if k < warmup else 1.0)
            lr_max[index] = max(lr_max[index], lr)
            weight = k ** hp.get("r", 0.0) * lr_max[index] ** hp.get("weight_lr_power", 2.0)
            sums[index] += weight
            c = weight / sums[index]
            for n in names:
                g = grads[n]
                if g is None:
                    continue
                if n not in z:
                    x[n], z[n], v[n] = y[n].copy(), y[n].copy(), np.zeros_like(y[n])
                if adam:
                    beta2 = hp["betas"][1]
                    v[n] = beta2 * v[n] + (1 - beta2) * g * g
                    u = g / (np.sqrt(v[n] / (1 - beta2**k)) + hp["eps"])
                else:
                    u = g.copy()
                u = u + hp["weight_decay"] * y[n]
                z[n] = z[n] - lr * u
                x[n] = (1 - c) * x[n] + c * z[n]
                y[n] = (1 - beta) * z[n] + beta * x[n]
        trajectory.append({n: a.copy() for n, a in y.items()})
    return trajectory, {n: x.get(n, y[n]) for n in NAMES}


def numpy_groups(params: dict[str, Array], overrides: dict[str, Any]) -> list[dict[str, Any]]:
    return split_groups(params, GROUPS, overrides)


def torch_groups(params: dict[str, Any], overrides: dict[str, Any],
                 named: bool = True) -> list[dict[str, Any]]:
    return split_groups(params, GROUPS, overrides, named)


def set_grads(params: dict[str, Any], step: int, drop: bool = True) -> None:
    trajectory.set_grads(params, gradients(as_numpy(params), step, drop))


class Run:
    """One backend's optimizer over fresh parameters, stepped with :func:`gradients`."""

    def __init__(self, backend: str, name: str, hyper: dict[str, Any],
                 overrides: dict[str, Any], start: dict[str, Array] | None = None) -> None:
        self.backend = backend
        start = initial() if start is None else start
        if backend == "numpy":
            self.params: Any = {n: a.copy() for n, a in start.items()}
            self.opt = optiplug.optimizer(name, numpy_groups(self.params, overrides), **hyper)
        else:
            self.params = as_torch(start)
            self.opt = optiplug.optimizer(name, torch_groups(self.params, overrides), **hyper)

    def values(self) -> dict[str, Array]:
        if self.backend == "numpy":
            return {n: a.copy() for n, a in self.params.items()}
        return as_numpy(self.params)

    def step(self, step: int) -> None:
        if self.backend == "numpy":
            self.opt.step(gradients(self.params, step))
        else:
            set_grads(self.params, step)
            self.opt.step()


def assert_close(got: dict[str, Array], want: dict[str, Array], what: str) -> None:
    for n in NAMES:
        np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-12,
                                   err_msg=f"{n} {what}")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("variant", VARIANTS, ids=[f"{n}-{e}" for n, e in VARIANTS])
def test_trajectory_and_average_equal_the_papers_sequences(variant: tuple[str, dict[str, Any]],
                                                           backend: str) -> None:
    name, extra = variant
    hyper, overrides = CASES[name]
    hyper = {**hyper, **extra}
    expected, average = reference(name, hyper, overrides)
    run = Run(backend, name, hyper, overrides)
    for step in range(STEPS):
        run.step(step)
        assert_close(run.values(), expected[step], f"(y) after step {step + 1}")
    run.opt.eval()
    assert_close(run.values(), average, "(x) after eval()")
    assert not np.allclose(average["w"], expected[-1]["w"])
    with pytest.raises(RuntimeError, match="train"):
        run.step(STEPS)
    run.opt.train()
    assert_close(run.values(), expected[-1], "(y) after train()")


@pytest.mark.parametrize("name", list(CASES))
def test_torch_backend_matches_pytorch_optimizer(name: str) -> None:
    pto = pytest.importorskip("pytorch_optimizer")
    hyper, overrides = CASES[name]
    run = Run("torch", name, hyper, overrides)
    theirs = as_torch(initial())
    cls = pto.ScheduleFreeAdamW if name == "schedule_free_adamw" else pto.ScheduleFreeSGD
    reference_opt = cls(torch_groups(theirs, overrides, named=False), **hyper)
    for step in range(STEPS):
        set_grads(run.params, step, drop=False)
        set_grads(theirs, step, drop=False)
        run.opt.step()
        reference_opt.step()
        assert_close(as_numpy(run.params), as_numpy(theirs), f"after step {step + 1}")
    run.opt.eval()
    reference_opt.eval()
    assert_close(as_numpy(run.params), as_numpy(theirs), "after eval()")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_resumes_the_trajectory(name: str, backend: str) -> None:
    hyper, overrides = CASES[name]
    expected, _ = reference(name, hyper, overrides, steps=14)
    first = Run(backend, name, hyper, overrides)
    for step in range(7):
        first.step(step)
    saved = pickle.loads(pickle.dumps(first.opt.state_dict()))
    second = Run(backend, name, hyper, overrides, start=first.values())
    second.opt.load_state_dict(saved)
    for step in range(7, 14):
        second.step(step)
    assert_close(second.values(), expected[-1], "after resuming")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_skipped_nonfinite_step_leaves_the_schedule_untouched(backend: str) -> None:
    hyper, overrides = CASES["schedule_free_adamw"]
    expected, _ = reference("schedule_free_adamw", hyper, overrides, steps=5)
    run = Run(backend, "schedule_free_adamw", {**hyper, "nonfinite": "skip"}, overrides)
    for step in range(5):
        run.step(step)
        if step == 2:
            bad = {n: np.full_like(a, np.nan) for n, a in run.values().items()}
            if backend == "numpy":
                run.opt.step(bad)
            else:
                for n, g in bad.items():
                    run.params[n].grad = torch.from_numpy(g)
                run.opt.step()
    assert run.opt.skipped_steps == 1
    assert [g["k"] for g in run.opt.param_groups] == [5, 5]
    assert_close(run.values(), expected[-1], "after a skipped step")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_training_loop_reports_validation_at_the_evaluation_weights(backend: str) -> None:
    import copy

    from optiplug.training import DEFAULT_RECIPE
    from optiplug.training.loop import Trainer
    from optiplug.training.recipe import parse_recipe

    recipe = copy.deepcopy(DEFAULT_RECIPE)
    recipe["data"]["samples"] = 200
    recipe["model"]["layers"][0]["units"] = 16
    recipe["train"].update({"epochs": 1, "batch_size": 32, "backend": backend})
    recipe["optimizer"] = {"name": "schedule_free_sgd", "lr": 0.1}
    recipe.pop("scheduler", None)
    trainer = Trainer(parse_recipe(recipe))
    record = trainer.run_epoch()
    optimizer = trainer.runner.optimizer
    assert all(group["train_mode"] for group in optimizer.param_groups)
    at_y = trainer.runner.evaluate("val")[0]
    optimizer.eval()
    at_x = trainer.runner.evaluate("val")[0]
    optimizer.train()
    assert record["val_loss"] == at_x != at_y
