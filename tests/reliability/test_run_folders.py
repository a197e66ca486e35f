"""Run folders: one process each, never stranded, written safely, and OS errors told plainly.

- Several ``optiplug run ... --out same`` processes started together: exactly one trains, each
  other exits 1 naming the holder (pid, host, start time).
- A run killed before its first checkpoint (or before its config) resumes from scratch to the
  numbers of an uninterrupted run; stale temporary files of killed writes are removed.
- Temporary files are unique, exclusive and never follow a planted symlink; files get
  ``0o666 & ~umask``.
- A full disk, a permission error and a path through a file print the system's reason and the
  path, exit 1 and keep the last good checkpoint.
- Without matplotlib a run finishes, prints its table and says the plot was skipped.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from optiplug.cli import main
from optiplug.training.checkpoint import load_numpy_checkpoint
from optiplug.training.lock import RunFolderInUseError, RunFolderLock
from optiplug.training.run import run

ROOT = Path(__file__).resolve().parents[2]


def tiny_recipe(epochs: int = 4, checkpoint_every: int = 1) -> dict[str, Any]:
    """A recipe that trains in a few milliseconds an epoch, with Adam and a schedule."""
    return {
        "name": "tiny",
        "data": {"dataset": "moons", "samples": 200, "noise": 0.2, "validation_split": 0.25,
                 "seed": 1},
        "model": {"layers": [{"units": 8, "initializer": {"name": "xavier_uniform"},
                              "activation": {"name": "tanh"}}]},
        "optimizer": {"name": "adam", "lr": 0.01},
        "scheduler": {"name": "cosine", "T_max": epochs},
        "train": {"epochs": epochs, "batch_size": 16, "seed": 0, "backend": "numpy",
                  "checkpoint_every": checkpoint_every},
    }


def _write_recipe(folder: Path, recipe: dict[str, Any]) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _epochs(run_dir: Path) -> list[dict[str, Any]]:
    epochs = json.loads((run_dir / "metrics.json").read_text())["epochs"]
    return [{k: v for k, v in record.items() if k != "seconds"} for record in epochs]


def _arrays(checkpoint: Path) -> dict[str, Any]:
    """Every array and number of a checkpoint, flattened by path (metrics' seconds left out)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key != "seconds":
                    walk(item, f"{path}/{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}/{index}")
        else:
            flat[path] = value

    walk(load_numpy_checkpoint(checkpoint), "")
    return flat


def assert_same_run(run_dir: Path, reference: Path) -> None:
    """Bit-identical metrics and final checkpoint (every array, rng state and counter)."""
    assert _epochs(run_dir) == _epochs(reference)
    got, expected = (_arrays(d / "checkpoints" / "last.npz") for d in (run_dir, reference))
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        if isinstance(value, np.ndarray):
            assert got[key].dtype == value.dtype, key
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key] == value, key


def _temporaries(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.rglob("*.tmp"))


# -------------------------------------------------------------------- one process a folder
_RACER = textwrap.dedent("""
    import os, sys, time
    from optiplug.cli import main
    from optiplug.training import lock, model_numpy, run  # imported before the start
    go, others_done = sys.argv[1], sys.argv[2]

    # The winner holds the folder until every other racer has tried it and ended, however
    # the machine schedules them (only the release waits; locking is untouched).
    release = lock.RunFolderLock.release

    def release_after_the_others(self):
        deadline = time.monotonic() + 120
        while not os.path.exists(others_done) and time.monotonic() < deadline:
            time.sleep(0.005)
        release(self)

    lock.RunFolderLock.release = release_after_the_others
    while not os.path.exists(go):
        time.sleep(0.002)
    sys.exit(main(sys.argv[3:]))
""")


def test_processes_racing_into_one_folder_leave_exactly_one_training(tmp_path: Path) -> None:
    racers_count = 5
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=3))
    out, go, others_done = tmp_path / "same", tmp_path / "go", tmp_path / "others-done"
    argv = ["run", str(recipe), "--out", str(out), "--quiet"]
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, str(go), str(others_done), *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(racers_count)]
    go.touch()
    outcomes = {}
    deadline = time.monotonic() + 300
    while len(outcomes) < racers_count - 1 and time.monotonic() < deadline:
        for racer in racers:
            if racer.pid not in outcomes and racer.poll() is not None:
                outcomes[racer.pid] = (racer.returncode, *racer.communicate())
        time.sleep(0.01)
    others_done.touch()
    for racer in racers:
        if racer.pid not in outcomes:
            outcomes[racer.pid] = (racer.wait(timeout=300), *racer.communicate())
    winners = [pid for pid, (code, _, _) in outcomes.items() if code == 0]
    assert len(winners) == 1, [(code, err) for code, _, err in outcomes.values()]
    winner = winners[0]
    for pid, (code, stdout, stderr) in outcomes.items():
        if pid == winner:
            continue
        assert code == 1 and stdout == "", stderr
        assert stderr.startswith(f"optiplug: error: run folder {out} is in use by process "
                                 f"{winner} on host {socket.gethostname()} (started 20"), stderr
        assert stderr.count("\n") == 1
    # The one that trained wrote the numbers of a run that had the folder to itself.
    reference = run(tiny_recipe(epochs=3), out=tmp_path / "alone", progress=False)
    assert_same_run(out, reference.run_dir)


