"""lbfgs is closure-driven and follows torch.optim.LBFGS on both backends."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import torch

import optiplug

from .optimizer_cases import TOLERANCE, assert_close
from .test_torch_reference_optimizers import gradients, initial


def loss_and_grads(values: dict[str, np.ndarray]) -> tuple[float, dict[str, Any]]:
    """The MLP's full-batch loss and gradients at ``values`` (a deterministic objective, as
    L-BFGS wants); ``extra.weight`` is never used: its gradient is ``None`` (zeros to L-BFGS)."""
    grads = gradients(values, 1, 1.0)
    dtype = next(iter(values.values())).dtype
    rng = np.random.default_rng(101)
    x = rng.standard_normal((24, 6)).astype(dtype)
    y = np.sin(np.arange(72).reshape(24, 3) * 0.3).astype(dtype)
    hidden = np.tanh(x @ values["hidden.weight"].T + values["hidden.bias"])
    out = hidden @ values["out.weight"].T + values["out.bias"]
    assert set(grads) == {"hidden.weight", "hidden.bias", "out.weight", "out.bias"}
    return float(((out - y) ** 2).mean()), {n: grads.get(n) for n in values}


class Run:
    def __init__(self, kind: str, start: dict[str, np.ndarray], hyper: dict[str, Any]) -> None:
        self.kind = kind
        if kind == "numpy":
            self.params: dict[str, Any] = {n: a.copy() for n, a in start.items()}
            self.opt = optiplug.optimizer("lbfgs", self.params, **hyper)
            return
        self.params = {n: torch.nn.Parameter(torch.from_numpy(a.copy()))
                       for n, a in start.items()}
        if kind == "torch":
            self.opt = optiplug.optimizer("lbfgs", self.params, **hyper)
        else:
            kwargs = {k: v for k, v in optiplug.spec("optimizer", "lbfgs", **hyper)
                      .hyperparameters().items() if k not in optiplug.OptimizerSpec.policy_fields}
            self.opt = torch.optim.LBFGS(list(self.params.values()), **kwargs)

    def values(self) -> dict[str, np.ndarray]:
        return {n: (p.detach().numpy() if isinstance(p, torch.Tensor) else p).copy()
                for n, p in self.params.items()}

    def step(self, step: int) -> float:
        if self.kind == "numpy":
            return float(self.opt.step(lambda: loss_and_grads(self.params)))

        def closure() -> torch.Tensor:
            loss, grads = loss_and_grads(self.values())
            for n, p in self.params.items():
                p.grad = None if grads[n] is None else torch.from_numpy(grads[n])
            return torch.tensor(loss, dtype=torch.float64)

        return float(self.opt.step(closure))


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("hyper", [{}, {"line_search_fn": "strong_wolfe", "history_size": 5},
                                   {"lr": 0.5, "max_iter": 4, "history_size": 3}],
                         ids=["fixed-step", "strong_wolfe", "short-history"])
def test_lbfgs_matches_torch_lbfgs_on_both_backends(hyper: dict[str, Any], dtype: Any) -> None:
    # The torch backend is torch's class: bit for bit, every step. NumPy sums in another order;
    # L-BFGS amplifies those last-bit differences as it converges (y = g - g_prev cancels), by
    # about 100x per 20 iterations here, so NumPy is held to the tolerance over the first 60
    # iterations in float64 and the first 20 in float32, then must reach the same loss.

    start = initial(dtype)
    runs = {kind: Run(kind, start, hyper) for kind in ("reference", "numpy", "torch")}
    exact_steps = 3 if dtype == np.float64 else 1
    losses: dict[str, float] = {}
    first = None
    for step in range(1, 11):
        losses = {kind: run.step(step) for kind, run in runs.items()}
        first = first if first is not None else losses["reference"]
        reference = runs["reference"].values()
        for n, value in runs["torch"].values().items():
            np.testing.assert_array_equal(value, reference[n], err_msg=f"torch {n} at {step}")
        if step <= exact_steps:
            assert losses["numpy"] == pytest.approx(losses["reference"], rel=TOLERANCE[dtype])
            for n, value in runs["numpy"].values().items():
                assert_close(value, reference[n], TOLERANCE[dtype], f"numpy {n} at {step}")
            state = runs["reference"].opt.state[runs["reference"].params["hidden.weight"]]
            numpy_state = runs["numpy"].opt.state["hidden.weight"]
            assert numpy_state["func_evals"] == state["func_evals"]
            assert numpy_state["n_iter"] == state["n_iter"]
            assert len(numpy_state["old_dirs"]) == len(state["old_dirs"])
    assert losses["reference"] < 0.5 * first, "L-BFGS must make progress"
    assert abs(losses["numpy"] - losses["reference"]) <= 1e-3 * first


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_lbfgs_state_dict_round_trip_continues_identically(backend: str) -> None:
    hyper = {"line_search_fn": "strong_wolfe", "history_size": 4}
    original = Run(backend, initial(np.float64), hyper)
    for step in range(1, 4):
        original.step(step)
    saved = pickle.loads(pickle.dumps(copy.deepcopy(original.opt.state_dict())))
    resumed = Run(backend, original.values(), hyper)
    resumed.opt.load_state_dict(saved)
    for step in range(4, 7):
        original.step(step)
        resumed.step(step)
    for n, value in original.values().items():
        np.testing.assert_array_equal(resumed.values()[n], value, err_msg=n)


def test_lbfgs_numpy_load_state_dict_refuses_other_parameters() -> None:
    source = Run("numpy", initial(np.float64), {})
    source.step(1)
    other = optiplug.optimizer("lbfgs", {"w": np.zeros(3)})
    with pytest.raises(optiplug.ConfigError, match="saved parameters differ"):
        other.load_state_dict(source.opt.state_dict())
    adam = optiplug.optimizer("adam", {"w": np.zeros(3)})
    with pytest.raises(optiplug.ConfigError, match="not the state of a NumpyLBFGS"):
        other.load_state_dict(adam.state_dict())
    assert other.state == {}


def test_lbfgs_step_without_closure_says_how_to_call_it() -> None:
    numpy_opt = optiplug.optimizer("lbfgs", {"w": np.zeros(3)})
    with pytest.raises(TypeError, match=r"closure that returns \(loss, grads\)"):
        numpy_opt.step({"w": np.ones(3)})
    torch_opt = optiplug.optimizer("lbfgs", {"w": torch.nn.Parameter(torch.zeros(3))})
    with pytest.raises(TypeError, match="lbfgs needs a closure"):
        torch_opt.step()


def test_lbfgs_runs_step_hooks_once_per_step_on_numpy() -> None:
    params = {"w": np.ones(3)}
    opt = optiplug.optimizer("lbfgs", params)
    calls: list[str] = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    loss = opt.step(lambda: (float(np.sum(params["w"] ** 2)), {"w": 2 * params["w"]}))
    assert loss == 3.0 and calls == ["pre", "post"]
    np.testing.assert_allclose(params["w"], 0.0, atol=1e-6)  # a quadratic: solved in a step


def test_lbfgs_refuses_several_param_groups_and_the_training_loop() -> None:
    with pytest.raises(ValueError, match="parameter groups"):
        optiplug.optimizer("lbfgs", [{"params": {"a": np.zeros(2)}},
                                     {"params": {"b": np.zeros(2)}, "lr": 0.5}])
    with pytest.raises(optiplug.ConfigError, match="param_groups"):
        optiplug.optimizer("lbfgs", {"a.weight": np.zeros(2), "a.bias": np.zeros(2)},
                           param_groups=[{"role": "bias", "lr": 0.1}])
    with pytest.raises(optiplug.ConfigError, match="nonfinite"):
        optiplug.spec("optimizer", "lbfgs", nonfinite="skip")
    import pathlib

    import yaml

    from optiplug.training.recipe import load_recipe

    root = pathlib.Path(__file__).resolve().parents[3]
    recipe = yaml.safe_load((root / "examples/recipes/moons.yaml").read_text())
    with pytest.raises(optiplug.ConfigError, match="closure-driven") as raised:
        load_recipe({**recipe, "optimizer": {"name": "lbfgs"}, "param_groups": []})
    assert "optimizer: optimizer 'lbfgs' is closure-driven" in str(raised.value)
