"""The catalogue's schedulers against their closed forms (a second reference besides torch),
their momentum cycling, declared intervals, composition and the NumPy lambda scheduler."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

import optiplug
from optiplug.backends.numpy import NumpyChainedScheduler, NumpyLambdaScheduler
from optiplug.cli import main

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

BASE_LRS = (0.1, 0.05, 0.3)
STEPS = 500


class BareOptimizer:
    optiplug_backend = "numpy"

    def __init__(self, lrs: tuple[float, ...] = BASE_LRS, **hyper: Any) -> None:
        self.param_groups = [{"params": [], "lr": lr, **copy.deepcopy(hyper)} for lr in lrs]


def run(optimizer: Any, scheduler: Any, steps: int, watch: str | None = None) -> list[Any]:
    """Every group's lr (and ``watch`` value) after construction and after every step."""

    def record() -> list[Any]:
        values = [group["lr"] for group in optimizer.param_groups]
        if watch is not None:
            values += [group[watch] for group in optimizer.param_groups]
        return values

    sequence = [record()]
    for _ in range(steps):
        if isinstance(optimizer, torch.optim.Optimizer):
            optimizer.step()
        scheduler.step()
        sequence.append(record())
    return sequence


def lrs_of(name: str, steps: int = STEPS, **hyper: Any) -> np.ndarray:
    optimizer = BareOptimizer()
    return np.array(run(optimizer, optiplug.scheduler(name, optimizer, **hyper), steps))


T = np.arange(STEPS + 1)[:, None]
BASE = np.array(BASE_LRS)


# ------------------------------------------------------------------------ closed forms
def test_polynomial_follows_its_closed_form() -> None:
    lrs = lrs_of("polynomial", total_iters=300, power=0.9)
    np.testing.assert_allclose(lrs, BASE * (1 - np.minimum(T, 300) / 300) ** 0.9, rtol=1e-12,
                               atol=1e-17)
    assert (lrs[300:] == 0).all()


@pytest.mark.parametrize(("T_0", "T_mult"), [(50, 1), (10, 2), (7, 3)])
def test_cosine_restarts_follows_sgdr(T_0: int, T_mult: int) -> None:
    lrs = lrs_of("cosine_restarts", T_0=T_0, T_mult=T_mult, eta_min=0.002)
    expected = []
    for t in range(STEPS + 1):
        start, length = 0, T_0  # the cycle holding step t: [start, start + length)
        while t >= start + length:
            start, length = start + length, length * T_mult
        expected.append(0.002 + (BASE - 0.002) * (1 + math.cos(math.pi * (t - start) / length))
                        / 2)
    np.testing.assert_allclose(lrs, np.array(expected), rtol=1e-12)
    restarts = np.flatnonzero(np.diff(lrs[:, 0]) > 0) + 1
    lengths = [T_0 * T_mult ** i for i in range(len(restarts))]
    assert restarts.tolist() == np.cumsum(lengths).tolist()


@pytest.mark.parametrize(("mode", "scale"), [
    ("triangular", lambda cycle, t: 1.0),
    ("triangular2", lambda cycle, t: 0.5 ** (cycle - 1)),
    ("exp_range", lambda cycle, t: 0.997 ** t),
])
def test_cyclic_follows_smiths_triangle(mode: str, scale: Any) -> None:
    lrs = lrs_of("cyclic", base_lr=0.01, max_lr=[0.5, 0.2, 0.9], step_size_up=40, mode=mode,
                 gamma=0.997)
    t = np.arange(STEPS + 1)
    cycle = np.floor(1 + t / 80)
    triangle = np.maximum(0, 1 - np.abs(t / 40 - 2 * cycle + 1))  # Smith 2017, eq. (1)
    expected = 0.01 + (np.array([0.5, 0.2, 0.9]) - 0.01) * (
        triangle * np.array([scale(c, s) for c, s in zip(cycle, t, strict=True)]))[:, None]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)


def test_cyclic_without_base_lr_cycles_up_from_each_groups_lr() -> None:
    lrs = lrs_of("cyclic", steps=100, max_lr=0.5, step_size_up=10, step_size_down=40)
    t = np.arange(101)[:, None] % 50
    rise = np.where(t <= 10, t / 10, (50 - t) / 40)
    np.testing.assert_allclose(lrs, BASE + (0.5 - BASE) * rise, rtol=1e-12)


