"""SAM and ASAM against the paper's algorithm and pytorch_optimizer's ``SAM``.

A small tanh network trained on a fixed batch, its loss and gradients recomputed by a closure
(torch autograd in float64), in two param groups with their own lr and ``rho``; parameter
``extra`` is outside the loss on every third step and ``b1`` on every fourth (their grads are
``None`` then). The trajectories of both backends must equal pytorch_optimizer's ``SAM``
(``first_step``/closure/``second_step``, the pair its ``step`` runs) to 1e-10 over 60 steps in
float64, with its global norm summed in float64 (it uses float32; see the plugin docstring),
and a direct implementation of the paper's Algorithm 1 written here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import optiplug

torch = pytest.importorskip("torch")

STEPS = 60
SHAPES = {"w1": (5, 3), "b1": (5,), "w2": (2, 5), "b2": (2,), "extra": (2,)}
GROUPS = (("w1", "b1"), ("w2", "b2", "extra"))
_DATA = np.random.default_rng(5)
X = _DATA.standard_normal((16, 3))
Y = _DATA.standard_normal((16, 2))



def initial(dtype: Any = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {name: rng.standard_normal(shape).astype(dtype) for name, shape in SHAPES.items()}


def loss_of(p: dict[str, Any], step: int) -> Any:
    """Mean squared error of a tanh network; ``extra`` and ``b1`` leave it on some steps."""
    x, y = torch.from_numpy(X).to(p["w1"].dtype), torch.from_numpy(Y).to(p["w1"].dtype)
    b1 = p["b1"] if step % 4 else p["b1"].detach()
    out = torch.tanh(x @ p["w1"].T + b1) @ p["w2"].T + p["b2"]
    if step % 3:
        out = out + p["extra"]
    return ((out - y) ** 2).mean()


def numpy_closure(params: dict[str, np.ndarray], step: int) -> Callable[[], Any]:
    def closure() -> tuple[float, dict[str, Any]]:
        tensors = {n: torch.from_numpy(a.copy()).requires_grad_() for n, a in params.items()}
        loss = loss_of(tensors, step)
        loss.backward()
        return float(loss.detach()), {n: None if t.grad is None else t.grad.numpy()
                             for n, t in tensors.items()}
    return closure


def torch_closure(params: dict[str, Any], zero: Callable[[], None],
                  step: int) -> Callable[[], Any]:
    def closure() -> Any:
        zero()
        loss = loss_of(params, step)
        loss.backward()
        return loss
    return closure


def as_torch(values: dict[str, np.ndarray]) -> dict[str, Any]:
    return {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in values.items()}


def groups(params: dict[str, Any], *, named: bool = True) -> list[dict[str, Any]]:
    pick = (lambda names: {n: params[n] for n in names}) if named else (
        lambda names: [params[n] for n in names])
    return [{"params": pick(GROUPS[0])},
            {"params": pick(GROUPS[1]), "lr": 0.03, "rho": 0.1}]


BASES: dict[str, tuple[dict[str, Any], Callable[..., Any], dict[str, Any]]] = {
    "sgd": ({"name": "sgd", "lr": 0.1, "momentum": 0.9},
            lambda: torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adamw": ({"name": "adamw", "lr": 0.01, "weight_decay": 0.1},
              lambda: torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
}


def run_optiplug(backend: str, base: str, adaptive: bool,
                 dtype: Any = np.float64) -> list[dict[str, np.ndarray]]:
    config = {"name": "sam", "base": BASES[base][0], "rho": 0.05, "adaptive": adaptive}
    trajectory = []
    if backend == "numpy":
        params = initial(dtype)
        opt = optiplug.build({"optimizer": config}, backend="numpy", params=groups(params))
        for step in range(STEPS):
            opt.step(numpy_closure(params, step))
            trajectory.append({n: a.copy() for n, a in params.items()})
        return trajectory
    tparams = as_torch(initial(dtype))
    opt = optiplug.build({"optimizer": config}, backend="torch", params=groups(tparams))
    for step in range(STEPS):
        opt.step(torch_closure(tparams, opt.zero_grad, step))
        trajectory.append({n: t.detach().numpy().copy() for n, t in tparams.items()})
    return trajectory


def run_pytorch_optimizer(base: str, adaptive: bool,
                          monkeypatch: pytest.MonkeyPatch) -> list[dict[str, np.ndarray]]:
    pto = pytest.importorskip("pytorch_optimizer")
    import pytorch_optimizer.optimizer.sam as pto_sam

    def norm_in_dtype(param_groups: Any, device: Any = None, *,
                      weight_adaptive: bool = False) -> Any:
        grads = [p.grad * (p.abs() if weight_adaptive and g.get("adaptive") else 1.0)
                 for g in param_groups for p in g["params"] if p.grad is not None]
        return torch.stack(torch._foreach_norm(grads)).square().sum().reshape(1)

    monkeypatch.setattr(pto_sam, "get_global_gradient_norm", norm_in_dtype)
    tparams = as_torch(initial())
    _, base_class, base_kwargs = BASES[base]
    opt = pto.SAM(groups(tparams, named=False), base_optimizer=base_class(), rho=0.05,
                  adaptive=adaptive, **base_kwargs)
    trajectory = []
    for step in range(STEPS):
        closure = torch_closure(tparams, lambda: opt.zero_grad(set_to_none=True), step)
        closure()
        opt.step(closure)
        trajectory.append({n: t.detach().numpy().copy() for n, t in tparams.items()})
    return trajectory


def run_paper(adaptive: bool) -> list[dict[str, np.ndarray]]:
    """Algorithm 1 with SGD + momentum as the base, one parameter at a time."""
    params = initial()
    lrs, rhos = (0.1, 0.03), (0.05, 0.1)
    buffers: dict[str, np.ndarray] = {}
    trajectory = []
    for step in range(STEPS):
        _, g = numpy_closure(params, step)()
        t = {n: np.abs(params[n]) if adaptive else np.ones_like(params[n]) for n in params}
        norm = np.sqrt(sum(np.sum((t[n] * g[n]) ** 2) for n in params if g[n] is not None))
        shifted = {n: params[n].copy() for n in params}
        for index, names in enumerate(GROUPS):
            for n in names:
                if g[n] is not None:
                    shifted[n] += rhos[index] * t[n] ** 2 * g[n] / (norm + 1e-12)
        _, g_sam = numpy_closure(shifted, step)()
        for index, names in enumerate(GROUPS):
            for n in names:
                if g_sam[n] is None:
                    continue
                buffers[n] = g_sam[n].copy() if n not in buffers else 0.9 * buffers[n] + g_sam[n]
                params[n] -= lrs[index] * buffers[n]
        trajectory.append({n: a.copy() for n, a in params.items()})
    return trajectory


def assert_same(actual: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]],
                tolerance: float, label: str) -> None:
    assert len(actual) == len(expected) == STEPS
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for n in SHAPES:
            np.testing.assert_allclose(got[n], want[n], rtol=tolerance, atol=tolerance,
                                       err_msg=f"{label}: {n} after step {step + 1}")


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
@pytest.mark.parametrize("base", list(BASES))
@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sam_matches_pytorch_optimizer(backend: str, base: str, adaptive: bool,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    expected = run_pytorch_optimizer(base, adaptive, monkeypatch)
    actual = run_optiplug(backend, base, adaptive)
    assert not np.allclose(actual[-1]["w1"], initial()["w1"])
    assert_same(actual, expected, 1e-10, f"{backend} {base}")


@pytest.mark.parametrize("adaptive", [False, True], ids=["sam", "asam"])
def test_sam_equals_the_papers_algorithm(adaptive: bool) -> None:
    expected = run_paper(adaptive)
    for backend in ("numpy", "torch"):
        assert_same(run_optiplug(backend, "sgd", adaptive), expected, 1e-10, backend)


def test_sam_differs_from_its_base_optimizer() -> None:
    """The perturbation matters: plain SGD from the same start ends elsewhere."""
    params = initial()
    plain = [{key: value for key, value in group.items() if key != "rho"}
             for group in groups(params)]
    opt = optiplug.optimizer("sgd", plain, lr=0.1, momentum=0.9)
    for step in range(STEPS):
        _, g = numpy_closure(params, step)()
        opt.step(g)
    sam = run_optiplug("numpy", "sgd", False)[-1]
    assert np.abs(sam["w1"] - params["w1"]).max() > 1e-3


def test_float32_backends_agree() -> None:
    assert_same(run_optiplug("numpy", "adamw", True, np.float32),
                run_optiplug("torch", "adamw", True, np.float32), 1e-5, "float32")


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sam_state_dict_round_trip_continues_the_trajectory(backend: str) -> None:
    config = {"name": "sam", "base": {"name": "adamw", "lr": 0.01}, "rho": 0.05}
    values = initial()
    if backend == "numpy":
        first = {n: a.copy() for n, a in values.items()}
        opt = optiplug.build({"optimizer": config}, backend="numpy", params=groups(first))
        for step in range(5):
            opt.step(numpy_closure(first, step))
        state = opt.state_dict()
        second = {n: a.copy() for n, a in first.items()}
        resumed = optiplug.build({"optimizer": config}, backend="numpy",
                                 params=groups(second))
        resumed.load_state_dict(state)
        for step in range(5, 10):
            opt.step(numpy_closure(first, step))
            resumed.step(numpy_closure(second, step))
        for n in SHAPES:
            np.testing.assert_array_equal(first[n], second[n])
        return
    tfirst = as_torch(values)
    opt = optiplug.build({"optimizer": config}, backend="torch", params=groups(tfirst))
    for step in range(5):
        opt.step(torch_closure(tfirst, opt.zero_grad, step))
    tsecond = {n: torch.nn.Parameter(t.detach().clone()) for n, t in tfirst.items()}
    resumed = optiplug.build({"optimizer": config}, backend="torch", params=groups(tsecond))
    resumed.load_state_dict(opt.state_dict())
    for step in range(5, 10):
        opt.step(torch_closure(tfirst, opt.zero_grad, step))
        resumed.step(torch_closure(tsecond, resumed.zero_grad, step))
    for n in SHAPES:
        torch.testing.assert_close(tfirst[n], tsecond[n], rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sam_without_a_closure_is_a_clear_error(backend: str) -> None:
    values = initial()
    params = values if backend == "numpy" else as_torch(values)
    opt = optiplug.build({"optimizer": {"name": "sam", "base": {"name": "sgd"}}},
                         backend=backend, params=params)
    with pytest.raises(TypeError, match="closure"):
        opt.step()


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sam_skips_a_step_with_a_nonfinite_gradient_and_restores_the_parameters(
        backend: str) -> None:
    """A NaN in the gradient at the perturbed point: nothing moves, the step is counted as
    skipped, and the next finite step goes through."""
    values = initial()
    before = {n: a.copy() for n, a in values.items()}
    config = {"name": "sam", "base": {"name": "sgd", "lr": 0.1}, "nonfinite": "skip"}
    calls: list[int] = []

    def ones(n: str) -> np.ndarray:
        grad = np.ones(SHAPES[n])
        if len(calls) == 2 and n == "w2":
            grad[0, 0] = np.nan
        return grad

    if backend == "numpy":
        opt = optiplug.build({"optimizer": config}, backend="numpy", params=values)

        def closure() -> Any:
            calls.append(1)
            return 0.0, {n: ones(n) for n in SHAPES}

        def current() -> dict[str, np.ndarray]:
            return values
    else:
        tparams = as_torch(values)
        opt = optiplug.build({"optimizer": config}, backend="torch", params=tparams)

        def closure() -> Any:
            calls.append(1)
            for n, t in tparams.items():
                t.grad = torch.from_numpy(ones(n))
            return torch.zeros(())

        def current() -> dict[str, np.ndarray]:
            return {n: t.detach().numpy() for n, t in tparams.items()}

    opt.step(closure)
    assert len(calls) == 2 and opt.skipped_steps == 1
    for n in SHAPES:
        np.testing.assert_array_equal(current()[n], before[n])
    opt.step(closure)
    assert opt.skipped_steps == 1
    np.testing.assert_allclose(current()["b2"], before["b2"] - 0.1)


def test_sam_bad_config_points_at_the_base() -> None:
    with pytest.raises(optiplug.ConfigError, match=r"base\.lr"):
        optiplug.to_spec({"name": "sam", "base": {"name": "sgd", "lr": -1}}, kind="optimizer")
    with pytest.raises(optiplug.ConfigError, match="rho"):
        optiplug.to_spec({"name": "sam", "rho": 0}, kind="optimizer")
