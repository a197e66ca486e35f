"""Every builtin scheduler's learning rates equal torch's scheduler's, bit for bit, for 500 steps.

The reference is always a torch scheduler built directly from ``torch.optim.lr_scheduler``;
optiplug's torch backend, its NumPy backend over a bare object holding ``param_groups``, and
its NumPy backend over a real NumPy optimizer must all reproduce it exactly (``==`` on floats),
with three param groups of different learning rates. State-dict round trips mid-run continue
identically, and torch and NumPy scheduler states load into each other.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest

import optiplug

torch = pytest.importorskip("torch")
lr_scheduler = torch.optim.lr_scheduler

STEPS = 500
BASE_LRS = (0.1, 0.05, 0.3)


class BareOptimizer:
    """The least a NumPy scheduler needs: ``param_groups`` with ``lr`` (plus extra keys)."""

    optiplug_backend = "numpy"

    def __init__(self, lrs: tuple[float, ...] = BASE_LRS, **hyper: Any) -> None:
        self.param_groups = [{"params": [], "lr": lr, **copy.deepcopy(hyper)} for lr in lrs]


def torch_optimizer(lrs: tuple[float, ...] = BASE_LRS, kind: str = "sgd",
                    **hyper: Any) -> Any:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], "lr": lr}
              for lr in lrs]
    if kind == "adam":
        return torch.optim.Adam(groups, **hyper)
    return torch.optim.SGD(groups, **hyper)


def numpy_optimizer(lrs: tuple[float, ...] = BASE_LRS, kind: str = "sgd",
                    **hyper: Any) -> Any:
    """A real NumPy optimizer from the registry (SGD if it is there, else Adam)."""
    names = optiplug.registry().names("optimizer")
    if kind == "sgd" and hyper.get("momentum"):
        kind = "momentum"
    if kind not in names and kind == "sgd" and "adam" in names:
        kind = "adam"
    if kind not in names:
        pytest.skip(f"the NumPy {kind!r} optimizer is not available yet")
    groups = [{"params": {f"w{index}": np.zeros(2)}, "lr": lr} for index, lr in enumerate(lrs)]
    return optiplug.optimizer(kind, groups, backend="numpy", lr=lrs[0], **hyper)


def group_lrs(optimizer: Any) -> list[float]:
    return [group["lr"] for group in optimizer.param_groups]


def run(optimizer: Any, scheduler: Any, steps: int, metrics: list[float] | None = None,
        start: int = 0, watch: str | None = None) -> list[list[Any]]:
    """The group lrs after construction and after every step (plus ``watch`` group values)."""

    def record() -> list[Any]:
        assert list(scheduler.get_last_lr()) == group_lrs(optimizer)
        values = group_lrs(optimizer)
        if watch is not None:
            values += [group[watch] for group in optimizer.param_groups]
        return values

    sequence = [record()] if start == 0 else []
    is_torch = isinstance(optimizer, torch.optim.Optimizer)
    for index in range(start, start + steps):
        if is_torch:
            optimizer.step()  # no gradients: a no-op that keeps torch's call-order check quiet
        if metrics is None:
            scheduler.step()
        else:
            scheduler.step(metrics[index])
        sequence.append(record())
    return sequence


Reference = Callable[[Any], Any]


def transformers_inverse_sqrt(step: int, *, num_warmup_steps: int, timescale: int) -> float:
    """transformers' ``_get_inverse_sqrt_schedule_lr_lambda``, as published (torch lacks it)."""
    if step < num_warmup_steps:
        return float(step) / float(max(1, num_warmup_steps))
    shift = timescale - num_warmup_steps
    return 1.0 / math.sqrt((step + shift) / timescale)


def transformers_wsd(step: int, *, num_warmup_steps: int, num_stable_steps: int,
                     num_decay_steps: int, warmup_type: str, decay_type: str,
                     min_lr_ratio: float, num_cycles: float = 0.5) -> float:
    """transformers' ``_get_wsd_scheduler_lambda``, as published (torch lacks WSD)."""
    if step < num_warmup_steps:
        progress = float(step) / float(max(1, num_warmup_steps))
        if warmup_type == "linear":
            factor = progress
        elif warmup_type == "cosine":
            factor = 0.5 * (1.0 - math.cos(math.pi * progress))
        elif warmup_type == "1-sqrt":
            factor = 1.0 - math.sqrt(1.0 - progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    if step < num_warmup_steps + num_stable_steps:
        return 1.0
    if step < num_warmup_steps + num_stable_steps + num_decay_steps:
        progress = float(step - num_warmup_steps - num_stable_steps) / float(
            max(1, num_decay_steps))
        if decay_type == "linear":
            factor = 1.0 - progress
        elif decay_type == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * float(num_cycles) * 2.0 * progress))
        elif decay_type == "1-sqrt":
            factor = 1.0 - math.sqrt(progress)
        factor = factor * (1.0 - min_lr_ratio) + min_lr_ratio
        return max(0.0, factor)
    return min_lr_ratio


