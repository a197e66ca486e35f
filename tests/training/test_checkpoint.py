"""Checkpoints: exact round trips, atomic writes, safe loading, clear errors."""

from __future__ import annotations

import json
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


def test_any_corruption_of_a_numpy_checkpoint_is_a_checkpoint_error(tmp_path: Path) -> None:
    payload = {"w": np.arange(50.0), "state": {"step": 3, "betas": (0.9, 0.99)}}
    good = tmp_path / "good.npz"
    save_numpy_checkpoint(good, payload)
    data = good.read_bytes()
    rng = np.random.default_rng(0)
    variants = [data[:cut] for cut in range(0, len(data), 37)]
    for position in rng.integers(0, len(data), size=150):
        variants.append(data[:position] + bytes([data[position] ^ 0xFF]) + data[position + 1:])
    path = tmp_path / "bad.npz"
    for content in variants:
        path.write_bytes(content)
        try:
            loaded = load_numpy_checkpoint(path)
        except CheckpointError:
            continue
        # A flip that misses every checked byte (padding, an array's data) may still load.
        assert loaded.keys() == payload.keys() and loaded["w"].shape == (50,)


@pytest.mark.parametrize("depth", [300, 600, 900, 1200, 5_000])
def test_deeply_nested_numpy_checkpoint_loads_or_is_a_checkpoint_error(tmp_path: Path,
                                                                       depth: int) -> None:
    # Around the recursion limit, json.loads or the decoder overflows, depending on depth.
    document = ('{"format": "optiplug-checkpoint", "version": 1, "payload": {"a": '
                + "[" * depth + "]" * depth + "}}")
    path = tmp_path / "deep.npz"
    np.savez(path, __optiplug__=np.array(document))
    try:
        loaded = load_numpy_checkpoint(path)
    except CheckpointError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    value, levels = loaded["a"], 1
    while value:
        (value,) = value
        levels += 1
    assert levels == depth


def _scheduled_recipe(backend: str) -> dict[str, object]:
    recipe = small_recipe(epochs=2, backend=backend)
    recipe["data"]["samples"] = 150  # type: ignore[index]
    recipe["scheduler"] = {"name": "step", "step_size": 1, "gamma": 0.5}
    return recipe


def _break_last_part(path: Path, backend: str) -> None:
    """Spoil the part a runner restores last, so every other part has loaded before it fails."""
    if backend == "numpy":
        payload = load_numpy_checkpoint(path)
        payload["scheduler"]["not_a_step_attribute"] = 1
        save_numpy_checkpoint(path, payload)
        return
    import torch

    payload = load_torch_checkpoint(path)
    payload["generator"] = torch.zeros(3, dtype=torch.uint8)
    save_torch_checkpoint(path, payload)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_checkpoint_failing_late_changes_nothing_and_training_goes_on_exactly(
        backend: str, tmp_path: Path) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    from .conftest import without_seconds

    recipe = parse_recipe(_scheduled_recipe(backend))
    path = tmp_path / ("start.npz" if backend == "numpy" else "start.pt")
    Trainer(recipe).save(path)  # epoch 0: every part differs from a trained trainer's
    _break_last_part(path, backend)
    trainer, twin = Trainer(recipe), Trainer(recipe)
    trainer.run_epoch()
    twin.run_epoch()
    with pytest.raises(CheckpointError, match="does not match this run"):
        trainer.load(path)
    assert trainer.epoch == 1 and trainer.lr == twin.lr
    trainer.run_epoch()
    twin.run_epoch()
    assert without_seconds(trainer.history) == without_seconds(twin.history)
    expected = _weights(twin)
    for name, value in _weights(trainer).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def _weights(trainer: Trainer) -> dict[str, np.ndarray]:
    return {name: np.asarray(value).copy()
            for name, value in trainer.runner.model.state_dict().items()}


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_checkpoint_with_bad_loop_state_restores_nothing(backend: str,
                                                           tmp_path: Path) -> None:
    if backend == "torch":
        pytest.importorskip("torch")
    recipe = parse_recipe(_scheduled_recipe(backend))
    path = tmp_path / ("start.npz" if backend == "numpy" else "start.pt")
    Trainer(recipe).save(path)
    load, save = ((load_numpy_checkpoint, save_numpy_checkpoint) if backend == "numpy" else
                  (load_torch_checkpoint, save_torch_checkpoint))
    payload = load(path)
    meta = payload["meta"] if backend == "numpy" else json.loads(payload["meta"])
    meta["order_rng"] = {"bit_generator": "MT19937", "state": {}}
    payload["meta"] = meta if backend == "numpy" else json.dumps(meta)
    save(path, payload)

    trainer = Trainer(recipe)
    trainer.run_epoch()
    weights = _weights(trainer)
    order = trainer.order_rng.bit_generator.state
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer.load(path)
    for name, value in _weights(trainer).items():
        np.testing.assert_array_equal(value, weights[name], err_msg=name)
    assert trainer.order_rng.bit_generator.state == order and trainer.epoch == 1


