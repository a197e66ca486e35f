"""One process per run folder: an operating-system lock held for the whole run.

The lock is ``fcntl.flock`` (``msvcrt.locking`` on Windows) on the file ``.lock`` inside the run
folder. The kernel releases it when the process ends in any way (SIGKILL included), so a
crashed run never leaves a folder locked, and a lock test never races a check-then-write. The
holder writes its process id, host and start time into the file for the others to report.

The file stays in the folder when the run ends: deleting a lock file while another process
waits on it would let a third process lock a new file of the same name.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from ..errors import OptiplugError

__all__ = ["LOCK_FILE", "RunFolderInUseError", "RunFolderLock"]

LOCK_FILE: Final = ".lock"
_OPEN_FLAGS: Final = (os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
                      | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
# How long a refused process waits for the holder to write its name (it does so right after
# locking, so this is only reached on a machine too loaded to schedule it).
_NAME_WAIT_S: Final = 2.0
_WINDOWS_LOCK_OFFSET: Final = 1 << 30  # past the holder's name, which others must read


class RunFolderInUseError(OptiplugError, RuntimeError):
    """Another process holds the run folder (it is training or resuming into it).

    Attributes:
        holder: What the holder wrote about itself (``pid``, ``host``, ``started``), or empty
            if it has not written it yet.
    """

    def __init__(self, message: str, holder: dict[str, Any]) -> None:
        super().__init__(message)
        self.holder = holder


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` without waiting; ``False`` if another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096)
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict[str, Any]) -> str:
    """``process 123 on host node7 (started 2026-01-01T00:00:00Z)``."""
    if not holder:
        return "another process (which has not written its name yet)"
    pid = str(holder.get("pid", "?"))[:20]
    host = str(holder.get("host", "?"))[:100]
    started = str(holder.get("started", "?"))[:40]
    return f"process {pid} on host {host} (started {started})"


class RunFolderLock:
    """Hold ``folder`` for this process; a context manager.

    Args:
        folder: An existing folder.

    Raises:
        RunFolderInUseError: (on enter) another process holds the folder.
        OSError: the lock file cannot be created or locked (a read-only folder, a file system
            without locks).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`RunFolderInUseError` naming the holder."""
        fd = os.open(self.path, _OPEN_FLAGS, 0o666)
        try:
            holder: dict[str, Any] = {}
            deadline = time.monotonic() + _NAME_WAIT_S
            while not _try_lock(fd):
                # The holder names itself right after locking; wait for that, or for the lock
                # to come free (the holder ended meanwhile).
                holder = _read_holder(fd)
                if holder or time.monotonic() > deadline:
                    raise RunFolderInUseError(
                        f"run folder {self.folder} is in use by {describe_holder(holder)}; "
                        f"wait for that run to end, or choose another folder", holder)
                time.sleep(0.01)
            me = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode("utf-8"))
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the kernel also does when the process ends)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # no stale name for the next process to misreport
            _unlock(fd)
        finally:
            os.close(fd)

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()
