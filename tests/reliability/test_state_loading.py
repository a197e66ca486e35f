"""Loading bad state: truncated, garbage, foreign or misshapen state dicts and checkpoint files.

A bad load raises a clear error (``optiplug.ConfigError`` from an optimizer's
``load_state_dict``, ``CheckpointError`` from a checkpoint file) and leaves the live objects
exactly as they were: the next step gives the same numbers as a twin that never saw the load.
torch checkpoints are read with ``weights_only=True``, so a pickle cannot run code.
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import optiplug

torch = pytest.importorskip("torch")

from optiplug.training.checkpoint import (  # noqa: E402
    CheckpointError,
    load_numpy_checkpoint,
    load_torch_checkpoint,
    save_numpy_checkpoint,
    save_torch_checkpoint,
)

# Optimizers whose default config builds from params alone (chain needs its transforms).
# Closure-driven optimizers (lbfgs) take no gradients to step with: tests/plugins/optimizers/
# test_lbfgs.py covers their state round trip and refusals.
OPTIMIZERS = [name for name in optiplug.registry().names("optimizer") if name != "chain"
              and not getattr(optiplug.registry().get("optimizer", name).spec,
                              "closure_driven", False)]
SHAPES = {"w": (3, 4), "b": (4,)}


def _params(backend: str) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    values = {name: rng.normal(size=shape) for name, shape in SHAPES.items()}
    if backend == "numpy":
        return values
    return {name: torch.nn.Parameter(torch.tensor(value)) for name, value in values.items()}


def _grads(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=shape) for name, shape in SHAPES.items()}


def _step(optimizer: Any, backend: str, params: dict[str, Any], seed: int) -> None:
    grads = _grads(seed)
    if backend == "numpy":
        optimizer.step(grads)
        return
    for name, param in params.items():
        param.grad = torch.tensor(grads[name])
    optimizer.step()


def _values(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {name: (value.detach().numpy() if isinstance(value, torch.Tensor) else value).copy()
            for name, value in params.items()}


def _snapshot(value: Any) -> Any:
    """A deep, comparable copy of a state dict (tensors and arrays as NumPy arrays)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {key: _snapshot(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(item) for item in value)
    return copy.deepcopy(value)


def _assert_same(left: Any, right: Any, where: str = "state") -> None:
    if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
        np.testing.assert_array_equal(left, right, err_msg=where)
        return
    if isinstance(left, dict):
        assert isinstance(right, dict) and set(left) == set(right), where
        for key in left:
            _assert_same(left[key], right[key], f"{where}.{key}")
        return
    if isinstance(left, (list, tuple)):
        assert type(left) is type(right) and len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_same(a, b, f"{where}.{index}")
        return
    assert left == right, where


def _make(name: str, backend: str) -> tuple[Any, dict[str, Any]]:
    params = _params(backend)
    return optiplug.optimizer(name, params, backend=backend, lr=0.01), params


def _foreign(name: str) -> str:
    """An optimizer that keeps state under another torch class than ``name``."""
    own = type(_make(name, "torch")[0]).torch_class
    return next(other for other in OPTIMIZERS
                if type(_make(other, "torch")[0]).torch_class is not own)


def _bad_state_dicts(name: str, backend: str) -> dict[str, Any]:
    source, params = _make(name, backend)
    for seed in (1, 2):
        _step(source, backend, params, seed)
    good = source.state_dict()
    stranger, stranger_params = _make(_foreign(name), backend)
    _step(stranger, backend, stranger_params, 1)

    def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        state = copy.deepcopy(good)
        edit(state)
        return state

    def reshape(state: dict[str, Any]) -> None:
        for entry in state["state"].values():
            for key, value in entry.items():
                if key != "step" and getattr(value, "ndim", 0) > 0:
                    entry[key] = value.reshape(-1)[:2].copy() if backend == "numpy" else \
                        value.reshape(-1)[:2].clone()

    def drop_groups(state: dict[str, Any]) -> None:
        state["param_groups"] = []

    def group_garbage(state: dict[str, Any]) -> None:
        state["param_groups"] = "garbage"

    def state_garbage(state: dict[str, Any]) -> None:
        state["state"] = "garbage"

    def entry_garbage(state: dict[str, Any]) -> None:
        for key in state["state"]:
            state["state"][key] = "garbage"

    def extra_param(state: dict[str, Any]) -> None:
        group = state["param_groups"][0]
        if "param_names" in group:
            group["param_names"] = [*group["param_names"], "ghost"]
        group["params"] = [*group.get("params", []), 99] if "params" in group else [99]

    has_arrays = any(getattr(value, "ndim", 0) > 0 for entry in good["state"].values()
                     for value in entry.values())
    cases = {
        "none": None, "list": [], "text": "garbage", "bytes": b"\x80\x03garbage", "number": 42,
        "empty": {}, "no_param_groups": {"state": good["state"]},
        "no_state": {"param_groups": good["param_groups"]},
        "no_groups": edited(drop_groups), "groups_garbage": edited(group_garbage),
        "state_garbage": edited(state_garbage), "entries_garbage": edited(entry_garbage),
        "other_shapes": edited(reshape), "extra_param": edited(extra_param),
        "other_optimizer": stranger.state_dict(),
    }
    if not has_arrays:  # plain SGD keeps no arrays: nothing to damage there
        del cases["other_shapes"], cases["entries_garbage"]
    return cases


BAD_CASES = ["none", "list", "text", "bytes", "number", "empty", "no_param_groups", "no_state",
             "no_groups", "groups_garbage", "state_garbage", "entries_garbage", "other_shapes",
             "extra_param", "other_optimizer"]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_bad_optimizer_state_raises_and_changes_nothing(name: str, backend: str) -> None:
    bad = _bad_state_dicts(name, backend)
    victim, params = _make(name, backend)
    twin, twin_params = _make(name, backend)
    for optimizer, own in ((victim, params), (twin, twin_params)):
        _step(optimizer, backend, own, 1)
    before_state = _snapshot(victim.state_dict())
    before_params = _values(params)
    failures = []
    for case in [case for case in BAD_CASES if case in bad]:
        try:
            victim.load_state_dict(bad[case])
        except optiplug.ConfigError as exc:
            assert "optimizer state" in str(exc)
        except Exception as exc:
            failures.append(f"{case}: {type(exc).__name__}: {exc}")
        else:
            failures.append(f"{case}: loaded without an error")
        _assert_same(_snapshot(victim.state_dict()), before_state, f"after {case}: state")
        _assert_same(_values(params), before_params, f"after {case}: params")
    assert not failures, "\n".join(failures)
    # The live optimizer still steps exactly like its twin.
    _step(victim, backend, params, 7)
    _step(twin, backend, twin_params, 7)
    _assert_same(_values(params), _values(twin_params), "params after the next step")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_good_state_resumes_exactly_even_from_a_saved_file(name: str, backend: str,
                                                           tmp_path: Path) -> None:
    original, params = _make(name, backend)
    for seed in (1, 2):
        _step(original, backend, params, seed)
    path = tmp_path / ("state.npz" if backend == "numpy" else "state.pt")
    values = _values(params)
    saved = {"optimizer": original.state_dict(),
             "params": values if backend == "numpy" else {
                 key: torch.tensor(value) for key, value in values.items()}}
    if backend == "numpy":
        save_numpy_checkpoint(path, saved)
        loaded = load_numpy_checkpoint(path)
    else:
        save_torch_checkpoint(path, saved)
        loaded = load_torch_checkpoint(path)
    resumed, resumed_params = _make(name, backend)
    for key, value in loaded["params"].items():
        if backend == "numpy":
            resumed_params[key][...] = value
        else:
            with torch.no_grad():
                resumed_params[key].copy_(torch.as_tensor(value))
    resumed.load_state_dict(loaded["optimizer"])
    for seed in (3, 4):
        _step(original, backend, params, seed)
        _step(resumed, backend, resumed_params, seed)
    _assert_same(_values(resumed_params), _values(params), "params after resuming")


# ------------------------------------------------------------------------ checkpoint files
class _Exploit:
    """Pickles to a call of ``Path.write_text`` on a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (Path.write_text, (self.marker, "code ran"))


def _torch_bad_files(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.pt"
    save_torch_checkpoint(good, {"weights": torch.arange(1000.0), "epoch": 3})
    data = good.read_bytes()
    files = {}
    for label, content in {
        "empty": b"", "truncated_half": data[: len(data) // 2],
        "truncated_end": data[:-20], "garbage": bytes(range(256)) * 8,
        "flipped": data[:100] + bytes(b ^ 0xFF for b in data[100:140]) + data[140:],
    }.items():
        path = tmp_path / f"{label}.pt"
        path.write_bytes(content)
        files[label] = path
    marker = tmp_path / "exploit-marker"
    exploit = tmp_path / "exploit.pt"
    torch.save({"format": "optiplug-checkpoint", "version": 1, "payload": _Exploit(marker)},
               exploit)
    files["exploit_torch_save"] = exploit
    raw = tmp_path / "exploit_pickle.pt"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    files["exploit_plain_pickle"] = raw
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, foreign)
    files["not_optiplug"] = foreign
    future = tmp_path / "future.pt"
    torch.save({"format": "optiplug-checkpoint", "version": 99, "payload": {}}, future)
    files["other_version"] = future
    files["missing"] = tmp_path / "missing.pt"
    files["folder"] = tmp_path
    return files


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain-pickle exploit
def test_bad_torch_checkpoints_raise_checkpoint_error_and_run_no_code(tmp_path: Path) -> None:
    files = _torch_bad_files(tmp_path)
    for label, path in files.items():
        with pytest.raises(CheckpointError) as caught:
            load_torch_checkpoint(path)
        message = str(caught.value)
        assert str(path) in message, label
        assert "\n" not in message and len(message) < 600, label
    assert not (tmp_path / "exploit-marker").exists()


def test_torch_checkpoints_are_loaded_with_weights_only(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "good.pt"
    save_torch_checkpoint(path, {"weights": torch.ones(3)})
    calls: list[dict[str, Any]] = []
    real_load = torch.load

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    payload = load_torch_checkpoint(path)
    torch.testing.assert_close(payload["weights"], torch.ones(3))
    assert calls and all(call.get("weights_only") is True for call in calls)


def test_bad_numpy_checkpoints_raise_checkpoint_error(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    save_numpy_checkpoint(good, {"weights": np.arange(1000.0), "epoch": 3})
    data = good.read_bytes()
    contents: dict[str, bytes] = {
        "empty": b"", "truncated_half": data[: len(data) // 2], "truncated_end": data[:-20],
        "garbage": bytes(range(256)) * 8,
        "pickle": pickle.dumps({"format": "optiplug-checkpoint"}),
    }
    files = {}
    for label, content in contents.items():
        files[label] = tmp_path / f"{label}.npz"
        files[label].write_bytes(content)
    np.save(tmp_path / "plain.npy", np.arange(3.0))
    files["npy_renamed"] = tmp_path / "npy_renamed.npz"
    files["npy_renamed"].write_bytes((tmp_path / "plain.npy").read_bytes())
    deep = ('{"format": "optiplug-checkpoint", "version": 1, "payload": {"a": '
            + "[" * 50_000 + "]" * 50_000 + "}}")
    files["deep_json"] = tmp_path / "deep.npz"
    np.savez(files["deep_json"], __optiplug__=np.array(deep))
    files["object_array"] = tmp_path / "object.npz"
    np.savez(files["object_array"], __optiplug__=np.array("{}"),
             a0=np.array([{"x": 1}], dtype=object))
    files["not_optiplug"] = tmp_path / "foreign.npz"
    np.savez(files["not_optiplug"], weights=np.zeros(3))
    files["missing"] = tmp_path / "missing.npz"
    failures = []
    for label, path in files.items():
        try:
            load_numpy_checkpoint(path)
        except CheckpointError as exc:
            assert str(path) in str(exc), label
        except BaseException as exc:
            failures.append(f"{label}: {type(exc).__name__}: {str(exc)[:120]}")
        else:
            failures.append(f"{label}: loaded")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------- a whole trainer
def _trainer(backend: str, **optimizer: Any) -> Any:
    from optiplug.training.loop import Trainer
    from optiplug.training.recipe import parse_recipe
    from tests.training.conftest import small_recipe

    recipe = small_recipe(epochs=1, backend=backend)
    recipe["data"]["samples"] = 120
    recipe["optimizer"].update(optimizer)
    return Trainer(parse_recipe(recipe))


def _trainer_state(trainer: Any) -> Any:
    return _snapshot(trainer.runner.state())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_checkpoint_of_another_run_leaves_the_trainer_unchanged(backend: str,
                                                                  tmp_path: Path) -> None:
    suffix = ".npz" if backend == "numpy" else ".pt"
    other = _trainer(backend, lr=0.5)
    other.run_epoch()
    foreign = tmp_path / f"other{suffix}"
    other.save(foreign)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(foreign.read_bytes()[:-64])

    trainer = _trainer(backend)
    trainer.run_epoch()
    before = _trainer_state(trainer)
    for path in (foreign, truncated):
        with pytest.raises(CheckpointError):
            trainer.load(path)
        _assert_same(_trainer_state(trainer), before, f"after loading {path.name}")
    assert trainer.epoch == 1


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_state_of_a_scheduled_optimizer_loads_before_the_scheduler_is_built(
        backend: str) -> None:
    """Resuming builds the optimizer, loads its state, then the scheduler (torch allows it).

    A scheduler adds ``initial_lr`` to every param group; that key is the scheduler's, not a
    sign of another optimizer's state.
    """
    original, params = _make("adam", backend)
    scheduler = optiplug.scheduler("step", original, step_size=1, gamma=0.5)
    _step(original, backend, params, 1)
    scheduler.step()
    resumed, resumed_params = _make("adam", backend)
    for key, value in _values(params).items():
        if backend == "numpy":
            resumed_params[key][...] = value
        else:
            with torch.no_grad():
                resumed_params[key].copy_(torch.as_tensor(value))
    resumed.load_state_dict(original.state_dict())
    assert resumed.param_groups[0]["lr"] == original.param_groups[0]["lr"] == 0.005
    _step(original, backend, params, 2)
    _step(resumed, backend, resumed_params, 2)
    _assert_same(_values(resumed_params), _values(params), "params after resuming")
