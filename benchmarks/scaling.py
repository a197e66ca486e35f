"""Adam step time per parameter from 1e4 to 3e7 parameters: where each backend leaves overhead.

On float32 parameters in 10 equal tensors, CPU, measured side by side in one run (the
implementations take turns within every repeat; medians reported), each size in a fresh
process: torch's fused Adam, optiplug's torch backend and optiplug's NumPy backend, in
nanoseconds per parameter, next to the memory-bandwidth bound (28 bytes per parameter: params,
grads and both moments read, params and both moments written, over the bandwidth of a STREAM
triad measured at the start). While a step costs many times the bound it is bound by fixed
per-step overhead (Python, dispatch, threads waking up); it leaves that regime where the
``/bound`` ratio falls towards 1.

The first row is the fixed-overhead row of issue 11: Adam on 10 tensors of 100 elements, in
microseconds per step (target: optiplug torch at most 1.05x torch fused).

    python benchmarks/scaling.py            # 1e4 ... 3e7 parameters
    python benchmarks/scaling.py --quick    # 1e4 ... 3e6, fewer repeats
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import numpy as np
import torch

# benchmarks/ is this script's folder, first on sys.path: one bound and one timing loop.
from optimizers import interleaved_medians, stream_bandwidth

import optiplug

BYTES_PER_PARAM = 28
TENSORS = 10


def measure(total: int, tensors: int, repeats: int) -> dict[str, float]:
    """Seconds per Adam step of torch fused, optiplug torch and optiplug NumPy."""
    size = total // tensors
    rng = np.random.default_rng(0)
    start = [rng.standard_normal(size, dtype=np.float32) for _ in range(tensors)]
    grads = [(1e-3 * rng.standard_normal(size)).astype(np.float32) for _ in range(tensors)]

    def params() -> list[torch.nn.Parameter]:
        made = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
        for param, grad in zip(made, grads, strict=True):
            param.grad = torch.from_numpy(grad)
        return made

    fused = torch.optim.Adam(params(), lr=1e-3, fused=True)
    ours = optiplug.optimizer("adam", [(str(i), p) for i, p in enumerate(params())], lr=1e-3)
    numpy_opt = optiplug.optimizer("adam", [a.copy() for a in start], lr=1e-3)
    return interleaved_medians({"torch fused": fused.step, "optiplug torch": ours.step,
                    "optiplug numpy": lambda: numpy_opt.step(grads)}, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="up to 3e6 params, fewer repeats")
    parser.add_argument("--row", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(measure(*args.row)))
        return
    sizes = [10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000]
    if not args.quick:
        sizes += [10_000_000, 30_000_000]
    bandwidth = stream_bandwidth()
    print(f"Adam, float32, {TENSORS} equal tensors, CPU, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), numpy {np.__version__}; bandwidth (STREAM "
          f"triad) {bandwidth / 1e9:.1f} GB/s; each size in a fresh process, medians")
    header = (f"{'params':>10} | {'ours/fused':>10} | {'fused/bound':>11} {'torch/bound':>11} "
              f"{'numpy/bound':>11} | ns/param: bound fused optiplug-torch optiplug-numpy")
    print(header)
    print("-" * len(header))
    rows = [(1_000, 10)] + [(total, TENSORS) for total in sizes]
    for total, tensors in rows:
        repeats = max(6, min(300, int(3e8 / total)) // (5 if args.quick else 1))
        done = subprocess.run([sys.executable, __file__, "--row", str(total), str(tensors),
                               str(repeats)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{total:>10} | failed: {done.stderr.strip()[-300:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        bound = BYTES_PER_PARAM * total / bandwidth
        label = "10 x 100" if total == 1_000 else f"{total:.0e}"
        fused, ours, numpy_time = r["torch fused"], r["optiplug torch"], r["optiplug numpy"]
        print(f"{label:>10} | {ours / fused:>10.2f} | {fused / bound:>11.1f} "
              f"{ours / bound:>11.1f} {numpy_time / bound:>11.1f} | "
              f"{bound / total * 1e9:.2f} {fused / total * 1e9:.2f} {ours / total * 1e9:.2f} "
              f"{numpy_time / total * 1e9:.2f}", flush=True)
        if total == 1_000:
            print(f"{'':>10} | us per step: fused {fused * 1e6:.1f}, optiplug torch "
                  f"{ours * 1e6:.1f}, optiplug numpy {numpy_time * 1e6:.1f}", flush=True)


if __name__ == "__main__":
    main()
