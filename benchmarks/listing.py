"""Listing without importing: ``optiplug list`` (and show/schema/doctor) against ``import
optiplug``, cold (the catalog cache misses: every plugin is discovered) and warm (it hits).

Every row is the wall time of fresh processes, run interleaved with the baseline in one run
(median of N), so load from other processes hits all rows alike. Target: warm ``optiplug list``
at most 1.5x ``python -c "import optiplug"``, with every builtin and with the pytorch_optimizer
bridge installed.

Usage: ``python benchmarks/listing.py [--runs N] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable
NO_BRIDGE = {"OPTIPLUG_DISABLED_PLUGINS": "bridge.pytorch_optimizer"}


def timed(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``command`` (which must succeed)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per row (median)")
    parser.add_argument("--quick", action="store_true", help="3 runs per row")
    args = parser.parse_args()
    runs = 3 if args.quick else args.runs
    cli = shutil.which("optiplug", path=str(Path(PY).parent)) or shutil.which("optiplug")
    if cli is None:
        raise SystemExit("the optiplug command is not installed next to this interpreter")
    base = {k: v for k, v in os.environ.items() if not k.startswith("OPTIPLUG_")}
    bridge = importlib.util.find_spec("pytorch_optimizer") is not None
    work = Path(tempfile.mkdtemp(prefix="optiplug-listing-"))
    warm_dir = {"bridge": work / "warm-bridge", "builtins": work / "warm-builtins"}
    rows: dict[str, tuple[list[str], dict[str, str], str | None]] = {
        'python -c "import optiplug"': ([PY, "-c", "import optiplug"], {}, None),
        "optiplug list, builtins only, warm": ([cli, "list"], NO_BRIDGE, "builtins"),
        "optiplug list, builtins only, cold": ([cli, "list"], NO_BRIDGE, "cold"),
    }
    if bridge:
        rows.update({
            "optiplug list, with the pto bridge, warm": ([cli, "list"], {}, "bridge"),
            "optiplug list, with the pto bridge, cold": ([cli, "list"], {}, "cold"),
            "optiplug show optimizer pto.lion, warm": (
                [cli, "show", "optimizer", "pto.lion"], {}, "bridge"),
            "optiplug schema pto.lion, warm": ([cli, "schema", "pto.lion"], {}, "bridge"),
            "optiplug doctor, warm": ([cli, "doctor"], {}, "bridge"),
            'python -c "import pytorch_optimizer"': (
                [PY, "-c", "import pytorch_optimizer"], {}, None),
        })
    # Fill the warm caches (and the section for show/schema) before timing.
    for command, extra, cache in rows.values():
        if cache in warm_dir:
            subprocess.run(command, check=True, capture_output=True, env={
                **base, **extra, "OPTIPLUG_CACHE_DIR": str(warm_dir[cache])})
    times: dict[str, list[float]] = {label: [] for label in rows}
    for run in range(runs):
        for label, (command, extra, cache) in rows.items():
            env = {**base, **extra}
            if cache == "cold":
                env["OPTIPLUG_CACHE_DIR"] = str(work / f"cold-{run}-{len(times[label])}")
            elif cache is not None:
                env["OPTIPLUG_CACHE_DIR"] = str(warm_dir[cache])
            times[label].append(timed(command, env))
    shutil.rmtree(work, ignore_errors=True)
    baseline = statistics.median(times['python -c "import optiplug"'])
    print(f"python {sys.version.split()[0]}, {runs} runs per row (median, interleaved), "
          f"os.cpu_count()={os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    header = ("command", "median ms", "x import optiplug", "target")
    table = []
    for label, samples in times.items():
        median = statistics.median(samples)
        target = "<= 1.5x" if label.startswith("optiplug list") and "warm" in label else ""
        table.append((label, f"{median * 1e3:.0f}", f"{median / baseline:.2f}x", target))
    widths = [max(len(str(r[i])) for r in [header, *table]) for i in range(4)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
