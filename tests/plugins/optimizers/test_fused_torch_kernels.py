"""The fused kernels of the optimizers torch lacks, on both backends.

On the torch backend, CPU tensors run the plugin's NumPy fused kernel in place (numba engine)
and anything else the multi-tensor foreach chain (``OPTIPLUG_NUMPY_KERNELS=numpy``, CUDA): the
two must follow the same trajectory (float64, 1e-12) through several param groups, ``None``
gradients on some steps (the first ones included), weight decay and each option that selects
another variant. On the NumPy backend the fused kernel must give the bits of the ufunc chain.
The foreach chain itself is checked against pytorch_optimizer and the papers in
test_paper_optimizers.py, test_schedule_free.py and test_catalogue_optimizers.py.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import fused_kernel

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                       reason="numba is not installed (pip install 'optiplug[fast]')"),
]

# name -> variants (hyperparameters of both groups; the second group overrides lr and decay)
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "lion": [{"lr": 3e-3, "betas": (0.8, 0.95), "weight_decay": 0.3}],
    "lamb": [{"lr": 2e-2, "weight_decay": 0.05, "max_weight_norm": 3.0},
             {"lr": 2e-2, "bias_correction": False}],
    "lars": [{"lr": 0.5, "weight_decay": 1e-2, "trust_coefficient": 0.02},
             {"lr": 0.5, "exclude_1d": False, "trust_coefficient": 0.02}],
    "adan": [{"lr": 1e-2, "betas": (0.9, 0.85, 0.95), "weight_decay": 0.02}],
    "adopt": [{"lr": 1e-2, "weight_decay": 0.01},
              {"lr": 1e-2, "weight_decay": 0.01, "decoupled": True, "clip_exponent": None}],
    "adabelief": [{"lr": 1e-2, "weight_decay": 0.1},
                  {"lr": 1e-2, "weight_decay": 0.1, "decoupled": False}],
    "schedule_free_adamw": [{"lr": 1e-2, "weight_decay": 0.05, "warmup_steps": 3, "r": 0.5}],
    "schedule_free_sgd": [{"lr": 0.1, "weight_decay": 0.05, "warmup_steps": 3}],
    "yogi": [{"lr": 1e-2, "weight_decay": 0.1}, {"lr": 1e-2, "weight_decay": 0.1,
                                                  "decoupled": False}],
    "sgdw": [{"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.1},
             {"lr": 1e-2, "momentum": 0.9, "nesterov": True},
             {"lr": 1e-2, "momentum": 0.9, "dampening": 0.3}, {"lr": 1e-2}],
}
CASES = [(name, hyper) for name, variants in VARIANTS.items() for hyper in variants]
IDS = [name + "".join(f"-{k}={v}" for k, v in hyper.items() if k != "lr")
       for name, hyper in CASES]
SHAPES = {"w1": (40, 30), "b1": (40,), "w2": (3, 40), "b2": (3,)}
NO_GRAD = {"b1": {0, 2}, "w2": {1}, "b2": {4}}
STEPS = 7


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Set ``OPTIPLUG_NUMPY_KERNELS`` for the optimizers built next."""
    def choose(value: str) -> None:
        monkeypatch.setenv("OPTIPLUG_NUMPY_KERNELS", value)
    yield choose


def torch_trajectory(name: str, hyper: dict[str, Any], kernels: str, engine: Any,
                     threads: int = 1) -> list[dict[str, NDArray[Any]]]:
    engine("numpy" if kernels == "foreach" else "numba")
    rng = np.random.default_rng(0)
    params = {n: torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s)))
              for n, s in SHAPES.items()}
    groups = [{"params": {n: params[n] for n in ("w1", "b1")}},
              {"params": {n: params[n] for n in ("w2", "b2")}, "lr": hyper["lr"] / 3,
               "weight_decay": 0.0}]
    opt = optiplug.optimizer(name, groups, backend="torch", **hyper)
    assert opt.kernels == kernels
    grads = np.random.default_rng(1)
    trajectory = []
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for step in range(STEPS):
            for n, p in params.items():
                g = grads.standard_normal(p.shape)
                p.grad = None if step in NO_GRAD.get(n, ()) else torch.from_numpy(g)
            opt.step()
            trajectory.append({n: p.detach().numpy().copy() for n, p in params.items()})
    finally:
        torch.set_num_threads(previous)
    if hasattr(opt, "eval"):
        opt.eval()  # schedule-free: the averaged weights too
        trajectory.append({n: p.detach().numpy().copy() for n, p in params.items()})
    return trajectory