def lambda_lr(function: Callable[..., float], **settings: Any) -> Reference:
    return lambda o: lr_scheduler.LambdaLR(o, partial(function, **settings))


CASES: list[tuple[str, dict[str, Any], Reference]] = [
    ("constant", {}, lambda o: lr_scheduler.ConstantLR(o, factor=1.0, total_iters=0)),
    ("constant", {"factor": 0.25, "total_iters": 40},
     lambda o: lr_scheduler.ConstantLR(o, factor=0.25, total_iters=40)),
    ("constant", {"factor": 1 / 3, "total_iters": 7},
     lambda o: lr_scheduler.ConstantLR(o, factor=1 / 3, total_iters=7)),
    ("step", {"step_size": 30}, lambda o: lr_scheduler.StepLR(o, step_size=30)),
    ("step", {"step_size": 7, "gamma": 0.9}, lambda o: lr_scheduler.StepLR(o, 7, gamma=0.9)),
    ("step", {"step_size": 1, "gamma": 0.99}, lambda o: lr_scheduler.StepLR(o, 1, gamma=0.99)),
    ("multistep", {"milestones": [50, 120, 300]},
     lambda o: lr_scheduler.MultiStepLR(o, milestones=[50, 120, 300])),
    ("multistep", {"milestones": [1, 2, 499], "gamma": 0.5},
     lambda o: lr_scheduler.MultiStepLR(o, milestones=[1, 2, 499], gamma=0.5)),
    ("exponential", {"gamma": 0.99}, lambda o: lr_scheduler.ExponentialLR(o, gamma=0.99)),
    ("exponential", {"gamma": 0.9}, lambda o: lr_scheduler.ExponentialLR(o, gamma=0.9)),
    ("exponential", {"gamma": 1.0}, lambda o: lr_scheduler.ExponentialLR(o, gamma=1.0)),
    ("cosine", {"T_max": 500}, lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=500)),
    ("cosine", {"T_max": 100, "eta_min": 0.001},
     lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=100, eta_min=0.001)),
    ("cosine", {"T_max": 37, "eta_min": 0.01},
     lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=37, eta_min=0.01)),
    ("cosine", {"T_max": 1}, lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=1)),
    ("cosine", {"T_max": 400, "warmup_steps": 100},
     lambda o: lr_scheduler.SequentialLR(o, [
         lr_scheduler.LinearLR(o, start_factor=1 / 3, total_iters=100),
         lr_scheduler.CosineAnnealingLR(o, T_max=400)], milestones=[100])),
    ("cosine", {"T_max": 45, "eta_min": 0.002, "warmup_steps": 1, "warmup_start_factor": 0.01},
     lambda o: lr_scheduler.SequentialLR(o, [
         lr_scheduler.LinearLR(o, start_factor=0.01, total_iters=1),
         lr_scheduler.CosineAnnealingLR(o, T_max=45, eta_min=0.002)], milestones=[1])),
    ("linear_warmup", {}, lambda o: lr_scheduler.LinearLR(o)),
    ("linear_warmup", {"warmup_steps": 100, "start_factor": 0.001},
     lambda o: lr_scheduler.LinearLR(o, start_factor=0.001, total_iters=100)),
    ("linear_warmup", {"warmup_steps": 1, "start_factor": 0.5},
     lambda o: lr_scheduler.LinearLR(o, start_factor=0.5, total_iters=1)),
    ("linear_warmup", {"warmup_steps": 0},
     lambda o: lr_scheduler.LambdaLR(o, lambda step: 1.0)),
    ("one_cycle", {"max_lr": 0.5, "total_steps": 500},
     lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.5, total_steps=500, cycle_momentum=False)),
    ("one_cycle", {"max_lr": [0.5, 1.0, 0.2], "epochs": 25, "steps_per_epoch": 20,
                   "anneal_strategy": "linear"},
     lambda o: lr_scheduler.OneCycleLR(o, max_lr=[0.5, 1.0, 0.2], epochs=25,
                                       steps_per_epoch=20, anneal_strategy="linear",
                                       cycle_momentum=False)),
    ("one_cycle", {"max_lr": 0.3, "total_steps": 600, "three_phase": True, "pct_start": 0.25,
                   "div_factor": 10.0, "final_div_factor": 100.0},
     lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.3, total_steps=600, three_phase=True,
                                       pct_start=0.25, div_factor=10.0, final_div_factor=100.0,
                                       cycle_momentum=False)),
    ("one_cycle", {"max_lr": 0.1, "total_steps": 500, "pct_start": 0.0},
     lambda o: lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=500, pct_start=0.0,
                                       cycle_momentum=False)),
    ("polynomial", {"total_iters": 300}, lambda o: lr_scheduler.PolynomialLR(o, total_iters=300)),
    ("polynomial", {"total_iters": 100, "power": 0.9},
     lambda o: lr_scheduler.PolynomialLR(o, total_iters=100, power=0.9)),
    ("polynomial", {"total_iters": 1, "power": 2.0},
     lambda o: lr_scheduler.PolynomialLR(o, total_iters=1, power=2.0)),
    ("cosine_restarts", {"T_0": 50},
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=50)),
    ("cosine_restarts", {"T_0": 10, "T_mult": 2, "eta_min": 0.001},
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=0.001)),
    ("cosine_restarts", {"T_0": 7, "T_mult": 3},
     lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=7, T_mult=3)),
    ("cosine_restarts", {"T_0": 1}, lambda o: lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=1)),
    ("cyclic", {"max_lr": 1.0, "step_size_up": 40},
     lambda o: lr_scheduler.CyclicLR(o, base_lr=list(BASE_LRS), max_lr=1.0, step_size_up=40,
                                     cycle_momentum=False)),
    ("cyclic", {"base_lr": 0.01, "max_lr": [0.5, 0.2, 0.9], "step_size_up": 30,
                "step_size_down": 70, "mode": "triangular2"},
     lambda o: lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=[0.5, 0.2, 0.9], step_size_up=30,
                                     step_size_down=70, mode="triangular2",
                                     cycle_momentum=False)),
    ("cyclic", {"base_lr": [0.01, 0.02, 0.03], "max_lr": 0.6, "step_size_up": 25,
                "mode": "exp_range", "gamma": 0.995},
     lambda o: lr_scheduler.CyclicLR(o, base_lr=[0.01, 0.02, 0.03], max_lr=0.6,
                                     step_size_up=25, mode="exp_range", gamma=0.995,
                                     cycle_momentum=False)),
    ("cyclic", {"base_lr": 0.05, "max_lr": 0.4, "step_size_up": 1, "step_size_down": 3},
     lambda o: lr_scheduler.CyclicLR(o, base_lr=0.05, max_lr=0.4, step_size_up=1,
                                     step_size_down=3, cycle_momentum=False)),
    ("linear", {"total_iters": 400}, lambda o: lr_scheduler.LinearLR(
        o, start_factor=1.0, end_factor=0.0, total_iters=400)),
    ("linear", {"total_iters": 100, "start_factor": 0.5, "end_factor": 0.1},
     lambda o: lr_scheduler.LinearLR(o, start_factor=0.5, end_factor=0.1, total_iters=100)),
    ("linear", {"total_iters": 1, "start_factor": 0.2, "end_factor": 1.0},
     lambda o: lr_scheduler.LinearLR(o, start_factor=0.2, end_factor=1.0, total_iters=1)),
    ("sequential", {"schedulers": [{"name": "linear_warmup", "warmup_steps": 5,
                                    "start_factor": 0.1}, {"name": "cosine", "T_max": 95}],
                    "milestones": [5]},
     lambda o: lr_scheduler.SequentialLR(o, [
         lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5),
         lr_scheduler.CosineAnnealingLR(o, T_max=95)], milestones=[5])),
    ("sequential", {"schedulers": [
        {"name": "constant", "factor": 0.5, "total_iters": 10},
        {"name": "exponential", "gamma": 0.99},
        {"name": "cosine_restarts", "T_0": 30, "T_mult": 2},
        {"name": "cyclic", "base_lr": 0.01, "max_lr": 0.2, "step_size_up": 20}],
        "milestones": [50, 200, 420]},
     lambda o: lr_scheduler.SequentialLR(o, [
         lr_scheduler.ConstantLR(o, factor=0.5, total_iters=10),
         lr_scheduler.ExponentialLR(o, gamma=0.99),
         lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=30, T_mult=2),
         lr_scheduler.CyclicLR(o, base_lr=0.01, max_lr=0.2, step_size_up=20,
                               cycle_momentum=False)], milestones=[50, 200, 420])),
    ("sequential", {"schedulers": [
        {"name": "chained", "schedulers": [{"name": "exponential", "gamma": 0.98},
                                           {"name": "step", "step_size": 9, "gamma": 0.8}]},
        {"name": "polynomial", "total_iters": 150, "power": 2.0}], "milestones": [100]},
     lambda o: lr_scheduler.SequentialLR(o, [
         lr_scheduler.ChainedScheduler([lr_scheduler.ExponentialLR(o, gamma=0.98),
                                        lr_scheduler.StepLR(o, step_size=9, gamma=0.8)], o),
         lr_scheduler.PolynomialLR(o, total_iters=150, power=2.0)], milestones=[100])),
    ("chained", {"schedulers": [{"name": "exponential", "gamma": 0.99},
                                {"name": "step", "step_size": 50, "gamma": 0.5}]},
     lambda o: lr_scheduler.ChainedScheduler([
         lr_scheduler.ExponentialLR(o, gamma=0.99),
         lr_scheduler.StepLR(o, step_size=50, gamma=0.5)], o)),
    ("chained", {"schedulers": [{"name": "linear_warmup", "warmup_steps": 20},
                                {"name": "cosine", "T_max": 480, "eta_min": 0.001},
                                {"name": "multistep", "milestones": [100, 300]}]},
     lambda o: lr_scheduler.ChainedScheduler([
         lr_scheduler.LinearLR(o, total_iters=20),
         lr_scheduler.CosineAnnealingLR(o, T_max=480, eta_min=0.001),
         lr_scheduler.MultiStepLR(o, milestones=[100, 300])], o)),
    ("chained", {"schedulers": [{"name": "polynomial", "total_iters": 600, "power": 0.5}]},
     lambda o: lr_scheduler.ChainedScheduler([
         lr_scheduler.PolynomialLR(o, total_iters=600, power=0.5)], o)),
    ("inverse_sqrt", {"warmup_steps": 100},
     lambda_lr(transformers_inverse_sqrt, num_warmup_steps=100, timescale=100)),
    ("inverse_sqrt", {"warmup_steps": 0},
     lambda_lr(transformers_inverse_sqrt, num_warmup_steps=0, timescale=10_000)),
    ("inverse_sqrt", {"warmup_steps": 40, "timescale": 250},
     lambda_lr(transformers_inverse_sqrt, num_warmup_steps=40, timescale=250)),
    ("warmup_stable_decay", {"warmup_steps": 50, "stable_steps": 300, "decay_steps": 100},
     lambda_lr(transformers_wsd, num_warmup_steps=50, num_stable_steps=300,
               num_decay_steps=100, warmup_type="linear", decay_type="cosine",
               min_lr_ratio=0.0)),
    ("warmup_stable_decay", {"warmup_steps": 20, "decay_steps": 200, "total_steps": 400,
                             "warmup_shape": "cosine", "decay_shape": "sqrt",
                             "min_lr_ratio": 0.1},
     lambda_lr(transformers_wsd, num_warmup_steps=20, num_stable_steps=180,
               num_decay_steps=200, warmup_type="cosine", decay_type="1-sqrt",
               min_lr_ratio=0.1)),
    ("warmup_stable_decay", {"warmup_steps": 10, "stable_steps": 0, "decay_steps": 333,
                             "warmup_shape": "sqrt", "decay_shape": "linear",
                             "min_lr_ratio": 0.02},
     lambda_lr(transformers_wsd, num_warmup_steps=10, num_stable_steps=0,
               num_decay_steps=333, warmup_type="1-sqrt", decay_type="linear",
               min_lr_ratio=0.02)),
]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in hyper.items()) or 'defaults'}"
            for name, hyper, _ in CASES]
