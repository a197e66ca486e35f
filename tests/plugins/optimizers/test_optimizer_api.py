"""The optimizer API on both backends: params forms, held grads, hooks, non-finite gradients,
and torch integration (real torch.optim optimizers, fastest kernel, schedulers, GradScaler)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.backends.numpy import NonfiniteGradientError, NumpyModule, NumpyOptimizer

from .optimizer_cases import GRID, initial, torch_params

NAMES = sorted(GRID)



def test_numpy_sgd_accepts_every_params_form_and_updates_in_place() -> None:
    # p -= lr * g with lr = 0.5 and g = 2: every parameter moves by exactly -1.
    for make in (lambda a, b: {"a": a, "b": b}, lambda a, b: [a, b],
                 lambda a, b: [("a", a), ("b", b)],
                 lambda a, b: [{"params": {"a": a}}, {"params": [("b", b)], "lr": 0.25}]):
        a, b = np.zeros(3), np.zeros((2, 2), dtype=np.float32)
        opt = optiplug.optimizer("sgd", make(a, b), lr=0.5)
        names = [n for g in opt.param_groups for n in g["param_names"]]
        grads = [np.full(3, 2.0), np.full((2, 2), 2.0, dtype=np.float32)]
        opt.step(grads)
        np.testing.assert_array_equal(a, np.full(3, -1.0))
        expected_b = -0.5 if len(opt.param_groups) == 2 else -1.0
        np.testing.assert_array_equal(b, np.full((2, 2), expected_b, dtype=np.float32))
        assert b.dtype == np.float32
        assert names in (["a", "b"], ["0", "1"])


def test_numpy_optimizer_reads_held_grads_and_zero_grad_zeroes_them() -> None:
    layer = NumpyModule()
    layer.params = {"w": np.ones(4)}
    layer.grads = {"w": np.full(4, 3.0)}
    opt = optiplug.optimizer("sgd", layer, lr=0.1)
    assert opt.grads is layer.grads
    opt.step()
    np.testing.assert_allclose(layer.params["w"], np.full(4, 0.7), rtol=1e-15)
    opt.zero_grad()
    np.testing.assert_array_equal(layer.grads["w"], np.zeros(4))
    opt.step()
    np.testing.assert_allclose(layer.params["w"], np.full(4, 0.7), rtol=1e-15)


def test_numpy_optimizer_skips_parameters_without_gradient_like_torch() -> None:
    a, b = np.ones(2), np.ones(2)
    opt = optiplug.optimizer("adam", {"a": a, "b": b}, lr=0.1)
    opt.step({"a": np.ones(2)})
    # First Adam step: m/sqrt(v) = g/|g|, so p -= lr * 1 / (1 + eps).
    np.testing.assert_allclose(a, np.full(2, 1 - 0.1 / (1 + 1e-8)), rtol=1e-14)
    np.testing.assert_array_equal(b, np.ones(2))
    assert set(opt.state) == {"a"}


def test_numpy_optimizer_add_param_group_and_schedulable_lr() -> None:
    a, b = np.zeros(2), np.zeros(2)
    opt = optiplug.optimizer("sgd", {"a": a}, lr=1.0)
    opt.add_param_group({"params": {"b": b}, "lr": 0.5})
    opt.param_groups[0]["lr"] = 0.25  # as a scheduler does
    opt.step({"a": np.ones(2), "b": np.ones(2)})
    np.testing.assert_array_equal(a, np.full(2, -0.25))
    np.testing.assert_array_equal(b, np.full(2, -0.5))
    with pytest.raises(ValueError, match="appears twice"):
        opt.add_param_group({"params": {"a": np.zeros(2)}})


def test_numpy_optimizer_rejects_bad_params_and_grads() -> None:
    with pytest.raises(ValueError, match="C-contiguous"):
        optiplug.optimizer("sgd", {"w": np.zeros((3, 4)).T})
    with pytest.raises(TypeError, match="floating-point"):
        optiplug.optimizer("sgd", {"w": np.zeros(3, dtype=np.int64)})
    opt = optiplug.optimizer("sgd", {"w": np.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        opt.step({"w": np.zeros(4)})
    with pytest.raises(ValueError, match="unknown parameters"):
        opt.step({"x": np.zeros(3)})


@pytest.mark.parametrize("name", NAMES)
def test_numpy_optimizer_state_is_keyed_by_parameter_name(name: str) -> None:
    opt = optiplug.optimizer(name, {"layer.weight": np.ones(3), "layer.bias": np.ones(2)})
    opt.step({"layer.weight": np.ones(3), "layer.bias": np.ones(2)})
    assert set(opt.state) == {"layer.weight", "layer.bias"}
    assert opt.state["layer.bias"]["step"] == 1
    saved = opt.state_dict()
    assert saved["param_groups"][0]["param_names"] == ["layer.weight", "layer.bias"]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", NAMES)
def test_step_logging_plugin_registered_in_process_sees_every_step(backend: str,
                                                                    name: str) -> None:
    events: list[tuple[str, str, float]] = []

    class StepLogger:
        @optiplug.hookimpl
        def optiplug_before_step(self, optimizer: Any, backend: str) -> None:
            events.append(("before", backend, _first_value(optimizer)))

        @optiplug.hookimpl
        def optiplug_after_step(self, optimizer: Any, backend: str) -> None:
            events.append(("after", backend, _first_value(optimizer)))

    registry = optiplug.registry()
    registry.register(StepLogger(), name="test-step-logger")
    try:
        start = initial(np.float64)
        params = ({n: a.copy() for n, a in start.items()} if backend == "numpy"
                  else torch_params(start))
        opt = optiplug.optimizer(name, params, lr=0.1)
        for _ in range(2):
            if backend == "numpy":
                opt.step({n: np.ones_like(a) for n, a in params.items()})
            else:
                for p in params.values():
                    p.grad = torch.ones_like(p)
                opt.step()
    finally:
        registry.unregister("test-step-logger")
    assert [(kind, seen) for kind, seen, _ in events] == [
        ("before", backend), ("after", backend)] * 2
    # Each "after" sees the value its step wrote, the next "before" sees the same value.
    assert events[0][2] == float(start["w"].flat[0])
    assert events[1][2] != events[0][2]
    assert events[2][2] == events[1][2]


def _first_value(optimizer: Any) -> float:
    param = optimizer.param_groups[0]["params"][0]
    return float(param.detach().reshape(-1)[0] if isinstance(param, torch.Tensor)
                 else param.reshape(-1)[0])


def test_numpy_step_hooks_use_torch_signature_and_handles_remove() -> None:
    calls: list[tuple[str, tuple[Any, ...]]] = []
    opt = optiplug.optimizer("sgd", {"w": np.zeros(2)}, lr=1.0)
    pre = opt.register_step_pre_hook(lambda o, args, kwargs: calls.append(("pre", args)))
    post = opt.register_step_post_hook(lambda o, args, kwargs: calls.append(("post", args)))
    grads = {"w": np.ones(2)}
    opt.step(grads)
    pre.remove()
    post.remove()
    opt.step(grads)
    assert calls == [("pre", (grads,)), ("post", (grads,))]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_nonfinite_raise_names_the_parameter_and_changes_nothing(backend: str,
                                                                  name: str) -> None:
    params, step = _nonfinite_setup(backend, name, "raise")
    before = {n: v.copy() for n, v in _values(params).items()}
    with pytest.raises(NonfiniteGradientError, match="'b'"):
        step(np.nan)
    for n, v in _values(params).items():
        np.testing.assert_array_equal(v, before[n])


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop"])
def test_nonfinite_skip_leaves_params_and_state_untouched(backend: str, name: str) -> None:
    params, step = _nonfinite_setup(backend, name, "skip")
    opt = step(1.0)
    state_before = repr(opt.state_dict()["state"])
    before = {n: v.copy() for n, v in _values(params).items()}
    step(np.inf)
    assert opt.skipped_steps == 1
    assert repr(opt.state_dict()["state"]) == state_before
    for n, v in _values(params).items():
        np.testing.assert_array_equal(v, before[n])
    step(1.0)
    assert not np.array_equal(_values(params)["a"], before["a"])


def test_nonfinite_ignore_applies_the_step_like_torch() -> None:
    a = np.zeros(2)
    optiplug.optimizer("sgd", {"a": a}, lr=1.0).step({"a": np.array([np.nan, 1.0])})
    assert np.isnan(a[0]) and a[1] == -1.0


def _values(params: dict[str, Any]) -> dict[str, np.ndarray]:
    return {n: p.detach().numpy() if isinstance(p, torch.Tensor) else p
            for n, p in params.items()}


def _nonfinite_setup(backend: str, name: str, policy: str) -> tuple[dict[str, Any], Any]:
    start = {"a": np.ones(3), "b": np.ones(2)}
    params: dict[str, Any] = ({n: a.copy() for n, a in start.items()} if backend == "numpy"
                              else torch_params(start))
    opt = optiplug.optimizer(name, params, lr=0.1, nonfinite=policy)

    def step(bad: float) -> Any:
        grads = {"a": np.ones(3), "b": np.array([1.0, bad])}
        if backend == "numpy":
            opt.step(grads)
        else:
            for n, p in params.items():
                p.grad = torch.from_numpy(grads[n])
            opt.step()
        return opt

    return params, step


@pytest.mark.parametrize("name", NAMES)
def test_torch_backend_is_a_real_torch_optimizer_with_fastest_kernel(name: str) -> None:
    model = torch.nn.Linear(3, 2)
    # One group (AdamW's default weight decay would otherwise put the bias in a no-decay one).
    opt = optiplug.optimizer(name, model, decay_bias_and_norm=True)
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["param_names"] == ["weight", "bias"]
    kernel = {key: opt.param_groups[0].get(key) for key in ("fused", "foreach")}
    if name == "sgd":
        assert kernel == {"fused": None, "foreach": True}
    elif name in ("momentum", "nesterov", "adagrad", "adam", "adamw"):
        assert kernel["fused"] is True
    elif name in ("rmsprop", "adadelta", "radam", "nadam", "adamax", "rprop"):
        # No fused kernel: foreach for a group of small tensors on the CPU (measured faster).
        assert kernel == {"fused": None, "foreach": True}
    else:  # torch's own choice (for-loop on CPU), or optiplug's own multi-tensor kernels
        assert kernel == {"fused": None, "foreach": None}
    # Constructible as cls(params, **kwargs), as ZeroRedundancyOptimizer does.
    clone = type(opt)(list(model.parameters()), lr=0.1)
    assert clone.param_groups[0]["lr"] == 0.1


def test_torch_backend_works_with_torch_lr_scheduler_and_grad_scaler() -> None:
    model = torch.nn.Linear(4, 1)
    opt = optiplug.optimizer("adam", model.named_parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu")
    before = model.weight.detach().clone()
    for _ in range(2):
        opt.zero_grad()
        loss = model(torch.ones(2, 4)).pow(2).mean()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        scheduler.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.025)
    assert not torch.equal(model.weight.detach(), before)


def test_torch_backend_accepts_dict_and_group_dicts_of_named_params() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    opt = optiplug.optimizer("sgd", [
        {"params": model[0], "lr": 0.1},
        {"params": dict(model[1].named_parameters()), "lr": 0.2}])
    assert [g["param_names"] for g in opt.param_groups] == [["weight", "bias"],
                                                            ["weight", "bias"]]


def test_torch_backend_works_under_zero_redundancy_optimizer(tmp_path: Any) -> None:
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from optiplug.backends._torch_optim import Adam

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        model = torch.nn.Linear(3, 1)
        reference = torch.nn.Linear(3, 1)
        reference.load_state_dict(model.state_dict())
        zero = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=Adam, lr=0.1)
        plain = torch.optim.Adam(reference.parameters(), lr=0.1)
        for _ in range(3):
            for m, o in ((model, zero), (reference, plain)):
                o.zero_grad()
                m(torch.ones(2, 3)).sum().backward()
                o.step()
        torch.testing.assert_close(model.weight, reference.weight, rtol=1e-6, atol=1e-7)
    finally:
        dist.destroy_process_group()


def test_numpy_optimizer_base_class_is_exported_for_third_parties() -> None:
    assert NumpyOptimizer.optiplug_backend == "numpy"
    assert isinstance(optiplug.optimizer("adam", {"w": np.zeros(2)}), NumpyOptimizer)


@pytest.mark.parametrize("name", NAMES)
def test_spec_defaults_equal_torch_defaults(name: str) -> None:
    import inspect

    from .optimizer_cases import TORCH_CLASSES

    signature = inspect.signature(getattr(torch.optim, TORCH_CLASSES[name]))
    spec = optiplug.spec("optimizer", name)
    for key, value in spec.hyperparameters().items():
        if key in optiplug.OptimizerSpec.policy_fields:
            continue
        if key == "momentum" and name in ("momentum", "nesterov"):
            # torch.optim.SGD defaults to no momentum; these techniques are momentum.
            assert value == 0.9
            continue
        assert signature.parameters[key].default == value, key


def test_specs_are_strict_and_constrained() -> None:
    for name, bad in [("adam", {"lr": "0.1"}), ("adam", {"betas": (0.9, 1.0)}),
                      ("sgd", {"weight_decay": -1.0}), ("rmsprop", {"centered": 1}),
                      ("momentum", {"momentum": 0.0}), ("adam", {"nonfinite": "warn"}),
                      ("adagrad", {"eps": float("nan")})]:
        with pytest.raises(optiplug.ConfigError):
            optiplug.spec("optimizer", name, **bad)


@pytest.mark.parametrize("name", ["adam", "momentum", "adagrad"])
def test_packed_small_parameters_match_torch_when_some_gradients_are_missing(
        name: str) -> None:
    # Small parameters share packed state buffers; steps where only some of them have a
    # gradient put them out of step, and every one must still follow torch exactly.
    rng = np.random.default_rng(5)
    start = {f"p{i}": rng.standard_normal(3 + i) for i in range(6)}
    numpy_params = {n: a.copy() for n, a in start.items()}
    opt = optiplug.optimizer(name, numpy_params, lr=0.05)
    reference_params = torch_params(start)
    reference = getattr(torch.optim, {"adam": "Adam", "momentum": "SGD",
                                      "adagrad": "Adagrad"}[name])(
        list(reference_params.values()), lr=0.05, **({"momentum": 0.9}
                                                      if name == "momentum" else {}))
    for step in range(30):
        present = [n for i, n in enumerate(start) if step < 5 or (step + i) % 3]
        opt.step({n: numpy_params[n] - 1.0 for n in present})
        for n, p in reference_params.items():
            p.grad = (p.detach() - 1.0) if n in present else None
        reference.step()
    for n in start:
        np.testing.assert_allclose(numpy_params[n], reference_params[n].detach().numpy(),
                                   rtol=1e-12, atol=1e-12, err_msg=n)


def test_deep_copied_numpy_optimizer_continues_like_the_original() -> None:
    import copy

    rng = np.random.default_rng(7)
    params = {f"p{i}": rng.standard_normal(4) for i in range(4)}
    opt = optiplug.optimizer("adam", params, lr=0.1)
    grads = {n: np.full(4, 0.3) for n in params}
    opt.step(grads)
    clone = copy.deepcopy(opt)
    clone_params = {n: p for g in clone.param_groups
                    for n, p in zip(g["param_names"], g["params"], strict=True)}
    for _ in range(3):
        opt.step(grads)
        clone.step(grads)
    for n in params:
        np.testing.assert_array_equal(clone_params[n], params[n])
        np.testing.assert_array_equal(clone.state_dict()["state"][n]["exp_avg"],
                                      opt.state_dict()["state"][n]["exp_avg"])


@pytest.mark.parametrize("name", NAMES)
def test_threaded_blocked_packed_step_equals_the_plain_single_threaded_step(name: str) -> None:
    # Blocks, packed small parameters and worker threads must not change a single bit.
    rng = np.random.default_rng(11)
    shapes = [(3000,), (7,), (5, 4), (1,), (2500,), (9,), (300,)]
    start = {f"p{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    runs = []
    for threads, block in ((1, 1 << 20), (2, 1024)):
        params = {n: a.copy() for n, a in start.items()}
        opt = optiplug.optimizer(name, params, lr=0.01)
        opt.threads, opt.block_size, opt.parallel_threshold = threads, block, 0
        for step in range(5):
            opt.step({n: np.sin(p + step) for n, p in params.items()})
        runs.append(params)
    for n in start:
        np.testing.assert_array_equal(runs[0][n], runs[1][n], err_msg=n)