@pytest.mark.parametrize(("name", "hyper"), CASES, ids=IDS)
def test_cpu_fused_kernel_follows_the_foreach_trajectory(name: str, hyper: dict[str, Any],
                                                         engine: Any) -> None:
    fused = torch_trajectory(name, hyper, "numba", engine)
    foreach = torch_trajectory(name, hyper, "foreach", engine)
    for step, (got, want) in enumerate(zip(fused, foreach, strict=True)):
        for n in SHAPES:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name}: {n} after step {step + 1}")


@pytest.mark.parametrize("name", ["lamb", "adan"])
def test_cpu_fused_kernel_split_between_threads_matches_one_thread(name: str,
                                                                   engine: Any) -> None:
    # w1 is 1200 elements: below the parallel threshold, so lower it to split every tensor.
    from optiplug.backends import _torch_kernels

    hyper = VARIANTS[name][0]
    one = torch_trajectory(name, hyper, "numba", engine, threads=1)
    threshold = _torch_kernels.KERNEL_PARALLEL_MIN
    _torch_kernels.KERNEL_PARALLEL_MIN = 0  # type: ignore[misc]
    try:
        two = torch_trajectory(name, hyper, "numba", engine, threads=2)
    finally:
        _torch_kernels.KERNEL_PARALLEL_MIN = threshold  # type: ignore[misc]
    for got, want in zip(two, one, strict=True):
        for n in SHAPES:
            # Elementwise kernels give the same bits; LAMB's norms are summed in two pieces.
            np.testing.assert_allclose(got[n], want[n], rtol=1e-14, atol=1e-15)


def numpy_run(name: str, hyper: dict[str, Any], kernels: str, dtype: Any,
              engine: Any) -> dict[str, NDArray[Any]]:
    engine(kernels)
    rng = np.random.default_rng(0)
    # One tensor split between two threads, small ones packed together.
    shapes = {"big": (300, 400), **SHAPES}
    params = {n: rng.standard_normal(s).astype(dtype) for n, s in shapes.items()}
    opt = optiplug.optimizer(name, params, backend="numpy", **hyper)
    assert opt.kernels == kernels
    opt.threads = 2
    grads = np.random.default_rng(1)
    for step in range(5):
        g = {n: grads.standard_normal(p.shape).astype(dtype) for n, p in params.items()
             if step not in NO_GRAD.get(n, ())}
        if step == 3:
            g["w1"][2, 3] = np.nan  # a bad gradient propagates the same way
        opt.step(g)
    return params


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the NaN step, on purpose
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(("name", "hyper"), CASES, ids=IDS)
def test_numpy_fused_kernel_gives_the_bits_of_the_ufunc_path(name: str, hyper: dict[str, Any],
                                                              dtype: Any, engine: Any) -> None:
    fused = numpy_run(name, hyper, "numba", dtype, engine)
    ufuncs = numpy_run(name, hyper, "numpy", dtype, engine)
    for n, value in ufuncs.items():
        np.testing.assert_array_equal(fused[n], value, err_msg=f"{name}: {n}", strict=True)


