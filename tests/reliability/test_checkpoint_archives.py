"""Hostile ``.npz`` checkpoints are refused before they are read, at a bounded memory cost.

Each archive is a real checkpoint with one member changed or added: a 1.5 GB zero-filled member
deflated to 1.5 MB (unknown name, a name like ours, or replacing an array), an ``.npy`` header
that claims more than its member holds, or a central directory that claims more than the file
holds. Each is loaded in a child process whose peak resident memory (``VmHWM``, else
``ru_maxrss``) is read after the refusal. Before the members were checked, the first cases
cost about 1.6 GB.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from optiplug.training.checkpoint import (
    CheckpointError,
    load_numpy_checkpoint,
    save_numpy_checkpoint,
)

BOMB_BYTES = 1536 * 2**20  # 1.5 GiB of zeros once inflated
PEAK_LIMIT_MB = 300
_CHUNK = 16 * 2**20


# ------------------------------------------------------------------ CRC-32 without the bytes
# zlib's crc32_combine (crc32.c), so the bomb's CRC is right without hashing 1.5 GB.
_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def _crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    p, k = 1 << 31, 3
    while length2:
        if length2 & 1:
            p = _multmodp(_X2N[k & 31], p)
        length2 >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


def _crc32_of_zeros(count: int) -> int:
    result, block, block_length = 0, zlib.crc32(b"\0"), 1
    while count:
        if count & 1:
            result = _crc32_combine(result, block, block_length)
        block = _crc32_combine(block, block, block_length)
        block_length *= 2
        count >>= 1
    return result


def test_crc_helpers_agree_with_zlib() -> None:
    for count in (0, 1, 7, 4097, 3 * 2**20 + 5):
        assert _crc32_of_zeros(count) == zlib.crc32(bytes(count))
    head, tail = b"header bytes", bytes(100_000)
    assert _crc32_combine(zlib.crc32(head), zlib.crc32(tail), len(tail)) == \
        zlib.crc32(head + tail)


# ------------------------------------------------------------------------- archive making
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False,
                                                  "shape": shape})
    return buffer.getvalue()


def _deflated_zero_member(zeros: int) -> tuple[bytes, int, int]:
    """An ``.npy`` of ``zeros`` bytes of ``float64`` zeros: (deflated, crc, inflated size).

    Built from one deflated chunk repeated: a full flush makes every chunk's bytes the same.
    """
    header = _npy_header("<f8", (zeros // 8,))
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = compressor.compress(header) + compressor.flush(zlib.Z_FULL_FLUSH)
    chunk = compressor.compress(bytes(_CHUNK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert zeros % _CHUNK == 0
    data = start + chunk * (zeros // _CHUNK) + compressor.flush(zlib.Z_FINISH)
    crc = _crc32_combine(zlib.crc32(header), _crc32_of_zeros(zeros), zeros)
    return data, crc, len(header) + zeros


def _zip(entries: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip archive of ``(name, method, stored bytes, crc, inflated size)`` members."""
    out, directory = bytearray(), bytearray()
    for name, method, data, crc, size in entries:
        encoded = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data),
                           size, len(encoded), 0) + encoded + data
        directory += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21,
                                 crc, len(data), size, len(encoded), 0, 0, 0, 0, 0,
                                 offset) + encoded
    start = len(out)
    out += directory
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries),
                       len(directory), start, 0)
    return bytes(out)


def _members(path: Path) -> list[tuple[str, int, bytes, int, int]]:
    with zipfile.ZipFile(path) as archive:
        return [(info.filename, zipfile.ZIP_STORED, archive.read(info), info.CRC,
                 info.file_size) for info in archive.infolist()]


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archives") / "good.npz"
    rng = np.random.default_rng(0)
    save_numpy_checkpoint(path, {"meta": {"epoch": 3}, "w": rng.normal(size=(16, 8)),
                                 "b": np.zeros(8, dtype=np.float32)})
    return path


@pytest.fixture(scope="module")
def bomb() -> tuple[bytes, int, int]:
    return _deflated_zero_member(BOMB_BYTES)


_PEAK = """
import json, resource, sys
from optiplug.training.checkpoint import CheckpointError, load_numpy_checkpoint


def peak_mb():
    # VmHWM: this process image's peak resident memory. ru_maxrss would do, but Linux folds
    # the parent's peak at fork into it, and the parent here is a large pytest process.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


try:
    load_numpy_checkpoint(sys.argv[1])
    outcome = "loaded"
except CheckpointError as exc:
    outcome = "CheckpointError: " + str(exc)
print(json.dumps({"outcome": outcome, "peak_mb": peak_mb()}))
"""


