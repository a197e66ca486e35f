"""The optimizer benchmark compares like with like: every implementation it times (torch.optim
with the arguments it derives from optiplug's spec, optiplug's torch and NumPy backends, and its
naive NumPy reference) takes the same steps. Tests never time anything."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import optiplug

torch = pytest.importorskip("torch")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "optimizers.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("optiplug_bench_optimizers", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop",
                                  "adadelta", "adam", "adamw"])
def test_every_timed_implementation_takes_the_same_steps(bench: ModuleType, name: str) -> None:
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(n) for n in (7, 5)]
    grads = [[rng.standard_normal(a.shape) for a in start] for _ in range(4)]
    hyper = bench.HYPER[name]
    arguments = bench.torch_arguments(name, hyper)
    if name == "nesterov":
        arguments["nesterov"] = True
    reference = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    torch_opt = getattr(torch.optim, bench.TORCH_CLASS[name])(reference, **arguments)
    ours = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
    ours_opt = optiplug.optimizer(name, [(str(i), p) for i, p in enumerate(ours)], **hyper)
    numpy_params = [a.copy() for a in start]
    numpy_opt = optiplug.optimizer(name, numpy_params, **hyper)
    naive = bench.NaiveNumpy(name, [a.copy() for a in start], hyper)
    for step in grads:
        for params in (reference, ours):
            for p, g in zip(params, step, strict=True):
                p.grad = torch.from_numpy(g.copy())
        torch_opt.step()
        ours_opt.step()
        numpy_opt.step([g.copy() for g in step])
        naive.step([g.copy() for g in step])
    for i, expected in enumerate(reference):
        want = expected.detach().numpy()
        np.testing.assert_allclose(ours[i].detach().numpy(), want, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(numpy_params[i], want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(naive.params[i], want, rtol=1e-10, atol=1e-12)
