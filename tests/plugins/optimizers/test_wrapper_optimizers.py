"""Optimizer wrappers (lookahead, ema) over different base optimizers, on both backends.

The reference runs torch's own base optimizer (``torch.optim.SGD`` / ``torch.optim.Adam``,
float64) and applies the wrapper's formula in the test; lookahead is also checked against
pytorch_optimizer's ``Lookahead`` and ema against ``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

import optiplug

from . import trajectory
from .trajectory import as_numpy, as_torch, split_groups

torch = pytest.importorskip("torch")

Array = np.ndarray
STEPS = 17
NAMES = ("w", "b", "v")
# (optiplug base config, torch.optim class, its arguments)
BASES = {
    "rmsprop": ({"name": "rmsprop", "lr": 0.01, "alpha": 0.9, "momentum": 0.5}, "RMSprop",
                {"lr": 0.01, "alpha": 0.9, "momentum": 0.5}),
    "adam": ({"name": "adam", "lr": 0.02, "betas": (0.8, 0.95)}, "Adam",
             {"lr": 0.02, "betas": (0.8, 0.95)}),
}



def initial() -> dict[str, Array]:
    rng = np.random.default_rng(11)
    return {"w": rng.standard_normal((4, 3)), "b": rng.standard_normal(4),
            "v": rng.standard_normal(5)}


def gradients(params: dict[str, Array], step: int, drop: bool = False) -> dict[str, Any]:
    """A noisy quadratic bowl's gradient at ``params``; ``b`` has none on steps 0 and 6."""
    rng = np.random.default_rng(500 + step)
    grads: dict[str, Any] = {n: (1.0 + np.arange(p.size).reshape(p.shape) / p.size) * p
                             + 0.3 * rng.standard_normal(p.shape) for n, p in params.items()}
    if drop and step in (0, 6):
        grads["b"] = None
    return grads


def numpy_groups(params: dict[str, Array]) -> list[dict[str, Any]]:
    return split_groups(params, (("w", "b"), ("v",)), {"lr": 0.01})


def torch_groups(params: dict[str, Any], named: bool = True) -> list[dict[str, Any]]:
    return split_groups(params, (("w", "b"), ("v",)), {"lr": 0.01}, named)


def set_grads(params: dict[str, Any], step: int, drop: bool = False) -> None:
    trajectory.set_grads(params, gradients(as_numpy(params), step, drop))


def reference(base: str, wrapper: dict[str, Any], drop: bool,
              steps: int = STEPS) -> tuple[list[dict[str, Array]], dict[str, Array]]:
    """torch's own base optimizer, the wrapper's formula applied here; the trajectory of the
    parameters and the final evaluation weights (slow weights or the average)."""
    _, class_name, arguments = BASES[base]
    params = as_torch(initial())
    opt = getattr(torch.optim, class_name)(torch_groups(params, named=False), **arguments)
    kept = {n: a.copy() for n, a in initial().items()}
    trajectory = []
    for step in range(steps):
        set_grads(params, step, drop)
        opt.step()
        t = step + 1
        current = as_numpy(params)
        if wrapper["name"] == "lookahead" and t % wrapper["k"] == 0:
            for n in NAMES:
                kept[n] = kept[n] + wrapper["alpha"] * (current[n] - kept[n])
                with torch.no_grad():
                    params[n].copy_(torch.from_numpy(kept[n]))
        elif wrapper["name"] == "ema" and t % wrapper["every"] == 0:
            for n in NAMES:
                if t == wrapper["every"]:
                    kept[n] = current[n]
                else:
                    kept[n] = wrapper["decay"] * kept[n] + (1 - wrapper["decay"]) * current[n]
        trajectory.append(as_numpy(params))
    return trajectory, kept


def run(backend: str, config: dict[str, Any], drop: bool, steps: int = STEPS) -> tuple[
        Any, list[dict[str, Array]], Any]:
    if backend == "numpy":
        params = initial()
        opt = optiplug.optimizer(config["name"], numpy_groups(params),
                                 **{k: v for k, v in config.items() if k != "name"})
        trajectory = []
        for step in range(steps):
            opt.step(gradients(params, step, drop))
            trajectory.append({n: a.copy() for n, a in params.items()})
        return opt, trajectory, params
    tparams = as_torch(initial())
    opt = optiplug.optimizer(config["name"], torch_groups(tparams),
                             **{k: v for k, v in config.items() if k != "name"})
    trajectory = []
    for step in range(steps):
        set_grads(tparams, step, drop)
        opt.step()
        trajectory.append(as_numpy(tparams))
    return opt, trajectory, tparams


