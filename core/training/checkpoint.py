"""Checkpoints: atomic writes, NumPy checkpoints without pickle, torch ones loaded safely.

- Every file is written to a temporary file in the same folder, flushed to disk, then renamed
  over the target with ``os.replace``: a crash while writing leaves the previous checkpoint
  whole.
- NumPy checkpoints are one ``.npz`` holding the arrays plus a JSON document for everything
  else (nested dicts, lists, tuples, numbers, strings), read back with ``allow_pickle=False``.
- torch checkpoints are ``torch.save`` files read back with ``weights_only=True``.
- An unreadable, corrupt or foreign file raises :class:`CheckpointError`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
from numpy.lib.npyio import NpzFile

from ..errors import CheckpointError

__all__ = ["FORMAT", "CheckpointError", "atomic_write", "load_numpy_checkpoint",
           "load_torch_checkpoint", "save_numpy_checkpoint", "save_torch_checkpoint"]

FORMAT: Final = "optiplug-checkpoint"
VERSION: Final = 1
_JSON_KEY: Final = "__optiplug__"


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically: ``write(file)`` into a temporary sibling, fsync, rename.

    The temporary file is removed if ``write`` fails, and the target keeps its old content.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                    dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(target.parent)


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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""
    data = text.encode("utf-8")

    def write(file: IO[bytes]) -> None:
        file.write(data)

    atomic_write(path, write)


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

    Raises:
        CheckpointError: missing, unreadable, corrupt or not an optiplug NumPy checkpoint.
    """
    file = Path(path)
    try:
        loaded = np.load(file, allow_pickle=False)
        if not isinstance(loaded, NpzFile):  # a bare array: an .npy file
            raise CheckpointError(f"{file} is not an optiplug checkpoint")
        with loaded as archive:
            if _JSON_KEY not in archive.files:
                raise CheckpointError(f"{file} is not an optiplug checkpoint")
            document = json.loads(str(archive[_JSON_KEY][()]))
            arrays = {name: archive[name] for name in archive.files if name != _JSON_KEY}
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {file}") from None
    except Exception as exc:
        # Bad bytes break zipfile, zlib, struct, the .npy header parser or json (RecursionError
        # on deep nesting) in too many ways to list: each means the file cannot be read.
        raise CheckpointError(f"checkpoint {file} is corrupt or unreadable: "
                              f"{_one_line(exc)}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{file} is not an optiplug checkpoint")
    if document.get("version") != VERSION:
        raise CheckpointError(f"{file} has checkpoint version {document.get('version')!r}; "
                              f"this optiplug reads version {VERSION}")
    try:
        payload = _decode(document["payload"], arrays)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {file} is corrupt: {_one_line(exc)}") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"checkpoint {file} is corrupt: payload is not a mapping")
    return payload


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