def test_linear_decays_to_its_end_factor_and_stays() -> None:
    lrs = lrs_of("linear", total_iters=200, start_factor=0.8, end_factor=0.05)
    np.testing.assert_allclose(lrs, BASE * (0.8 + (0.05 - 0.8) * np.minimum(T, 200) / 200),
                               rtol=1e-12)


def test_inverse_sqrt_is_continuous_at_the_end_of_the_warm_up() -> None:
    lrs = lrs_of("inverse_sqrt", warmup_steps=100)
    expected = BASE * np.where(T < 100, T / 100, np.sqrt(100 / np.maximum(T, 1)))
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[0].tolist() == [0.0, 0.0, 0.0] and lrs[100].tolist() == list(BASE_LRS)


@pytest.mark.parametrize(("shape", "decay"), [
    ("linear", lambda p: 1 - p),
    ("cosine", lambda p: (1 + np.cos(np.pi * p)) / 2),
    ("sqrt", lambda p: 1 - np.sqrt(p)),
])
def test_warmup_stable_decay_has_three_phases(shape: str, decay: Any) -> None:
    lrs = lrs_of("warmup_stable_decay", warmup_steps=50, decay_steps=150, total_steps=450,
                 decay_shape=shape, min_lr_ratio=0.1)
    p = np.clip((T - 300) / 150, 0, 1)
    factor = np.where(T < 50, 0.1 + 0.9 * T / 50,
                      np.where(T < 300, 1.0, 0.1 + 0.9 * decay(p)))
    np.testing.assert_allclose(lrs, BASE * factor, rtol=1e-12)
    assert (lrs[450:] == BASE * 0.1).all()


def test_chained_decays_multiply() -> None:
    lrs = lrs_of("chained", schedulers=[{"name": "exponential", "gamma": 0.99},
                                        {"name": "step", "step_size": 50, "gamma": 0.5}])
    np.testing.assert_allclose(lrs, BASE * 0.99 ** T * 0.5 ** (T // 50), rtol=1e-10)


def test_sequential_warm_up_then_cosine_follows_both_formulas() -> None:
    lrs = lrs_of("sequential", schedulers=[
        {"name": "linear", "total_iters": 20, "start_factor": 0.1, "end_factor": 1.0},
        {"name": "cosine", "T_max": 480}], milestones=[20])
    expected = np.where(T < 20, BASE * (0.1 + 0.9 * T / 20),
                        BASE * (1 + np.cos(np.pi * (T - 20) / 480)) / 2)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-16)


# ------------------------------------------------------------ transformers, when installed
def test_inverse_sqrt_and_wsd_equal_transformers_when_installed() -> None:
    transformers_optimization = pytest.importorskip("transformers.optimization")
    cases = [
        ("inverse_sqrt", {"warmup_steps": 100},
         lambda o: transformers_optimization.get_inverse_sqrt_schedule(o, 100)),
        ("warmup_stable_decay", {"warmup_steps": 30, "stable_steps": 200, "decay_steps": 150,
                                 "decay_shape": "sqrt", "min_lr_ratio": 0.05},
         lambda o: transformers_optimization.get_wsd_schedule(
             o, 30, 150, num_stable_steps=200, decay_type="1-sqrt", min_lr_ratio=0.05)),
    ]
    for name, hyper, reference in cases:
        groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in BASE_LRS]
        reference_optimizer = torch.optim.SGD(groups)
        expected = run(reference_optimizer, reference(reference_optimizer), STEPS)
        for optimizer in (BareOptimizer(), torch.optim.SGD(copy.deepcopy(groups))):
            assert run(optimizer, optiplug.scheduler(name, optimizer, **hyper), STEPS) == expected


# ----------------------------------------------------------------------- cyclic momentum
def _torch_optimizer(kind: str, **hyper: Any) -> Any:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], "lr": lr}
              for lr in BASE_LRS]
    return (torch.optim.Adam(groups, **hyper) if kind == "adam"
            else torch.optim.SGD(groups, **hyper))


