"""NumPy backend step time against torch's fastest kernel and the memory-bandwidth bound.

Measured side by side in one run (the implementations take turns within every repeat; medians
are reported), on float32 parameters split into equal tensors, CPU:

- ``bound``: the memory-bandwidth bound of the step: the bytes it must move (each parameter,
  gradient and state array read once, each parameter and state array written once) at the
  bandwidth of a STREAM-style triad (``a = b + s * c`` with torch, 10M elements) measured at
  the start of the run;
- ``torch``: torch.optim's fused kernel, or where torch has none (RMSprop, Adadelta) the faster
  of its foreach and for-loop kernels;
- ``fused``: optiplug's NumPy backend with its numba kernels (``OPTIPLUG_NUMPY_KERNELS=numba``),
  steps of a reused plan: one multi-tensor driver call per run of tensors and thread; compile
  time excluded (reported: the first step compiles or loads the kernel and runs it per tensor,
  the second builds the plan's address tables and compiles or loads the driver);
- ``per-t``: the same kernels called once per tensor (``fused_drivers = False``), the path
  before multi-tensor drivers, to show what they save;
- ``ufunc``: optiplug's NumPy backend on its pure-NumPy fallback (``OPTIPLUG_NUMPY_KERNELS=numpy``);
- ``numexpr``: the other candidate engine, Adam only: numexpr evaluates one expression per
  output array (``m``, ``v``, then ``p``), each in one threaded, cache-blocked pass;
- ``stream``: the memory traffic of the optimizer and nothing else, through the same machinery
  as ``fused``: a NumPy optimizer whose kernel reads the parameter, the gradient and as many
  state arrays, and writes the parameter and the states, with one addition each (no square
  roots, divisions or branches). ``fused/stream`` near 1 says the optimizer's arithmetic costs
  nothing and its time is what this memory system gives for that many streams in that layout;
  ``stream/bound`` is the distance of that access pattern from the triad's bandwidth.

Targets (issue 11): fused/torch <= 1.0 and fused/bound <= 1.3 on 10M params in 100 and 1000
tensors; at 2000 x 500, Adam fused/torch <= 0.5 and fused/bound <= 4; at 10 x 100, at most
25 us per step.

    python benchmarks/numpy_kernels.py            # 10M in 100 and 1000 tensors; 2000x500; 10x100
    python benchmarks/numpy_kernels.py --quick    # fewer repeats (under a minute or two)
    python benchmarks/numpy_kernels.py --optimizers adam momentum --repeats 15 --threads 1
    python benchmarks/numpy_kernels.py --layouts 100x100000,1000x10000  # the 10M layouts only
    python benchmarks/numpy_kernels.py --in-cache  # the kernels' arithmetic rate, memory aside
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import optiplug
from optiplug.backends.numpy import NumpyOptimizer, fused_kernel

OPTIMIZERS: dict[str, dict[str, Any]] = {
    "adam": {"lr": 1e-3},
    "adamw": {"lr": 1e-3, "weight_decay": 1e-2},
    "momentum": {"lr": 1e-2, "momentum": 0.9},
    "nesterov": {"lr": 1e-2, "momentum": 0.9},
    "rmsprop": {"lr": 1e-3},
    "adagrad": {"lr": 1e-2},
    "adadelta": {"lr": 1.0},
}
# Arrays moved per parameter element: read param, grad and the state, write param and state.
ARRAYS_MOVED = {"adam": 7, "adamw": 7, "momentum": 5, "nesterov": 5, "rmsprop": 5,
                "adagrad": 5, "adadelta": 7}
LAYOUTS = [(100, 100_000), (1000, 10_000), (2000, 500), (10, 100)]


@fused_kernel
def _stream_one(param: Any, grad: Any, state: Any, scale: Any) -> None:
    for i in range(param.size):
        g = grad[i]
        param[i] = param[i] + g * scale
        state[i] = state[i] + g


@fused_kernel
def _stream_two(param: Any, grad: Any, first: Any, second: Any, scale: Any) -> None:
    for i in range(param.size):
        g = grad[i]
        param[i] = param[i] + g * scale
        first[i] = first[i] + g
        second[i] = second[i] + g


class _StreamOne(NumpyOptimizer):
    """The traffic of a one-state optimizer (momentum, RMSprop, Adagrad), no arithmetic."""

    state_keys = ("first",)
    scratch_blocks = 0

    def __init__(self, params: Any, lr: float = 1e-3, **options: Any) -> None:
        super().__init__(params, {"lr": lr}, **options)

    def prepare(self, group: Any, state: Any) -> Any:
        return (-group["lr"],)

    def update(self, param: Any, grad: Any, state: Any, scratch: Any, scalars: Any) -> None:
        self.update_fused(param, grad, state, scalars)

    def update_fused(self, param: Any, grad: Any, state: Any, scalars: Any) -> None:
        _stream_one(param, grad, state[0], *scalars)


class _StreamTwo(_StreamOne):
    """The traffic of a two-state optimizer (Adam, Adadelta), no arithmetic."""

    state_keys = ("first", "second")

    def update_fused(self, param: Any, grad: Any, state: Any, scalars: Any) -> None:
        _stream_two(param, grad, state[0], state[1], *scalars)


def in_cache(name: str, size: int = 20_000, calls: int = 500) -> tuple[float, float]:
    """Nanoseconds per element of the optimizer's fused kernel and of the stream kernel of its
    traffic, on one float32 tensor of ``size`` elements that stays in the L2 cache, one thread:
    the kernel's arithmetic rate, with memory out of the way (best of 5 runs of ``calls``)."""
    os.environ["OPTIPLUG_NUMPY_KERNELS"] = "numba"
    rng = np.random.default_rng(0)
    rates = []
    for build in (lambda p: optiplug.optimizer(name, p, backend="numpy", **OPTIMIZERS[name]),
                  lambda p: (_StreamTwo if ARRAYS_MOVED[name] == 7 else _StreamOne)(p)):
        params = {"w": rng.standard_normal(size).astype(np.float32)}
        grads = {"w": (0.01 * rng.standard_normal(size)).astype(np.float32)}
        opt = build(params)
        opt.threads = 1
        opt.step(grads)
        opt.step(grads)  # past the first-step branch of the momentum kernels
        state = opt.state["w"]
        arrays = [state[key] for key in opt.state_keys_for(opt.param_groups[0])]
        scalars = opt._prepared(opt.param_groups[0], state, params["w"].dtype)
        param, grad = params["w"], grads["w"]
        opt.update_fused(param, grad, arrays, scalars)
        best = math.inf
        for _ in range(5):
            begin = time.perf_counter()
            for _ in range(calls):
                opt.update_fused(param, grad, arrays, scalars)
            best = min(best, (time.perf_counter() - begin) / calls)
        rates.append(best / size * 1e9)
    os.environ.pop("OPTIPLUG_NUMPY_KERNELS")
    return rates[0], rates[1]


