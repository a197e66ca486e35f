"""The NumPy scheduler base and its sequential combinator behave like torch's schedulers."""

from __future__ import annotations

from typing import Any

import pytest

from optiplug.backends.numpy import NumpyScheduler, NumpySequentialScheduler
from optiplug.plugins.schedulers.constant import NumpyConstantLR
from optiplug.plugins.schedulers.cosine import NumpyCosineAnnealingLR
from optiplug.plugins.schedulers.exponential import NumpyExponentialLR
from optiplug.plugins.schedulers.linear_warmup import NumpyLinearWarmup
from optiplug.plugins.schedulers.reduce_on_plateau import NumpyReduceLROnPlateau
from optiplug.plugins.schedulers.step import NumpyStepLR

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

LRS = (0.1, 0.02, 0.7)


class BareOptimizer:
    optiplug_backend = "numpy"

    def __init__(self, groups: list[dict[str, Any]]) -> None:
        self.param_groups = groups


def optimizers(**extra: float) -> tuple[BareOptimizer, Any]:
    numpy_groups = [{"lr": lr, **extra} for lr in LRS]
    torch_groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr, **extra}
                    for lr in LRS]
    return BareOptimizer(numpy_groups), torch.optim.SGD(torch_groups)


def trajectory(optimizer: Any, scheduler: Any, steps: int) -> list[list[float]]:
    lrs = [[group["lr"] for group in optimizer.param_groups]]
    for _ in range(steps):
        if isinstance(optimizer, torch.optim.Optimizer):
            optimizer.step()
        scheduler.step()
        lrs.append([group["lr"] for group in optimizer.param_groups])
    return lrs


def test_sequential_scheduler_equals_torch_sequential_lr_over_three_schedulers() -> None:
    numpy_optimizer, torch_optimizer = optimizers()
    numpy_scheduler = NumpySequentialScheduler(numpy_optimizer, [
        NumpyConstantLR(numpy_optimizer, factor=0.5, total_iters=4),
        NumpyExponentialLR(numpy_optimizer, gamma=0.97),
        NumpyCosineAnnealingLR(numpy_optimizer, T_max=80, eta_min=0.001)], milestones=[10, 60])
    torch_scheduler = lr_scheduler.SequentialLR(torch_optimizer, [
        lr_scheduler.ConstantLR(torch_optimizer, factor=0.5, total_iters=4),
        lr_scheduler.ExponentialLR(torch_optimizer, gamma=0.97),
        lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max=80, eta_min=0.001)],
        milestones=[10, 60])
    assert trajectory(numpy_optimizer, numpy_scheduler, 300) == \
        trajectory(torch_optimizer, torch_scheduler, 300)
    assert numpy_scheduler.get_last_lr() == torch_scheduler.get_last_lr()


@pytest.mark.parametrize(("numpy_class", "torch_class", "hyper"), [
    (NumpyCosineAnnealingLR, lr_scheduler.CosineAnnealingLR, {"T_max": 50, "eta_min": 0.01}),
    (NumpyStepLR, lr_scheduler.StepLR, {"step_size": 6, "gamma": 0.5}),
    (NumpyExponentialLR, lr_scheduler.ExponentialLR, {"gamma": 0.95}),
    (NumpyLinearWarmup, lr_scheduler.LinearLR, {"start_factor": 0.2, "total_iters": 40}),
])
def test_resuming_with_last_epoch_matches_torch(numpy_class: type, torch_class: type,
                                                hyper: dict[str, Any]) -> None:
    numpy_optimizer, torch_optimizer = optimizers(initial_lr=0.5)
    numpy_scheduler = numpy_class(numpy_optimizer, last_epoch=20, **hyper)
    torch_scheduler = torch_class(torch_optimizer, last_epoch=20, **hyper)
    assert numpy_scheduler.base_lrs == [0.5, 0.5, 0.5]
    assert trajectory(numpy_optimizer, numpy_scheduler, 120) == \
        trajectory(torch_optimizer, torch_scheduler, 120)


def test_resuming_without_initial_lr_is_a_key_error() -> None:
    optimizer = BareOptimizer([{"lr": 0.1}])
    with pytest.raises(KeyError, match="initial_lr"):
        NumpyStepLR(optimizer, step_size=3, last_epoch=5)


@pytest.mark.parametrize("groups", [None, [], [{"learning_rate": 0.1}], [0.1]])
def test_an_object_without_lr_param_groups_is_rejected(groups: Any) -> None:
    optimizer = BareOptimizer(groups)
    with pytest.raises(TypeError, match="param_groups"):
        NumpyStepLR(optimizer, step_size=3)


