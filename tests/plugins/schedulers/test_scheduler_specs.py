"""Scheduler specs reject bad hyperparameters clearly, and build the optimizer's backend."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import optiplug
from optiplug.backends.numpy import NumpyScheduler, NumpySequentialScheduler

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

SCHEDULERS = ("constant", "step", "multistep", "exponential", "cosine", "linear_warmup",
              "one_cycle", "reduce_on_plateau", "polynomial", "cosine_restarts", "cyclic",
              "linear", "inverse_sqrt", "warmup_stable_decay", "sequential", "chained")

# (name, minimal hyperparameters, torch class built, NumPy class name)
BUILT: list[tuple[str, dict[str, Any], type, str]] = [
    ("constant", {}, lr_scheduler.ConstantLR, "NumpyConstantLR"),
    ("step", {"step_size": 3}, lr_scheduler.StepLR, "NumpyStepLR"),
    ("multistep", {"milestones": [2, 5]}, lr_scheduler.MultiStepLR, "NumpyMultiStepLR"),
    ("exponential", {"gamma": 0.9}, lr_scheduler.ExponentialLR, "NumpyExponentialLR"),
    ("cosine", {"T_max": 10}, lr_scheduler.CosineAnnealingLR, "NumpyCosineAnnealingLR"),
    ("cosine", {"T_max": 10, "warmup_steps": 2}, lr_scheduler.SequentialLR,
     "NumpySequentialScheduler"),
    ("linear_warmup", {"warmup_steps": 4}, lr_scheduler.LinearLR, "NumpyLinearWarmup"),
    ("one_cycle", {"max_lr": 1.0, "total_steps": 10}, lr_scheduler.OneCycleLR,
     "NumpyOneCycleLR"),
    ("reduce_on_plateau", {}, lr_scheduler.ReduceLROnPlateau, "NumpyReduceLROnPlateau"),
    ("polynomial", {"total_iters": 10}, lr_scheduler.PolynomialLR, "NumpyPolynomialLR"),
    ("cosine_restarts", {"T_0": 5}, lr_scheduler.CosineAnnealingWarmRestarts,
     "NumpyCosineAnnealingWarmRestarts"),
    ("cyclic", {"max_lr": 1.0, "step_size_up": 4}, lr_scheduler.CyclicLR, "NumpyCyclicLR"),
    ("linear", {"total_iters": 10}, lr_scheduler.LinearLR, "NumpyLinearWarmup"),
    ("inverse_sqrt", {"warmup_steps": 10}, lr_scheduler.LambdaLR, "NumpyLambdaScheduler"),
    ("warmup_stable_decay", {"warmup_steps": 2, "stable_steps": 3, "decay_steps": 4},
     lr_scheduler.LambdaLR, "NumpyLambdaScheduler"),
    ("sequential", {"schedulers": [{"name": "linear_warmup"}, {"name": "cosine", "T_max": 9}],
                    "milestones": [5]}, lr_scheduler.SequentialLR, "NumpySequentialScheduler"),
    ("chained", {"schedulers": [{"name": "exponential", "gamma": 0.9}]},
     lr_scheduler.ChainedScheduler, "NumpyChainedScheduler"),
]


class BareOptimizer:
    optiplug_backend = "numpy"

    def __init__(self, *lrs: float, **hyper: Any) -> None:
        self.param_groups = [{"lr": lr, **hyper} for lr in lrs or (0.1,)]


def test_every_builtin_scheduler_is_registered_with_both_backends() -> None:
    registry = optiplug.registry()
    assert set(SCHEDULERS) <= set(registry.names("scheduler"))
    for name in SCHEDULERS:
        technique = registry.get("scheduler", name)
        assert technique.backends == ("numpy", "torch")
        assert technique.spec.technique_name() == name
        assert technique.summary and technique.reference
        assert technique.origin is not None and technique.origin.distribution == "optiplug"


@pytest.mark.parametrize(("name", "hyper", "torch_class", "numpy_class"), BUILT,
                         ids=[f"{n}-{h}" for n, h, _, _ in BUILT])
def test_scheduler_builds_the_backend_of_its_optimizer(name: str, hyper: dict[str, Any],
                                                       torch_class: type,
                                                       numpy_class: str) -> None:
    torch_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    built = optiplug.scheduler(name, torch_optimizer, **hyper)
    assert type(built) is torch_class
    assert isinstance(built, lr_scheduler.LRScheduler)

    numpy_optimizer = optiplug.optimizer("sgd", {"w": np.zeros(3)}, lr=0.1)
    built = optiplug.scheduler(name, numpy_optimizer, **hyper)
    assert type(built).__name__ == numpy_class
    assert isinstance(built, NumpyScheduler) and built.optiplug_backend == "numpy"
    assert built.optimizer is numpy_optimizer

    assert type(optiplug.scheduler(name, BareOptimizer(), **hyper)).__name__ == numpy_class


def test_scheduler_built_from_a_config_dict_drives_the_numpy_optimizer() -> None:
    optimizer = optiplug.optimizer("sgd", {"w": np.zeros(3)}, lr=0.1)
    scheduler = optiplug.build({"kind": "scheduler", "name": "multistep", "milestones": [1, 3],
                                "gamma": 0.5}, optimizer=optimizer)
    seen = []
    for _ in range(4):
        optimizer.step({"w": np.ones(3)})
        scheduler.step()
        seen.append(optimizer.param_groups[0]["lr"])
    assert seen == [0.05, 0.05, 0.025, 0.025]
    np.testing.assert_allclose(optimizer.param_groups[0]["params"][0],
                               -(0.1 + 0.05 + 0.05 + 0.025) * np.ones(3), rtol=1e-15)


INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    ("constant", {"factor": 0.0}, "factor", "greater than 0"),
    ("constant", {"factor": 1.5, "total_iters": 3}, "factor", "less than or equal to 1"),
    ("constant", {"factor": 0.5}, "", "needs total_iters >= 1"),
    ("constant", {"total_iters": -1}, "total_iters", "greater than or equal to 0"),
    ("step", {}, "step_size", "Field required"),
    ("step", {"step_size": 0}, "step_size", "greater than 0"),
    ("step", {"step_size": "3"}, "step_size", "valid integer"),
    ("step", {"step_size": 3, "gamma": 0.0}, "gamma", "greater than 0"),
    ("step", {"step_size": 3, "gamma": 1.1}, "gamma", "less than or equal to 1"),
    ("multistep", {}, "milestones", "Field required"),
    ("multistep", {"milestones": []}, "milestones", "at least 1 item"),
    ("multistep", {"milestones": [3, 3]}, "milestones", "strictly increasing"),
    ("multistep", {"milestones": [5, 2]}, "milestones", "got 2 after 5"),
    ("multistep", {"milestones": [0, 4]}, "milestones.0", "greater than 0"),
    ("multistep", {"milestones": [1.5]}, "milestones.0", "valid integer"),
    ("exponential", {}, "gamma", "Field required"),
    ("exponential", {"gamma": 0.0}, "gamma", "greater than 0"),
    ("exponential", {"gamma": 1.01}, "gamma", "less than or equal to 1"),
    ("exponential", {"gamma": float("nan")}, "gamma", "finite number"),
    ("cosine", {}, "T_max", "Field required"),
    ("cosine", {"T_max": 0}, "T_max", "greater than 0"),
    ("cosine", {"T_max": 10, "eta_min": -0.1}, "eta_min", "greater than or equal to 0"),
    ("cosine", {"T_max": 10, "warmup_steps": -1}, "warmup_steps", "greater than or equal to 0"),
    ("cosine", {"T_max": 10, "warmup_start_factor": 0.0}, "warmup_start_factor",
     "greater than 0"),
    ("linear_warmup", {"warmup_steps": -2}, "warmup_steps", "greater than or equal to 0"),
    ("linear_warmup", {"start_factor": 0.0}, "start_factor", "greater than 0"),
    ("linear_warmup", {"start_factor": 2.0}, "start_factor", "less than or equal to 1"),
    ("linear_warmup", {"warmup_step": 3}, "warmup_step", "unknown key"),
    ("one_cycle", {"total_steps": 10}, "max_lr", "Field required"),
    ("one_cycle", {"max_lr": 0.0, "total_steps": 10}, "max_lr", "greater than 0"),
    ("one_cycle", {"max_lr": 0.1}, "", "give total_steps, or both epochs and steps_per_epoch"),
    ("one_cycle", {"max_lr": 0.1, "epochs": 3}, "", "both epochs and steps_per_epoch"),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 100, "epochs": 3, "steps_per_epoch": 10}, "",
     "not both"),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 10, "pct_start": 1.0}, "pct_start",
     "less than 1"),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 10, "pct_start": 0.1}, "",
     "warm-up phase would have length 0"),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 100, "pct_start": 0.6, "three_phase": True},
     "", "> 0.5 with three_phase"),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 10, "anneal_strategy": "exp"},
     "anneal_strategy", "'cos' or 'linear'"),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 10, "max_momentum": 1.0}, "max_momentum",
     "less than 1"),
    ("reduce_on_plateau", {"factor": 1.0}, "factor", "less than 1"),
    ("reduce_on_plateau", {"factor": 0.0}, "factor", "greater than 0"),
    ("reduce_on_plateau", {"mode": "avg"}, "mode", "'min' or 'max'"),
    ("reduce_on_plateau", {"threshold_mode": "pct"}, "threshold_mode", "'rel' or 'abs'"),
    ("reduce_on_plateau", {"patience": -1}, "patience", "greater than or equal to 0"),
    ("reduce_on_plateau", {"min_lr": -0.1}, "min_lr", "greater than or equal to 0"),
    ("polynomial", {}, "total_iters", "Field required"),
    ("polynomial", {"total_iters": 0}, "total_iters", "greater than 0"),
    ("polynomial", {"total_iters": 10, "power": 0.0}, "power", "greater than 0"),
    ("polynomial", {"total_iters": 10, "power": float("inf")}, "power", "finite number"),
    ("cosine_restarts", {}, "T_0", "Field required"),
    ("cosine_restarts", {"T_0": 0}, "T_0", "greater than 0"),
    ("cosine_restarts", {"T_0": 10, "T_mult": 0}, "T_mult", "greater than 0"),
    ("cosine_restarts", {"T_0": 10, "T_mult": 1.5}, "T_mult", "valid integer"),
    ("cosine_restarts", {"T_0": 10, "eta_min": -1.0}, "eta_min", "greater than or equal to 0"),
    ("cyclic", {}, "max_lr", "Field required"),
    ("cyclic", {"max_lr": 0.0}, "max_lr", "greater than 0"),
    ("cyclic", {"max_lr": [0.1, -0.2]}, "max_lr", "greater than 0"),
    ("cyclic", {"max_lr": 0.1, "base_lr": 0.0}, "base_lr", "greater than 0"),
    ("cyclic", {"max_lr": 0.1, "step_size_up": 0}, "step_size_up", "greater than 0"),
    ("cyclic", {"max_lr": 0.1, "step_size_down": 0}, "step_size_down", "greater than 0"),
    ("cyclic", {"max_lr": 0.1, "mode": "triangle"}, "mode", "'triangular', 'triangular2'"),
    ("cyclic", {"max_lr": 0.1, "gamma": 1.5}, "gamma", "less than or equal to 1"),
    ("cyclic", {"max_lr": 0.1, "max_momentum": 1.0}, "max_momentum", "less than 1"),
    ("linear", {}, "total_iters", "Field required"),
    ("linear", {"total_iters": 5, "start_factor": 0.0}, "start_factor", "greater than 0"),
    ("linear", {"total_iters": 5, "end_factor": 1.5}, "end_factor", "less than or equal to 1"),
    ("linear", {"total_iters": 5, "end_factor": -0.1}, "end_factor", "greater than or equal"),
    ("inverse_sqrt", {}, "warmup_steps", "Field required"),
    ("inverse_sqrt", {"warmup_steps": -1}, "warmup_steps", "greater than or equal to 0"),
    ("inverse_sqrt", {"warmup_steps": 10, "timescale": 0}, "timescale", "greater than 0"),
    ("warmup_stable_decay", {"stable_steps": 5}, "decay_steps", "Field required"),
    ("warmup_stable_decay", {"decay_steps": 5}, "", "give stable_steps or total_steps"),
    ("warmup_stable_decay", {"decay_steps": 0, "stable_steps": 5}, "decay_steps",
     "greater than 0"),
    ("warmup_stable_decay", {"warmup_steps": 10, "decay_steps": 20, "total_steps": 25}, "",
     "shorter than warmup_steps + decay_steps = 30"),
    ("warmup_stable_decay", {"warmup_steps": 10, "decay_steps": 20, "stable_steps": 5,
                             "total_steps": 40}, "", "give one of stable_steps and total_steps"),
    ("warmup_stable_decay", {"decay_steps": 5, "stable_steps": 5, "decay_shape": "exp"},
     "decay_shape", "'linear', 'cosine' or 'sqrt'"),
    ("warmup_stable_decay", {"decay_steps": 5, "stable_steps": 5, "min_lr_ratio": 1.5},
     "min_lr_ratio", "less than or equal to 1"),
    ("sequential", {}, "schedulers", "Field required"),
    ("sequential", {"schedulers": []}, "schedulers", "at least 1 item"),
    ("sequential", {"schedulers": [{"name": "cosine", "T_max": 5},
                                   {"name": "cosine", "T_max": 0}], "milestones": [5]},
     "schedulers.1.T_max", "greater than 0"),
    ("sequential", {"schedulers": [{"name": "cosine"}]}, "schedulers.0.T_max",
     "Field required"),
    ("sequential", {"schedulers": [{"name": "cosin", "T_max": 5}]}, "schedulers.0.name",
     "did you mean 'cosine'?"),
    ("sequential", {"schedulers": [{"T_max": 5}]}, "schedulers.0.name", "missing"),
    ("sequential", {"schedulers": ["cosine"]}, "schedulers.0", "must be a scheduler config"),
    ("sequential", {"schedulers": [{"kind": "optimizer", "name": "adam"}]}, "schedulers.0.kind",
     "must be a scheduler"),
    ("sequential", {"schedulers": [{"name": "step", "step_size": 2, "gama": 0.5}]},
     "schedulers.0.gama", "unknown key"),
    ("sequential", {"schedulers": [{"name": "linear", "total_iters": 5},
                                   {"name": "cosine", "T_max": 5}]},
     "milestones", "2 schedulers need 1 milestone(s), got 0"),
    ("sequential", {"schedulers": [{"name": "linear", "total_iters": 5},
                                   {"name": "cosine", "T_max": 5},
                                   {"name": "step", "step_size": 3}], "milestones": [9, 4]},
     "milestones", "strictly increasing"),
    ("sequential", {"schedulers": [{"name": "linear", "total_iters": 5}], "milestones": [0]},
     "milestones.0", "greater than 0"),
    ("sequential", {"schedulers": [{"name": "linear", "total_iters": 5},
                                   {"name": "reduce_on_plateau"}], "milestones": [5]},
     "schedulers.1", "steps on a validation metric"),
    ("sequential", {"schedulers": [{"name": "linear", "total_iters": 5},
                                   {"name": "chained", "schedulers": [{"name": "constant"}]}],
                    "milestones": [5]}, "schedulers", "only the first scheduler"),
    ("sequential", {"schedulers": [{"name": "sequential", "schedulers": [
        {"name": "cosine", "T_max": 5}, {"name": "cosine", "T_max": -5}],
        "milestones": [3]}]}, "schedulers.0.schedulers.1.T_max", "greater than 0"),
    ("chained", {}, "schedulers", "Field required"),
    ("chained", {"schedulers": [{"name": "exponential"}]}, "schedulers.0.gamma",
     "Field required"),
    ("chained", {"schedulers": [{"name": "reduce_on_plateau"}]}, "schedulers.0",
     "steps on a validation metric"),
    ("chained", {"schedulers": [{"name": "step", "step_size": 3}], "milestones": [3]},
     "milestones", "unknown key"),
]


@pytest.mark.parametrize(("name", "hyper", "path", "message"), INVALID,
                         ids=[f"{n}-{h}" for n, h, _, _ in INVALID])
def test_invalid_hyperparameters_are_config_errors_naming_the_field(
        name: str, hyper: dict[str, Any], path: str, message: str) -> None:
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.spec("scheduler", name, **hyper)
    issues = [issue for issue in caught.value.issues
              if issue.path == path or issue.path.startswith(f"{path}.")]
    assert issues, f"no issue at {path!r} in {caught.value}"
    assert any(message in issue.message for issue in issues), str(caught.value)


def test_valid_specs_round_trip_through_their_dump() -> None:
    for name, hyper, _, _ in BUILT:
        spec = optiplug.spec("scheduler", name, **hyper)
        assert type(spec)(**spec.model_dump()) == spec
        assert optiplug.to_spec(spec.model_dump()) == spec
    spec = optiplug.spec("scheduler", "one_cycle", max_lr=[0.1, 0.2], epochs=3,
                         steps_per_epoch=7)
    assert spec.max_lr == (0.1, 0.2) and spec.steps() == 21


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize(("name", "hyper", "message"), [
    ("one_cycle", {"max_lr": [0.1, 0.2], "total_steps": 10}, "max_lr"),
    ("reduce_on_plateau", {"min_lr": [0.0, 0.1]}, "min_lr"),
])
def test_per_group_values_must_match_the_number_of_groups(backend: str, name: str,
                                                          hyper: dict[str, Any],
                                                          message: str) -> None:
    if backend == "torch":
        optimizer: Any = torch.optim.SGD(
            [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(3)], lr=0.1)
    else:
        optimizer = BareOptimizer(0.1, 0.2, 0.3)
    lrs = [group["lr"] for group in optimizer.param_groups]
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.scheduler(name, optimizer, **hyper)
    [issue] = info.value.issues
    assert issue.path == message
    assert issue.message == ("has 2 values but the optimizer has 3 param group(s): give one "
                             "value, or one per group")
    assert [group["lr"] for group in optimizer.param_groups] == lrs


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_one_cycle_momentum_needs_an_optimizer_with_momentum(backend: str) -> None:
    if backend == "torch":
        optimizer: Any = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    else:
        optimizer = optiplug.optimizer("sgd", {"w": np.zeros(3)}, lr=0.1)
    with pytest.raises(optiplug.ConfigError, match="cycle_momentum"):
        optiplug.scheduler("one_cycle", optimizer, max_lr=0.5, total_steps=10,
                           cycle_momentum=True)
    assert "momentum" not in optimizer.param_groups[0] or \
        optimizer.param_groups[0]["momentum"] == 0


def test_scheduler_plugin_modules_import_no_torch() -> None:
    modules = ", ".join(f"optiplug.plugins.schedulers.{name}" for name in SCHEDULERS)
    code = (f"import sys, optiplug; import {modules}; "
            f"r = optiplug.registry(); [r.get('scheduler', n) for n in r.names('scheduler')]; "
            f"sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_numpy_cosine_warmup_is_a_sequence_of_warmup_and_cosine() -> None:
    optimizer = BareOptimizer(0.1)
    scheduler = optiplug.scheduler("cosine", optimizer, T_max=10, warmup_steps=3)
    assert isinstance(scheduler, NumpySequentialScheduler)
    inner = scheduler.state_dict()["_schedulers"]
    assert [state["total_iters"] for state in inner[:1]] == [3]
    assert inner[1]["T_max"] == 10
