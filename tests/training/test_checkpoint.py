"""Checkpoints: exact round trips, atomic writes, safe loading, clear errors."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from optiplug.training.checkpoint import (
    CheckpointError,
    atomic_write,
    load_numpy_checkpoint,
    load_torch_checkpoint,
    save_numpy_checkpoint,
    save_torch_checkpoint,
)
from optiplug.training.loop import Trainer
from optiplug.training.recipe import parse_recipe

from .conftest import small_recipe


def test_numpy_checkpoint_round_trips_nested_state_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    payload = {
        "weights": {"w": rng.normal(size=(3, 4)).astype(np.float32), "b": np.zeros(3)},
        "state": {0: {"step": 7, "exp_avg": rng.normal(size=5)}, "big": 2**100},
        "betas": (0.9, 0.999),
        "count": np.int64(12),
        "flags": [True, None, "text", float("inf")],
        "rng": np.random.default_rng(5).bit_generator.state,
    }
    save_numpy_checkpoint(tmp_path / "c.npz", payload)
    loaded = load_numpy_checkpoint(tmp_path / "c.npz")
    np.testing.assert_array_equal(loaded["weights"]["w"], payload["weights"]["w"])
    assert loaded["weights"]["w"].dtype == np.float32
    np.testing.assert_array_equal(loaded["state"][0]["exp_avg"], payload["state"][0]["exp_avg"])
    assert loaded["state"][0]["step"] == 7 and loaded["state"]["big"] == 2**100
    assert loaded["betas"] == (0.9, 0.999)
    assert loaded["count"] == 12 and isinstance(loaded["count"], np.int64)
    assert loaded["flags"] == [True, None, "text", float("inf")]
    assert loaded["rng"] == payload["rng"]


def test_numpy_checkpoint_refuses_objects_it_cannot_store_without_pickle(tmp_path: Path
                                                                         ) -> None:
    with pytest.raises(CheckpointError, match="object"):
        save_numpy_checkpoint(tmp_path / "c.npz", {"x": np.array([object()])})
    with pytest.raises(CheckpointError, match="set"):
        save_numpy_checkpoint(tmp_path / "c.npz", {"x": {1, 2}})
    assert not (tmp_path / "c.npz").exists()


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "last.npz"
    save_numpy_checkpoint(target, {"epoch": 1})

    def crash(file: object) -> None:
        file.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert load_numpy_checkpoint(target) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.npz"]


def test_a_failed_rename_keeps_the_previous_file(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "last.npz"
    save_numpy_checkpoint(target, {"epoch": 1})

    def no_rename(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError, match="disk full"):
        save_numpy_checkpoint(target, {"epoch": 2})
    monkeypatch.undo()
    assert load_numpy_checkpoint(target) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.npz"]


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"PK\x03\x04broken"])
def test_corrupt_numpy_checkpoint_is_a_checkpoint_error(tmp_path: Path, content: bytes
                                                        ) -> None:
    path = tmp_path / "last.npz"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_numpy_checkpoint(path)


def test_truncated_numpy_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    path = tmp_path / "last.npz"
    save_numpy_checkpoint(path, {"w": np.arange(1000.0)})
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError):
        load_numpy_checkpoint(path)


def test_foreign_npz_is_not_a_checkpoint(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(CheckpointError, match="not an optiplug checkpoint"):
        load_numpy_checkpoint(tmp_path / "other.npz")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_numpy_checkpoint(tmp_path / "missing.npz")


class _Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_torch_checkpoint_loads_with_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "last.pt"
    save_torch_checkpoint(path, {"w": torch.arange(3.0), "meta": "{}"})
    assert torch.equal(load_torch_checkpoint(path)["w"], torch.arange(3.0))

    with path.open("wb") as file:
        torch.save({"format": "optiplug-checkpoint", "version": 1,
                    "payload": {"evil": _Exploit()}}, file, pickle_protocol=2)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_torch_checkpoint(path)
    path.write_bytes(pickle.dumps({"x": 1})[:5])
    with pytest.raises(CheckpointError):
        load_torch_checkpoint(path)


def test_checkpoint_of_another_recipe_is_a_clear_error(tmp_path: Path) -> None:
    trainer = Trainer(parse_recipe(small_recipe(epochs=1)))
    trainer.fit()
    trainer.save(tmp_path / "last.npz")

    other = small_recipe()
    other["optimizer"] = {"name": "adam", "lr": 0.01}
    with pytest.raises(CheckpointError, match="different recipe"):
        Trainer(parse_recipe(other)).load(tmp_path / "last.npz")

    wider = small_recipe()
    wider["model"]["layers"][0]["units"] = 48
    with pytest.raises(CheckpointError, match="does not match this run"):
        Trainer(parse_recipe(wider)).load(tmp_path / "last.npz")