BACKENDS = ["torch", "numpy-bare", "numpy"]


def make_optimizer(backend: str, lrs: tuple[float, ...] = BASE_LRS, kind: str = "sgd",
                   **hyper: Any) -> Any:
    if backend == "torch":
        return torch_optimizer(lrs, kind, **hyper)
    if backend == "numpy-bare":
        extra = {"betas": (0.9, 0.999)} if kind == "adam" else {}
        return BareOptimizer(lrs, **extra, **hyper)
    return numpy_optimizer(lrs, kind, **hyper)


@pytest.fixture(scope="module")
def torch_sequences() -> dict[int, list[list[float]]]:
    sequences = {}
    for index, (_, _, reference) in enumerate(CASES):
        optimizer = torch_optimizer()
        sequences[index] = run(optimizer, reference(optimizer), STEPS)
    return sequences


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_scheduler_lrs_equal_torch_for_500_steps(case: int, backend: str,
                                                 torch_sequences: dict[int, Any]) -> None:
    name, hyper, _ = CASES[case]
    optimizer = make_optimizer(backend)
    scheduler = optiplug.scheduler(name, optimizer, **hyper)
    expected_type = lr_scheduler.LRScheduler if backend == "torch" else \
        optiplug.backends.numpy.NumpyScheduler
    assert isinstance(scheduler, expected_type)
    assert run(optimizer, scheduler, STEPS) == torch_sequences[case]