def test_float32_fused_path_matches_the_foreach_path(engine: Any) -> None:
    results = {}
    for kernels in ("numba", "foreach"):
        engine("numpy" if kernels == "foreach" else "numba")
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(),
                                    torch.nn.Linear(16, 1))
        opt = optiplug.optimizer("adan", model, lr=1e-2, weight_decay=0.01)
        assert opt.kernels == kernels
        data = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 6, generator=data), torch.randn(32, 1, generator=data)
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
        results[kernels] = [p.detach().clone() for p in model.parameters()]
    for got, want in zip(results["numba"], results["foreach"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_config_file_to_training_to_checkpoint_resumes_on_the_other_path(
        tmp_path: Any, engine: Any) -> None:
    """A user's way in: a YAML config builds the optimizer over a module; training runs on the
    fused path; its checkpoint resumes on the foreach path (as on a GPU machine) and the run
    continues exactly as an uninterrupted one."""
    config = tmp_path / "optim.yaml"
    config.write_text("optimizer:\n  name: lamb\n  lr: 0.02\n  weight_decay: 0.01\n")
    data = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 5, generator=data, dtype=torch.float64), torch.randn(
        64, 1, generator=data, dtype=torch.float64)

    def model() -> Any:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(),
                                   torch.nn.Linear(8, 1)).double()

    def train(net: Any, opt: Any, steps: int) -> None:
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(x), y).backward()
            opt.step()

    engine("numba")
    whole = model()
    whole_opt = optiplug.build(config, params=whole)
    assert whole_opt.kernels == "numba"
    train(whole, whole_opt, 12)

    first = model()
    first_opt = optiplug.build(config, params=first)
    train(first, first_opt, 6)
    torch.save({"model": first.state_dict(), "optimizer": first_opt.state_dict()},
               tmp_path / "ckpt.pt")
    engine("numpy")
    resumed = model()
    resumed_opt = optiplug.build(config, params=resumed)
    assert resumed_opt.kernels == "foreach"
    saved = torch.load(tmp_path / "ckpt.pt")
    resumed.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["optimizer"])
    train(resumed, resumed_opt, 6)
    for got, want in zip(resumed.parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_tensors_the_kernel_cannot_take_keep_the_foreach_path(engine: Any) -> None:
    from optiplug.backends.torch import kernel_ready

    engine("numba")
    base = torch.zeros(4, 3, dtype=torch.float64)
    assert kernel_ready([base, torch.ones(5, dtype=torch.float64)])
    assert not kernel_ready([base.t()])  # not contiguous
    assert not kernel_ready([base, base.float()])  # mixed dtypes
    assert not kernel_ready([base.to(torch.bfloat16)])
    assert not kernel_ready([torch.zeros(3, device="meta")])  # not on the CPU
    assert not kernel_ready([base.to_sparse()])
    assert not kernel_ready([])
    # A transposed parameter sends its bucket down the foreach chain: same numbers.
    results = []
    for value in ("numba", "numpy"):
        engine(value)
        weight = torch.nn.Parameter(torch.arange(12.0, dtype=torch.float64).reshape(3, 4).t())
        opt = optiplug.optimizer("adan", {"w": weight}, lr=0.1)
        for step in range(3):
            weight.grad = torch.full_like(weight, 0.5 * step - 0.3).t().contiguous().t()
            opt.step()
        results.append(weight.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)


@fused_kernel
def _scaled_step(param: NDArray[Any], grad: NDArray[Any], velocity: NDArray[Any],
                 decay: Any, lr: Any) -> tuple[float, float]:
    # A third party's kernel: v = decay v + g;  p -= lr v; returns (sum p^2, count).
    total = 0.0
    for i in range(param.size):
        v = velocity[i] * decay + grad[i]
        velocity[i] = v
        p = param[i] - v * lr
        param[i] = p
        total += float(p) * float(p)
    return total, float(param.size)


def test_run_kernel_updates_tensors_in_place_and_sums_split_results() -> None:
    from optiplug.backends import _torch_kernels
    from optiplug.backends.torch import run_kernel

    rng = np.random.default_rng(5)
    params = [torch.from_numpy(rng.standard_normal(s)).requires_grad_()
              for s in [(70, 30), (7,), (2, 3, 4)]]
    grads = [torch.from_numpy(rng.standard_normal(tuple(p.shape))) for p in params]
    velocities = [torch.from_numpy(rng.standard_normal(tuple(p.shape))) for p in params]
    lrs = [0.1, 0.2, 0.3]
    expected_v = [0.9 * v + g for v, g in zip(velocities, grads, strict=True)]
    expected_p = [p.detach() - lr * v for p, lr, v in zip(params, lrs, expected_v, strict=True)]
    versions = [p._version for p in params]
    threshold = _torch_kernels.KERNEL_PARALLEL_MIN
    previous = torch.get_num_threads()
    _torch_kernels.KERNEL_PARALLEL_MIN = 0  # type: ignore[misc]
    torch.set_num_threads(2)
    try:
        results = run_kernel(_scaled_step, params, grads, [velocities], (0.9,),
                             param_scalars=[(lr,) for lr in lrs])
    finally:
        _torch_kernels.KERNEL_PARALLEL_MIN = threshold  # type: ignore[misc]
        torch.set_num_threads(previous)
    for p, v, want_p, want_v in zip(params, velocities, expected_p, expected_v, strict=True):
        torch.testing.assert_close(p.detach(), want_p, rtol=1e-15, atol=1e-15)
        torch.testing.assert_close(v, want_v, rtol=1e-15, atol=1e-15)
    for (total, count), p in zip(results, params, strict=True):
        assert count == p.numel()  # the pieces of a split tensor add up
        assert total == pytest.approx(float((p.detach() ** 2).sum()), rel=1e-13)
    assert all(p._version > before for p, before in zip(params, versions, strict=True))


def test_a_copied_optimizer_keeps_its_kernel_choice_and_its_trajectory(engine: Any) -> None:
    import copy
    import pickle

    engine("numba")
    weight = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 12, dtype=torch.float64))
    opt = optiplug.optimizer("adopt", {"w": weight}, lr=0.1, weight_decay=0.01)
    for step in range(3):
        weight.grad = torch.full_like(weight, 0.1 * step + 0.2)
        opt.step()
    twins = [copy.deepcopy((weight, opt)), pickle.loads(pickle.dumps((weight, opt)))]
    weight.grad = torch.full_like(weight, -0.4)
    opt.step()
    for twin_weight, twin in twins:
        assert twin.kernels == "numba"
        twin_weight.grad = torch.full_like(twin_weight, -0.4)
        twin.step()
        torch.testing.assert_close(twin_weight, weight, rtol=0, atol=0)


