"""Registry overheads, measured side by side in one run; prints a table of ratios.

Rows:
- ``import optiplug`` over importing numpy, pydantic (BaseModel) and pluggy themselves, and
  over a bare interpreter (wall time of fresh interpreters, median of N runs);
- ``optiplug --help`` and ``optiplug list`` wall time;
- discovering and loading every builtin plugin (in a fresh interpreter);
- ``optiplug.build(dict)`` over constructing the same object directly (per call);
- an optimizer step with no lifecycle-hook implementation over the same torch optimizer built
  directly (the hooks must cost nothing when nobody implements them).

Usage: ``python benchmarks/registry.py [--runs N]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

PY = sys.executable


def wall(command: list[str], runs: int) -> float:
    """Median wall seconds of ``command`` over ``runs`` runs (after one warm-up)."""
    subprocess.run(command, check=True, capture_output=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def per_call(fn: Callable[[], object], repeat: int = 7, number: int = 2000) -> float:
    """Best-of-``repeat`` seconds per call."""
    return min(timeit.repeat(fn, repeat=repeat, number=number)) / number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    runs = args.runs
    cli = shutil.which("optiplug") or str(Path(PY).with_name("optiplug"))

    bare = wall([PY, "-c", "pass"], runs)
    deps = wall([PY, "-c", "import numpy, pluggy; from pydantic import BaseModel, Field"], runs)
    ours = wall([PY, "-c", "import numpy, pluggy; from pydantic import BaseModel, Field; "
                           "import optiplug"], runs)
    alone = wall([PY, "-c", "import optiplug"], runs)
    help_time = wall([cli, "--help"], runs)
    list_time = wall([cli, "list"], runs)
    discover = subprocess.run(
        [PY, "-c", "import time, optiplug; t = time.perf_counter(); "
                   "n = len(optiplug.registry().techniques()); "
                   "print(n, time.perf_counter() - t)"],
        check=True, capture_output=True, text=True).stdout.split()

    import numpy as np
    import torch

    import optiplug

    registry = optiplug.registry()
    params = [torch.nn.Parameter(torch.zeros(10)) for _ in range(4)]
    config = {"kind": "optimizer", "name": "adam", "lr": 1e-3}
    build_adam = per_call(lambda: optiplug.build(config, params=params))
    direct_adam = per_call(lambda: torch.optim.Adam(params, lr=1e-3))
    relu_config = {"kind": "activation", "name": "relu"}
    build_relu = per_call(lambda: optiplug.build(relu_config, backend="torch"))
    direct_relu = per_call(lambda: torch.nn.ReLU())
    numpy_params = {"w": np.zeros(10), "b": np.zeros(3)}
    build_sgd_np = per_call(lambda: optiplug.optimizer("sgd", numpy_params, lr=0.1))
    sgd_type = type(optiplug.optimizer("sgd", numpy_params, lr=0.1))
    direct_sgd_np = per_call(lambda: sgd_type(numpy_params, lr=0.1))

    for p in params:
        p.grad = torch.ones_like(p)
    ours_opt = optiplug.build({"kind": "optimizer", "name": "sgd", "lr": 1e-3}, params=params)
    torch_opt = torch.optim.SGD(params, lr=1e-3, foreach=True)
    assert not ours_opt._optimizer_step_pre_hooks and not registry.hook.optiplug_before_step \
        .get_hookimpls()
    step_ours = per_call(ours_opt.step, number=5000)
    step_torch = per_call(torch_opt.step, number=5000)

    ms = 1e3
    us = 1e6
    rows = [
        ("import optiplug (after numpy, pydantic BaseModel+Field, pluggy)",
         f"{(ours - deps) * ms:.1f} ms added",
         f"{ours / deps:.2f}x", "<= 30 ms added"),
        ("import optiplug alone vs bare interpreter", f"{alone * ms:.0f} ms vs {bare * ms:.0f} ms",
         f"{alone / bare:.2f}x", ""),
        ("optiplug --help", f"{help_time * ms:.0f} ms", f"{help_time / bare:.2f}x bare",
         "< 300 ms"),
        ("optiplug list (all builtins)", f"{list_time * ms:.0f} ms",
         f"{list_time / bare:.2f}x bare", "< 500 ms"),
        (f"discover + load {discover[0]} builtin techniques", f"{float(discover[1]) * ms:.0f} ms",
         "", ""),
        ("build(adam dict, torch) vs torch.optim.Adam(...)",
         f"{(build_adam - direct_adam) * us:.1f} us added", f"{build_adam / direct_adam:.2f}x",
         "<= 50 us added"),
        ("build(relu dict, torch) vs nn.ReLU()", f"{(build_relu - direct_relu) * us:.1f} us added",
         f"{build_relu / direct_relu:.2f}x", "<= 50 us added"),
        ("optiplug.optimizer(sgd, numpy) vs its class", f"{(build_sgd_np - direct_sgd_np) * us:.1f}"
         " us added", f"{build_sgd_np / direct_sgd_np:.2f}x", "<= 50 us added"),
        ("sgd step, no hook impls vs torch.optim.SGD", f"{step_ours * us:.1f} us vs "
         f"{step_torch * us:.1f} us", f"{step_ours / step_torch:.2f}x", "~1.00x"),
    ]
    header = ("measurement", "figure", "ratio", "target")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, numpy {np.__version__}, "
          f"{runs} runs per wall-time row (median)")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