def plateau_metrics(mode: str, seed: int) -> list[float]:
    """A noisy loss that improves in bursts and stalls in between (accuracy-like if max)."""
    rng = np.random.default_rng(seed)
    trend = np.cumsum(np.where(rng.random(STEPS) < 0.3, rng.exponential(0.02, STEPS), 0.0))
    loss = 2.0 * np.exp(-trend) + 0.01 * rng.standard_normal(STEPS)
    loss[200:260] = loss[199]  # an exact plateau: ties are not improvements
    return [float(v) for v in (loss if mode == "min" else 1.0 - loss)]


PLATEAU_CASES: list[dict[str, Any]] = [
    {},
    {"patience": 0},
    {"patience": 3, "factor": 0.5, "cooldown": 2},
    {"mode": "max", "patience": 4, "factor": 0.7, "threshold": 1e-3},
    {"mode": "max", "patience": 2, "threshold_mode": "abs", "threshold": 0.005, "cooldown": 5},
    {"patience": 1, "threshold_mode": "abs", "threshold": 0.0, "min_lr": 0.004},
    {"patience": 2, "factor": 0.3, "min_lr": [0.01, 0.0, 0.05], "eps": 1e-3},
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hyper", PLATEAU_CASES, ids=[str(h) for h in PLATEAU_CASES])
def test_reduce_on_plateau_equals_torch_for_500_steps(hyper: dict[str, Any],
                                                      backend: str) -> None:
    metrics = plateau_metrics(hyper.get("mode", "min"), seed=len(str(hyper)))
    reference_optimizer = torch_optimizer()
    reference = lr_scheduler.ReduceLROnPlateau(reference_optimizer, **hyper)
    expected = run(reference_optimizer, reference, STEPS, metrics)
    optimizer = make_optimizer(backend)
    scheduler = optiplug.scheduler("reduce_on_plateau", optimizer, **hyper)
    assert run(optimizer, scheduler, STEPS, metrics) == expected
    assert len({tuple(lrs) for lrs in expected}) > 2, "the metric series must trigger cuts"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("kind", "watch", "hyper"), [
    ("sgd", "momentum", {"momentum": 0.9}),
    ("adam", "betas", {}),
])
@pytest.mark.parametrize("three_phase", [False, True])
def test_one_cycle_cycles_momentum_like_torch(backend: str, kind: str, watch: str,
                                              hyper: dict[str, Any], three_phase: bool) -> None:
    settings = {"max_lr": [0.4, 0.2, 0.8], "total_steps": 500, "three_phase": three_phase,
                "base_momentum": [0.8, 0.85, 0.7], "max_momentum": 0.95}
    reference_optimizer = torch_optimizer(kind=kind, **hyper)
    reference = lr_scheduler.OneCycleLR(reference_optimizer, **settings)
    expected = run(reference_optimizer, reference, STEPS, watch=watch)
    optimizer = make_optimizer(backend, kind=kind, **hyper)
    scheduler = optiplug.scheduler("one_cycle", optimizer, cycle_momentum=True, **settings)
    assert run(optimizer, scheduler, STEPS, watch=watch) == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_cycle_refuses_to_step_past_total_steps(backend: str) -> None:
    optimizer = make_optimizer(backend)
    scheduler = optiplug.scheduler("one_cycle", optimizer, max_lr=0.5, total_steps=20)
    run(optimizer, scheduler, 20)
    with pytest.raises(ValueError, match="Tried to step 21 times"):
        scheduler.step()


