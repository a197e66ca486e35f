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

- peers, where they are installed (``pip install 'optiplug[bench]'``; a missing one is skipped
  with a note): optax (``jax.jit`` on jax's CPU backend, arguments donated; its compile time
  is reported on its own, not in the step time) and Keras 3 on its torch backend, timed in a
  second process per row on the same data (their thread pools, left spinning in the process
  they ran in, slowed the next implementation measured there);
- ``bound``: the memory-bandwidth bound of the step, the bytes it must move at least (each
  parameter, gradient and state element read once, each parameter and state element written
  once) over the bandwidth measured at the start of the run (a STREAM triad,
  ``a = b + s c``, on float32 arrays far larger than the caches).

Targets (issue 3): torch/fastest <= 1.05, numpy/foreach <= 1.0 for Adam, numpy/naive <= 1/3,
peak extra <= 16 MiB; (issue 11) torch/fastest <= 1.0 in every row.

The default run prints, in one run, the bandwidth, the table of the builtin optimizers with
their peers, then the paper optimizers against pytorch_optimizer's implementations
(``--pytorch-optimizer`` prints only that table).

    python benchmarks/optimizers.py                 # 10M params in 100 and in 1000 tensors
    python benchmarks/optimizers.py --quick         # 1M params in 10 and 100 tensors
    python benchmarks/optimizers.py --optimizers adam adamw --repeats 20
    python benchmarks/optimizers.py --kernel-choice --quick    # cost of the kernel choice
    python benchmarks/optimizers.py --torchref      # radam ... muon against torch's own classes

``--kernel-choice`` prints what optiplug's torch kernel choice costs for SGD with momentum,
where torch's fused kernel fails when a parameter's first gradient arrives after others have
momentum buffers: optiplug stays fused and runs only such a step with torch's default kernel,
checking the buffers before each step until every parameter has one. Rows: every parameter
with a gradient (the check retires after the first step), and one tensor frozen (``grad`` is
``None``: the check runs every step), each against raw ``torch.optim.SGD(fused=True)`` on the
same pattern, and what the alternative, always foreach, would cost (``foreach/fused``).

``--torchref`` measures the optimizers whose reference is a torch.optim class (radam, nadam,
adamax, asgd, rprop, adafactor, muon) on float32 matrices of 250 x 400 (Muon needs matrices):
torch's for-loop and foreach kernels, optiplug's torch backend (``/fastest`` of the two) and
optiplug's NumPy backend (``/torch``: over torch's fastest). lbfgs is closure-driven: its step
time is the closure's, so it has no row.
    python benchmarks/optimizers.py --pytorch-optimizer   # paper optimizers vs pytorch_optimizer
    python benchmarks/optimizers.py --pytorch-optimizer --quick   # the same, 1M params

