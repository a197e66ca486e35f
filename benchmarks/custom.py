"""Custom optimizers: a chain of transforms vs the same rule written by hand, per backend.

The rule is AdamW-like: ``chain(scale_by_adam(), add_decayed_weights(wd),
scale_by_learning_rate())``, i.e. ``p <- p - lr * (adam(g) + wd * p)``. Each backend's chain
is timed against a hand-written implementation of the same rule in the same process:

- torch: ``torch._foreach_*`` calls over the tensor list (what ``torch.optim.AdamW``'s foreach
  path does): moments, ``sqrt``, ``p *= 1 - lr wd``, ``addcdiv_``.
- NumPy: a cache-blocked loop of in-place ufuncs over each parameter (block of
  ``block_size`` elements, two scratch blocks), single-threaded; the chain optimizer runs
  with ``threads=1`` too.

Both sides start from the same parameters and gradients and the script checks that they
agree before timing. Prints median step times over repeats and the ratio chain / hand.

    python benchmarks/custom.py            # 10M float32 params in 100 tensors
    python benchmarks/custom.py --quick    # 1M params in 100 tensors, fewer repeats
    python benchmarks/custom.py --backend numpy --torch-threads 1
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import optiplug.transforms as ot
from optiplug.transforms._numpy import NumpyChainOptimizer

LR, B1, B2, EPS, WD = 1e-3, 0.9, 0.999, 1e-8, 0.01


def rule() -> ot.Chain:
    return ot.chain(ot.scale_by_adam(b1=B1, b2=B2, eps=EPS), ot.add_decayed_weights(WD),
                    ot.scale_by_learning_rate())


Timing = tuple[float, float, float, float]
"""Median seconds of the chain and of the hand-written step, then their minimums."""


def paired_times(first: Callable[[], None], second: Callable[[], None], repeats: int,
                 warmup: int = 2) -> Timing:
    """Median and minimum seconds per call of each, timed alternately (same machine state)."""
    for _ in range(warmup):
        first()
        second()
    times: tuple[list[float], list[float]] = ([], [])
    for index in range(repeats):
        order = ((0, first), (1, second)) if index % 2 == 0 else ((1, second), (0, first))
        for slot, step in order:
            start = time.perf_counter()
            step()
            times[slot].append(time.perf_counter() - start)
    return (statistics.median(times[0]), statistics.median(times[1]), min(times[0]),
            min(times[1]))


# ------------------------------------------------------------------------------- torch
class HandTorchAdamW:
    """The rule with torch foreach kernels, written by hand."""

    def __init__(self, params: list[Any]) -> None:
        import torch

        self.params = params
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def step(self) -> None:
        import torch

        with torch.no_grad():
            grads = [p.grad for p in self.params]
            self.t += 1
            torch._foreach_lerp_(self.m, grads, 1 - B1)
            torch._foreach_mul_(self.v, B2)
            torch._foreach_addcmul_(self.v, grads, grads, 1 - B2)
            bias_correction2_sqrt = math.sqrt(1 - B2**self.t)
            denom = torch._foreach_sqrt(self.v)
            torch._foreach_div_(denom, bias_correction2_sqrt)
            torch._foreach_add_(denom, EPS)
            torch._foreach_mul_(self.params, 1 - LR * WD)
            torch._foreach_addcdiv_(self.params, self.m, denom, -LR / (1 - B1**self.t))


def bench_torch(sizes: list[int], repeats: int) -> Timing:
    import torch

    generator = torch.Generator().manual_seed(0)
    base = [torch.randn(n, generator=generator) for n in sizes]
    grads = [torch.randn(n, generator=generator) for n in sizes]

    def params() -> list[Any]:
        made = [torch.nn.Parameter(b.clone()) for b in base]
        for p, g in zip(made, grads, strict=True):
            p.grad = g
        return made

    chain_params, hand_params = params(), params()
    chain_opt = ot.chain_optimizer(rule(), chain_params, lr=LR)
    hand = HandTorchAdamW(hand_params)
    for _ in range(3):
        chain_opt.step()
        hand.step()
    error = max(float((a - b).abs().max().detach()) for a, b in zip(chain_params, hand_params,
                                                          strict=True))
    assert error < 1e-5, f"torch chain and hand-written differ by {error}"
    return paired_times(chain_opt.step, hand.step, repeats)


# ------------------------------------------------------------------------------- numpy
class HandNumpyAdamW:
    """The rule as a cache-blocked loop of in-place ufuncs, written by hand."""

    def __init__(self, params: list[np.ndarray], grads: list[np.ndarray],
                 block_size: int) -> None:
        self.params, self.grads = params, grads
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.block = block_size
        self.scratch = np.empty((2, block_size), np.float32)
        self.t = 0

    def step(self) -> None:
        self.t += 1
        bias_correction2_sqrt = math.sqrt(1 - B2**self.t)
        eps = EPS * bias_correction2_sqrt
        scale = -LR * bias_correction2_sqrt / (1 - B1**self.t)
        shrink = 1 - LR * WD
        size = self.block
        for p, g, m, v in zip(self.params, self.grads, self.m, self.v, strict=True):
            for start in range(0, p.size, size):
                stop = min(start + size, p.size)
                pb, gb, mb, vb = p[start:stop], g[start:stop], m[start:stop], v[start:stop]
                tmp = self.scratch[0, :stop - start]
                np.multiply(gb, 1 - B1, out=tmp)
                np.multiply(mb, B1, out=mb)
                np.add(mb, tmp, out=mb)
                np.multiply(gb, 1 - B2, out=tmp)
                np.multiply(tmp, gb, out=tmp)
                np.multiply(vb, B2, out=vb)
                np.add(vb, tmp, out=vb)
                np.sqrt(vb, out=tmp)
                np.add(tmp, eps, out=tmp)
                np.divide(mb, tmp, out=tmp)
                np.multiply(tmp, scale, out=tmp)
                np.multiply(pb, shrink, out=pb)
                np.add(pb, tmp, out=pb)


def bench_numpy(sizes: list[int], repeats: int) -> tuple[Timing, int]:
    rng = np.random.default_rng(0)
    base = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    grads = [rng.standard_normal(n, dtype=np.float32) for n in sizes]
    chain_params = {f"p{i}": b.copy() for i, b in enumerate(base)}
    hand_params = [b.copy() for b in base]
    chain_opt = NumpyChainOptimizer(chain_params, rule(), lr=LR, threads=1)
    named_grads = {f"p{i}": g for i, g in enumerate(grads)}
    hand = HandNumpyAdamW(hand_params, grads, chain_opt.block_size)

    def chain_step() -> None:
        chain_opt.step(named_grads)

    for _ in range(3):
        chain_step()
        hand.step()
    error = max(float(np.abs(chain_params[f"p{i}"] - h).max())
                for i, h in enumerate(hand_params))
    assert error < 1e-5, f"NumPy chain and hand-written differ by {error}"
    return paired_times(chain_step, hand.step, repeats), chain_opt.block_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M params, 15 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--tensors", type=int, default=100)
    parser.add_argument("--backend", choices=("numpy", "torch", "both"), default="both")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    args = parser.parse_args()
    total = 1_000_000 if args.quick else 10_000_000
    repeats = args.repeats or (15 if args.quick else 21)
    sizes = [total // args.tensors] * args.tensors
    rows: list[tuple[str, Timing]] = []
    if args.backend in ("torch", "both"):
        try:
            import torch
        except ImportError:
            print("torch not installed: torch row skipped")
        else:
            if args.torch_threads:
                torch.set_num_threads(args.torch_threads)
            rows.append((f"torch {torch.__version__} ({torch.get_num_threads()} threads)",
                         bench_torch(sizes, repeats)))
    if args.backend in ("numpy", "both"):
        timing, block = bench_numpy(sizes, repeats)
        rows.append((f"numpy {np.__version__} (1 thread, block {block})", timing))
    print(f"rule: chain(scale_by_adam, add_decayed_weights, scale_by_learning_rate); "
          f"{sum(sizes):,} float32 params in {len(sizes)} tensors; {repeats} repeats")
    print(f"{'backend':<38} {'chain ms':>9} {'hand ms':>9} {'ratio':>6} {'min ratio':>9} "
          f"{'target':>7}")
    for label, (chain_s, hand_s, chain_min, hand_min) in rows:
        ratio = chain_s / hand_s
        print(f"{label:<38} {chain_s * 1e3:>9.2f} {hand_s * 1e3:>9.2f} {ratio:>6.2f} "
              f"{chain_min / hand_min:>9.2f} {'<= 1.3':>7} {'ok' if ratio <= 1.3 else 'OVER'}")
    print("chain ms / hand ms: medians (the ratio judged); min ratio: fastest runs, for noisy "
          "machines")


if __name__ == "__main__":
    main()
