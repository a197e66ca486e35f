"""Child side of the kill test: ``optiplug run`` in a process forked from a warm server.

Imported by the forkserver before it forks (``set_forkserver_preload``): the CLI, the training
modules, matplotlib and the discovered registry are then already in every child, so a child
starts in milliseconds and its SIGKILL lands inside the run, not inside Python's start-up.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NoReturn

from optiplug.cli import main
from optiplug.registry import default_registry
from optiplug.training import checkpoint, model_numpy, run  # noqa: F401  (preloaded)

with contextlib.suppress(ImportError):  # the base install: runs skip the plot
    from matplotlib import pyplot  # noqa: F401  (preloaded: the plot is a write too)

default_registry().techniques()  # discovered once, in the server

# Where a kill lands inside the n-th atomic write of the run.
STAGES = ("empty", "half", "unrenamed", "renamed")


def _die() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("not reached")


def _killing_write(original: Callable[..., None], name: str, occurrence: int, stage: str
                   ) -> Callable[..., None]:
    """``atomic_write`` that dies at ``stage`` of its ``occurrence``-th write of ``name``."""
    calls = [0]

    def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None],
                     **options: Any) -> None:
        if Path(path).name == name:
            calls[0] += 1
        if Path(path).name != name or calls[0] != occurrence:
            original(path, write, **options)
            return

        def dying_write(file: IO[bytes]) -> None:
            if stage == "half":
                buffer = io.BytesIO()
                write(buffer)
                file.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
            elif stage == "unrenamed":
                write(file)
            file.flush()
            _die()

        if stage == "renamed":
            original(path, write, **options)
            _die()
        original(path, dying_write, **options)
        _die()  # not reached: dying_write ends the process

    return atomic_write


def run_cli(argv: list[str], plan: tuple[str, str, int, str] | None, log: str) -> None:
    """``optiplug`` with ``argv``, killed as ``plan = ("write", file name, n, stage)`` says.

    Exits with the command's status; stdout and stderr go to ``log``.
    """
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    if plan is not None:
        _, name, occurrence, stage = plan
        patched = _killing_write(checkpoint.atomic_write, name, occurrence, stage)
        # write_text_atomic and the savers look the name up in the module; the plot in run.
        checkpoint.atomic_write = patched  # type: ignore[assignment]
        run.atomic_write = patched  # type: ignore[attr-defined]
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def ready() -> None:
    """Nothing: a first child, so that the server has started and preloaded before timing."""


def folder_files(run_dir: Path) -> list[str]:
    """Every file under ``run_dir``, relative, sorted (for the test's messages)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())


def describe(plan: Any) -> str:
    """A kill plan in words."""
    if plan[0] == "time":
        return f"SIGKILL after {plan[1]:.3f} s"
    return f"SIGKILL at stage {plan[3]!r} of write #{plan[2]} of {plan[1]}"