def test_construction_records_initial_lr_and_a_first_step_like_torch() -> None:
    numpy_optimizer, torch_optimizer = optimizers()
    numpy_scheduler = NumpyConstantLR(numpy_optimizer, factor=0.5, total_iters=3)
    torch_scheduler = lr_scheduler.ConstantLR(torch_optimizer, factor=0.5, total_iters=3)
    assert [g["initial_lr"] for g in numpy_optimizer.param_groups] == list(LRS)
    assert numpy_scheduler.base_lrs == torch_scheduler.base_lrs == list(LRS)
    assert numpy_scheduler.last_epoch == torch_scheduler.last_epoch == 0
    assert numpy_scheduler.get_last_lr() == torch_scheduler.get_last_lr() == [0.05, 0.01, 0.35]
    numpy_state = numpy_scheduler.state_dict()
    torch_state = torch_scheduler.state_dict()
    assert set(numpy_state) == set(torch_state) - {"_get_lr_called_within_step"}
    assert {k: numpy_state[k] for k in numpy_state} == {k: torch_state[k] for k in numpy_state}


def test_get_last_lr_is_a_copy() -> None:
    optimizer = BareOptimizer([{"lr": 0.1}])
    scheduler = NumpyStepLR(optimizer, step_size=2)
    scheduler.get_last_lr()[0] = 5.0
    assert scheduler.get_last_lr() == [0.1]


def test_another_schedulers_state_is_rejected_and_changes_nothing() -> None:
    optimizer = BareOptimizer([{"lr": 0.1}])
    step = NumpyStepLR(optimizer, step_size=2)
    step.step()
    before = step.state_dict()
    exponential = NumpyExponentialLR(BareOptimizer([{"lr": 0.1}]), gamma=0.9)
    with pytest.raises(ValueError, match=r"missing \['step_size'\]"):
        step.load_state_dict(exponential.state_dict())
    assert step.state_dict() == before


def test_sequential_state_with_a_bad_inner_state_changes_nothing() -> None:
    optimizer = BareOptimizer([{"lr": 0.1}])
    scheduler = NumpySequentialScheduler(optimizer, [
        NumpyLinearWarmup(optimizer, total_iters=3), NumpyStepLR(optimizer, step_size=4)], [3])
    for _ in range(5):
        scheduler.step()
    before = scheduler.state_dict()
    broken = scheduler.state_dict()
    broken["last_epoch"] = 0
    broken["_schedulers"][0]["last_epoch"] = 0
    del broken["_schedulers"][1]["gamma"]
    with pytest.raises(ValueError, match="gamma"):
        scheduler.load_state_dict(broken)
    assert scheduler.state_dict() == before
    with pytest.raises(ValueError, match="_schedulers with 2 entries"):
        scheduler.load_state_dict({**before, "_schedulers": before["_schedulers"][:1]})


def test_sequential_checks_milestones_and_optimizers() -> None:
    optimizer = BareOptimizer([{"lr": 0.1}])
    other = BareOptimizer([{"lr": 0.1}])
    with pytest.raises(ValueError, match="need 1 milestones, got 0"):
        NumpySequentialScheduler(optimizer, [NumpyStepLR(optimizer, step_size=2),
                                             NumpyStepLR(optimizer, step_size=3)], [])
    with pytest.raises(ValueError, match="another optimizer"):
        NumpySequentialScheduler(optimizer, [NumpyStepLR(other, step_size=2)], [])
    with pytest.raises(ValueError, match="at least one"):
        NumpySequentialScheduler(optimizer, [], [])
    with pytest.raises(ValueError, match="steps on a metric"):
        NumpySequentialScheduler(optimizer, [NumpyStepLR(optimizer, step_size=2),
                                             NumpyReduceLROnPlateau(optimizer)], [5])


def test_a_param_group_added_after_construction_is_a_clear_error() -> None:
    class FromBaseLrs(NumpyScheduler):
        def get_lr(self) -> list[float]:
            return list(self.base_lrs)

    optimizer = BareOptimizer([{"lr": 0.1}])
    scheduler = FromBaseLrs(optimizer)
    optimizer.param_groups.append({"lr": 0.2})
    with pytest.raises(ValueError, match="1 learning rates for 2 param groups"):
        scheduler.step()


def test_base_class_needs_get_lr() -> None:
    with pytest.raises(NotImplementedError):
        NumpyScheduler(BareOptimizer([{"lr": 0.1}]))