def _torch_variants(name: str) -> list[tuple[str, Callable[[list[torch.Tensor]], Any]]]:
    hyper = OPTIMIZERS[name]
    optim = torch.optim
    if name in ("adam", "adamw", "adagrad"):
        cls = {"adam": optim.Adam, "adamw": optim.AdamW, "adagrad": optim.Adagrad}[name]
        return [("fused", lambda ps: cls(ps, **hyper, fused=True))]
    if name in ("momentum", "nesterov"):
        nesterov = name == "nesterov"
        return [("fused", lambda ps: optim.SGD(ps, **hyper, nesterov=nesterov, fused=True))]
    cls = optim.RMSprop if name == "rmsprop" else optim.Adadelta
    return [("foreach", lambda ps: cls(ps, **hyper, foreach=True)),
            ("for-loop", lambda ps: cls(ps, **hyper, foreach=False))]


def bandwidth(n: int = 10_000_000, repeats: int = 15) -> float:
    """Bytes per second of a STREAM triad ``a = b + s * c`` (three float32 arrays moved)."""
    b, c, a = torch.rand(n), torch.rand(n), torch.empty(n)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.add(b, c, alpha=0.5, out=a)
        times.append(time.perf_counter() - start)
    return 3 * 4 * n / min(times)


def _numexpr_adam(params: list[np.ndarray], grads: list[np.ndarray]) -> Callable[[], None]:
    import numexpr

    exp_avg = [np.zeros_like(p) for p in params]
    exp_avg_sq = [np.zeros_like(p) for p in params]
    counter = [0]
    f32 = np.float32

    def step() -> None:
        counter[0] += 1
        t = counter[0]
        bc2 = (1 - 0.999**t) ** 0.5
        scale, eps = f32(-1e-3 / (1 - 0.9**t) * bc2), f32(1e-8 * bc2)
        for p, g, m, v in zip(params, grads, exp_avg, exp_avg_sq, strict=True):
            numexpr.evaluate("m * b1 + g * c1", out=m, casting="same_kind", local_dict={
                "m": m, "g": g, "b1": f32(0.9), "c1": f32(0.1)})
            numexpr.evaluate("v * b2 + g * c2 * g", out=v, casting="same_kind", local_dict={
                "v": v, "g": g, "b2": f32(0.999), "c2": f32(0.001)})
            numexpr.evaluate("p + m / (sqrt(v) + e) * s", out=p, casting="same_kind",
                             local_dict={"p": p, "m": m, "v": v, "e": eps, "s": scale})
    return step


