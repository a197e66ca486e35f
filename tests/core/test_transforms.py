"""Composable transforms: chains against the builtin optimizers, torch.optim and formulas."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

import optiplug
import optiplug.transforms as ot

torch = pytest.importorskip("torch")

BACKENDS = ("numpy", "torch")
SHAPES = ((31, 17), (17,), (5, 4, 3))
Params = dict[str, Any]


def make_params(backend: str, dtype: Any = np.float32, seed: int = 0) -> Params:
    rng = np.random.default_rng(seed)
    arrays = {f"p{i}": rng.standard_normal(shape).astype(dtype) for i, shape in
              enumerate(SHAPES)}
    if backend == "numpy":
        return arrays
    return {name: torch.nn.Parameter(torch.tensor(a)) for name, a in arrays.items()}


def gradient_stream(steps: int, dtype: Any = np.float32, seed: int = 1
                    ) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{f"p{i}": rng.standard_normal(shape).astype(dtype) for i, shape in
             enumerate(SHAPES)} for _ in range(steps)]


def step(optimizer: Any, params: Params, grads: dict[str, np.ndarray]) -> None:
    if isinstance(next(iter(params.values())), np.ndarray):
        optimizer.step(grads)
        return
    for name, param in params.items():
        param.grad = torch.tensor(grads[name])
    optimizer.step()


def values(params: Params) -> dict[str, np.ndarray]:
    return {name: (p.detach().numpy().copy() if hasattr(p, "detach") else p.copy())
            for name, p in params.items()}


def assert_close_to_scale(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray],
                          tolerance: float) -> None:
    """Every element within ``tolerance`` relative to the largest expected magnitude."""
    scale = max(float(np.abs(e).max()) for e in expected.values())
    error = max(float(np.abs(actual[n].astype(np.float64) - expected[n]).max())
                for n in expected)
    assert error <= tolerance * scale, f"max error {error:.3g} > {tolerance:g} * {scale:.3g}"


def run(make: Callable[[Params], Any], backend: str, grads: list[dict[str, np.ndarray]],
        dtype: Any = np.float32) -> dict[str, np.ndarray]:
    params = make_params(backend, dtype)
    optimizer = make(params)
    for grad in grads:
        step(optimizer, params, grad)
    return values(params)


ADAM = ot.chain(ot.scale_by_adam(b1=0.9, b2=0.999, eps=1e-8), ot.scale_by_learning_rate())
MOMENTUM = ot.chain(ot.scale_by_momentum(0.9), ot.scale_by_learning_rate())


# --------------------------------------------------------------- against the builtins
@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_chain_matches_builtin_adam_over_200_steps(backend: str) -> None:
    grads = gradient_stream(200)
    chain = run(lambda p: ot.chain_optimizer(ADAM, p, lr=1e-2), backend, grads)
    builtin = run(lambda p: optiplug.optimizer("adam", p, lr=1e-2), backend, grads)
    assert_close_to_scale(chain, builtin, 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_momentum_chain_matches_builtin_momentum_over_200_steps(backend: str) -> None:
    grads = gradient_stream(200)
    chain = run(lambda p: ot.chain_optimizer(MOMENTUM, p, lr=1e-2), backend, grads)
    builtin = run(lambda p: optiplug.optimizer("momentum", p, lr=1e-2, momentum=0.9),
                  backend, grads)
    assert_close_to_scale(chain, builtin, 1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nesterov_chain_matches_builtin_nesterov(backend: str) -> None:
    grads = gradient_stream(50)
    rule = ot.chain(ot.scale_by_momentum(0.8, nesterov=True), ot.scale_by_learning_rate())
    chain = run(lambda p: ot.chain_optimizer(rule, p, lr=1e-2), backend, grads)
    builtin = run(lambda p: optiplug.optimizer("nesterov", p, lr=1e-2, momentum=0.8),
                  backend, grads)
    assert_close_to_scale(chain, builtin, 1e-6)


# ----------------------------------------------------------- against torch.optim, float64
TORCH_EQUIVALENTS: list[tuple[str, ot.Chain, Callable[[list[Any]], Any]]] = [
    ("adam", ot.chain(ot.scale_by_adam(b1=0.8, b2=0.99, eps=1e-6), ot.scale_by_learning_rate()),
     lambda p: torch.optim.Adam(p, lr=3e-2, betas=(0.8, 0.99), eps=1e-6, foreach=False)),
    ("adamw", ot.chain(ot.scale_by_adam(), ot.add_decayed_weights(0.1),
                       ot.scale_by_learning_rate()),
     lambda p: torch.optim.AdamW(p, lr=3e-2, weight_decay=0.1, foreach=False)),
    ("sgd_momentum_dampening", ot.chain(ot.add_decayed_weights(0.01),
                                        ot.scale_by_momentum(0.9, dampening=0.3),
                                        ot.scale_by_learning_rate()),
     lambda p: torch.optim.SGD(p, lr=3e-2, momentum=0.9, dampening=0.3, weight_decay=0.01,
                               foreach=False)),
    ("nesterov", ot.chain(ot.scale_by_momentum(0.9, nesterov=True), ot.scale_by_learning_rate()),
     lambda p: torch.optim.SGD(p, lr=3e-2, momentum=0.9, nesterov=True, foreach=False)),
    ("rmsprop", ot.chain(ot.scale_by_rms(decay=0.9, eps=1e-6), ot.scale_by_learning_rate()),
     lambda p: torch.optim.RMSprop(p, lr=3e-3, alpha=0.9, eps=1e-6, foreach=False)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("label", "rule", "reference"), TORCH_EQUIVALENTS,
                         ids=[case[0] for case in TORCH_EQUIVALENTS])
def test_chain_matches_torch_optim_in_float64(backend: str, label: str, rule: ot.Chain,
                                              reference: Callable[[list[Any]], Any]) -> None:
    grads = gradient_stream(60, np.float64)
    lr = {"rmsprop": 3e-3}.get(label, 3e-2)
    chain = run(lambda p: ot.chain_optimizer(rule, p, lr=lr), backend, grads, np.float64)
    expected = run(lambda p: reference(list(p.values())), "torch", grads, np.float64)
    assert_close_to_scale(chain, expected, 1e-10)


# ------------------------------------------------------------------------ formulas
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_by_global_norm_scales_to_max_norm_over_all_parameters(backend: str,
                                                                    max_norm: float) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    rule = ot.chain(ot.clip_by_global_norm(max_norm), ot.scale_by_learning_rate())
    optimizer = ot.chain_optimizer(rule, params, lr=0.1)
    step(optimizer, params, grads)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    factor = min(1.0, max_norm / norm)
    expected = {n: before[n] - 0.1 * factor * grads[n] for n in grads}
    assert_close_to_scale(values(params), expected, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_by_global_norm_after_adam_clips_the_adam_update(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    rule = ot.chain(ot.scale_by_adam(eps=1e-3), ot.clip_by_global_norm(2.0),
                    ot.scale_by_learning_rate())
    optimizer = ot.chain_optimizer(rule, params, lr=0.1)
    step(optimizer, params, grads)
    # First Adam step: m_hat = g, v_hat = g^2, u = g / (|g| + eps).
    adam = {n: g / (np.abs(g) + 1e-3) for n, g in grads.items()}
    norm = math.sqrt(sum(float(np.sum(u * u)) for u in adam.values()))
    assert norm > 2.0
    expected = {n: before[n] - 0.1 * (2.0 / norm) * adam[n] for n in grads}
    assert_close_to_scale(values(params), expected, 1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_limits_every_element(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    rule = ot.chain(ot.clip(0.3), ot.scale_by_learning_rate())
    step(ot.chain_optimizer(rule, params, lr=0.5), params, grads)
    expected = {n: before[n] - 0.5 * np.clip(grads[n], -0.3, 0.3) for n in grads}
    assert_close_to_scale(values(params), expected, 1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_add_decayed_weights_adds_weight_decay_times_params(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    rule = ot.chain(ot.add_decayed_weights(0.2), ot.scale_by_learning_rate())
    step(ot.chain_optimizer(rule, params, lr=0.1), params, grads)
    expected = {n: before[n] - 0.1 * (grads[n] + 0.2 * before[n]) for n in grads}
    assert_close_to_scale(values(params), expected, 1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_param_group_weight_decay_overrides_add_decayed_weights(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    rule = ot.chain(ot.add_decayed_weights(0.2), ot.scale_by_learning_rate())
    optimizer = ot.chain_optimizer(rule, params, lr=0.1,
                                   param_groups=[{"match": "p1", "weight_decay": 0.0}])
    step(optimizer, params, grads)
    expected = {n: before[n] - 0.1 * (grads[n] + (0.0 if n == "p1" else 0.2) * before[n])
                for n in grads}
    assert_close_to_scale(values(params), expected, 1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scale_by_learning_rate_reads_the_scheduled_lr(backend: str) -> None:
    params = make_params(backend, np.float64)
    grads = gradient_stream(3, np.float64)
    optimizer = ot.chain_optimizer(ot.chain(ot.scale_by_learning_rate()), params, lr=0.4)
    scheduler = optiplug.scheduler("exponential", optimizer, gamma=0.5)
    expected = values(params)
    for grad, lr in zip(grads, (0.4, 0.2, 0.1), strict=True):
        step(optimizer, params, grad)
        scheduler.step()
        expected = {n: expected[n] - lr * grad[n] for n in grad}
    assert_close_to_scale(values(params), expected, 1e-14)


# ---------------------------------------------------------------- per-group chains
@pytest.mark.parametrize("backend", BACKENDS)
def test_multi_transform_applies_each_chain_to_its_labelled_parameters(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    grads = gradient_stream(2, np.float64)
    rule = ot.multi_transform(
        {"default": ot.chain(ot.add_decayed_weights(0.5), ot.scale_by_learning_rate()),
         "plain": ot.chain(ot.scale(-1.0))},
        labels={"p1": "plain"})
    optimizer = ot.chain_optimizer(rule, params, lr=0.1)
    assert sorted(g["label"] for g in optimizer.param_groups) == ["default", "plain"]
    expected = before
    for grad in grads:
        step(optimizer, params, grad)
        expected = {n: expected[n] - grad[n] if n == "p1"
                    else expected[n] - 0.1 * (grad[n] + 0.5 * expected[n]) for n in grad}
    assert_close_to_scale(values(params), expected, 1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_callable_labels_and_group_labels_choose_chains(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    chains = {"a": ot.chain(ot.scale(-1.0)), "b": ot.chain(ot.scale(-2.0))}
    by_ndim = ot.multi_transform(chains, labels=lambda name, p: "b" if p.ndim == 1 else "a")
    step(ot.chain_optimizer(by_ndim, params, lr=1.0), params, grads)
    expected = {n: before[n] - (2.0 if n == "p1" else 1.0) * grads[n] for n in grads}
    assert_close_to_scale(values(params), expected, 1e-14)

    params = make_params(backend, np.float64)
    groups = [{"params": [(n, p) for n, p in params.items() if n != "p2"], "label": "a"},
              {"params": [("p2", params["p2"])], "label": "b"}]
    step(ot.chain_optimizer(ot.multi_transform(chains), groups, lr=1.0, backend=backend),
         params, grads)
    expected = {n: before[n] - (2.0 if n == "p2" else 1.0) * grads[n] for n in grads}
    assert_close_to_scale(values(params), expected, 1e-14)


def test_a_label_without_chain_is_an_error() -> None:
    rule = ot.multi_transform({"a": ot.scale(-1.0)}, labels={"p0": "a"})
    with pytest.raises(ValueError, match="'p1' is labelled 'default', which has no chain"):
        ot.chain_optimizer(rule, make_params("numpy"), lr=1.0)


# --------------------------------------------------------------------- state dicts
def _clone_state(state: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_round_trip_mid_run_continues_identically(backend: str) -> None:
    rule = ot.chain(ot.clip_by_global_norm(5.0), ot.scale_by_adam(), ot.scale_by_momentum(0.5),
                    ot.add_decayed_weights(0.01), ot.scale_by_learning_rate())
    grads = gradient_stream(10)
    params = make_params(backend)
    optimizer = ot.chain_optimizer(rule, params, lr=1e-2)
    for grad in grads[:5]:
        step(optimizer, params, grad)
    saved_state, saved_params = _clone_state(optimizer.state_dict()), values(params)
    for grad in grads[5:]:
        step(optimizer, params, grad)

    resumed = make_params(backend)
    for name, value in saved_params.items():
        if backend == "numpy":
            resumed[name][...] = value
        else:
            resumed[name].data.copy_(torch.tensor(value))
    optimizer2 = ot.chain_optimizer(rule, dict(reversed(list(resumed.items()))), lr=1.0)
    optimizer2.load_state_dict(saved_state)
    assert all(g["lr"] == 1e-2 for g in optimizer2.param_groups)
    for grad in grads[5:]:
        step(optimizer2, resumed, grad)
    for name, value in values(params).items():
        np.testing.assert_array_equal(values(resumed)[name], value)
    keys = set(next(iter(optimizer2.state.values())))
    assert keys == {"step", "scale_by_adam.mu", "scale_by_adam.nu", "scale_by_momentum.mu"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_loading_another_chains_state_is_a_config_error(backend: str) -> None:
    params = make_params(backend)
    adam = ot.chain_optimizer(ADAM, params, lr=1e-2)
    step(adam, params, gradient_stream(1)[0])
    momentum = ot.chain_optimizer(MOMENTUM, make_params(backend), lr=1e-2)
    with pytest.raises(optiplug.ConfigError, match="state"):
        momentum.load_state_dict(_clone_state(adam.state_dict()))


def test_repeated_transforms_get_numbered_state_keys() -> None:
    rule = ot.chain(ot.scale_by_momentum(0.5), ot.scale_by_momentum(0.9))
    assert rule.all_state_keys() == ("scale_by_momentum.mu", "scale_by_momentum#2.mu")


# ------------------------------------------------------------------------ configs
CONFIG = {"name": "chain", "lr": 0.01,
          "transforms": [{"name": "clip_by_global_norm", "max_norm": 1.0},
                         {"name": "scale_by_adam", "b1": 0.9, "b2": 0.999},
                         {"name": "add_decayed_weights", "weight_decay": 0.01},
                         {"name": "scale_by_learning_rate"}]}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_chain_config_file_builds_on_both_backends(tmp_path: Path, backend: str,
                                                   suffix: str) -> None:
    path = tmp_path / f"opt{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps({"optimizer": CONFIG}), encoding="utf-8")
    else:
        import yaml

        path.write_text(yaml.safe_dump({"optimizer": CONFIG}), encoding="utf-8")
    (spec,) = optiplug.validate_config(path)
    params = make_params(backend)
    built = optiplug.build(spec, params=params)
    grads = gradient_stream(20)
    for grad in grads:
        step(built, params, grad)
    rule = ot.chain(ot.clip_by_global_norm(1.0), ot.scale_by_adam(), ot.add_decayed_weights(0.01),
                    ot.scale_by_learning_rate())
    expected = run(lambda p: ot.chain_optimizer(rule, p, lr=0.01), backend, grads)
    for name, value in expected.items():
        np.testing.assert_array_equal(values(params)[name], value)
    assert isinstance(built, torch.optim.Optimizer) == (backend == "torch")


def test_chain_spec_round_trips_and_exports_a_schema() -> None:
    spec = optiplug.to_spec({"kind": "optimizer", **CONFIG})
    assert type(spec)(**spec.model_dump()) == spec
    assert optiplug.to_spec(json.loads(json.dumps(spec.model_dump()))) == spec
    schema = json.dumps(optiplug.json_schema("optimizer"))
    assert "scale_by_adam" in schema and "clip_by_global_norm" in schema


@pytest.mark.parametrize(("transforms", "path"), [
    ([{"name": "scale_by_learning_rate"}, {"name": "scale_by_adam", "b1": 1.5}],
     "transforms.1.b1"),
    ([{"name": "scale_by_adam", "b1": "0.9"}], "transforms.0.b1"),
    ([{"name": "scale_by_adamm"}], "transforms.0.name"),
    ([{"name": "clip"}], "transforms.0.max_delta"),
    ([{"name": "scale_by_adam", "beta1": 0.9}], "transforms.0.beta1"),
    ({"decay": [{"name": "add_decayed_weights", "weight_decay": -1.0}]},
     "transforms.decay.0.weight_decay"),
])
def test_bad_transform_entries_carry_their_path(transforms: Any, path: str) -> None:
    with pytest.raises(optiplug.ConfigError) as info:
        optiplug.to_spec({"kind": "optimizer", "name": "chain", "transforms": transforms})
    assert [issue.path for issue in info.value.issues] == [path]


def test_unknown_transform_suggests_the_closest_name() -> None:
    with pytest.raises(optiplug.ConfigError, match="did you mean 'scale_by_adam'"):
        optiplug.to_spec({"kind": "optimizer", "name": "chain",
                          "transforms": [{"name": "scale_by_adamm"}]})


def test_labels_must_name_chains() -> None:
    with pytest.raises(optiplug.ConfigError, match="labels name chains"):
        optiplug.to_spec({"kind": "optimizer", "name": "chain",
                          "transforms": {"default": [{"name": "scale", "step_size": -1.0}]},
                          "labels": {"*.bias": "no_decay"}})


# --------------------------------------------------------------------- named chains
@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        optiplug.registry().unregister(f"optimizer.{name}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_register_chain_makes_a_named_optimizer(registered: list[str], backend: str) -> None:
    technique = ot.register_chain("test_adam_chain", [ot.scale_by_adam(), {"name": "scale_by_"
                                                                           "learning_rate"}],
                                  summary="Adam as a chain.", lr=1e-2)
    registered.append("test_adam_chain")
    assert optiplug.registry().get("optimizer", "test_adam_chain") == technique
    grads = gradient_stream(20)
    named = run(lambda p: optiplug.optimizer("test_adam_chain", p), backend, grads)
    builtin = run(lambda p: optiplug.optimizer("adam", p, lr=1e-2), backend, grads)
    assert_close_to_scale(named, builtin, 1e-6)
    with pytest.raises(optiplug.ConfigError, match="lr"):
        optiplug.spec("optimizer", "test_adam_chain", lr=-1.0)


def test_register_chain_config_reads_a_file(registered: list[str], tmp_path: Path) -> None:
    path = tmp_path / "clipped.toml"
    path.write_text('name = "test_clipped_sgd"\nsummary = "SGD with clipping."\nlr = 0.5\n'
                    '[[transforms]]\nname = "clip"\nmax_delta = 0.1\n'
                    '[[transforms]]\nname = "scale_by_learning_rate"\n', encoding="utf-8")
    ot.register_chain_config(path)
    registered.append("test_clipped_sgd")
    params = make_params("numpy", np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    step(optiplug.optimizer("test_clipped_sgd", params), params, grads)
    expected = {n: before[n] - 0.5 * np.clip(grads[n], -0.1, 0.1) for n in grads}
    assert_close_to_scale(values(params), expected, 1e-14)


def test_register_chain_config_reports_paths(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"name": "test_bad", "summary": "x",
                                "transforms": [{"name": "scale_by_rms", "decay": 2}]}),
                    encoding="utf-8")
    with pytest.raises(optiplug.ConfigError) as info:
        ot.register_chain_config(path)
    assert [issue.path for issue in info.value.issues] == ["transforms.0.decay"]
    assert info.value.source == str(path)


def test_register_chain_refuses_a_taken_name() -> None:
    with pytest.raises(optiplug.PluginError, match="already provided"):
        ot.register_chain("adam", [ot.scale_by_adam()], summary="Another adam.")


# ----------------------------------------------------------------- hooks and laziness
@pytest.mark.parametrize("backend", BACKENDS)
def test_lifecycle_hooks_run_around_chain_steps(backend: str) -> None:
    calls: list[tuple[str, str]] = []

    class Observer:
        @optiplug.hookimpl
        def optiplug_before_step(self, optimizer: Any, backend: str) -> None:
            calls.append(("before", backend))

        @optiplug.hookimpl
        def optiplug_after_step(self, optimizer: Any, backend: str) -> None:
            calls.append(("after", backend))

    optiplug.registry().register(Observer(), name="test-observer")
    try:
        params = make_params(backend)
        optimizer = ot.chain_optimizer(ADAM, params, lr=1e-2)
        step(optimizer, params, gradient_stream(1)[0])
    finally:
        optiplug.registry().unregister("test-observer")
    assert calls == [("before", backend), ("after", backend)]


def test_importing_transforms_does_not_import_torch() -> None:
    code = ("import sys, numpy as np, optiplug.transforms as ot\n"
            "opt = ot.chain_optimizer(ot.chain(ot.scale_by_adam(), ot.scale_by_learning_rate()),"
            " {'w': np.ones(3)}, lr=0.1)\n"
            "opt.step({'w': np.ones(3)})\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------- NumPy blocking, packing, threads
@pytest.mark.parametrize("rule", [
    ot.chain(ot.clip_by_global_norm(20.0), ot.scale_by_adam(), ot.add_decayed_weights(0.1),
             ot.scale_by_learning_rate()),
    ot.chain(ot.scale_by_rms(), ot.clip_by_global_norm(20.0), ot.clip(0.5),
             ot.scale_by_momentum(0.9, nesterov=True), ot.scale_by_learning_rate()),
], ids=["leading-norm", "staged-norm"])
def test_numpy_blocks_packing_and_threads_match_torch(rule: ot.Chain) -> None:
    from optiplug.transforms._numpy import NumpyChainOptimizer

    rng = np.random.default_rng(3)
    shapes = {"big": (300, 1000), **{f"small{i}": (7, i + 1) for i in range(6)}}
    start = {n: rng.standard_normal(s) for n, s in shapes.items()}
    grads = [{n: rng.standard_normal(s) for n, s in shapes.items()} for _ in range(4)]
    numpy_params = {n: a.copy() for n, a in start.items()}
    optimizer = NumpyChainOptimizer(numpy_params, rule, lr=0.01, block_size=4096, threads=2)
    torch_params = {n: torch.nn.Parameter(torch.tensor(a)) for n, a in start.items()}
    reference = ot.chain_optimizer(rule, torch_params, lr=0.01)
    for grad in grads:
        step(optimizer, numpy_params, grad)
        step(reference, torch_params, grad)
    assert_close_to_scale(numpy_params, values(torch_params), 1e-12)


# ------------------------------------------------------------ a user's building block
@ot.register_transform
class ScaleByLion(ot.Transform):
    """The guide's example block: ``u = sign(b1 m + (1 - b1) g)``, ``m = b2 m + (1 - b2) g``."""

    name: Literal["test_scale_by_lion"] = "test_scale_by_lion"
    b1: optiplug.Beta = 0.9
    """Interpolation between momentum and gradient for the step direction."""
    b2: optiplug.Beta = 0.99
    """Decay rate of the momentum."""

    state_names = ("mu",)

    def update(self, xp: ot.ArrayOps, u: ot.Arrays, state: Any, ctx: ot.StepContext) -> Any:
        (mu,) = state
        direction = xp.mul(mu, self.b1)
        xp.add_(direction, u, alpha=1 - self.b1)
        xp.sign_(direction)
        xp.lerp_(mu, u, 1 - self.b2)
        return direction


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_user_block_runs_on_both_backends_and_in_configs(backend: str) -> None:
    params = make_params(backend, np.float64)
    expected = values(params)
    grads = gradient_stream(5, np.float64)
    config = {"kind": "optimizer", "name": "chain", "lr": 0.01,
              "transforms": [{"name": "test_scale_by_lion", "b2": 0.95},
                             {"name": "add_decayed_weights", "weight_decay": 0.1},
                             {"name": "scale_by_learning_rate"}]}
    optimizer = optiplug.build(config, params=params, backend=backend)
    momentum = {n: np.zeros_like(v) for n, v in expected.items()}
    for grad in grads:
        step(optimizer, params, grad)
        for n, g in grad.items():
            direction = np.sign(0.9 * momentum[n] + 0.1 * g)
            momentum[n] = 0.95 * momentum[n] + 0.05 * g
            expected[n] = expected[n] - 0.01 * (direction + 0.1 * expected[n])
    assert_close_to_scale(values(params), expected, 1e-12)
    state = optimizer.state["p0"] if backend == "numpy" else optimizer.state[params["p0"]]
    assert set(state) == {"step", "test_scale_by_lion.mu"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_loading_state_saved_under_another_label_is_a_config_error(backend: str) -> None:
    chains = {"a": ot.chain(ot.scale_by_adam(), ot.scale_by_learning_rate())}
    params = make_params(backend)
    saved = ot.chain_optimizer(ot.multi_transform(chains, labels={"*": "a"}), params, lr=0.1)
    step(saved, params, gradient_stream(1)[0])
    other = ot.chain_optimizer(ot.multi_transform({"b": chains["a"]}, labels={"*": "b"}),
                               make_params(backend), lr=0.1)
    with pytest.raises(optiplug.ConfigError, match="chain 'a'"):
        other.load_state_dict(_clone_state(saved.state_dict()))


def test_a_plugin_can_contribute_a_named_chain() -> None:
    class ChainPlugin:
        @optiplug.hookimpl
        def optiplug_optimizers(self) -> list[optiplug.Technique]:
            return [ot.chain_technique("test_plugin_sgd", [{"name": "scale_by_learning_rate"}],
                                       summary="Plain SGD as a chain.", lr=0.5)]

    optiplug.registry().register(ChainPlugin(), name="test-chain-plugin")
    try:
        params = make_params("numpy", np.float64)
        before = values(params)
        (grads,) = gradient_stream(1, np.float64)
        step(optiplug.optimizer("test_plugin_sgd", params), params, grads)
    finally:
        optiplug.registry().unregister("test-chain-plugin")
    assert_close_to_scale(values(params), {n: before[n] - 0.5 * grads[n] for n in grads}, 1e-15)
    with pytest.raises(optiplug.ConfigError):
        optiplug.registry().get("optimizer", "test_plugin_sgd")


# ------------------------------------------------------- per-tensor transforms and LAMB
LAMB_SHAPES = {"big": (700, 500), "w": (31, 17), "b": (17,), "zero": (4, 3), "conv": (5, 4, 3)}


def lamb_reference(start: dict[str, np.ndarray], grads: list[dict[str, np.ndarray]], *,
                   lr: float, b1: float, b2: float, eps: float, weight_decay: float
                   ) -> list[dict[str, np.ndarray]]:
    """LAMB (You et al. 2020, Algorithm 2 with phi = identity) written out; every step."""
    p = {n: a.copy() for n, a in start.items()}
    m = {n: np.zeros_like(a) for n, a in start.items()}
    v = {n: np.zeros_like(a) for n, a in start.items()}
    history = []
    for t, g in enumerate(grads, start=1):
        for n in p:
            m[n] = b1 * m[n] + (1 - b1) * g[n]
            v[n] = b2 * v[n] + (1 - b2) * g[n] ** 2
            m_hat, v_hat = m[n] / (1 - b1**t), v[n] / (1 - b2**t)
            r = m_hat / (np.sqrt(v_hat) + eps) + weight_decay * p[n]
            p_norm, r_norm = np.linalg.norm(p[n]), np.linalg.norm(r)
            trust = p_norm / r_norm if p_norm > 0 and r_norm > 0 else 1.0
            p[n] = p[n] - lr * trust * r
        history.append({n: a.copy() for n, a in p.items()})
    return history


def lamb_start_and_grads(steps: int) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(7)
    start = {n: rng.standard_normal(s) for n, s in LAMB_SHAPES.items()}
    start["zero"][...] = 0.0           # a zero tensor: the trust ratio is 1
    grads = [{n: rng.standard_normal(s) * (0.0 if n == "b" and k == 0 else 1.0)
              for n, s in LAMB_SHAPES.items()} for k in range(steps)]
    return start, grads


@pytest.mark.parametrize("backend", BACKENDS)
def test_lamb_as_a_chain_matches_the_formula_every_step(backend: str) -> None:
    lamb = ot.chain(ot.scale_by_adam(b1=0.9, b2=0.999, eps=1e-6), ot.add_decayed_weights(0.01),
                    ot.scale_by_trust_ratio(), ot.scale_by_learning_rate())
    start, grads = lamb_start_and_grads(6)
    expected = lamb_reference(start, grads, lr=0.02, b1=0.9, b2=0.999, eps=1e-6,
                              weight_decay=0.01)
    params: Params = ({n: a.copy() for n, a in start.items()} if backend == "numpy" else
                      {n: torch.nn.Parameter(torch.tensor(a)) for n, a in start.items()})
    opt = ot.chain_optimizer(lamb, params, lr=0.02)
    for g, want in zip(grads, expected, strict=True):
        step(opt, params, g)
        got = values(params)
        for name in LAMB_SHAPES:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12,
                                       err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clip_by_tensor_norm_clips_each_tensor_on_its_own(backend: str) -> None:
    params = make_params(backend, np.float64)
    before = values(params)
    (grads,) = gradient_stream(1, np.float64)
    opt = ot.chain_optimizer(ot.chain(ot.clip_by_tensor_norm(2.0), ot.scale_by_learning_rate()),
                             params, lr=0.1)
    step(opt, params, grads)
    for name, g in grads.items():
        norm = np.linalg.norm(g)
        expected = before[name] - 0.1 * g * min(1.0, 2.0 / norm)
        np.testing.assert_allclose(values(params)[name], expected, rtol=1e-13, atol=1e-15)


def test_a_plugin_per_tensor_rule_gets_whole_tensor_norms_however_numpy_blocks() -> None:
    seen: list[tuple[float, float]] = []

    class Record(ot.PerTensorTransform):
        name: Literal["test_record_norms"] = "test_record_norms"

        def tensor_factor(self, ctx: ot.StepContext, param_norm: float,
                          update_norm: float) -> float:
            seen.append((param_norm, update_norm))
            return 1.0

    rng = np.random.default_rng(3)
    params = {"big": rng.standard_normal(400_000), "small": rng.standard_normal(7)}
    grads = {"big": rng.standard_normal(400_000), "small": rng.standard_normal(7)}
    opt = ot.chain_optimizer(ot.chain(ot.scale(2.0), Record(), ot.scale_by_learning_rate()),
                             {n: a.copy() for n, a in params.items()}, lr=0.1)
    opt.step(grads)
    expected = sorted((float(np.linalg.norm(params[n])), 2 * float(np.linalg.norm(grads[n])))
                      for n in params)
    np.testing.assert_allclose(sorted(seen), expected, rtol=1e-13)


# ------------------------------------------------------- chains with hyperparameters
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_registered_chain_exposes_its_hyperparameters_in_the_spec(
        registered: list[str], backend: str) -> None:
    ot.register_chain(
        "test_lamb", [ot.scale_by_adam(eps=1e-6), ot.add_decayed_weights(0.01),
                      ot.scale_by_trust_ratio(), ot.scale_by_learning_rate()],
        summary="LAMB as a chain.", lr=1e-3,
        hyperparameters={"b1": "scale_by_adam.b1", "b2": "scale_by_adam.b2",
                         "eps": "scale_by_adam.eps",
                         "weight_decay": "add_decayed_weights.weight_decay"})
    registered.append("test_lamb")
    spec = optiplug.to_spec({"kind": "optimizer", "name": "test_lamb", "lr": 0.02, "b1": 0.8})
    assert (spec.b1, spec.b2, spec.eps, spec.weight_decay) == (0.8, 0.999, 1e-6, 0.01)
    schema = type(spec).model_json_schema()["properties"]
    assert schema["b1"]["exclusiveMaximum"] == 1 and "first-moment" in schema["b1"]["description"]
    start, grads = lamb_start_and_grads(4)
    expected = lamb_reference(start, grads, lr=0.02, b1=0.8, b2=0.999, eps=1e-6,
                              weight_decay=0.01)[-1]
    params: Params = ({n: a.copy() for n, a in start.items()} if backend == "numpy" else
                      {n: torch.nn.Parameter(torch.tensor(a)) for n, a in start.items()})
    opt = optiplug.build({"name": "test_lamb", "kind": "optimizer", "lr": 0.02, "b1": 0.8},
                         params=params)
    for g in grads:
        step(opt, params, g)
    for name, got in values(params).items():
        np.testing.assert_allclose(got, expected[name], rtol=1e-12, atol=1e-12)
    with pytest.raises(optiplug.ConfigError, match=r"b1"):
        optiplug.to_spec({"kind": "optimizer", "name": "test_lamb", "b1": 1.0})


def test_chain_hyperparameters_are_checked_when_registered() -> None:
    chain = [ot.scale_by_adam(), ot.scale_by_learning_rate()]
    for hyperparameters, message in (({"b1": "scale_by_rms.decay"}, "no transform"),
                                     ({"b1": "scale_by_adam.beta"}, "no field 'beta'"),
                                     ({"lr": "scale_by_adam.b1"}, "cannot be a hyperparameter"),
                                     ({"b1": "b1"}, "transform.field")):
        with pytest.raises(optiplug.ConfigError, match=message):
            ot.chain_technique("test_bad_hp", chain, summary="x",
                               hyperparameters=hyperparameters)


def test_chain_hyperparameters_reach_repeated_and_labelled_transforms(
        registered: list[str]) -> None:
    ot.register_chain("test_two_clips", [ot.clip(1.0), ot.clip(1.0), ot.scale_by_learning_rate()],
                      summary="x", hyperparameters={"second": "clip#2.max_delta"})
    registered.append("test_two_clips")
    spec = optiplug.spec("optimizer", "test_two_clips", second=0.25)
    assert [t.max_delta for t in spec.to_transform().transforms[:2]] == [1.0, 0.25]
    ot.register_chain("test_labelled", {"default": [ot.add_decayed_weights(0.1),
                                                    ot.scale_by_learning_rate()],
                                        "head": [ot.scale_by_learning_rate()]},
                      labels={"head.*": "head"}, summary="x",
                      hyperparameters={"weight_decay": "default/add_decayed_weights."
                                                       "weight_decay"})
    registered.append("test_labelled")
    params = {"body.w": np.ones(3), "head.w": np.ones(2)}
    opt = optiplug.optimizer("test_labelled", params, lr=0.5, weight_decay=0.2)
    opt.step({"body.w": np.zeros(3), "head.w": np.zeros(2)})
    np.testing.assert_allclose(params["body.w"], 1 - 0.5 * 0.2, rtol=1e-15)
    np.testing.assert_array_equal(params["head.w"], 1.0)