def _numpy_optimizer(kind: str, **hyper: Any) -> Any:
    name = "momentum" if kind == "sgd" else kind
    groups = [{"params": {f"w{i}": np.zeros(2)}, "lr": lr} for i, lr in enumerate(BASE_LRS)]
    return optiplug.optimizer(name, groups, backend="numpy", lr=BASE_LRS[0], **hyper)


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize(("kind", "watch", "hyper"), [
    ("sgd", "momentum", {"momentum": 0.9}),
    ("adam", "betas", {}),
])
@pytest.mark.parametrize("mode", ["triangular", "exp_range"])
def test_cyclic_cycles_momentum_like_torch(backend: str, kind: str, watch: str,
                                           hyper: dict[str, Any], mode: str) -> None:
    settings = {"base_lr": 0.01, "max_lr": [0.4, 0.2, 0.8], "step_size_up": 30,
                "step_size_down": 20, "mode": mode, "gamma": 0.998,
                "base_momentum": [0.8, 0.85, 0.7], "max_momentum": 0.95}
    reference_optimizer = _torch_optimizer(kind, **hyper)
    reference = lr_scheduler.CyclicLR(reference_optimizer, cycle_momentum=True, **settings)
    expected = run(reference_optimizer, reference, STEPS, watch=watch)
    optimizer = (_torch_optimizer(kind, **hyper) if backend == "torch"
                 else _numpy_optimizer(kind, **hyper))
    scheduler = optiplug.scheduler("cyclic", optimizer, cycle_momentum=True, **settings)
    assert run(optimizer, scheduler, STEPS, watch=watch) == expected


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_cyclic_momentum_needs_an_optimizer_with_momentum(backend: str) -> None:
    optimizer = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
                 if backend == "torch" else optiplug.optimizer("sgd", {"w": np.zeros(3)}, lr=0.1))
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.scheduler("cyclic", optimizer, max_lr=0.5, cycle_momentum=True)
    assert [issue.path for issue in caught.value.issues] == ["cycle_momentum"]
    assert optimizer.param_groups[0]["lr"] == 0.1
    assert optimizer.param_groups[0].get("momentum", 0) == 0


@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("field", ["max_lr", "base_lr"])
def test_cyclic_per_group_bounds_must_match_the_groups(backend: str, field: str) -> None:
    optimizer = (_torch_optimizer("sgd") if backend == "torch" else BareOptimizer())
    hyper = {"max_lr": 0.5, field: [0.01, 0.02]}
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.scheduler("cyclic", optimizer, **hyper)
    assert [issue.path for issue in caught.value.issues] == [field]
    assert [group["lr"] for group in optimizer.param_groups] == list(BASE_LRS)


# ------------------------------------------------------------------- declared intervals
DECLARED = {"constant": "epoch", "step": "epoch", "multistep": "epoch", "exponential": "epoch",
            "cosine": "epoch", "polynomial": "epoch", "cosine_restarts": "epoch",
            "linear": "epoch", "reduce_on_plateau": "epoch", "sequential": "epoch",
            "chained": "epoch", "linear_warmup": "batch", "one_cycle": "batch",
            "cyclic": "batch", "inverse_sqrt": "batch", "warmup_stable_decay": "batch"}


def test_every_builtin_scheduler_declares_its_interval() -> None:
    registry = optiplug.registry()
    builtins = {name for name in registry.names("scheduler")
                if registry.get("scheduler", name).origin.distribution == "optiplug"}
    assert builtins == set(DECLARED)
    for name, interval in DECLARED.items():
        spec = registry.get("scheduler", name).spec
        assert spec.interval == interval, name
        assert spec.steps_on_metric == (name == "reduce_on_plateau"), name


@pytest.mark.parametrize(("children", "interval"), [
    ([{"name": "cosine", "T_max": 5}, {"name": "step", "step_size": 2}], "epoch"),
    ([{"name": "linear_warmup"}, {"name": "cosine", "T_max": 5}], "batch"),
    ([{"name": "chained", "schedulers": [{"name": "exponential", "gamma": 0.9},
                                         {"name": "inverse_sqrt", "warmup_steps": 3}]},
      {"name": "cosine", "T_max": 5}], "batch"),
])
def test_a_composite_steps_per_batch_if_any_child_does(children: list[dict[str, Any]],
                                                       interval: str) -> None:
    sequential = optiplug.spec("scheduler", "sequential", schedulers=children,
                               milestones=[4])
    chained = optiplug.spec("scheduler", "chained", schedulers=children)
    assert sequential.step_interval() == chained.step_interval() == interval


def test_show_prints_the_declared_interval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "scheduler", "warmup_stable_decay"]) == 0
    assert "steps: per batch (train.scheduler_interval overrides it)" in capsys.readouterr().out
    assert main(["show", "scheduler", "reduce_on_plateau"]) == 0
    assert "steps: per epoch, with the monitored (validation) metric" in capsys.readouterr().out
    assert main(["show", "scheduler", "chained"]) == 0
    assert "steps: per batch if any child steps per batch, else per epoch" in \
        capsys.readouterr().out
    assert main(["show", "scheduler", "cosine", "--json"]) == 0
    assert '"interval": "epoch"' in capsys.readouterr().out


