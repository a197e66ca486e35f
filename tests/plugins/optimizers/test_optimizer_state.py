"""State dicts on both backends: identical continuation, loading by name, clear mismatches."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch

import optiplug

from .optimizer_cases import (
    GRID,
    LR,
    SHAPES,
    initial,
    numpy_grads,
    set_torch_grads,
    torch_params,
)

NAMES = sorted(GRID)



class Run:
    """One optimizer on one backend over named parameters, stepping the shared problem."""

    def __init__(self, backend: str, name: str, start: dict[str, np.ndarray],
                 order: list[str] | None = None, **hyper: Any) -> None:
        self.backend, self.name = backend, name
        self.hyper = {"lr": LR[name], **GRID[name][-1], **hyper}
        self.maximize = bool(self.hyper.get("maximize"))
        order = order or list(start)
        if backend == "numpy":
            self.params: dict[str, Any] = {n: start[n].copy() for n in order}
        else:
            self.params = torch_params({n: start[n] for n in order})
        self.opt = optiplug.optimizer(name, self.params, **self.hyper)

    def steps(self, first: int, count: int) -> None:
        if any(n not in SHAPES or tuple(p.shape) != SHAPES[n] for n, p in self.params.items()):
            self._plain_steps(count)
            return
        for step in range(first, first + count):
            if self.backend == "numpy":
                self.opt.step(numpy_grads(self.params, self.maximize, np.float64, step))
            else:
                set_torch_grads(self.params, self.maximize, np.float64, step)
                self.opt.step()

    def _plain_steps(self, count: int) -> None:
        # Parameters outside the shared problem: the gradient of 0.5 * |p - 0.5|^2.
        for _ in range(count):
            if self.backend == "numpy":
                self.opt.step({n: p - 0.5 for n, p in self.params.items()})
            else:
                for p in self.params.values():
                    p.grad = p.detach() - 0.5
                self.opt.step()

    def values(self) -> dict[str, np.ndarray]:
        return {n: (p.detach().numpy() if isinstance(p, torch.Tensor) else p).copy()
                for n, p in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.opt.state_dict())


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert set(a) == set(b)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def _state_arrays(opt: Any) -> dict[str, Any]:
    state = opt.state_dict()
    return copy.deepcopy({"state": state["state"], "groups": [
        {k: v for k, v in g.items()} for g in state["param_groups"]]})


def _same_state(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def normal(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().numpy().tolist()
        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [normal(v) for v in value]
        return value

    return bool(normal(a) == normal(b))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_mid_run_continues_identically(backend: str, name: str) -> None:
    start = initial(np.float64)
    original = Run(backend, name, start)
    original.steps(0, 30)
    saved_state, saved_params = original.state_dict(), original.values()
    original.steps(30, 30)

    resumed = Run(backend, name, saved_params, lr=1.0)
    resumed.opt.load_state_dict(saved_state)
    assert resumed.opt.param_groups[0]["lr"] == LR[name], "saved hyperparameters are restored"
    resumed.steps(30, 30)
    _equal(resumed.values(), original.values())


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["adam", "rmsprop", "momentum"])
def test_load_state_dict_matches_parameters_by_name_when_order_changes(
        backend: str, name: str) -> None:
    start = initial(np.float64)
    original = Run(backend, name, start, order=["w", "b", "v"])
    original.steps(0, 20)
    saved_state, saved_params = original.state_dict(), original.values()
    original.steps(20, 20)

    reordered = Run(backend, name, saved_params, order=["v", "w", "b"])
    reordered.opt.load_state_dict(saved_state)
    reordered.steps(20, 20)
    _equal(reordered.values(), original.values())


def _groups(backend: str, params: dict[str, Any], names: list[list[str]],
            lrs: list[float]) -> list[dict[str, Any]]:
    return [{"params": {n: params[n] for n in group}, "lr": lr}
            for group, lr in zip(names, lrs, strict=True)]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_load_state_dict_matches_param_groups_by_name_when_groups_are_swapped(
        backend: str) -> None:
    start = initial(np.float64)
    make = (lambda s: {n: a.copy() for n, a in s.items()}) if backend == "numpy" else \
        torch_params
    params = make(start)
    opt = optiplug.optimizer("adam", _groups(backend, params, [["w", "b"], ["v"]],
                                             [0.01, 0.002]))
    grads = {n: np.full(a.shape, 0.5) for n, a in start.items()}
    for _ in range(5):
        if backend == "numpy":
            opt.step(grads)
        else:
            for n, p in params.items():
                p.grad = torch.from_numpy(grads[n])
            opt.step()
    saved = copy.deepcopy(opt.state_dict())

    other = make(start)
    swapped = optiplug.optimizer("adam", _groups(backend, other, [["v"], ["b", "w"]],
                                                 [1.0, 1.0]))
    swapped.load_state_dict(saved)
    assert [g["lr"] for g in swapped.param_groups] == [0.002, 0.01]
    state = swapped.state_dict()["state"]
    if backend == "numpy":
        assert state["v"]["step"] == 5
        np.testing.assert_array_equal(state["w"]["exp_avg"], opt.state["w"]["exp_avg"])
    else:
        names = [n for g in swapped.param_groups for n in g["param_names"]]
        w_state = state[names.index("w")]
        np.testing.assert_array_equal(w_state["exp_avg"].numpy(),
                                      opt.state[params["w"]]["exp_avg"].numpy())


def _mismatches(backend: str) -> list[tuple[str, dict[str, Any], str]]:
    start = initial(np.float64)
    cases = []
    fewer = {n: start[n] for n in ("w", "b")}
    wrong_shape = {**start, "v": np.zeros(8)}
    for label, name, params, match in [
        ("missing parameter", "adam", fewer, "no saved state for parameters \\['v'\\]"),
        ("wrong shape", "adam", wrong_shape, "shape"),
        ("other optimizer", "rmsprop", start, "RMSprop|another optimizer|NumpyRMSprop"),
        ("adam into adamw", "adamw", start, "AdamW|Adam"),
    ]:
        source = Run(backend, name, params)
        source.steps(0, 3)
        cases.append((label, source.state_dict(), match))
    return cases


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_load_state_dict_mismatch_raises_config_error_and_changes_nothing(
        backend: str) -> None:
    start = initial(np.float64)
    target = Run(backend, "adam", start)
    target.steps(0, 3)
    before_state, before_params = _state_arrays(target.opt), target.values()
    extra = Run(backend, "adam", {**start, "u": np.ones(3)})
    extra.steps(0, 3)
    cases = [*_mismatches(backend),
             ("extra parameter", extra.state_dict(), "unknown parameters \\['u'\\]")]
    for label, saved, match in cases:
        with pytest.raises(optiplug.ConfigError, match=match):
            target.opt.load_state_dict(saved)
        assert _same_state(_state_arrays(target.opt), before_state), label
        _equal(target.values(), before_params)


def test_torch_backend_rejects_state_of_plain_torch_optimizer_of_another_class() -> None:
    params = torch_params(initial(np.float64))
    sgd = torch.optim.SGD(list(params.items()), lr=0.1, momentum=0.9)
    for p in params.values():
        p.grad = torch.ones_like(p)
    sgd.step()
    adam = optiplug.optimizer("adam", params)
    with pytest.raises(optiplug.ConfigError, match="momentum"):
        adam.load_state_dict(sgd.state_dict())
    assert len(adam.state) == 0


def test_torch_backend_loads_plain_torch_state_dict_by_position_without_names() -> None:
    start = initial(np.float64)
    reference_params = torch_params(start)
    reference = torch.optim.Adam(list(reference_params.values()), lr=0.01)
    for step in range(10):
        set_torch_grads(reference_params, False, np.float64, step)
        reference.step()
    saved = copy.deepcopy(reference.state_dict())
    params = torch_params({n: p.detach().numpy() for n, p in reference_params.items()})
    mine = optiplug.optimizer("adam", list(params.values()), lr=0.5)
    mine.load_state_dict(saved)
    for step in range(10, 20):
        set_torch_grads(reference_params, False, np.float64, step)
        set_torch_grads(params, False, np.float64, step)
        reference.step()
        mine.step()
    for n in params:
        np.testing.assert_allclose(params[n].detach().numpy(),
                                   reference_params[n].detach().numpy(), rtol=1e-12)