def current(backend: str, params: Any) -> dict[str, Array]:
    return {n: a.copy() for n, a in params.items()} if backend == "numpy" else as_numpy(params)


WRAPPERS = [{"name": "lookahead", "k": 3, "alpha": 0.6},
            {"name": "ema", "decay": 0.7, "every": 2}]


@pytest.mark.parametrize("drop", [False, True], ids=["all-grads", "some-grads-none"])
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("wrapper", WRAPPERS, ids=[w["name"] for w in WRAPPERS])
def test_wrapper_equals_its_formula_over_torchs_base_optimizer(
        wrapper: dict[str, Any], base: str, backend: str, drop: bool) -> None:
    expected, kept = reference(base, wrapper, drop)
    opt, trajectory, params = run(backend, {**wrapper, "base": BASES[base][0]}, drop)
    for step, (got, want) in enumerate(zip(trajectory, expected, strict=True)):
        for n in NAMES:
            np.testing.assert_allclose(got[n], want[n], rtol=1e-12, atol=1e-12,
                                       err_msg=f"{n} after step {step + 1}")
    training = current(backend, params)
    opt.eval()
    evaluated = current(backend, params)
    for n in NAMES:
        np.testing.assert_allclose(evaluated[n], kept[n], rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
    opt.train()
    for n, value in current(backend, params).items():
        np.testing.assert_array_equal(value, training[n])


def test_lookahead_matches_pytorch_optimizer_lookahead() -> None:
    pto = pytest.importorskip("pytorch_optimizer")
    ours, theirs = as_torch(initial()), as_torch(initial())
    opt = optiplug.optimizer("lookahead", torch_groups(ours),
                             base={"name": "adam", "lr": 0.02}, k=4, alpha=0.3)
    reference_opt = pto.Lookahead(torch.optim.Adam(torch_groups(theirs, named=False), lr=0.02),
                                  k=4, alpha=0.3)
    for step in range(STEPS):
        set_grads(ours, step)
        set_grads(theirs, step)
        opt.step()
        reference_opt.step()
        for n in NAMES:
            np.testing.assert_allclose(ours[n].detach().numpy(), theirs[n].detach().numpy(),
                                       rtol=1e-12, atol=1e-12)


def test_ema_matches_torch_averaged_model() -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    params = as_torch(initial())
    module = torch.nn.ParameterDict(params)
    averaged = AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(0.9))
    opt = optiplug.optimizer("ema", torch_groups(params), base={"name": "sgd", "lr": 0.05},
                             decay=0.9)
    for step in range(STEPS):
        set_grads(params, step)
        opt.step()
        averaged.update_parameters(module)
    opt.eval()
    for n in NAMES:
        np.testing.assert_allclose(params[n].detach().numpy(),
                                   averaged.module[n].detach().numpy(), rtol=1e-12, atol=1e-14)
    opt.train()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("wrapper", WRAPPERS, ids=[w["name"] for w in WRAPPERS])
def test_state_dict_round_trip_resumes_exactly(wrapper: dict[str, Any], backend: str) -> None:
    config = {**wrapper, "base": BASES["adam"][0]}
    _, full, _ = run(backend, config, drop=True, steps=12)
    opt, _, params = run(backend, config, drop=True, steps=5)
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    start = current(backend, params)
    if backend == "numpy":
        resumed_params = {n: a.copy() for n, a in start.items()}
        resumed = optiplug.optimizer(config["name"], numpy_groups(resumed_params),
                                     **{k: v for k, v in config.items() if k != "name"})
        resumed.load_state_dict(saved)
        for step in range(5, 12):
            resumed.step(gradients(resumed_params, step, True))
    else:
        resumed_params = as_torch(start)
        resumed = optiplug.optimizer(config["name"], torch_groups(resumed_params),
                                     **{k: v for k, v in config.items() if k != "name"})
        resumed.load_state_dict(saved)
        for step in range(5, 12):
            set_grads(resumed_params, step, True)
            resumed.step()
    final = current(backend, resumed_params)
    for n in NAMES:
        np.testing.assert_array_equal(final[n], full[-1][n])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_loading_another_wrappers_state_fails_and_changes_nothing(backend: str) -> None:
    opt, _, _ = run(backend, {"name": "lookahead", "base": BASES["adam"][0]}, False, 3)
    other, _, _ = run(backend, {"name": "lookahead", "k": 2, "base": BASES["adam"][0]},
                      False, 3)
    before = plain(opt.state_dict())
    with pytest.raises(optiplug.ConfigError, match="saved with"):
        opt.load_state_dict(other.state_dict())
    assert plain(opt.state_dict()) == before


