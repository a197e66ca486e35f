"""Checkpoints: atomic writes, NumPy checkpoints without pickle, torch ones loaded safely.

- Every file is written to a temporary file created exclusively (``O_EXCL``, never through a
  symlink) under a unique name in the target's folder, flushed to disk, then renamed over the
  target with ``os.replace``: a crash while writing leaves the previous file whole, and a
  planted symlink can never redirect a write. Files get the usual ``0o666 & ~umask`` mode.
- NumPy checkpoints are one ``.npz`` holding the arrays plus a JSON document for everything
  else (nested dicts, lists, tuples, numbers, strings), read back with ``allow_pickle=False``.
  Before any array is read, every member of the archive is checked against what the document
  needs (its name, storage and declared size), so a hostile archive costs no more memory than
  its size on disk.
- torch checkpoints are ``torch.save`` files read back with ``weights_only=True``.
- An unreadable, corrupt or foreign file raises :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Final

import numpy as np

from ..errors import CheckpointError

__all__ = ["FORMAT", "CheckpointError", "atomic_write", "load_numpy_checkpoint",
           "load_torch_checkpoint", "remove_stale_temporaries", "save_numpy_checkpoint",
           "save_torch_checkpoint", "write_text_atomic"]

FORMAT: Final = "optiplug-checkpoint"
VERSION: Final = 1
_JSON_KEY: Final = "__optiplug__"
_TEMPORARY: Final = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")
_ARRAY_MEMBER: Final = re.compile(r"a(0|[1-9][0-9]{0,8})\.npy")
_CREATE_FLAGS: Final = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                        | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))


def _create_temporary(folder: Path, name: str) -> tuple[int, Path]:
    """A new file ``.<name>.<16 hex digits>.tmp`` in ``folder``, opened for writing.

    ``O_EXCL`` makes the name ours alone and refuses to follow a symlink planted at it; mode
    ``0o666`` lets the umask decide the permissions (``tempfile.mkstemp`` forces ``0o600``).
    """
    for _ in range(100):
        candidate = folder / f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(candidate, _CREATE_FLAGS, 0o666), candidate
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(folder))


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None], *,
                 durable: bool = True) -> None:
    """Write a file atomically: ``write(file)`` into a temporary sibling, fsync, rename.

    The temporary file is removed if ``write`` fails, and the target keeps its old content. An
    operating-system error names the target (not the temporary file) and keeps its errno, so
    ``PermissionError`` stays a ``PermissionError``.

    Args:
        durable: Flush the file and the rename to disk (``fsync``), so that the new content
            survives a power cut. Without it the write is still atomic for any crash of the
            process; use that for files rebuilt on resume (metrics, plots), which would
            otherwise pay two disk flushes per epoch.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = _create_temporary(target.parent, target.name)
    except OSError as exc:
        raise _naming(exc, target) from exc
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            if durable:
                os.fsync(file.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _naming(exc, target) from exc
        raise
    if durable:
        _fsync_dir(target.parent)


def _naming(exc: OSError, target: Path) -> OSError:
    """The same error (``OSError`` picks the subclass from the errno) naming ``target``."""
    if exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(target))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that :func:`atomic_write` left behind when killed.

    Only call this while no other process writes into ``folder`` (the run folder's lock). Only
    names :func:`atomic_write` creates are touched, and a symlink is removed, never followed.

    Returns:
        The removed paths.
    """
    removed = []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in os.scandir(folder):
            if _TEMPORARY.fullmatch(entry.name) and not entry.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (Windows), so best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write` for ``durable``)."""
    data = text.encode("utf-8")

    def write(file: IO[bytes]) -> None:
        file.write(data)

    atomic_write(path, write, durable=durable)


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut at 300 characters (torch's messages run long)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


# -------------------------------------------------------------------------------- NumPy
class _Encoder:
    """Nested Python data to JSON plus named arrays, and back."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray[Any, Any]] = {}

    def encode(self, value: Any) -> Any:
        if isinstance(value, np.ndarray | np.generic):
            array = np.asarray(value)
            if array.dtype.hasobject:
                raise CheckpointError("cannot store an object array in a NumPy checkpoint")
            key = f"a{len(self.arrays)}"
            self.arrays[key] = array
            return {"__array__": key, "scalar": isinstance(value, np.generic)}
        if isinstance(value, bool | int | float | str) or value is None:
            return value
        if isinstance(value, tuple):
            return {"__tuple__": [self.encode(item) for item in value]}
        if isinstance(value, list):
            return [self.encode(item) for item in value]
        if isinstance(value, Mapping):
            if all(isinstance(key, str) for key in value) and "__array__" not in value and \
                    "__tuple__" not in value and "__items__" not in value:
                return {key: self.encode(item) for key, item in value.items()}
            return {"__items__": [[self.encode(key), self.encode(item)]
                                  for key, item in value.items()]}
        raise CheckpointError(f"cannot store a {type(value).__name__} in a NumPy checkpoint")


def _decode(value: Any, arrays: Mapping[str, np.ndarray[Any, Any]]) -> Any:
    if isinstance(value, list):
        return [_decode(item, arrays) for item in value]
    if isinstance(value, dict):
        if "__array__" in value:
            array = arrays[value["__array__"]]
            return array[()] if value.get("scalar") else array
        if "__tuple__" in value:
            return tuple(_decode(item, arrays) for item in value["__tuple__"])
        if "__items__" in value:
            return {_decode(key, arrays): _decode(item, arrays)
                    for key, item in value["__items__"]}
        return {key: _decode(item, arrays) for key, item in value.items()}
    return value


def save_numpy_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (nested dicts, lists, tuples, scalars, arrays) as one ``.npz``.

    Raises:
        CheckpointError: ``payload`` holds something that is not plain data or an array.
    """
    encoder = _Encoder()
    document = {"format": FORMAT, "version": VERSION, "backend": "numpy",
                "payload": encoder.encode(dict(payload))}
    text = json.dumps(document)
    arrays: dict[str, Any] = dict(encoder.arrays)
    arrays[_JSON_KEY] = np.array(text)
    atomic_write(path, lambda file: np.savez(file, **arrays))


def load_numpy_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_numpy_checkpoint` (never unpickles).

    The archive is checked before its arrays are read: every member must be one that
    :func:`save_numpy_checkpoint` writes (the JSON document, or an array the document refers
    to), stored uncompressed, with a declared size that fits in the file and matches its
    ``.npy`` header. So reading costs at most the file's size in memory, and an archive with
    an unknown member, a compressed member (a "zip bomb") or a lying header is refused unread.

    Raises:
        CheckpointError: missing, unreadable, corrupt or not an optiplug NumPy checkpoint.
    """
    file = Path(path)
    try:
        with open(file, "rb") as handle:
            document, arrays = _read_archive(file, handle)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {file}") from None
    except Exception as exc:
        # Bad bytes break zipfile, zlib, struct, the .npy header parser or json (RecursionError
        # on deep nesting) in too many ways to list: each means the file cannot be read.
        raise CheckpointError(f"checkpoint {file} is corrupt or unreadable: "
                              f"{_one_line(exc)}") from None
    try:
        payload = _decode(document["payload"], arrays)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {file} is corrupt: {_one_line(exc)}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {file} is corrupt: payload is not a mapping")
    return payload


def _read_archive(file: Path, handle: IO[bytes]
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray[Any, Any]]]:
    """The checked document and the arrays it refers to, each member checked before read."""
    if handle.read(6) == b"\x93NUMPY":  # a bare array: an .npy file
        raise CheckpointError(f"{file} is not an optiplug checkpoint")
    size = os.fstat(handle.fileno()).st_size
    handle.seek(0)
    with zipfile.ZipFile(handle) as archive:
        members = archive.infolist()
        by_name = {member.filename: member for member in members}
        document_member = by_name.get(f"{_JSON_KEY}.npy")
        if document_member is None:
            raise CheckpointError(f"{file} is not an optiplug checkpoint")
        if len(by_name) != len(members):
            raise CheckpointError(f"checkpoint {file} is corrupt: a member name is repeated")
        for member in members:
            if member.filename != document_member.filename and \
                    not _ARRAY_MEMBER.fullmatch(member.filename):
                raise CheckpointError(f"checkpoint {file} holds a member it does not use: "
                                      f"{member.filename[:80]!r} (refused unread)")
            _check_stored(file, member, size)
        document = json.loads(str(_read_member(file, archive, document_member, "U")[()]))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise CheckpointError(f"{file} is not an optiplug checkpoint")
        if document.get("version") != VERSION:
            raise CheckpointError(f"{file} has checkpoint version "
                                  f"{str(document.get('version'))[:20]!r}; this optiplug "
                                  f"reads version {VERSION}")
        needed = _array_keys(document.get("payload"))
        unused = sorted(set(by_name) - {f"{key}.npy" for key in needed}
                        - {document_member.filename})
        if unused:
            raise CheckpointError(f"checkpoint {file} holds a member it does not use: "
                                  f"{unused[0][:80]!r} (refused unread)")
        arrays = {}
        for key in sorted(needed):
            array_member = by_name.get(f"{key}.npy")
            if array_member is None:
                raise CheckpointError(f"checkpoint {file} is corrupt: array {key[:80]!r} is "
                                      f"missing")
            arrays[key] = _read_member(file, archive, array_member, None)
    return document, arrays


def _check_stored(file: Path, member: zipfile.ZipInfo, size: int) -> None:
    """A member as :func:`numpy.savez` writes it: stored, not encrypted, inside the file."""
    name = member.filename[:80]
    if member.compress_type != zipfile.ZIP_STORED:
        raise CheckpointError(f"checkpoint {file} has a compressed member {name!r} (refused "
                              f"unread: optiplug writes checkpoints uncompressed)")
    if member.flag_bits & 0x1:
        raise CheckpointError(f"checkpoint {file} has an encrypted member {name!r}")
    if member.compress_size != member.file_size or \
            member.header_offset + member.compress_size > size:
        raise CheckpointError(f"checkpoint {file} is corrupt: member {name!r} declares "
                              f"{member.file_size} bytes, more than the file holds")


def _read_member(file: Path, archive: zipfile.ZipFile, member: zipfile.ZipInfo,
                 kind: str | None) -> np.ndarray[Any, Any]:
    """One ``.npy`` member, read only after its header agrees with its declared size."""
    from numpy.lib import format as npy

    name = member.filename[:80]
    with archive.open(member) as stream:
        version = npy.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = npy.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = npy.read_array_header_2_0(stream)
        else:
            raise CheckpointError(f"checkpoint {file} is corrupt: member {name!r} has .npy "
                                  f"format {version}")
        count = 1
        for dimension in shape:
            count *= int(dimension)
        expected = stream.tell() + count * dtype.itemsize
    if dtype.hasobject or (kind is not None and dtype.kind != kind) or \
            expected != member.file_size:
        raise CheckpointError(f"checkpoint {file} is corrupt: member {name!r} holds "
                              f"{member.file_size} bytes, its header says {dtype.str} "
                              f"{tuple(shape)} ({expected} bytes)")
    with archive.open(member) as stream:
        array: np.ndarray[Any, Any] = npy.read_array(stream, allow_pickle=False)
    return array


def _array_keys(payload: Any) -> set[str]:
    """The array names a document refers to (``{"__array__": name}``), walked without
    recursion."""
    keys: set[str] = set()
    stack = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, dict):
            key = value.get("__array__")
            if isinstance(key, str):
                keys.add(key)
            stack.extend(value.values())
    return keys


# -------------------------------------------------------------------------------- torch
def save_torch_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (tensors, state dicts, plain data) with ``torch.save``, atomically."""
    import torch

    document = {"format": FORMAT, "version": VERSION, "backend": "torch",
                "payload": dict(payload)}
    atomic_write(path, lambda file: torch.save(document, file))


def load_torch_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_torch_checkpoint` with ``weights_only=True``.

    Raises:
        CheckpointError: missing, unreadable, corrupt, unsafe or not an optiplug checkpoint.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"no checkpoint at {file}")
    try:
        document = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        # As for NumPy checkpoints; ``weights_only`` refusals are ``pickle.UnpicklingError``.
        raise CheckpointError(f"checkpoint {file} is corrupt or unreadable: "
                              f"{_one_line(exc)}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not an optiplug checkpoint")
    if document.get("version") != VERSION:
        raise CheckpointError(f"{file} has checkpoint version {document.get('version')!r}; "
                              f"this optiplug reads version {VERSION}")
    payload = document.get("payload")
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {file} is corrupt: payload is not a mapping")
    return payload