@pytest.mark.parametrize("count", [40, 12], ids=["drivers", "per-tensor-calls"])
@pytest.mark.parametrize(("name", "hyper"), [
    ("lamb", VARIANTS["lamb"][0]), ("lars", VARIANTS["lars"][0]),
    ("adopt", VARIANTS["adopt"][1]), ("schedule_free_adamw", VARIANTS["schedule_free_adamw"][0]),
], ids=["lamb", "lars", "adopt-clip=None", "schedule_free_adamw"])
def test_many_tensors_run_by_compiled_drivers_follow_the_foreach_trajectory(
        name: str, hyper: dict[str, Any], count: int, engine: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Many tensors run in one compiled call per thread (two threads; both thresholds lowered so
    # that every bucket of these few small tensors takes that path, split between threads).
    # With 12 tensors (at least 4 per thread, under the drivers' 32) LAMB and LARS run their
    # one-tensor kernels by one call per tensor, whole tensors dealt out to the threads.
    from optiplug.backends import _torch_kernels

    trajectories = []
    threshold = _torch_kernels.KERNEL_PARALLEL_MIN
    previous = torch.get_num_threads()
    if count == 40:
        monkeypatch.setattr(_torch_kernels, "DRIVER_MIN_TENSORS", 2)
    _torch_kernels.KERNEL_PARALLEL_MIN = 0  # type: ignore[misc]
    torch.set_num_threads(2)
    driven: list[int] = []
    run_driven = _torch_kernels._run_driven

    def counted(*args: Any) -> Any:
        driven.append(len(args[1]))
        return run_driven(*args)

    monkeypatch.setattr(_torch_kernels, "_run_driven", counted)
    try:
        for value in ("numba", "numpy"):
            engine(value)
            rng = np.random.default_rng(2)
            params = {f"p{i}": torch.nn.Parameter(torch.from_numpy(
                rng.standard_normal((3 + i % 5, 4) if i % 3 else (7,)))) for i in range(count)}
            opt = optiplug.optimizer(name, params, **hyper)
            grads = np.random.default_rng(3)
            trajectory = []
            for step in range(4):
                for i, p in enumerate(params.values()):
                    g = torch.from_numpy(grads.standard_normal(tuple(p.shape)))
                    p.grad = None if (i + step) % 7 == 0 else g
                opt.step()
                trajectory.append([p.detach().clone() for p in params.values()])
            trajectories.append(trajectory)
    finally:
        _torch_kernels.KERNEL_PARALLEL_MIN = threshold  # type: ignore[misc]
        torch.set_num_threads(previous)
    if count == 40:
        assert sum(driven) >= 4 * 30  # the fused run's buckets went through the drivers
    else:
        assert not driven
    for step, (got, want) in enumerate(zip(*trajectories, strict=True)):
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12,
                                       msg=f"{name}: p{i} after step {step + 1}")


def test_norm_kernels_sum_float32_squares_in_float64() -> None:
    # numba's float() of a float32 stays float32: the squares must be taken in float64, or the
    # norms of float32 tensors lose half their digits (LARS's and LAMB's trust ratios).
    import math

    from optiplug.plugins.optimizers.lamb import lamb_sums_kernel
    from optiplug.plugins.optimizers.lars import lars_sums_kernel

    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(50_001).astype(np.float32) for _ in range(2))
    want_p = math.fsum(float(v) ** 2 for v in p)
    got = lars_sums_kernel.compiled(p, g)
    assert math.isclose(got[0], want_p, rel_tol=1e-13)
    assert math.isclose(got[1], math.fsum(float(v) ** 2 for v in g), rel_tol=1e-13)
    m, v = np.zeros_like(p), np.zeros_like(p)
    one = np.float32(1.0)
    zero = np.float32(0.0)
    # weight1 = 1, beta2 = 0: m = g, v = g^2, r = g / (|g| + eps): |r| = 1 up to eps.
    weights, updates = lamb_sums_kernel.compiled(p, g, m, v, one, zero, one, np.float32(1e-30),
                                                 one, zero)
    r = m / (np.sqrt(v) + np.float32(1e-30))
    assert math.isclose(weights, want_p, rel_tol=1e-13)
    assert math.isclose(updates, math.fsum(float(x) ** 2 for x in r), rel_tol=1e-13)


