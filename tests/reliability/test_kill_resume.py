"""SIGKILL ``optiplug run`` at random points, resume, and get the uninterrupted run's numbers.

Run folders of a small recipe (6 epochs, a checkpoint every 2, Adam with a cosine schedule)
are killed up to four times each and resumed to the end, 24 kills in all, in two kinds of
folders taking turns:

- killed at a seeded random stage of a seeded random atomic write (the config, the metrics, a
  checkpoint or the plot): before its temporary file holds anything, half written, whole but
  not renamed, or just after the rename (the first kills are fixed, so that kills land before
  the config exists, during a checkpoint and after one);
- killed after a random time within the length of a whole run.

Every killed attempt must leave each file whole (config, metrics, checkpoint), the next attempt
must run (nothing is ever stranded), and each folder's final metrics and checkpoint must be
bit-identical to those of an uninterrupted run, with no temporary file left behind.

The runs are children of a forkserver that imported everything once (``_kill_worker``), so a
child starts in milliseconds and the test stays small.
"""

from __future__ import annotations

import json
import multiprocessing
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from optiplug.training.checkpoint import load_numpy_checkpoint
from optiplug.training.recipe import load_recipe

from . import _kill_worker
from .test_run_folders import assert_same_run, tiny_recipe

SEED = 2026
KILLS = 24
KILLS_PER_FOLDER = 4
MAX_ATTEMPTS = 80
# The files a run writes, and how many times a whole run writes each.
WRITES = {"config.yaml": 1, "metrics.csv": 8, "metrics.json": 8, "last.npz": 3,
          "curves.png": 1}
# The first kill of each write-killed folder, so that every place is hit whatever the seed:
# during the first checkpoint, before the config exists, just after the second checkpoint.
FIRST_KILLS = [("write", "last.npz", 1, "half"), ("write", "config.yaml", 1, "unrenamed"),
               ("write", "last.npz", 2, "renamed")]


@pytest.fixture(scope="module")
def forkserver() -> Any:
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs the forkserver start method (POSIX)")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([_kill_worker.__name__])
    return context


def _attempt(context: Any, argv: list[str], plan: tuple[Any, ...] | None, log: Path) -> int:
    """One child process; its exit code (``-SIGKILL`` when killed)."""
    write_plan = plan if plan is not None and plan[0] == "write" else None
    child = context.Process(target=_kill_worker.run_cli, args=(argv, write_plan, str(log)))
    child.start()
    if plan is not None and plan[0] == "time":
        child.join(timeout=plan[1])
        if child.exitcode is None:
            child.kill()
    child.join(timeout=300)
    assert child.exitcode is not None, "a run hung"
    return int(child.exitcode)


def _whole(folder: Path) -> str:
    """Check each file a kill may have caught mid-write; say where the kill landed."""
    if (folder / "config.yaml").exists():
        load_recipe(folder / "config.yaml")
    if (folder / "metrics.json").exists():
        json.loads((folder / "metrics.json").read_text())
    checkpoint = folder / "checkpoints" / "last.npz"
    if list(folder.glob("checkpoints/.last.npz.*.tmp")):
        where = "during a checkpoint"
    elif checkpoint.exists():
        where = "after a checkpoint"
    else:
        where = "before the first checkpoint"
    if checkpoint.exists():
        load_numpy_checkpoint(checkpoint)
    return where


def _plan(rng: np.random.Generator, by_write: bool, run_seconds: float) -> tuple[Any, ...]:
    if not by_write:
        return ("time", float(rng.uniform(0.0, run_seconds)))
    name = str(rng.choice(sorted(WRITES)))
    return ("write", name, int(rng.integers(1, WRITES[name] + 1)),
            str(rng.choice(_kill_worker.STAGES)))


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_numbers(
        forkserver: Any, tmp_path: Path) -> None:
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(epochs=6, checkpoint_every=2)))
    warm = forkserver.Process(target=_kill_worker.ready)
    warm.start()
    warm.join(timeout=300)
    reference = tmp_path / "reference"
    started = time.perf_counter()
    assert _attempt(forkserver, ["run", str(recipe), "--out", str(reference), "--quiet"],
                    None, tmp_path / "reference.log") == 0
    run_seconds = time.perf_counter() - started  # only to spread the timed kills

    rng = np.random.default_rng(SEED)
    landed: dict[str, int] = {}
    kills = stale = attempts = folders = 0
    while kills < KILLS:
        # Folders alternate: killed at chosen writes, killed after random times. A folder
        # whose run got to the end before its kill is checked and the next one begins.
        by_write = folders % 2 == 0
        folder, log = tmp_path / f"run{folders}", tmp_path / f"run{folders}.log"
        first_kill = FIRST_KILLS[folders // 2] if by_write and folders // 2 < len(
            FIRST_KILLS) else None
        folders += 1
        killed_here, history = 0, []
        while killed_here < KILLS_PER_FOLDER and kills < KILLS:
            attempts += 1
            assert attempts <= MAX_ATTEMPTS, history
            plan = first_kill if first_kill and not history else _plan(rng, by_write,
                                                                       run_seconds)
            argv = (["run", str(recipe), "--resume", str(folder), "--quiet"] if folder.exists()
                    else ["run", str(recipe), "--out", str(folder), "--quiet"])
            code = _attempt(forkserver, argv, plan, log)
            history.append((_kill_worker.describe(plan), code,
                            _kill_worker.folder_files(folder) if folder.exists() else []))
            if code != -signal.SIGKILL:  # the run ended before the kill: it must have worked
                assert code == 0, (history, log.read_text())
                break
            killed_here += 1
            kills += 1
            if folder.exists():
                where = _whole(folder)
                landed[where] = landed.get(where, 0) + 1
                stale += bool(list(folder.rglob("*.tmp")))
        argv = ["run", str(recipe), "--resume", str(folder), "--quiet"]
        assert _attempt(forkserver, argv, None, log) == 0, (history, log.read_text())
        assert_same_run(folder, reference)
        assert list(folder.rglob("*.tmp")) == [], _kill_worker.folder_files(folder)
        assert (folder / "curves.png").read_bytes() == (reference / "curves.png").read_bytes()

    assert kills >= 20
    # FIRST_KILLS land in each place; the seeded and timed kills add to them at random.
    assert {"before the first checkpoint", "during a checkpoint",
            "after a checkpoint"} <= landed.keys(), landed
    assert stale > 0  # and the resumes removed what the killed writes left