def test_the_lock_names_its_holder_and_is_free_after_release(tmp_path: Path) -> None:
    with RunFolderLock(tmp_path) as lock:
        holder = json.loads((tmp_path / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        # flock locks belong to the open file: a second open in this process is refused too.
        with pytest.raises(RunFolderInUseError, match=f"process {os.getpid()} on host") as info:
            RunFolderLock(tmp_path).acquire()
        assert info.value.holder == holder
        with pytest.raises(RunFolderInUseError):
            run(tiny_recipe(epochs=1), resume=tmp_path, progress=False)
    assert lock.path.read_bytes() == b""
    with RunFolderLock(tmp_path):
        pass


# ------------------------------------------------------------------------ never stranded
def test_a_run_killed_before_its_first_checkpoint_resumes_from_scratch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=4, checkpoint_every=3))
    killed = tmp_path / "killed"
    process = subprocess.run([sys.executable, "-m", "optiplug", "run", str(recipe), "--out",
                              str(killed), "--kill-after-epoch", "2", "--quiet"],
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -9, process.stderr
    assert len(_epochs(killed)) == 2 and not (killed / "checkpoints").exists()
    # A killed write leaves its temporary file; others' files of similar names stay.
    (killed / "checkpoints").mkdir()
    stale = [killed / ".metrics.json.0123456789abcdef.tmp",
             killed / "checkpoints" / ".last.npz.fedcba9876543210.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    kept = [killed / "notes.tmp", killed / ".last.npz.tmp"]
    for path in kept:
        path.write_bytes(b"mine")

    assert main(["run", "--resume", str(killed)]) == 0
    err = capsys.readouterr().err
    assert f"starting {killed} again: it has no checkpoint yet" in err
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"mine" for path in kept)
    reference = run(tiny_recipe(epochs=4, checkpoint_every=3), out=tmp_path / "whole",
                    progress=False)
    assert_same_run(killed, reference.run_dir)


def test_a_folder_killed_before_its_config_is_started_by_its_recipe(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=2))
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / ".lock").write_text('{"pid": 1, "host": "gone", "started": "x"}')  # left by a kill
    (folder / ".config.yaml.00000000000000aa.tmp").write_text("name: tin")
    assert main(["run", "--resume", str(folder), "--quiet"]) == 1
    assert "holds no run yet" in capsys.readouterr().err
    assert main(["run", str(recipe), "--resume", str(folder), "--quiet"]) == 0
    assert main(["run", str(recipe), "--resume", str(folder), "--quiet"]) == 0  # a finished run
    reference = run(tiny_recipe(epochs=2), out=tmp_path / "whole", progress=False)
    assert_same_run(folder, reference.run_dir)
    assert _temporaries(folder) == []


# ------------------------------------------------------------------------ temporary files
def test_a_symlink_planted_in_the_run_folder_never_redirects_a_write(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    victims = {name: outside / name for name in ("a", "b", "c")}
    for path in victims.values():
        path.write_bytes(b"precious")
    folder = tmp_path / "run"
    folder.mkdir()
    # The old fixed temporary name of the plot, and the targets themselves.
    (folder / ".curves.png.tmp.png").symlink_to(victims["a"])
    (folder / "curves.png").symlink_to(victims["b"])
    (folder / "metrics.json").symlink_to(victims["c"])
    run(tiny_recipe(epochs=2), out=folder, progress=False)
    assert all(path.read_bytes() == b"precious" for path in victims.values())
    for name in ("curves.png", "metrics.json"):
        assert not (folder / name).is_symlink() and (folder / name).stat().st_size > 100
    assert (folder / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_symlink_planted_as_the_lock_is_refused(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / ".lock").symlink_to(victim)
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=1))
    assert main(["run", str(recipe), "--out", str(folder), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err == (f"optiplug: error: {folder / '.lock'}: "
                   f"{os.strerror(errno.ELOOP)}\n")
    assert victim.read_bytes() == b"precious" and not (folder / "config.yaml").exists()


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_run_files_honour_the_umask(mask: int, tmp_path: Path) -> None:
    with _umask(mask):
        result = run(tiny_recipe(epochs=2), out=tmp_path / "run", progress=False)
    files = [p for p in result.run_dir.rglob("*") if p.is_file()]
    assert sorted(p.name for p in files) == [".lock", "config.yaml", "curves.png",
                                             "gradients.png", "last.npz", "layers.csv",
                                             "metrics.csv", "metrics.json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path.name


# ------------------------------------------------------------------------------ OS errors
def _checkpoint_epoch(run_dir: Path) -> int:
    return int(load_numpy_checkpoint(run_dir / "checkpoints" / "last.npz")["meta"]["epoch"])


def test_a_path_through_a_file_is_one_line(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=1))
    (tmp_path / "file").write_text("not a folder")
    out = tmp_path / "file" / "run"
    assert main(["run", str(recipe), "--out", str(out), "--quiet"]) == 1
    assert capsys.readouterr().err == (f"optiplug: error: {out}: "
                                       f"{os.strerror(errno.ENOTDIR)}\n")


def test_a_full_disk_keeps_the_last_checkpoint_and_resumes_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=4))
    folder = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(folder), "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    savez = np.savez

    def disk_fills(file: Any, **arrays: Any) -> None:
        file.write(b"PK\x03\x04 the first bytes of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", disk_fills)
    assert main(["run", "--resume", str(folder), "--epochs", "4", "--quiet"]) == 1
    checkpoint = folder / "checkpoints" / "last.npz"
    assert capsys.readouterr().err == (f"optiplug: error: {checkpoint}: "
                                       f"{os.strerror(errno.ENOSPC)}\n")
    assert _checkpoint_epoch(folder) == 2 and _temporaries(folder) == []
    monkeypatch.setattr(np, "savez", savez)
    assert main(["run", "--resume", str(folder), "--epochs", "4", "--quiet"]) == 0
    reference = run(tiny_recipe(epochs=4), out=tmp_path / "whole", progress=False)
    assert_same_run(folder, reference.run_dir)