# ------------------------------------------------------------------- formulas (second reference)
def test_cosine_follows_the_closed_form_over_the_half_period() -> None:
    optimizer = BareOptimizer()
    scheduler = optiplug.scheduler("cosine", optimizer, T_max=300, eta_min=0.001)
    lrs = np.array(run(optimizer, scheduler, 300))
    t = np.arange(301)[:, None]
    closed = 0.001 + (np.array(BASE_LRS) - 0.001) * (1 + np.cos(np.pi * t / 300)) / 2
    np.testing.assert_allclose(lrs, closed, rtol=1e-12, atol=1e-15)


def test_cosine_warmup_ramps_linearly_then_follows_the_cosine() -> None:
    optimizer = BareOptimizer()
    scheduler = optiplug.scheduler("cosine", optimizer, T_max=200, warmup_steps=50,
                                   warmup_start_factor=0.1)
    lrs = np.array(run(optimizer, scheduler, 250))
    base = np.array(BASE_LRS)
    t = np.arange(251)[:, None]
    warm = base * (0.1 + 0.9 * np.minimum(t, 50) / 50)
    cosine = base * (1 + np.cos(np.pi * (t - 50) / 200)) / 2
    np.testing.assert_allclose(lrs, np.where(t < 50, warm, cosine), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(("name", "hyper", "formula"), [
    ("step", {"step_size": 7, "gamma": 0.9}, lambda t: 0.9 ** (t // 7)),
    ("multistep", {"milestones": [50, 120, 300], "gamma": 0.5},
     lambda t: 0.5 ** np.searchsorted([50, 120, 300], t, side="right")),
    ("exponential", {"gamma": 0.99}, lambda t: 0.99 ** t),
    ("constant", {"factor": 0.25, "total_iters": 40}, lambda t: np.where(t < 40, 0.25, 1.0)),
    ("linear_warmup", {"warmup_steps": 100, "start_factor": 0.001},
     lambda t: 0.001 + 0.999 * np.minimum(t, 100) / 100),
])
def test_chainable_schedules_follow_their_closed_forms(name: str, hyper: dict[str, Any],
                                                       formula: Callable[[Any], Any]) -> None:
    optimizer = BareOptimizer()
    lrs = np.array(run(optimizer, optiplug.scheduler(name, optimizer, **hyper), STEPS))
    t = np.arange(STEPS + 1)[:, None]
    np.testing.assert_allclose(lrs, np.array(BASE_LRS) * formula(t), rtol=1e-12)


def test_one_cycle_follows_the_paper_shape() -> None:
    optimizer = BareOptimizer()
    scheduler = optiplug.scheduler("one_cycle", optimizer, max_lr=1.0, total_steps=100,
                                   pct_start=0.25, anneal_strategy="linear", div_factor=10.0,
                                   final_div_factor=100.0)
    lrs = np.array(run(optimizer, scheduler, 99))[:, 0]
    t = np.arange(100)
    # Up from max_lr / 10 to max_lr at step 24, down to max_lr / 10 / 100 at the last step.
    expected = np.where(t <= 24, 0.1 + 0.9 * t / 24, 1.0 + (0.001 - 1.0) * (t - 24) / 75)
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs.max() == 1.0 and lrs[-1] == pytest.approx(0.001, rel=1e-12)


# --------------------------------------------------------------------------------- state dicts
def save_optimizer(optimizer: Any) -> Any:
    if isinstance(optimizer, BareOptimizer):
        return copy.deepcopy(optimizer.param_groups)
    return optimizer.state_dict()


def load_optimizer(optimizer: Any, state: Any) -> None:
    if isinstance(optimizer, BareOptimizer):
        for group, saved in zip(optimizer.param_groups, state, strict=True):
            group.update(copy.deepcopy(saved))
    else:
        optimizer.load_state_dict(state)


ROUND_TRIP = [*((name, hyper, None) for name, hyper, _ in CASES),
              *(("reduce_on_plateau", hyper, "min") for hyper in PLATEAU_CASES[2:4])]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("split", [1, 137])
@pytest.mark.parametrize(("name", "hyper", "metric_mode"), ROUND_TRIP,
                         ids=[f"{n}-{h}" for n, h, _ in ROUND_TRIP])
def test_state_dict_round_trip_mid_run_continues_identically(
        name: str, hyper: dict[str, Any], metric_mode: str | None, split: int,
        backend: str) -> None:
    metrics = plateau_metrics(hyper.get("mode", "min"), 0) if metric_mode else None
    optimizer = make_optimizer(backend)
    scheduler = optiplug.scheduler(name, optimizer, **hyper)
    uninterrupted = run(optimizer, scheduler, STEPS, metrics)

    optimizer = make_optimizer(backend)
    scheduler = optiplug.scheduler(name, optimizer, **hyper)
    run(optimizer, scheduler, split, metrics)
    saved = pickle.dumps((save_optimizer(optimizer), scheduler.state_dict()))
    optimizer_state, scheduler_state = pickle.loads(saved)
    resumed_optimizer = make_optimizer(backend)
    resumed = optiplug.scheduler(name, resumed_optimizer, **hyper)
    load_optimizer(resumed_optimizer, optimizer_state)
    resumed.load_state_dict(scheduler_state)
    continued = run(resumed_optimizer, resumed, STEPS - split, metrics, start=split)
    assert continued == uninterrupted[split + 1:]


CROSS = [("step", {"step_size": 7, "gamma": 0.9}), ("multistep", {"milestones": [5, 90]}),
         ("cosine", {"T_max": 100, "warmup_steps": 20}), ("cosine", {"T_max": 30}),
         ("one_cycle", {"max_lr": 0.5, "total_steps": 500, "three_phase": True}),
         ("exponential", {"gamma": 0.98}), ("constant", {"factor": 0.5, "total_iters": 150}),
         ("linear_warmup", {"warmup_steps": 200}), ("reduce_on_plateau", {"patience": 2}),
         ("polynomial", {"total_iters": 300, "power": 0.9}),
         ("cosine_restarts", {"T_0": 10, "T_mult": 2}),
         ("cyclic", {"max_lr": 0.9, "step_size_up": 30, "mode": "triangular2"}),
         ("cyclic", {"max_lr": 0.9, "step_size_up": 30, "mode": "exp_range", "gamma": 0.99}),
         ("linear", {"total_iters": 300, "end_factor": 0.05}),
         ("inverse_sqrt", {"warmup_steps": 50}),
         ("warmup_stable_decay", {"warmup_steps": 50, "stable_steps": 200, "decay_steps": 150}),
         ("sequential", {"schedulers": [{"name": "linear", "total_iters": 80},
                                        {"name": "cosine_restarts", "T_0": 40}],
                         "milestones": [90]}),
         ("chained", {"schedulers": [{"name": "exponential", "gamma": 0.99},
                                     {"name": "step", "step_size": 50}]})]


@pytest.mark.parametrize("direction", ["torch-to-numpy", "numpy-to-torch"])
@pytest.mark.parametrize(("name", "hyper"), CROSS, ids=[name for name, _ in CROSS])
def test_state_dicts_load_across_backends(name: str, hyper: dict[str, Any],
                                          direction: str) -> None:
    metrics = plateau_metrics("min", 1) if name == "reduce_on_plateau" else None
    source, target = (("torch", "numpy-bare") if direction == "torch-to-numpy"
                      else ("numpy-bare", "torch"))
    reference_optimizer = make_optimizer(source)
    reference = optiplug.scheduler(name, reference_optimizer, **hyper)
    run(reference_optimizer, reference, 120, metrics)
    state = copy.deepcopy(reference.state_dict())
    groups = copy.deepcopy([{k: v for k, v in group.items() if k != "params"}
                            for group in reference_optimizer.param_groups])
    expected = run(reference_optimizer, reference, STEPS - 120, metrics, start=120)

    optimizer = make_optimizer(target)
    scheduler = optiplug.scheduler(name, optimizer, **hyper)
    for group, saved in zip(optimizer.param_groups, groups, strict=True):
        group.update({key: value for key, value in saved.items() if key in group})
    scheduler.load_state_dict(state)
    assert run(optimizer, scheduler, STEPS - 120, metrics, start=120) == expected