def _peak_of_loading(path: Path) -> dict[str, object]:
    process = subprocess.run([sys.executable, "-c", _PEAK, str(path)], capture_output=True,
                             text=True, timeout=300)
    assert process.returncode == 0, process.stderr
    return json.loads(process.stdout)  # type: ignore[no-any-return]


def test_the_crafted_bomb_is_what_it_claims(bomb: tuple[bytes, int, int]) -> None:
    # The same construction, three chunks long, inflates to the header and zeros with its CRC.
    data, crc, size = _deflated_zero_member(3 * _CHUNK)
    inflated = zlib.decompress(data, -15)
    assert len(inflated) == size and zlib.crc32(inflated) == crc
    assert inflated[:6] == b"\x93NUMPY" and not any(inflated[128:])
    data, _, size = bomb
    assert len(data) < 2 * 2**20 and size == BOMB_BYTES + 128


@pytest.mark.parametrize("case", ["unknown member", "member named like an array",
                                  "compressed array"])
def test_a_zip_bomb_member_is_refused_unread(case: str, good_checkpoint: Path,
                                             bomb: tuple[bytes, int, int],
                                             tmp_path: Path) -> None:
    data, crc, size = bomb
    members = _members(good_checkpoint)
    array_names = sorted(name for name, *_ in members if name != "__optiplug__.npy")
    if case == "unknown member":
        members.append(("x.npy", zipfile.ZIP_DEFLATED, data, crc, size))
        expected = "holds a member it does not use: 'x.npy'"
    elif case == "member named like an array":
        members.append(("a99.npy", zipfile.ZIP_DEFLATED, data, crc, size))
        expected = "compressed member 'a99.npy' (refused unread"
    else:
        target = array_names[0]
        members = [(name, *rest) if name != target else
                   (name, zipfile.ZIP_DEFLATED, data, crc, size) for name, *rest in members]
        expected = f"compressed member {target!r}"
    path = tmp_path / "hostile.npz"
    path.write_bytes(_zip(members))
    assert path.stat().st_size < 2 * 2**20
    result = _peak_of_loading(path)
    assert str(result["outcome"]).startswith("CheckpointError: ")
    assert expected in str(result["outcome"])
    assert float(result["peak_mb"]) < PEAK_LIMIT_MB  # type: ignore[arg-type]


def test_a_stored_member_the_document_does_not_use_is_refused(good_checkpoint: Path,
                                                               tmp_path: Path) -> None:
    members = _members(good_checkpoint)
    extra = _npy_header("<f8", (4,)) + np.arange(4.0).tobytes()
    members.append(("a7.npy", zipfile.ZIP_STORED, extra, zlib.crc32(extra), len(extra)))
    path = tmp_path / "extra.npz"
    path.write_bytes(_zip(members))
    with pytest.raises(CheckpointError, match=r"holds a member it does not use: 'a7\.npy'"):
        load_numpy_checkpoint(path)


def test_a_lying_npy_header_is_refused_before_allocation(good_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    members = _members(good_checkpoint)
    name, method, data, _, _ = next(m for m in members if m[0] != "__optiplug__.npy")
    # The header claims 1.5 GB of float64; the member holds what it held before.
    header = _npy_header("<f8", (BOMB_BYTES // 8,))
    forged = header + data[len(header):]
    members = [(n, *rest) if n != name else
               (n, method, forged, zlib.crc32(forged), len(forged)) for n, *rest in members]
    path = tmp_path / "lying.npz"
    path.write_bytes(_zip(members))
    result = _peak_of_loading(path)
    assert f"member {name!r} holds" in str(result["outcome"])
    assert float(result["peak_mb"]) < PEAK_LIMIT_MB  # type: ignore[arg-type]


def test_a_member_larger_than_the_file_is_refused(good_checkpoint: Path,
                                                  tmp_path: Path) -> None:
    members = _members(good_checkpoint)
    name, method, data, crc, _ = members[-1]
    members[-1] = (name, method, data, crc, BOMB_BYTES)  # directory: stored, 1.5 GB inflated
    path = tmp_path / "directory.npz"
    path.write_bytes(_zip(members))
    with pytest.raises(CheckpointError, match=r"checkpoint .* is corrupt: member .* declares"):
        load_numpy_checkpoint(path)


def test_the_rebuilt_good_archive_still_loads(good_checkpoint: Path, tmp_path: Path) -> None:
    # The archive writer above is faithful: the unchanged members load to the same numbers.
    path = tmp_path / "same.npz"
    path.write_bytes(_zip(_members(good_checkpoint)))
    loaded, original = load_numpy_checkpoint(path), load_numpy_checkpoint(good_checkpoint)
    assert loaded["meta"] == {"epoch": 3}
    np.testing.assert_array_equal(loaded["w"], original["w"])
    assert loaded["b"].dtype == np.float32