_CAP_DAC_OVERRIDE = 1


@contextlib.contextmanager
def _file_permissions_enforced() -> Iterator[None]:
    """As root, drop CAP_DAC_OVERRIDE from this thread's effective set, so that file modes
    bind as they do for any user; restored afterwards (it stays in the permitted set)."""
    if os.geteuid() != 0:
        yield
        return

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    header, data = Header(0x20080522, 0), (Data * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        pytest.skip("root, and capabilities cannot be read to drop CAP_DAC_OVERRIDE")
    saved = data[0].effective
    data[0].effective &= ~(1 << _CAP_DAC_OVERRIDE)
    if libc.capset(ctypes.byref(header), data) != 0:
        pytest.skip("root, and CAP_DAC_OVERRIDE cannot be dropped")
    try:
        yield
    finally:
        data[0].effective = saved
        assert libc.capset(ctypes.byref(header), data) == 0


def test_a_permission_error_keeps_the_last_checkpoint_and_resumes_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _write_recipe(tmp_path, tiny_recipe(epochs=4))
    folder = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(folder), "--epochs", "2", "--quiet"]) == 0
    capsys.readouterr()
    checkpoints = folder / "checkpoints"
    checkpoints.chmod(0o555)
    try:
        with _file_permissions_enforced():
            code = main(["run", "--resume", str(folder), "--epochs", "4", "--quiet"])
    finally:
        checkpoints.chmod(0o755)
    assert code == 1
    assert capsys.readouterr().err == (f"optiplug: error: {checkpoints / 'last.npz'}: "
                                       f"{os.strerror(errno.EACCES)}\n")
    assert _checkpoint_epoch(folder) == 2 and _temporaries(folder) == []
    assert main(["run", "--resume", str(folder), "--epochs", "4", "--quiet"]) == 0
    reference = run(tiny_recipe(epochs=4), out=tmp_path / "whole", progress=False)
    assert_same_run(folder, reference.run_dir)


# ------------------------------------------------------------------- without matplotlib
_NO_MATPLOTLIB = textwrap.dedent("""
    import sys

    class NoMatplotlib:  # as on a base install: importing matplotlib fails
        def find_spec(self, name, path=None, target=None):
            if name == "matplotlib" or name.startswith("matplotlib."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, NoMatplotlib())
""")


def test_a_run_without_matplotlib_finishes_and_says_how_to_get_the_plot(
        tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(_NO_MATPLOTLIB)
    moons = ROOT / "examples" / "recipes" / "moons.yaml"
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(blocker), *filter(None, [os.environ.get("PYTHONPATH")])])}
    process = subprocess.run([sys.executable, "-m", "optiplug", "run", str(moons), "--out",
                              str(out), "--epochs", "4", "--quiet"], capture_output=True,
                             text=True, timeout=300, env=env)
    assert process.returncode == 0, process.stderr
    assert "curves.png skipped: matplotlib is not installed (pip install 'optiplug[train]' " \
           "adds it)" in process.stdout
    assert not (out / "curves.png").exists()
    # The table shows the run's own final numbers, those of the same run with matplotlib.
    reference = run(moons, out=tmp_path / "with", epochs=4, progress=False)
    assert (reference.run_dir / "curves.png").is_file()
    assert _epochs(out) == _epochs(reference.run_dir)
    final = reference.history[-1]
    assert f"validation  {final['val_loss']:.4f}    {final['val_accuracy']:.2%}" in process.stdout
    check = subprocess.run([sys.executable, "-c", "import matplotlib"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 1 and "No module named 'matplotlib'" in check.stderr
