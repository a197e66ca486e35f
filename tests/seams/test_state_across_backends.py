"""``optiplug.convert_state``: train N steps on one backend, convert the optimizer state, continue
on the other, and land where an uninterrupted ``torch.optim`` run lands (float64, tight)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import optiplug

SHAPES = {"layer.weight": (4, 3), "layer.bias": (4,), "head.weight": (2, 4)}
# The NumPy optimizers follow these torch.optim classes step for step.
TECHNIQUES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "sgd": ("SGD", {"lr": 0.05}, {}),
    "momentum": ("SGD", {"lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 0.01},
                 {}),
    "nesterov": ("SGD", {"lr": 0.05, "momentum": 0.8}, {"nesterov": True}),
    "adam": ("Adam", {"lr": 0.05, "amsgrad": True}, {}),
    "adamw": ("AdamW", {"lr": 0.05, "weight_decay": 0.1}, {}),
    "adagrad": ("Adagrad", {"lr": 0.1, "lr_decay": 0.01}, {}),
    "rmsprop": ("RMSprop", {"lr": 0.01, "centered": True, "momentum": 0.5}, {}),
    "adadelta": ("Adadelta", {"lr": 1.0}, {}),
}
STEPS, SWITCH = 8, 3
# The torch.optim reference decays every parameter: so does optiplug, told to decay the bias too
# (by default it gets no weight decay).
DECAY_ALL = {"decay_bias_and_norm": True}


def _start() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


def _grad(name: str, value: np.ndarray, step: int) -> np.ndarray | None:
    if name == "head.weight" and step == 0:
        return None  # one parameter without state at the switch of the first phase's start
    rng = np.random.default_rng([step, len(name)])
    return 1.5 * (value - 0.5) + 0.2 * rng.standard_normal(value.shape)


def _numpy_steps(opt: Any, params: dict[str, np.ndarray], steps: range) -> None:
    for step in steps:
        opt.step({name: _grad(name, value, step) for name, value in params.items()})


def _torch_steps(opt: Any, params: dict[str, torch.Tensor], steps: range) -> None:
    for step in steps:
        for name, param in params.items():
            grad = _grad(name, param.detach().numpy(), step)
            param.grad = None if grad is None else torch.from_numpy(grad)
        opt.step()


def _torch_params() -> dict[str, torch.nn.Parameter]:
    return {name: torch.nn.Parameter(torch.from_numpy(value.copy()))
            for name, value in _start().items()}


def _reference(name: str) -> dict[str, np.ndarray]:
    class_name, hyper, flags = TECHNIQUES[name]
    params = _torch_params()
    opt = getattr(torch.optim, class_name)(list(params.values()), **hyper, **flags)
    _torch_steps(opt, params, range(STEPS))
    return {n: p.detach().numpy() for n, p in params.items()}


def _assert_equal_to_reference(result: dict[str, np.ndarray], name: str) -> None:
    for key, value in _reference(name).items():
        np.testing.assert_allclose(result[key], value, rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_numpy_state_continues_on_torch_like_an_uninterrupted_run(name: str) -> None:
    _, hyper, _ = TECHNIQUES[name]
    numpy_params = _start()
    numpy_opt = optiplug.optimizer(name, numpy_params, **hyper, **DECAY_ALL)
    _numpy_steps(numpy_opt, numpy_params, range(SWITCH))
    saved = numpy_opt.state_dict()
    params = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in numpy_params.items()}
    torch_opt = optiplug.optimizer(name, list(params.items()), **hyper, **DECAY_ALL)
    torch_opt.load_state_dict(optiplug.convert_state(saved, to=torch_opt))
    _torch_steps(torch_opt, params, range(SWITCH, STEPS))
    _assert_equal_to_reference({n: p.detach().numpy() for n, p in params.items()}, name)
    # Converting copied the state: the NumPy optimizer's arrays are not the torch ones.
    assert all(np.shares_memory(array, tensor.numpy()) is False
               for entry, torch_entry in zip(saved["state"].values(),
                                             torch_opt.state.values(), strict=False)
               for array, tensor in zip([v for v in entry.values()
                                         if isinstance(v, np.ndarray)],
                                        [v for k, v in torch_entry.items() if k != "step"],
                                        strict=False))


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_torch_state_continues_on_numpy_and_back(name: str) -> None:
    _, hyper, _ = TECHNIQUES[name]
    params = _torch_params()
    torch_opt = optiplug.optimizer(name, list(params.items()), **hyper, **DECAY_ALL)
    _torch_steps(torch_opt, params, range(SWITCH))
    numpy_params = {n: p.detach().numpy().copy() for n, p in params.items()}
    numpy_opt = optiplug.optimizer(name, numpy_params, **hyper, **DECAY_ALL)
    numpy_opt.load_state_dict(optiplug.convert_state(torch_opt.state_dict(), to=numpy_opt))
    _numpy_steps(numpy_opt, numpy_params, range(SWITCH, SWITCH + 2))
    # ... and back to torch for the rest: a round trip through both formats.
    back = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in numpy_params.items()}
    torch_again = optiplug.optimizer(name, list(back.items()), **hyper, **DECAY_ALL)
    torch_again.load_state_dict(optiplug.convert_state(numpy_opt.state_dict(), to=torch_again))
    _torch_steps(torch_again, back, range(SWITCH + 2, STEPS))
    _assert_equal_to_reference({n: p.detach().numpy() for n, p in back.items()}, name)


def test_a_scheduled_lr_carries_over_and_the_kernel_stays_the_targets() -> None:
    numpy_params = _start()
    numpy_opt = optiplug.optimizer("adam", numpy_params, lr=0.05)
    _numpy_steps(numpy_opt, numpy_params, range(2))
    numpy_opt.param_groups[0]["lr"] = 0.01  # as a scheduler leaves it
    params = _torch_params()
    torch_opt = optiplug.optimizer("adam", list(params.items()), lr=0.05, foreach=True)
    torch_opt.load_state_dict(optiplug.convert_state(numpy_opt.state_dict(), to=torch_opt))
    assert torch_opt.param_groups[0]["lr"] == 0.01
    assert torch_opt.param_groups[0]["foreach"] is True


def test_another_techniques_state_is_refused_naming_both() -> None:
    numpy_params = _start()
    numpy_opt = optiplug.optimizer("momentum", numpy_params, lr=0.05)
    _numpy_steps(numpy_opt, numpy_params, range(2))
    torch_opt = optiplug.optimizer("nesterov", list(_torch_params().items()), lr=0.05)
    with pytest.raises(optiplug.ConfigError, match="'momentum', not of 'nesterov'"):
        optiplug.convert_state(numpy_opt.state_dict(), to=torch_opt)
    adam = optiplug.optimizer("adam", _start(), lr=0.05)
    with pytest.raises(optiplug.ConfigError, match="'momentum', not of 'adam'"):
        adam.load_state_dict(numpy_opt.state_dict() | {"optimizer": "NumpyAdam"})
    with pytest.raises(optiplug.ConfigError, match="expected a dict with 'state'"):
        optiplug.convert_state({"state": {}}, to=adam)