def test_torch_drivers_are_cached_on_disk_and_loaded_by_a_later_process(
        tmp_path: Any, cold_then_warm: Any) -> None:
    # 40 tensors: the driven path. The second process loads the driver (and the kernel) from
    # the cache directory instead of compiling them; both take the same steps.
    code = ("import torch, optiplug\n"
            "from optiplug.backends import _torch_kernels\n"
            "params = [torch.nn.Parameter(torch.full((50,), 2.0)) for _ in range(40)]\n"
            "for p in params: p.grad = torch.full_like(p, 0.5)\n"
            "opt = optiplug.optimizer('lion', [(str(i), p) for i, p in enumerate(params)],"
            " lr=0.1)\n"
            "opt.step(); opt.step()\n"
            "from optiplug.plugins.optimizers.lion import lion_kernel\n"
            "driver = _torch_kernels._driver(lion_kernel, 3, 0, None)  # the step's, kept\n"
            "print(sum(driver.stats.cache_hits.values()), params[7][3].item())\n")
    runs = cold_then_warm(code)
    # Lion, g = 0.5 > 0: each step moves p by -lr sign(.) = -0.1.
    assert [run[0] for run in runs] == ["0", "1"]  # compiled once, then loaded
    assert all(float(run[1]) == pytest.approx(1.8, rel=1e-6) for run in runs)
    drivers = list((tmp_path / "optiplug" / "numba" / "drivers").glob("optiplug_driver_*.py"))
    assert len(drivers) == 1 and "addresses, sizes, like, scalars, own, out" in \
        drivers[0].read_text()


def test_run_kernel_over_many_tensors_refuses_lists_of_other_lengths() -> None:
    from optiplug.backends.torch import run_kernel
    from optiplug.plugins.optimizers.lion import lion_kernel

    params = [torch.zeros(8) for _ in range(40)]
    before = [p.clone() for p in params]
    with pytest.raises(ValueError, match="39 tensors in a list of 40 parameters"):
        run_kernel(lion_kernel, params, [torch.ones(8) for _ in range(39)],
                   [[torch.zeros(8) for _ in range(40)]], (0.1, 0.01, 1.0, -0.1, 0.0))
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))  # untouched