def plain(value: Any) -> Any:
    """A state dict as nested lists and numbers, comparable with ``==``."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def test_wrapper_shares_param_groups_with_its_base_so_schedulers_reach_it() -> None:
    params = initial()
    opt = optiplug.optimizer("lookahead", numpy_groups(params),
                             base={"name": "sgd", "lr": 0.1})
    scheduler = optiplug.scheduler("step", opt, step_size=1, gamma=0.5)
    opt.step(gradients(params, 0))
    scheduler.step()
    assert [g["lr"] for g in opt.base.param_groups] == [0.05, 0.005]


def test_wrappers_nest_and_lr_overrides_the_base() -> None:
    spec = optiplug.to_spec({"kind": "optimizer", "name": "lookahead", "lr": 0.2,
                             "base": {"name": "ema", "base": {"name": "sgd", "lr": 0.1}}})
    assert spec.base.base.lr == 0.1 and spec.base_spec().lr == 0.2
    params = initial()
    opt = optiplug.build(spec, params=numpy_groups(params))
    assert opt.base.base.param_groups[0]["lr"] == 0.2


@pytest.mark.parametrize("config, path", [
    ({"name": "lookahead", "base": {"name": "adamw", "lr": -1.0}}, "base.lr"),
    ({"name": "lookahead", "base": {"name": "adamx"}}, "base.name"),
    ({"name": "ema", "base": {"name": "adam", "betas": [0.9, 1.5]}}, "base.betas.1"),
    ({"name": "ema", "base": {"name": "ema", "base": {"name": "sgd", "lr": 0}}},
     "base.base.lr"),
    ({"name": "lookahead", "base": "adamw"}, "base"),
    ({"name": "lookahead", "base": {"name": "adamw"}, "k": 0}, "k"),
    ({"name": "ema", "base": {"name": "adamw"}, "decay": 1.0}, "decay"),
])
def test_invalid_nested_configs_name_the_path(config: dict[str, Any], path: str) -> None:
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.to_spec({"kind": "optimizer", **config})
    assert any(issue.path == path for issue in info.value.issues), info.value.issues


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_step_the_base_skips_does_not_count_toward_k(backend: str) -> None:
    """With ``nonfinite="skip"`` in the base, a NaN step changes nothing, the wrapper included:
    the run equals one without that step."""
    config = {"name": "lookahead", "k": 2, "alpha": 0.5,
              "base": {"name": "adam", "lr": 0.02, "betas": (0.8, 0.95), "nonfinite": "skip"}}
    expected, _ = reference("adam", {"name": "lookahead", "k": 2, "alpha": 0.5}, False, 5)
    if backend == "numpy":
        params = initial()
        opt = optiplug.optimizer("lookahead", numpy_groups(params),
                                 **{k: v for k, v in config.items() if k != "name"})
        for step in range(5):
            if step == 3:
                opt.step({n: np.full_like(a, np.nan) for n, a in params.items()})
            opt.step(gradients(params, step))
        final = params
    else:
        tparams = as_torch(initial())
        opt = optiplug.optimizer("lookahead", torch_groups(tparams),
                                 **{k: v for k, v in config.items() if k != "name"})
        for step in range(5):
            if step == 3:
                for p in tparams.values():
                    p.grad = torch.full_like(p, float("nan"))
                opt.step()
            set_grads(tparams, step)
            opt.step()
        final = as_numpy(tparams)
    assert opt.base.skipped_steps == 1 and opt.steps == 5
    for n in NAMES:
        np.testing.assert_allclose(final[n], expected[-1][n], rtol=1e-12, atol=1e-12)