# ------------------------------------------------------------------------- composition
def test_nested_children_are_specs_that_dump_and_reload() -> None:
    config = {"kind": "scheduler", "name": "sequential", "milestones": [5], "schedulers": [
        {"name": "linear_warmup", "warmup_steps": 5},
        {"name": "chained", "schedulers": [{"name": "exponential", "gamma": 0.9}]}]}
    with pytest.raises(optiplug.ConfigError, match="only the first scheduler"):
        optiplug.to_spec(config)
    config["schedulers"].reverse()
    spec = optiplug.to_spec(config)
    assert [type(child).__name__ for child in spec.schedulers] == ["ChainedSpec",
                                                                   "LinearWarmupSpec"]
    assert optiplug.to_spec(spec.model_dump()) == spec
    assert hash(spec) == hash(optiplug.to_spec(spec.model_dump()))


def test_a_bad_child_leaves_the_optimizer_alone() -> None:
    optimizer = BareOptimizer()
    with pytest.raises(optiplug.ConfigError) as caught:
        optiplug.scheduler("chained", optimizer, schedulers=[
            {"name": "exponential", "gamma": 0.9}, {"name": "step", "step_size": -1}])
    assert [issue.path for issue in caught.value.issues] == ["schedulers.1.step_size"]
    assert optimizer.param_groups == BareOptimizer().param_groups


def test_chained_state_of_another_chain_is_rejected_and_changes_nothing() -> None:
    optimizer = BareOptimizer()
    scheduler = optiplug.scheduler("chained", optimizer, schedulers=[
        {"name": "exponential", "gamma": 0.9}, {"name": "step", "step_size": 3}])
    assert isinstance(scheduler, NumpyChainedScheduler)
    scheduler.step()
    before = scheduler.state_dict()
    other = optiplug.scheduler("chained", BareOptimizer(), schedulers=[
        {"name": "exponential", "gamma": 0.9}])
    with pytest.raises(ValueError, match="_schedulers with 2 entries"):
        scheduler.load_state_dict(other.state_dict())
    broken = scheduler.state_dict()
    del broken["_schedulers"][1]["step_size"]
    with pytest.raises(ValueError, match="step_size"):
        scheduler.load_state_dict(broken)
    assert scheduler.state_dict() == before


# ------------------------------------------------------------------ NumPy lambda scheduler
class Halving:
    def __init__(self, every: int) -> None:
        self.every = every

    def __call__(self, step: int) -> float:
        return 0.5 ** (step // self.every)


def test_lambda_scheduler_equals_torch_lambda_lr_and_saves_factor_objects() -> None:
    numpy_optimizer = BareOptimizer()
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in BASE_LRS]
    torch_optimizer = torch.optim.SGD(groups)
    factors = [Halving(3), Halving(7), lambda step: 1.0 / (1 + step)]
    numpy_scheduler = NumpyLambdaScheduler(numpy_optimizer, factors)
    torch_scheduler = lr_scheduler.LambdaLR(torch_optimizer, factors)
    assert run(numpy_optimizer, numpy_scheduler, 100) == run(torch_optimizer, torch_scheduler,
                                                            100)
    state = numpy_scheduler.state_dict()
    assert state["lr_lambdas"] == [{"every": 3}, {"every": 7}, None]
    torch_state = torch_scheduler.state_dict()
    assert state == {key: value for key, value in torch_state.items()
                     if key != "_get_lr_called_within_step"}

    resumed = NumpyLambdaScheduler(BareOptimizer(), [Halving(1), Halving(1), factors[2]])
    resumed.load_state_dict(state)
    assert [factor.every for factor in resumed.lr_lambdas[:2]] == [3, 7]
    with pytest.raises(ValueError, match="lr_lambdas with 3 entries"):
        resumed.load_state_dict({**state, "lr_lambdas": [None]})
    with pytest.raises(ValueError, match="expected 3 lr_lambdas, got 2"):
        NumpyLambdaScheduler(BareOptimizer(), factors[:2])


# --------------------------------------------------------------------- conformance kit
@pytest.mark.parametrize("name", sorted(DECLARED))
def test_every_builtin_scheduler_passes_the_conformance_kit(name: str) -> None:
    from optiplug.testing import check_technique

    report = check_technique(optiplug.registry().get("scheduler", name))
    assert f"scheduler.{name}::numpy vs torch" in report.passed
    assert f"scheduler.{name}::state_dict[numpy]" in report.passed