def test_a_temporary_name_taken_by_a_planted_symlink_is_never_followed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = tmp_path / "run"
    folder.mkdir()
    # The writer's first choice of name is already a symlink: it must pick another.
    names = iter(["0123456789abcdef", "fedcba9876543210"])
    monkeypatch.setattr(secrets, "token_hex", lambda size: next(names))
    (folder / ".last.npz.0123456789abcdef.tmp").symlink_to(victim)
    save_numpy_checkpoint(folder / "last.npz", {"epoch": 1})
    monkeypatch.undo()
    assert victim.read_bytes() == b"precious"
    assert load_numpy_checkpoint(folder / "last.npz") == {"epoch": 1}
    assert sorted(os.listdir(folder)) == [".last.npz.0123456789abcdef.tmp", "last.npz"]


def test_an_os_error_while_writing_names_the_target_and_keeps_its_type(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    target = tmp_path / "last.npz"
    save_numpy_checkpoint(target, {"epoch": 1})

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError) as info:
        save_numpy_checkpoint(target, {"epoch": 2})
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert load_numpy_checkpoint(target) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.npz"]
    (tmp_path / "locked").mkdir(mode=0o500)
    if os.geteuid() != 0:  # root writes anyway
        with pytest.raises(PermissionError) as denied:
            save_numpy_checkpoint(tmp_path / "locked" / "last.npz", {"epoch": 1})
        assert denied.value.filename == str(tmp_path / "locked" / "last.npz")


def test_stale_temporaries_are_removed_and_nothing_else(tmp_path: Path) -> None:
    from optiplug.training.checkpoint import remove_stale_temporaries

    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    folder = tmp_path / "run"
    folder.mkdir()
    stale = [".last.npz.0123456789abcdef.tmp", ".metrics.csv.00000000000000ff.tmp"]
    for name in stale:
        (folder / name).write_bytes(b"half")
    (folder / ".config.yaml.aaaaaaaaaaaaaaaa.tmp").symlink_to(victim)
    kept = ["last.npz", "notes.tmp", ".last.npz.tmp", ".x.0123456789ABCDEF.tmp",
            ".y.0123456789abcde.tmp"]
    for name in kept:
        (folder / name).write_bytes(b"mine")
    (folder / ".z.0123456789abcdef.tmp").mkdir()  # a folder is never removed
    removed = remove_stale_temporaries(folder)
    assert sorted(p.name for p in removed) == sorted(
        [*stale, ".config.yaml.aaaaaaaaaaaaaaaa.tmp"])
    assert sorted(os.listdir(folder)) == sorted([*kept, ".z.0123456789abcdef.tmp"])
    assert victim.read_bytes() == b"precious"
    assert remove_stale_temporaries(tmp_path / "missing") == []
