"""Non-finite gradients: ``nonfinite="raise" | "skip" | "ignore"``, every optimizer, both backends.

- ``raise``: ``NonfiniteGradientError`` naming the parameter, nothing updated;
- ``skip``: the step is skipped, parameters and state untouched (the next finite step equals a
  twin's that never saw the bad gradient), counted in ``skipped_steps``;
- ``ignore``: torch's behaviour, the NaN/inf goes into the update, the same on both backends;
  on torch no finiteness check (no host sync) runs at all.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest

import optiplug
from optiplug.backends.numpy import NonfiniteGradientError

torch = pytest.importorskip("torch")

HYPER: dict[str, dict[str, Any]] = {
    "chain": {"transforms": [{"name": "clip_by_global_norm", "max_norm": 1.0},
                             {"name": "scale_by_adam"}, {"name": "scale_by_learning_rate"}]},
}
# Closure-driven optimizers (lbfgs) take no gradients to step with: tests/plugins/optimizers/
# test_lbfgs.py covers their state and refusals.
OPTIMIZERS = [name for name in optiplug.registry().names("optimizer")
              if not getattr(optiplug.registry().get("optimizer", name).spec, "closure_driven",
                             False)]
SHAPES = {"layer.weight": (3, 4), "layer.bias": (4,)}
BAD_VALUES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def _make(name: str, backend: str, nonfinite: str) -> tuple[Any, dict[str, Any]]:
    rng = np.random.default_rng(0)
    values = {key: rng.normal(size=shape) for key, shape in SHAPES.items()}
    params: dict[str, Any] = values if backend == "numpy" else {
        key: torch.nn.Parameter(torch.tensor(value)) for key, value in values.items()}
    optimizer = optiplug.optimizer(name, params, backend=backend, lr=0.01, nonfinite=nonfinite,
                                   **HYPER.get(name, {}))
    return optimizer, params


def _grads(seed: int, bad: float | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    grads = {key: rng.normal(size=shape) for key, shape in SHAPES.items()}
    if bad is not None:
        grads["layer.bias"][2] = bad  # one bad element in the second parameter only
    return grads


def _step(optimizer: Any, backend: str, params: dict[str, Any],
          grads: dict[str, np.ndarray]) -> None:
    if backend == "numpy":
        optimizer.step(grads)
        return
    for key, param in params.items():
        param.grad = torch.tensor(grads[key])
    optimizer.step()


def _values(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {key: np.array(value.detach().numpy() if backend_is_torch(value) else value,
                          copy=True)
            for key, value in params.items()}


def backend_is_torch(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def _state(optimizer: Any) -> Any:
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.detach().numpy().copy()
        if isinstance(value, np.ndarray):
            return value.copy()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return copy.deepcopy(value)

    return plain(optimizer.state_dict())


def _assert_same(left: Any, right: Any, where: str = "") -> None:
    if isinstance(left, np.ndarray):
        np.testing.assert_array_equal(left, right, err_msg=where)
    elif isinstance(left, dict):
        assert set(left) == set(right), where
        for key in left:
            _assert_same(left[key], right[key], f"{where}.{key}")
    elif isinstance(left, (list, tuple)):
        assert len(left) == len(right), where
        for index, (a, b) in enumerate(zip(left, right, strict=True)):
            _assert_same(a, b, f"{where}.{index}")
    else:
        assert left == right, where


def _warm(name: str, backend: str, nonfinite: str) -> tuple[Any, dict[str, Any]]:
    """An optimizer after two finite steps, so it has state to protect."""
    optimizer, params = _make(name, backend, nonfinite)
    for seed in (1, 2):
        _step(optimizer, backend, params, _grads(seed))
    return optimizer, params


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_raise_names_the_parameter_and_updates_nothing(name: str, backend: str,
                                                       bad: str) -> None:
    optimizer, params = _warm(name, backend, "raise")
    before_params, before_state = _values(params), _state(optimizer)
    with pytest.raises(NonfiniteGradientError, match=r"'layer\.bias'"):
        _step(optimizer, backend, params, _grads(3, BAD_VALUES[bad]))
    assert isinstance(NonfiniteGradientError("x"), FloatingPointError)
    _assert_same(_values(params), before_params, "params")
    _assert_same(_state(optimizer), before_state, "state")


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_skip_leaves_params_and_state_untouched_and_training_goes_on(name: str, backend: str,
                                                                     bad: str) -> None:
    optimizer, params = _warm(name, backend, "skip")
    twin, twin_params = _warm(name, backend, "skip")
    before_params, before_state = _values(params), _state(optimizer)
    _step(optimizer, backend, params, _grads(3, BAD_VALUES[bad]))
    assert optimizer.skipped_steps == 1
    _assert_same(_values(params), before_params, "params")
    _assert_same(_state(optimizer), before_state, "state")
    # The next finite step is exactly the twin's, which never saw the bad gradient.
    for seed in (4, 5):
        _step(optimizer, backend, params, _grads(seed))
        _step(twin, backend, twin_params, _grads(seed))
    _assert_same(_values(params), _values(twin_params), "params after skipping")
    assert twin.skipped_steps == 0


def _state_array(optimizer: Any, name: str, key: str) -> np.ndarray:
    if isinstance(optimizer.state, dict) and name in optimizer.state:
        return np.asarray(optimizer.state[name][key])
    group = optimizer.param_groups[0]
    param = group["params"][group["param_names"].index(name)]
    return optimizer.state[param][key].detach().numpy()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_ignore_applies_the_bad_gradient_like_torch(name: str, backend: str) -> None:
    optimizer, params = _warm(name, backend, "ignore")
    _step(optimizer, backend, params, _grads(3, math.nan))
    after = _values(params)
    if name == "rprop":
        # Rprop steps by sign(grad) and torch's sign(NaN) is 0: the NaN lands in the state
        # ('prev'), and that coordinate does not move.
        assert not np.isfinite(_state_array(optimizer, "layer.bias", "prev")).all()
    else:
        assert not np.isfinite(after["layer.bias"]).all()
    assert optimizer.skipped_steps == 0
    # Both backends do the same thing with it, NaN for NaN.
    other_backend = "torch" if backend == "numpy" else "numpy"
    other, other_params = _warm(name, other_backend, "ignore")
    _step(other, other_backend, other_params, _grads(3, math.nan))
    reference = _values(other_params)
    for key in SHAPES:
        np.testing.assert_array_equal(np.isnan(after[key]), np.isnan(reference[key]), key)
        np.testing.assert_allclose(after[key], reference[key], rtol=1e-12, atol=1e-12,
                                   equal_nan=True, err_msg=key)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_ignore_runs_no_finiteness_check(name: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    optimizer, params = _make(name, "torch", "ignore")
    checker = getattr(type(optimizer), "_grads_finite", None)
    assert checker is not None, "the torch optimizer has no finiteness check to compare with"

    def no_sync(self: Any) -> bool:
        raise AssertionError("nonfinite='ignore' must not check gradients (host sync)")

    monkeypatch.setattr(type(optimizer), "_grads_finite", no_sync)
    _step(optimizer, "torch", params, _grads(1))


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_an_unknown_policy_is_a_config_error_with_its_path(backend: str) -> None:
    with pytest.raises(optiplug.ConfigError) as caught:
        _make("sgd", backend, "explode")
    assert [issue.path for issue in caught.value.issues] == ["nonfinite"]
