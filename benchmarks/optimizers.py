"""Optimizer step time and memory: optiplug's backends against torch.optim and plain NumPy.

For every builtin optimizer, on float32 parameters split into equal tensors, CPU, measured side
by side in one run (the implementations take turns within every repeat; medians are reported):

- ``torch/fastest``: optiplug's torch backend over the fastest torch.optim variant of the same
  algorithm (for-loop, foreach, or fused where torch has it);
- ``numpy/foreach``: optiplug's NumPy backend over torch.optim's foreach implementation;
- ``numpy/naive``: optiplug's NumPy backend over a straightforward NumPy implementation of the
  same update (whole-array expressions, a temporary per operation);
- ``peak MiB``: the NumPy step's peak traced memory (params + grads + state + what the step
  allocates, measured with tracemalloc) and how much above params + grads + state it goes.

Targets (issue 3): torch/fastest <= 1.05, numpy/foreach <= 1.0 for Adam, numpy/naive <= 1/3,
peak extra <= 16 MiB.

    python benchmarks/optimizers.py                 # 10M params in 100 and in 1000 tensors
    python benchmarks/optimizers.py --quick         # 1M params in 10 and 100 tensors
    python benchmarks/optimizers.py --optimizers adam adamw --repeats 20
    python benchmarks/optimizers.py --pytorch-optimizer   # paper optimizers vs pytorch_optimizer
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import optiplug
from optiplug.backends.numpy import NumpyOptimizer

Array = np.ndarray
HYPER: dict[str, dict[str, Any]] = {
    "sgd": {"lr": 1e-3},
    "momentum": {"lr": 1e-3, "momentum": 0.9},
    "nesterov": {"lr": 1e-3, "momentum": 0.9},
    "adagrad": {"lr": 1e-2},
    "rmsprop": {"lr": 1e-3},
    "adadelta": {"lr": 1.0},
    "adam": {"lr": 1e-3},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
}
TORCH_CLASS = {"sgd": "SGD", "momentum": "SGD", "nesterov": "SGD", "adagrad": "Adagrad",
               "rmsprop": "RMSprop", "adadelta": "Adadelta", "adam": "Adam", "adamw": "AdamW"}
HAS_FUSED = {"SGD", "Adagrad", "Adam", "AdamW"}
MiB = 1 << 20


# ------------------------------------------------------------------- naive NumPy updates
class NaiveNumpy:
    """The update as whole-array NumPy expressions: what one writes without thinking of memory."""

    def __init__(self, name: str, params: list[Array], hyper: dict[str, Any]) -> None:
        self.name, self.params, self.t = name, params, 0
        spec = optiplug.spec("optimizer", name, **hyper)
        self.h = spec.hyperparameters()
        self.s1 = [np.zeros_like(p) for p in params]
        self.s2 = [np.zeros_like(p) for p in params]

    def step(self, grads: list[Array]) -> None:
        self.t += 1
        h, t = self.h, self.t
        for p, g, s1, s2 in zip(self.params, grads, self.s1, self.s2, strict=True):
            if self.name == "sgd":
                p -= h["lr"] * g
            elif self.name in ("momentum", "nesterov"):
                s1[...] = g if t == 1 else h["momentum"] * s1 + g
                p -= h["lr"] * (g + h["momentum"] * s1 if self.name == "nesterov" else s1)
            elif self.name == "adagrad":
                s1 += g * g
                p -= h["lr"] * g / (np.sqrt(s1) + h["eps"])
            elif self.name == "rmsprop":
                s1[...] = h["alpha"] * s1 + (1 - h["alpha"]) * g * g
                p -= h["lr"] * g / (np.sqrt(s1) + h["eps"])
            elif self.name == "adadelta":
                s1[...] = h["rho"] * s1 + (1 - h["rho"]) * g * g
                delta = np.sqrt(s2 + h["eps"]) / np.sqrt(s1 + h["eps"]) * g
                s2[...] = h["rho"] * s2 + (1 - h["rho"]) * delta * delta
                p -= h["lr"] * delta
            else:
                b1, b2 = h["betas"]
                if self.name == "adamw":
                    p *= 1 - h["lr"] * h["weight_decay"]
                s1[...] = b1 * s1 + (1 - b1) * g
                s2[...] = b2 * s2 + (1 - b2) * g * g
                denom = np.sqrt(s2) / math.sqrt(1 - b2**t) + h["eps"]
                p -= h["lr"] / (1 - b1**t) * s1 / denom


# ---------------------------------------------------------------------------- measuring
def interleaved_medians(steps: dict[str, Callable[[], None]], repeats: int,
                        rounds: int = 3) -> dict[str, float]:
    """Median seconds per step of each callable, taking turns in ``rounds`` rounds.

    Within a round each implementation runs one untimed step, then its timed steps back to
    back, so idle-spinning threads left by the previous implementation do not land in them.
    """
    times: dict[str, list[float]] = {key: [] for key in steps}
    per_round = max(1, -(-repeats // rounds))
    for _ in range(rounds):
        for key, step in steps.items():
            step()
            for _ in range(per_round):
                start = time.perf_counter()
                step()
                times[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in times.items()}


def numpy_peak(name: str, sizes: list[int], hyper: dict[str, Any]) -> tuple[float, float]:
    """Peak traced MiB over a NumPy optimizer's first two steps, and the part of it above
    params + grads + state (scratch blocks, bookkeeping, any temporary)."""
    gc.collect()
    tracemalloc.start()
    rng = np.random.default_rng(0)
    params = {str(i): rng.standard_normal(n, dtype=np.float32) for i, n in enumerate(sizes)}
    grads = {k: rng.standard_normal(v.size, dtype=np.float32) for k, v in params.items()}
    opt = optiplug.optimizer(name, params, **hyper)
    opt.step(grads)
    opt.step(grads)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    state = sum(value.nbytes for entry in opt.state.values() for value in entry.values()
                if isinstance(value, np.ndarray))
    resident = state + sum(a.nbytes for a in params.values()) + sum(
        a.nbytes for a in grads.values())
    del opt, params, grads
    gc.collect()
    return peak / MiB, (peak - resident) / MiB


def measure(name: str, total: int, tensors: int, repeats: int) -> dict[str, float]:
    sizes = [total // tensors] * tensors
    hyper = HYPER[name]
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    grads = [(1e-3 * rng.standard_normal(n)).astype(np.float32) for n in sizes]

    def torch_params() -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g)
        return params

    torch_cls = getattr(torch.optim, TORCH_CLASS[name])
    torch_kwargs = {k: v for k, v in optiplug.spec("optimizer", name, **hyper)
                    .hyperparameters().items() if k not in ("param_groups", "nonfinite")}
    if name == "nesterov":
        torch_kwargs["nesterov"] = True
    variants = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
    if TORCH_CLASS[name] in HAS_FUSED:
        variants["fused"] = {"fused": True}
    steps: dict[str, Callable[[], None]] = {}
    for label, extra in variants.items():
        steps[f"torch {label}"] = torch_cls(torch_params(), **torch_kwargs, **extra).step
    named = torch_params()
    steps["optiplug torch"] = optiplug.optimizer(
        name, [(str(i), p) for i, p in enumerate(named)], **hyper).step
    numpy_params = [a.copy() for a in start]
    numpy_opt = optiplug.optimizer(name, numpy_params, **hyper)
    steps["optiplug numpy"] = lambda: numpy_opt.step(grads)
    naive = NaiveNumpy(name, [a.copy() for a in start], hyper)
    steps["naive numpy"] = lambda: naive.step(grads)
    times = interleaved_medians(steps, repeats)
    steps.clear()
    gc.collect()
    peak, extra = numpy_peak(name, sizes, hyper)
    fastest = min(times[f"torch {label}"] for label in variants)
    return {**{key: value * 1e3 for key, value in times.items()},
            "torch/fastest": times["optiplug torch"] / fastest,
            "numpy/foreach": times["optiplug numpy"] / times["torch foreach"],
            "numpy/naive": times["optiplug numpy"] / times["naive numpy"],
            "peak": peak, "extra": extra,
            "fastest": min(variants, key=lambda label: times[f"torch {label}"])}


def print_row(name: str, tensors: int, r: dict[str, Any]) -> None:
    fastest_ms = r[f"torch {r['fastest']}"]
    print(f"{name:<9} {tensors:>7} | {r['torch/fastest']:>13.2f} {r['fastest']:>9} | "
          f"{r['numpy/foreach']:>13.2f} | {r['numpy/naive']:>11.2f} | "
          f"{r['peak']:>8.1f} {'+' + format(r['extra'], '.1f'):>8} | "
          f"{fastest_ms:.1f} {r['torch foreach']:.1f} {r['optiplug torch']:.1f} "
          f"{r['optiplug numpy']:.1f} {r['naive numpy']:.1f}", flush=True)


# ------------------------------------------------ paper optimizers vs pytorch_optimizer
# optiplug's torch backend against pytorch_optimizer's implementation of the same rule (its
# multi-tensor path, the default on CPU), hyperparameters set to the same conventions (issue 10
# target: optiplug at most 0.5x pytorch_optimizer's time).
PAPER_HYPER: dict[str, tuple[dict[str, Any], str, dict[str, Any]]] = {
    "lion": ({"lr": 1e-4, "weight_decay": 1e-2}, "Lion", {}),
    "lamb": ({"lr": 1e-3, "weight_decay": 1e-2, "bias_correction": False,
              "max_weight_norm": 10.0}, "Lamb", {"weight_decouple": False, "adam_debias": True}),
    "lars": ({"lr": 1e-3, "weight_decay": 1e-4, "trust_coefficient": 1e-3}, "LARS", {}),
    "adan": ({"lr": 1e-3, "weight_decay": 1e-2}, "Adan", {"weight_decouple": False}),
    "adopt": ({"lr": 1e-3}, "ADOPT", {}),
    "adabelief": ({"lr": 1e-3, "weight_decay": 1e-2}, "AdaBelief", {}),
    "schedule_free_adamw": ({"lr": 2.5e-3, "weight_decay": 1e-2}, "ScheduleFreeAdamW", {}),
    "schedule_free_sgd": ({"lr": 1.0, "weight_decay": 1e-4}, "ScheduleFreeSGD", {}),
}


def measure_against_pytorch_optimizer(name: str, total: int, tensors: int,
                                      repeats: int) -> dict[str, float]:
    """Milliseconds per step of optiplug's torch backend and of pytorch_optimizer's class."""
    import pytorch_optimizer

    hyper, class_name, extra = PAPER_HYPER[name]
    their_hyper = {k: v for k, v in hyper.items()
                   if k not in ("bias_correction", "max_weight_norm")}
    rng = np.random.default_rng(0)
    sizes = [total // tensors] * tensors
    start = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    grads = [(1e-3 * rng.standard_normal(n)).astype(np.float32) for n in sizes]

    def torch_params() -> list[torch.nn.Parameter]:
        params = [torch.nn.Parameter(torch.from_numpy(a.copy()).reshape(-1, 100)) for a in start]
        for p, g in zip(params, grads, strict=True):
            p.grad = torch.from_numpy(g).reshape(-1, 100)
        return params

    theirs = getattr(pytorch_optimizer, class_name)(torch_params(), **their_hyper, **extra)
    ours = optiplug.optimizer(name, [(str(i), p) for i, p in enumerate(torch_params())],
                              **hyper)
    times = interleaved_medians({"pytorch_optimizer": theirs.step, "optiplug": ours.step},
                                repeats)
    return {"pytorch_optimizer": times["pytorch_optimizer"] * 1e3,
            "optiplug": times["optiplug"] * 1e3,
            "ratio": times["optiplug"] / times["pytorch_optimizer"]}


def run_against_pytorch_optimizer(names: list[str], total: int, splits: list[int],
                                  repeats: int, threads: int | None) -> None:
    """Print the optiplug-vs-pytorch_optimizer table, each row in a fresh process."""
    print(f"{total / 1e6:g}M float32 params (matrices of 100 columns), CPU, torch "
          f"{torch.__version__}, median of {repeats}; optiplug torch vs pytorch_optimizer")
    header = (f"{'optimizer':<19} {'tensors':>7} | {'optiplug/pto':>12} | "
              f"{'pto ms':>8} {'optiplug ms':>11}")
    print(header)
    print("-" * len(header))
    for tensors in splits:
        for name in names:
            command = [sys.executable, __file__, "--row-pto", "--optimizers", name,
                       "--splits", str(tensors), "--params", str(total), "--repeats",
                       str(repeats)]
            if threads is not None:
                command += ["--threads", str(threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name:<19} {tensors:>7} | failed: {done.stderr.strip()[-300:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name:<19} {tensors:>7} | {r['ratio']:>12.2f} | "
                  f"{r['pytorch_optimizer']:>8.1f} {r['optiplug']:>11.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M params, fewer repeats")
    parser.add_argument("--params", type=int, default=None, help="total parameters")
    parser.add_argument("--splits", type=int, nargs="+", default=None,
                        help="numbers of tensors the parameters are split into")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--optimizers", nargs="+", default=None,
                        choices=sorted({*HYPER, *PAPER_HYPER}))
    parser.add_argument("--pytorch-optimizer", action="store_true",
                        help="optiplug torch vs pytorch_optimizer for the paper optimizers")
    parser.add_argument("--row-pto", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch (intra-op) and for the NumPy optimizer; "
                             "default: each library's own default")
    parser.add_argument("--row", action="store_true",
                        help="measure in this process and print JSON (used internally)")
    args = parser.parse_args()
    total = args.params or (1_000_000 if args.quick else 10_000_000)
    splits = args.splits or ([10, 100] if args.quick else [100, 1000])
    repeats = args.repeats or (6 if args.quick else 15)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        NumpyOptimizer.default_threads = args.threads
    if args.row:
        print(json.dumps(measure(args.optimizers[0], total, splits[0], repeats)))
        return
    if args.row_pto:
        print(json.dumps(measure_against_pytorch_optimizer(args.optimizers[0], total,
                                                           splits[0], repeats)))
        return
    if args.pytorch_optimizer:
        run_against_pytorch_optimizer(args.optimizers or list(PAPER_HYPER), total, splits,
                                      repeats, args.threads)
        return
    args.optimizers = args.optimizers or list(HYPER)
    print(f"{total / 1e6:g}M float32 params, CPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, median of {repeats}; "
          f"each row in a fresh process")
    header = (f"{'optimizer':<9} {'tensors':>7} | {'torch/fastest':>13} {'(fastest)':>9} | "
              f"{'numpy/foreach':>13} | {'numpy/naive':>11} | {'peak MiB':>8} "
              f"{'(+extra)':>8} | ms: fastest foreach optiplug-torch optiplug-numpy naive")
    print(header)
    print("-" * len(header))
    for tensors in splits:
        for name in args.optimizers:
            # A fresh process per row: no allocator state or warm caches carried over.
            command = [sys.executable, __file__, "--row", "--optimizers", name, "--splits",
                       str(tensors), "--params", str(total), "--repeats", str(repeats)]
            if args.threads is not None:
                command += ["--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{name:<9} {tensors:>7} | failed: {done.stderr.strip()[-300:]}")
                continue
            print_row(name, tensors, json.loads(done.stdout.strip().splitlines()[-1]))


if __name__ == "__main__":
    main()