The pytorch_optimizer table (issue 10's target: optiplug at most 0.5x pytorch_optimizer's time
on 10M float32 params in 100 and in 1000 tensors) shows optiplug's torch backend as built by
default (``optiplug/pto``: the plugin's fused kernel on CPU tensors, numba installed) and on its
foreach chain (``foreach/pto``: ``OPTIPLUG_NUMPY_KERNELS=numpy``, the path CUDA takes), all
three interleaved in one process per row. SOAP follows in its own table: it is matmul-bound,
so its rows are 1M float32 params in 100 matrices of 100 x 100 and in 25 of 200 x 200, timed in
blocks of ``precondition_frequency`` steps (each with one QR refresh) next to the step's eight
batched matrix products alone (``matmul``, the floor of any implementation of the rule).
    python benchmarks/optimizers.py --pytorch-optimizer --optimizers soap   # SOAP's rows only
    python benchmarks/optimizers.py --kernel-layouts --quick  # foreach or for-loop per layout
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
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
# Bytes an update must move per float32 parameter at least: params, grads and state read
# once, params and state written once.
# optiplug's own options (param groups, clipping, nonfinite policy, kernel choice): not torch's.
AROUND_THE_UPDATE = optiplug.OptimizerSpec.policy_fields | {"fused", "foreach"}
BYTES_PER_PARAM = {"sgd": 12, "momentum": 20, "nesterov": 20, "adagrad": 20, "rmsprop": 20,
                   "adadelta": 28, "adam": 28, "adamw": 28, "lion": 20, "lamb": 28, "lars": 20,
                   "adan": 44, "adopt": 28, "adabelief": 28, "schedule_free_adamw": 28,
                   "schedule_free_sgd": 20, "yogi": 28, "sgdw": 20}


def stream_bandwidth(elements: int = 1 << 25, repeats: int = 7) -> float:
    """Bytes per second of a STREAM triad ``a = b + s c`` on float32 arrays (best of
    ``repeats``), with torch's threads: what the fastest update kernel could reach."""
    b = torch.rand(elements)
    c = torch.rand(elements)
    a = torch.empty(elements)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(b, c, alpha=0.5, out=a)
        best = min(best, time.perf_counter() - start)
    return 3 * 4 * elements / best


# ----------------------------------------------------------------------------- peers
def optax_step(name: str, hyper: dict[str, Any], start: list[Array], grads: list[Array]
               ) -> tuple[Callable[[], None], float] | str:
    """optax's update of ``name`` jitted on jax's CPU backend: the step and its compile
    seconds, or why it is skipped."""
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:
        return "optax not installed (pip install 'optiplug[bench]')"
    h = optiplug.spec("optimizer", name, **hyper).hyperparameters()
    makers: dict[str, Callable[[], Any]] = {
        "sgd": lambda: optax.sgd(h["lr"]),
        "momentum": lambda: optax.sgd(h["lr"], momentum=h["momentum"]),
        "nesterov": lambda: optax.sgd(h["lr"], momentum=h["momentum"], nesterov=True),
        "adagrad": lambda: optax.adagrad(h["lr"], initial_accumulator_value=0.0,
                                         eps=h["eps"]),
        "rmsprop": lambda: optax.rmsprop(h["lr"], decay=h["alpha"], eps=h["eps"]),
        "adadelta": lambda: optax.adadelta(h["lr"], rho=h["rho"], eps=h["eps"]),
        "adam": lambda: optax.adam(h["lr"], b1=h["betas"][0], b2=h["betas"][1], eps=h["eps"]),
        "adamw": lambda: optax.adamw(h["lr"], b1=h["betas"][0], b2=h["betas"][1],
                                     eps=h["eps"], weight_decay=h["weight_decay"]),
    }
    if name not in makers:
        return f"optax: no {name}"
    transform = makers[name]()
    params = [jnp.asarray(a) for a in start]
    jax_grads = [jnp.asarray(g) for g in grads]
    state = transform.init(params)

    def update(params: Any, state: Any, grads: Any) -> Any:
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    began = time.perf_counter()
    compiled = jax.jit(update, donate_argnums=(0, 1)).lower(params, state, jax_grads).compile()
    compile_seconds = time.perf_counter() - began
    carry = [params, state]

    def step() -> None:
        carry[0], carry[1] = compiled(carry[0], carry[1], jax_grads)
        jax.block_until_ready(carry[0])

    return step, compile_seconds


def keras_step(name: str, hyper: dict[str, Any], start: list[Array], grads: list[Array]
               ) -> Callable[[], None] | str:
    """Keras 3's optimizer of ``name`` on its torch backend (``KERAS_BACKEND=torch``, set by
    the parent before this process started), or why it is skipped."""
    try:
        import keras
    except ImportError:
        return "keras not installed (pip install 'optiplug[bench]')"
    if keras.backend.backend() != "torch":
        return f"keras runs on {keras.backend.backend()}, not torch"
    h = optiplug.spec("optimizer", name, **hyper).hyperparameters()
    makers: dict[str, Callable[[], Any]] = {
        "sgd": lambda: keras.optimizers.SGD(h["lr"]),
        "momentum": lambda: keras.optimizers.SGD(h["lr"], momentum=h["momentum"]),
        "nesterov": lambda: keras.optimizers.SGD(h["lr"], momentum=h["momentum"],
                                                 nesterov=True),
        "adagrad": lambda: keras.optimizers.Adagrad(h["lr"], initial_accumulator_value=0.0,
                                                    epsilon=h["eps"]),
        "rmsprop": lambda: keras.optimizers.RMSprop(h["lr"], rho=h["alpha"],
                                                    epsilon=h["eps"]),
        "adadelta": lambda: keras.optimizers.Adadelta(h["lr"], rho=h["rho"],
                                                      epsilon=h["eps"]),
        "adam": lambda: keras.optimizers.Adam(h["lr"], beta_1=h["betas"][0],
                                              beta_2=h["betas"][1], epsilon=h["eps"]),
        "adamw": lambda: keras.optimizers.AdamW(h["lr"], weight_decay=h["weight_decay"],
                                                beta_1=h["betas"][0], beta_2=h["betas"][1],
                                                epsilon=h["eps"]),
    }
    if name not in makers:
        return f"keras: no {name}"
    optimizer = makers[name]()
    variables = [keras.Variable(torch.from_numpy(a.copy())) for a in start]
    torch_grads = [torch.from_numpy(g) for g in grads]
    optimizer.build(variables)
    return lambda: optimizer.apply(torch_grads, variables)


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


class RowData:
    """A row's float32 starting parameters and gradients (seed 0, gradients 1e-3 N(0, 1)):
    the same numbers in every process that measures the row."""

    def __init__(self, shapes: Sequence[Any]) -> None:
        rng = np.random.default_rng(0)
        self.start = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
        self.grads = [(1e-3 * rng.standard_normal(shape)).astype(np.float32)
                      for shape in shapes]

    def torch_params(self) -> list[torch.nn.Parameter]:
        """Fresh torch parameters at the start, each with its gradient set."""
        params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in self.start]
        for p, g in zip(params, self.grads, strict=True):
            p.grad = torch.from_numpy(g)
        return params