def measure(name: str, count: int, size: int, repeats: int, steps: int, threads: int | None
            ) -> tuple[dict[str, float], float]:
    """Median seconds per step of every implementation, and the fused path's first two
    steps (kernel, then driver: compiled, or loaded from the on-disk cache)."""
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(size).astype(np.float32) for _ in range(count)]
    grads = [(0.01 * rng.standard_normal(size)).astype(np.float32) for _ in range(count)]
    runners: dict[str, Callable[[], Any]] = {}
    for label, build in _torch_variants(name):
        tensors = [torch.from_numpy(p.copy()).requires_grad_() for p in start]
        for tensor, grad in zip(tensors, grads, strict=True):
            tensor.grad = torch.from_numpy(grad.copy())
        runners[f"torch {label}"] = build(tensors).step
    first_steps = (0.0, 0.0)
    for label, engine in (("fused", "numba"), ("per-t", "numba"), ("ufunc", "numpy")):
        os.environ["OPTIPLUG_NUMPY_KERNELS"] = engine
        params = {str(i): p.copy() for i, p in enumerate(start)}
        named_grads = {str(i): g.copy() for i, g in enumerate(grads)}
        opt = optiplug.optimizer(name, params, backend="numpy", **OPTIMIZERS[name])
        assert opt.kernels == engine
        opt.fused_drivers = label == "fused"
        if threads is not None:
            opt.threads = threads
        if label == "fused":
            begin = time.perf_counter()
            opt.step(named_grads)
            middle = time.perf_counter()
            opt.step(named_grads)
            first_steps = (middle - begin, time.perf_counter() - middle)
        runners[label] = lambda opt=opt, named_grads=named_grads: opt.step(named_grads)
    os.environ["OPTIPLUG_NUMPY_KERNELS"] = "numba"
    stream_class = _StreamTwo if ARRAYS_MOVED[name] == 7 else _StreamOne
    stream = stream_class({str(i): p.copy() for i, p in enumerate(start)})
    if threads is not None:
        stream.threads = threads
    stream_grads = {str(i): g.copy() for i, g in enumerate(grads)}
    runners["stream"] = lambda: stream.step(stream_grads)
    os.environ.pop("OPTIPLUG_NUMPY_KERNELS")
    if name == "adam" and importlib.util.find_spec("numexpr") is not None:
        runners["numexpr"] = _numexpr_adam([p.copy() for p in start], grads)
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {key: [] for key in runners}
    keys = list(runners)
    for repeat in range(repeats):
        # A rotated order each repeat: no implementation always runs right after another
        # (the one after torch's kernels measured up to 1.4x slower when always second).
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            run = runners[key]
            begin = time.perf_counter()
            for _ in range(steps):
                run()
            times[key].append((time.perf_counter() - begin) / steps)
    medians = {key: statistics.median(values) for key, values in times.items()}
    torch_keys = [key for key in medians if key.startswith("torch")]
    best = min(torch_keys, key=medians.__getitem__)
    medians["torch"] = medians[best]
    medians["torch kernel"] = float(torch_keys.index(best))
    return medians, first_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch, optiplug and numexpr (default: torch's and "
                             "optiplug's defaults); 1 is steadier on a loaded machine")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        choices=list(OPTIMIZERS))
    parser.add_argument("--layouts", default=None,
                        help="tensors x elements, e.g. 100x100000,1000x10000 (default: all four "
                             "of the issue's layouts)")
    parser.add_argument("--in-cache", action="store_true",
                        help="only the kernels' arithmetic rate: ns per element of each fused "
                             "kernel and of its stream kernel on one tensor in the L2 cache")
    args = parser.parse_args()
    if args.in_cache:
        print(f"one float32 tensor of 20000 elements (in the L2 cache), one thread, NumPy "
              f"{np.__version__}: ns per element, best of 5 x 500 calls")
        print(f"{'optimizer':<10}{'fused':>8}{'stream':>8}  {'fused/stream':>12}")
        for name in args.optimizers:
            fused, stream = in_cache(name)
            print(f"{name:<10}{fused:>8.3f}{stream:>8.3f}  {fused / stream:>12.2f}")
        return
    layouts = LAYOUTS if args.layouts is None else [
        (int(t), int(n)) for t, n in (part.split("x") for part in args.layouts.split(","))]
    repeats = args.repeats or (3 if args.quick else 9)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
        try:
            import numexpr
        except ImportError:
            pass
        else:
            numexpr.set_num_threads(args.threads)
    bytes_per_second = bandwidth()
    print(f"torch {torch.__version__}, NumPy {np.__version__}, {torch.get_num_threads()} torch "
          f"threads; STREAM triad bandwidth {bytes_per_second / 1e9:.1f} GB/s")
    for count, size in layouts:
        small = count * size < 100_000
        unit, scale = ("us", 1e6) if small else ("ms", 1e3)
        print(f"\n{count} tensors x {size} = {count * size:,} params  (times in {unit})")
        print(f"{'optimizer':<10}{'bound':>8}{'torch':>8}{'fused':>8}{'stream':>8}{'per-t':>8}"
              f"{'ufunc':>8}{'numexpr':>9}  {'fused/torch':>11}{'fused/bound':>12}"
              f"{'fused/stream':>13}{'stream/bound':>13}{'per-t/fused':>12}{'ufunc/fused':>12}"
              f"  torch kernel")
        for name in args.optimizers:
            steps = 200 if small else (20 if count * size < 2_000_000 else 3)
            medians, first = measure(name, count, size, repeats, steps, args.threads)
            bound = ARRAYS_MOVED[name] * 4 * count * size / bytes_per_second
            numexpr = f"{medians['numexpr'] * scale:>9.2f}" if "numexpr" in medians else " " * 9
            kernel = [label for label, _ in _torch_variants(name)][int(medians["torch kernel"])]
            print(f"{name:<10}{bound * scale:>8.2f}{medians['torch'] * scale:>8.2f}"
                  f"{medians['fused'] * scale:>8.2f}{medians['stream'] * scale:>8.2f}"
                  f"{medians['per-t'] * scale:>8.2f}"
                  f"{medians['ufunc'] * scale:>8.2f}{numexpr}  "
                  f"{medians['fused'] / medians['torch']:>11.2f}"
                  f"{medians['fused'] / bound:>12.2f}"
                  f"{medians['fused'] / medians['stream']:>13.2f}"
                  f"{medians['stream'] / bound:>13.2f}"
                  f"{medians['per-t'] / medians['fused']:>12.2f}"
                  f"{medians['ufunc'] / medians['fused']:>12.2f}  {kernel}"
                  f"  (fused steps 1, 2: {first[0] * 1e3:.0f}, {first[1] * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