def measure_peers(name: str, total: int, tensors: int, repeats: int) -> dict[str, Any]:
    """optax (jit) and Keras 3 on the row's data, in a process of their own: jax's and
    Keras's threads stay out of the torch and optiplug timings (idle-spinning thread pools of
    one library measured up to 1.5x slowdowns of the next one in the same process)."""
    data = RowData([total // tensors] * tensors)
    start, grads = data.start, data.grads
    hyper = HYPER[name]
    steps: dict[str, Callable[[], None]] = {}
    notes: list[str] = []
    compile_seconds = math.nan
    jitted = optax_step(name, hyper, start, grads)
    if isinstance(jitted, str):
        notes.append(jitted)
    else:
        steps["optax jit"], compile_seconds = jitted
    on_keras = keras_step(name, hyper, start, grads)
    if isinstance(on_keras, str):
        notes.append(on_keras)
    else:
        steps["keras torch"] = on_keras
    times = interleaved_medians(steps, repeats) if steps else {}
    return {**{key: value * 1e3 for key, value in times.items()}, "notes": notes,
            "compile s": compile_seconds}


def measure(name: str, total: int, tensors: int, repeats: int) -> dict[str, Any]:
    """torch's kernels, optiplug's two backends and naive NumPy on one row, interleaved."""
    sizes = [total // tensors] * tensors
    data = RowData(sizes)
    start, grads, torch_params = data.start, data.grads, data.torch_params
    hyper = HYPER[name]

    torch_cls = getattr(torch.optim, TORCH_CLASS[name])
    torch_kwargs = torch_arguments(name, hyper)
    if name == "nesterov":
        torch_kwargs["nesterov"] = True
    variants = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
    if TORCH_CLASS[name] in HAS_FUSED:
        variants["fused"] = {"fused": True}
    steps: dict[str, Callable[[], None]] = {}
    for label, extra in variants.items():
        steps[f"torch {label}"] = torch_cls(torch_params(), **torch_kwargs, **extra).step
    named = torch_params()
    ours = optiplug.optimizer(name, [(str(i), p) for i, p in enumerate(named)], **hyper)
    steps["optiplug torch"] = ours.step
    group = ours.param_groups[0]
    # torch's own CPU default (foreach and fused unset) is its for-loop kernel.
    picked = "fused" if group.get("fused") else "foreach" if group.get("foreach") else "for-loop"
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
            "torch/fastest": times["optiplug torch"] / fastest, "picked": picked,
            "numpy/foreach": times["optiplug numpy"] / times["torch foreach"],
            "numpy/naive": times["optiplug numpy"] / times["naive numpy"],
            "peak": peak, "extra": extra,
            "fastest": min(variants, key=lambda label: times[f"torch {label}"])}


def torch_arguments(name: str, hyper: dict[str, Any]) -> dict[str, Any]:
    """torch.optim keyword arguments for optiplug's spec of ``name`` (no kernel choice)."""
    spec = optiplug.spec("optimizer", name, **hyper)
    return {k: v for k, v in spec.hyperparameters().items() if k not in AROUND_THE_UPDATE}


def measure_kernel_choice(name: str, total: int, tensors: int, repeats: int
                          ) -> dict[str, float]:
    """Step times (ms) of optiplug's torch optimizer and raw torch.optim kernels, with every
    tensor having a gradient and with the first tensor frozen (its grad ``None``)."""
    sizes = [total // tensors] * tensors
    hyper = HYPER[name]
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    grads = [(1e-3 * rng.standard_normal(n)).astype(np.float32) for n in sizes]
    kwargs = torch_arguments(name, hyper) | ({"nesterov": True} if name == "nesterov" else {})
    torch_cls = getattr(torch.optim, TORCH_CLASS[name])
    results: dict[str, float] = {}
    for frozen in (False, True):
        def params(frozen: bool = frozen) -> list[torch.nn.Parameter]:
            made = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
            for index, (p, g) in enumerate(zip(made, grads, strict=True)):
                p.grad = None if frozen and index == 0 else torch.from_numpy(g)
            return made

        steps = {label: torch_cls(params(), **kwargs, **extra).step for label, extra in
                 (("fused", {"fused": True}), ("foreach", {"foreach": True}),
                  ("for-loop", {"foreach": False}))}
        steps["optiplug"] = optiplug.optimizer(
            name, [(str(i), p) for i, p in enumerate(params())], **hyper).step
        times = interleaved_medians(steps, repeats)
        suffix = " frozen" if frozen else ""
        results.update({f"{label}{suffix}": value * 1e3 for label, value in times.items()})
    return results


def print_kernel_rows(name: str, tensors: int, r: dict[str, float]) -> None:
    for suffix, pattern in (("", "all grads"), (" frozen", "one frozen")):
        print(f"{name:<9} {tensors:>7} {pattern:>10} | "
              f"{r['optiplug' + suffix] / r['fused' + suffix]:>14.2f} | "
              f"{r['foreach' + suffix] / r['fused' + suffix]:>12.2f} | "
              f"{r['for-loop' + suffix] / r['fused' + suffix]:>13.2f} | "
              f"{r['fused' + suffix]:.2f} {r['optiplug' + suffix]:.2f} "
              f"{r['foreach' + suffix]:.2f} {r['for-loop' + suffix]:.2f}", flush=True)


MAIN_HEADER = (f"{'optimizer':<9} {'tensors':>7} | {'torch/fastest':>13} {'(fastest)':>9} "
               f"{'(picked)':>9} | "
               f"{'numpy/foreach':>13} | {'numpy/naive':>11} | {'torch/bound':>11} | "
               f"{'peak MiB':>8} {'(+extra)':>8} | ms: bound fused foreach for-loop "
               f"optiplug-torch optiplug-numpy naive optax-jit keras-torch | optax compile s")


def _ms(r: dict[str, Any], key: str) -> str:
    return f"{r[key]:.2f}" if key in r else "-"


def print_head(header: str) -> None:
    """A table's column header, underlined."""
    print(header)
    print("-" * len(header), flush=True)


def fresh_row(arguments: list[str], label: str, threads: int | None,
              env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Run this script with ``arguments`` in a fresh process (no allocator state or warm
    caches carried over from another row) and return the JSON it prints last; on failure print
    ``label | failed: ...`` and return ``None``."""
    command = [sys.executable, __file__, *arguments]
    if threads is not None:
        command += ["--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        print(f"{label} | failed: {done.stderr.strip()[-300:]}", flush=True)
        return None
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return row


def print_row(name: str, tensors: int, r: dict[str, Any], bound_ms: float) -> None:
    compile_s = r.get("compile s", math.nan)
    print(f"{name:<9} {tensors:>7} | {r['torch/fastest']:>13.2f} {r['fastest']:>9} "
          f"{r['picked']:>9} | "
          f"{r['numpy/foreach']:>13.2f} | {r['numpy/naive']:>11.2f} | "
          f"{r['optiplug torch'] / bound_ms:>11.2f} | "
          f"{r['peak']:>8.1f} {'+' + format(r['extra'], '.1f'):>8} | {bound_ms:.2f} "
          + " ".join(_ms(r, key) for key in (
              "torch fused", "torch foreach", "torch for-loop", "optiplug torch",
              "optiplug numpy", "naive numpy", "optax jit", "keras torch"))
          + (f" | {compile_s:.2f}" if compile_s == compile_s else " | -"), flush=True)


# ------------------------------------------------- optimizers with a torch.optim reference
TORCHREF_HYPER: dict[str, dict[str, Any]] = {
    "radam": {"lr": 1e-3}, "nadam": {"lr": 2e-3}, "adamax": {"lr": 2e-3},
    "asgd": {"lr": 1e-2}, "rprop": {"lr": 1e-2}, "adafactor": {"lr": 1e-2},
    "muon": {"lr": 2e-2},
}
TORCHREF_CLASS = {"radam": "RAdam", "nadam": "NAdam", "adamax": "Adamax", "asgd": "ASGD",
                  "rprop": "Rprop", "adafactor": "Adafactor", "muon": "Muon"}
TORCHREF_SHAPE = (250, 400)


def measure_torchref(name: str, total: int, repeats: int) -> dict[str, Any]:
    """Step times (ms) of torch's own class (for-loop, foreach) and optiplug's two backends."""
    tensors = max(1, total // (TORCHREF_SHAPE[0] * TORCHREF_SHAPE[1]))
    hyper = TORCHREF_HYPER[name]
    data = RowData([TORCHREF_SHAPE] * tensors)
    start, grads, torch_params = data.start, data.grads, data.torch_params

    torch_cls = getattr(torch.optim, TORCHREF_CLASS[name])
    full = optiplug.spec("optimizer", name, **hyper)
    kwargs = {k: v for k, v in full.hyperparameters().items()
              if k not in AROUND_THE_UPDATE | {"adamw", "ns_dtype"}}
    variants = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}}
    if name == "muon":  # torch's Muon has the for-loop kernel only
        variants = {"for-loop": {}}
    steps: dict[str, Callable[[], None]] = {}
    for label, extra in variants.items():
        steps[f"torch {label}"] = torch_cls(torch_params(), **kwargs, **extra).step
    steps["optiplug torch"] = optiplug.optimizer(
        name, [(str(i), p) for i, p in enumerate(torch_params())], **hyper).step
    numpy_params = [a.copy() for a in start]
    numpy_opt = optiplug.optimizer(name, numpy_params, **hyper)
    steps["optiplug numpy"] = lambda: numpy_opt.step(grads)
    times = interleaved_medians(steps, repeats)
    fastest = min(variants, key=lambda label: times[f"torch {label}"])
    return {**{key: value * 1e3 for key, value in times.items()}, "fastest": fastest,
            "torch/fastest": times["optiplug torch"] / times[f"torch {fastest}"],
            "numpy/torch": times["optiplug numpy"] / times[f"torch {fastest}"],
            "tensors": tensors}


def torchref_main(args: argparse.Namespace) -> None:
    """The ``--torchref`` table: one fresh process per optimizer."""
    total = args.params or (1_000_000 if args.quick else 10_000_000)
    repeats = args.repeats or (4 if args.quick else 9)
    names = args.torchref
    print(f"{total / 1e6:g}M float32 params in {TORCHREF_SHAPE[0]}x{TORCHREF_SHAPE[1]} "
          f"matrices, CPU, torch {torch.__version__} ({torch.get_num_threads()} threads), numpy "
          f"{np.__version__}, median of {repeats}; each row in a fresh process")
    header = (f"{'optimizer':<10} | {'torch/fastest':>13} {'(fastest)':>9} | "
              f"{'numpy/torch':>11} | ms: for-loop foreach optiplug-torch optiplug-numpy")
    print_head(header)
    for name in names:
        r = fresh_row(["--torchref-row", name, "--params", str(total), "--repeats",
                       str(repeats)], f"{name:<10}", args.threads)
        if r is None:
            continue
        foreach = f"{r['torch foreach']:.1f}" if "torch foreach" in r else "-"
        print(f"{name:<10} | {r['torch/fastest']:>13.2f} {r['fastest']:>9} | "
              f"{r['numpy/torch']:>11.2f} | {r['torch for-loop']:.1f} {foreach} "
              f"{r['optiplug torch']:.1f} {r['optiplug numpy']:.1f}", flush=True)
# ----------------------------------------------- foreach or for-loop, per layout (issue 11)
LAYOUT_HYPER: dict[str, dict[str, Any]] = {
    "rmsprop": {"lr": 1e-3}, "adadelta": {"lr": 1.0}, "radam": {"lr": 1e-3},
    "nadam": {"lr": 2e-3}, "adamax": {"lr": 2e-3}, "rprop": {"lr": 1e-2}, "asgd": {"lr": 1e-2},
}
LAYOUT_CLASS = {"rmsprop": "RMSprop", "adadelta": "Adadelta", "radam": "RAdam",
                "nadam": "NAdam", "adamax": "Adamax", "rprop": "Rprop", "asgd": "ASGD"}


def measure_layout(name: str, tensors: int, size: int, repeats: int) -> dict[str, float]:
    """Milliseconds per step of torch's for-loop and foreach kernels and of optiplug's torch
    backend (its own kernel choice) on ``tensors`` float32 tensors of ``size`` elements."""
    params = RowData([size] * tensors).torch_params

    hyper = LAYOUT_HYPER[name]
    cls = getattr(torch.optim, LAYOUT_CLASS[name])
    kwargs = torch_arguments(name, hyper)
    ours = optiplug.optimizer(name, [(str(i), p) for i, p in enumerate(params())], **hyper)
    steps = {"for-loop": cls(params(), **kwargs, foreach=False).step,
             "foreach": cls(params(), **kwargs, foreach=True).step, "optiplug": ours.step}
    times = interleaved_medians(steps, repeats)
    return {**{key: value * 1e3 for key, value in times.items()},
            "picked": "foreach" if ours.param_groups[0].get("foreach") else "for-loop"}


def foreach_limit(name: str) -> str:
    """The mean tensor size up to which optiplug's torch backend picks foreach for ``name``
    (``never``: it keeps the for-loop)."""
    probe = optiplug.optimizer(name, [("w", torch.nn.Parameter(torch.zeros(1)))],
                               **LAYOUT_HYPER[name])
    limit = getattr(type(probe), "foreach_max_numel", None)
    return "never" if limit is None else str(limit)


def run_layouts(names: list[str], quick: bool, repeats: int, threads: int | None,
                layouts: list[tuple[int, int]] | None = None) -> None:
    """Print the kernel-per-layout table, each row in a fresh process."""
    if layouts is None:
        layouts = [(10, 100), (100, 1_000), (1_000, 1_000), (100, 10_000), (30, 100_000)]
        if not quick:
            layouts += [(1_000, 10_000), (100, 100_000)]
    limits = ", ".join(f"{name} {foreach_limit(name)}" for name in names)
    print(f"float32, CPU, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"median of {repeats}; optiplug picks foreach up to a mean tensor size of: {limits}")
    header = (f"{'optimizer':<9} {'layout':>13} | {'foreach/loop':>12} | "
              f"{'optiplug/fastest':>16} {'(picked)':>9} | ms: for-loop foreach optiplug")
    print_head(header)
    for tensors, size in layouts:
        for name in names:
            layout = f"{tensors} x {size}"
            r = fresh_row(["--layout-row", name, str(tensors), str(size), "--repeats",
                           str(repeats)], f"{name:<9} {layout:>13}", threads)
            if r is None:
                continue
            fastest = min(r["for-loop"], r["foreach"])
            print(f"{name:<9} {layout:>13} | {r['foreach'] / r['for-loop']:>12.2f} | "
                  f"{r['optiplug'] / fastest:>16.2f} {r['picked']:>9} | "
                  f"{r['for-loop']:.3f} {r['foreach']:.3f} {r['optiplug']:.3f}", flush=True)


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
    "yogi": ({"lr": 1e-2, "weight_decay": 1e-2}, "Yogi", {"weight_decouple": True}),
    "sgdw": ({"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-2}, "SGDW", {}),
}


def measure_against_pytorch_optimizer(name: str, total: int, tensors: int,
                                      repeats: int) -> dict[str, float]:
    """Milliseconds per step of pytorch_optimizer's class and of optiplug's torch backend, with
    its CPU fused kernel (the default when numba is installed) and with its foreach chain
    (``OPTIPLUG_NUMPY_KERNELS=numpy``), interleaved in one process."""
    import pytorch_optimizer

    hyper, class_name, extra = PAPER_HYPER[name]
    their_hyper = {k: v for k, v in hyper.items()
                   if k not in ("bias_correction", "max_weight_norm")}
    torch_params = RowData([(total // tensors // 100, 100)] * tensors).torch_params

    theirs = getattr(pytorch_optimizer, class_name)(torch_params(), **their_hyper, **extra)
    steps = {"pytorch_optimizer": theirs.step}
    for engine, key in (("auto", "optiplug"), ("numpy", "foreach")):
        os.environ["OPTIPLUG_NUMPY_KERNELS"] = engine
        ours = optiplug.optimizer(name, [(str(i), p) for i, p in enumerate(torch_params())],
                                  **hyper)
        steps[key] = ours.step
    os.environ.pop("OPTIPLUG_NUMPY_KERNELS")
    times = interleaved_medians(steps, repeats)
    return {"pytorch_optimizer": times["pytorch_optimizer"] * 1e3,
            "optiplug": times["optiplug"] * 1e3, "foreach": times["foreach"] * 1e3,
            "ratio": times["optiplug"] / times["pytorch_optimizer"],
            "foreach_ratio": times["foreach"] / times["pytorch_optimizer"]}


def run_against_pytorch_optimizer(names: list[str], total: int, splits: list[int],
                                  repeats: int, threads: int | None,
                                  bandwidth: float | None = None) -> None:
    """Print the optiplug-vs-pytorch_optimizer table, each row in a fresh process.

    ``optiplug/pto``: optiplug's torch backend as built by default (the plugin's fused kernel
    on CPU tensors when numba is installed); ``foreach/pto``: the same optimizer on its
    multi-tensor foreach chain (``OPTIPLUG_NUMPY_KERNELS=numpy``, the path CUDA takes).
    """
    print(f"{total / 1e6:g}M float32 params (matrices of 100 columns), CPU, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), median of {repeats}; "
          f"optiplug torch (fused kernel / foreach chain) vs pytorch_optimizer")
    header = (f"{'optimizer':<19} {'tensors':>7} | {'optiplug/pto':>12} {'foreach/pto':>11} | "
              f"{'pto/bound':>9} {'optiplug/bound':>14} | {'bound ms':>8} "
              f"{'pto ms':>8} {'optiplug ms':>11} {'foreach ms':>10}")
    print_head(header)
    for tensors in splits:
        for name in names:
            r = fresh_row(["--row-pto", "--optimizers", name, "--splits", str(tensors),
                           "--params", str(total), "--repeats", str(repeats)],
                          f"{name:<19} {tensors:>7}", threads)
            if r is None:
                continue
            bound = BYTES_PER_PARAM[name] * total / bandwidth * 1e3 if bandwidth else math.nan
            print(f"{name:<19} {tensors:>7} | {r['ratio']:>12.2f} {r['foreach_ratio']:>11.2f} | "
                  f"{r['pytorch_optimizer'] / bound:>9.2f} {r['optiplug'] / bound:>14.2f} | "
                  f"{bound:>8.2f} {r['pytorch_optimizer']:>8.1f} {r['optiplug']:>11.1f} "
                  f"{r['foreach']:>10.1f}", flush=True)



# SOAP is matmul-bound, not bandwidth-bound: per step and per d x d matrix it computes eight
# d x d products (the gradient and the first moment rotated into the eigenbases, the direction
# rotated back, the two Kronecker factors), and every precondition_frequency steps a QR refresh.
# Its rows therefore use square matrices (1M float32 params) and time blocks of
# precondition_frequency steps (each block holds one refresh), reported per step.
SOAP_HYPER: dict[str, Any] = {"lr": 3e-3, "betas": (0.95, 0.95), "weight_decay": 1e-2,
                              "precondition_frequency": 10}
SOAP_LAYOUTS = ((100, 100), (25, 200))
"""(matrices, side) of the SOAP rows: 1M float32 params each."""


def measure_soap(tensors: int, side: int, repeats: int) -> dict[str, float]:
    """Milliseconds per step of pytorch_optimizer's ``SOAP`` and of optiplug's torch backend on
    ``tensors`` float32 matrices of ``side x side`` (blocks of ``precondition_frequency`` steps,
    interleaved), and of the step's eight batched ``side x side`` products alone."""
    import pytorch_optimizer

    data = RowData([(side, side)] * tensors)
    start, grads, torch_params = data.start, data.grads, data.torch_params

    block = SOAP_HYPER["precondition_frequency"]
    theirs = pytorch_optimizer.SOAP(torch_params(), **SOAP_HYPER)
    ours = optiplug.optimizer("soap", [(str(i), p) for i, p in enumerate(torch_params())],
                              **SOAP_HYPER)
    left = torch.from_numpy(np.stack(start))
    right = torch.from_numpy(np.stack(grads))

    def blocks(step: Callable[[], Any]) -> Callable[[], None]:
        def run() -> None:
            for _ in range(block):
                step()
        return run

    def products() -> None:
        for _ in range(8 * block):
            torch.matmul(left, right)

    times = interleaved_medians({"pytorch_optimizer": blocks(theirs.step),
                                 "optiplug": blocks(ours.step), "matmul": products}, repeats)
    ms = {key: value / block * 1e3 for key, value in times.items()}
    return {**ms, "ratio": ms["optiplug"] / ms["pytorch_optimizer"]}


def run_soap_against_pytorch_optimizer(repeats: int, threads: int | None) -> None:
    """Print the SOAP rows against pytorch_optimizer, each layout in a fresh process."""
    print(f"soap: 1M float32 params in square matrices, CPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), median of {repeats} blocks of "
          f"{SOAP_HYPER['precondition_frequency']} steps (one QR refresh each), ms per step; "
          f"matmul: the step's eight batched products alone")
    header = (f"{'optimizer':<9} {'layout':>11} | {'optiplug/pto':>12} | {'pto/matmul':>10} "
              f"{'optiplug/matmul':>15} | {'matmul ms':>9} {'pto ms':>8} {'optiplug ms':>11}")
    print_head(header)
    for tensors, side in SOAP_LAYOUTS:
        layout = f"{tensors}x{side}^2"
        r = fresh_row(["--soap-row", str(tensors), str(side), "--repeats", str(repeats)],
                      f"{'soap':<9} {layout:>11}", threads)
        if r is None:
            continue
        print(f"{'soap':<9} {layout:>11} | {r['ratio']:>12.2f} | "
              f"{r['pytorch_optimizer'] / r['matmul']:>10.2f} "
              f"{r['optiplug'] / r['matmul']:>15.2f} | {r['matmul']:>9.1f} "
              f"{r['pytorch_optimizer']:>8.1f} {r['optiplug']:>11.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1M params, fewer repeats")
    parser.add_argument("--params", type=int, default=None, help="total parameters")
    parser.add_argument("--splits", type=int, nargs="+", default=None,
                        help="numbers of tensors the parameters are split into")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--optimizers", nargs="+", default=None,
                        choices=sorted({*HYPER, *PAPER_HYPER, *LAYOUT_HYPER, "soap"}))
    parser.add_argument("--pytorch-optimizer", action="store_true",
                        help="optiplug torch vs pytorch_optimizer for the paper optimizers")
    parser.add_argument("--row-pto", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--soap-row", nargs=2, type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch (intra-op) and for the NumPy optimizer; "
                             "default: each library's own default")
    parser.add_argument("--torchref", nargs="*", default=None, choices=list(TORCHREF_HYPER),
                        help="the optimizers with a torch.optim reference (default: all of "
                             "radam ... muon), against torch's own classes")
    parser.add_argument("--torchref-row", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--row", action="store_true",
                        help="measure in this process and print JSON (used internally)")
    parser.add_argument("--kernel-layouts", action="store_true",
                        help="torch's foreach and for-loop kernels per layout, and optiplug's "
                             "pick, for the optimizers without a fused kernel")
    parser.add_argument("--layout-row", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--layouts", default=None,
                        help="with --kernel-layouts: the layouts, e.g. 1000x10000,300x30000 "
                             "(tensors x elements)")
    parser.add_argument("--no-peers", action="store_true",
                        help="leave out optax and Keras (installed or not)")
    parser.add_argument("--peers-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kernel-choice", action="store_true",
                        help="the cost of optiplug's torch kernel choice for SGD momentum")
    args = parser.parse_args()
    total = args.params or (1_000_000 if args.quick else 10_000_000)
    splits = args.splits or ([10, 100] if args.quick else [100, 1000])
    repeats = args.repeats or (6 if args.quick else 15)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        NumpyOptimizer.default_threads = args.threads
    if args.layout_row:
        name, tensors, size = args.layout_row
        print(json.dumps(measure_layout(name, int(tensors), int(size), repeats)))
        return
    if args.kernel_layouts:
        layouts = None if args.layouts is None else [
            (int(t), int(n)) for t, n in (part.split("x") for part in args.layouts.split(","))]
        run_layouts([n for n in (args.optimizers or list(LAYOUT_HYPER)) if n in LAYOUT_HYPER],
                    args.quick, repeats, args.threads, layouts)
        return
    if args.torchref_row:
        print(json.dumps(measure_torchref(args.torchref_row, total, repeats)))
        return
    if args.torchref is not None:
        args.torchref = args.torchref or list(TORCHREF_HYPER)
        torchref_main(args)
        return
    if args.row:
        if args.kernel_choice:
            measured = measure_kernel_choice(args.optimizers[0], total, splits[0], repeats)
        elif args.peers_only:
            measured = measure_peers(args.optimizers[0], total, splits[0], repeats)
        else:
            measured = measure(args.optimizers[0], total, splits[0], repeats)
        print(json.dumps(measured))
        return
    if args.kernel_choice:
        print(f"{total / 1e6:g}M float32 params, CPU, torch {torch.__version__} "
              f"({torch.get_num_threads()} threads), median of {repeats}")
        header = (f"{'optimizer':<9} {'tensors':>7} {'pattern':>10} | {'optiplug/fused':>14} | "
                  f"{'foreach/fused':>12} | {'for-loop/fused':>13} | "
                  f"ms: fused optiplug foreach for-loop")
        print_head(header)
        names = [n for n in args.optimizers if n in ("momentum", "nesterov")] or ["momentum"]
        for tensors in splits:
            for name in names:
                r = fresh_row(["--row", "--kernel-choice", "--optimizers", name, "--splits",
                               str(tensors), "--params", str(total), "--repeats",
                               str(repeats)], f"{name:<9} {tensors:>7}", args.threads)
                if r is not None:
                    print_kernel_rows(name, tensors, r)
        return
    if args.row_pto:
        print(json.dumps(measure_against_pytorch_optimizer(args.optimizers[0], total,
                                                           splits[0], repeats)))
        return
    soap_repeats = args.repeats or (3 if args.quick else 6)
    if args.soap_row:
        print(json.dumps(measure_soap(*args.soap_row, soap_repeats)))
        return
    if args.pytorch_optimizer:
        paper = [n for n in (args.optimizers or list(PAPER_HYPER)) if n in PAPER_HYPER]
        if paper:
            run_against_pytorch_optimizer(paper, total, splits, repeats, args.threads,
                                          stream_bandwidth())
        if "soap" in (args.optimizers or ["soap"]):
            if paper:
                print()
            run_soap_against_pytorch_optimizer(soap_repeats, args.threads)
        return
    bandwidth = stream_bandwidth()
    print(f"memory bandwidth (STREAM triad, torch, {torch.get_num_threads()} threads): "
          f"{bandwidth / 1e9:.1f} GB/s", flush=True)
    names = [n for n in (args.optimizers or list(HYPER)) if n in HYPER]
    if names:
        run_main_table(names, total, splits, repeats, args.threads, bandwidth, args.no_peers)
    paper = [n for n in (args.optimizers or list(PAPER_HYPER)) if n in PAPER_HYPER]
    if paper:
        print()
        run_against_pytorch_optimizer(paper, total, splits, repeats, args.threads, bandwidth)
    if "soap" in (args.optimizers or ["soap"]):
        print()
        run_soap_against_pytorch_optimizer(soap_repeats, args.threads)


def run_main_table(names: list[str], total: int, splits: list[int], repeats: int,
                   threads: int | None, bandwidth: float, no_peers: bool) -> None:
    """Print the table of the builtin optimizers (and peers), each row in a fresh process."""
    print(f"{total / 1e6:g}M float32 params, CPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}, median of {repeats}; "
          f"each row in a fresh process")
    print_head(MAIN_HEADER)
    notes: set[str] = set()
    for tensors in splits:
        for name in names:
            arguments = ["--row", "--optimizers", name, "--splits", str(tensors), "--params",
                         str(total), "--repeats", str(repeats)]
            r = fresh_row(arguments, f"{name:<9} {tensors:>7}", threads)
            if r is None:
                continue
            if not no_peers:
                # The peers in a process of their own, on the same data.
                peers = fresh_row([*arguments, "--peers-only"], f"{name:<9} {tensors:>7} peers",
                                  threads, env={**os.environ, "KERAS_BACKEND": "torch"})
                r.update(peers or {})
            notes.update(r.get("notes", []))
            print_row(name, tensors, r, BYTES_PER_PARAM[name] * total / bandwidth * 1e3)
    for note in sorted(notes):
        print(f"note: {note}")


if __name__ == "__main__":
    main()
