"""Every registered optimizer, on both backends, with parameters whose gradient is ``None`` on
some steps (the first ones too): a branch unused at first, a layer unfrozen later, alternating
updates. Checked against ``torch.optim`` (the technique's twin there) in float64, step by step.

The loop runs over the registry, so an optimizer added later is covered too. One without a twin
in ``torch.optim`` is checked across its two backends, and in every case a parameter without a
gradient must not move on that step.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import optiplug

SHAPES = {"always": (4, 3), "late": (3,), "alternating": (5,), "very_late": (2, 2)}
STEPS = 10
# The steps on which each parameter has a gradient; "late" gets its first on step 2 and
# "very_late" on step 6, after every other parameter has state.
HAS_GRAD = {"always": set(range(STEPS)), "late": set(range(2, STEPS)),
            "alternating": set(range(0, STEPS, 2)), "very_late": {6, 7, 9}}
# Techniques that are one torch.optim class with a flag; others are found by name.
TWINS: dict[str, tuple[str, dict[str, Any]]] = {
    "momentum": ("SGD", {}), "nesterov": ("SGD", {"nesterov": True}),
    "adamw": ("AdamW", {}), "rmsprop": ("RMSprop", {}), "adadelta": ("Adadelta", {}),
    "adagrad": ("Adagrad", {}), "sgd": ("SGD", {}), "adam": ("Adam", {})}
KERNEL_KEYS = ("fused", "foreach")
# Techniques whose namesake in torch.optim cannot run this problem: torch.optim.Muon only takes
# 2-D parameters (optiplug's muon updates the others with AdamW), so muon
# is checked across its two backends, like an optimizer without a twin.
NOT_TWINS = {"muon"}


def _optimizers() -> list[str]:
    return sorted(t.name for t in optiplug.registry().techniques("optimizer")
                  if {"numpy", "torch"} & set(t.backends))


def _default_spec(name: str, **extra: Any) -> optiplug.Spec:
    technique = optiplug.registry().get("optimizer", name)
    try:
        base = technique.spec.model_validate({}).model_dump()
    except ValidationError:
        examples = (technique.spec.model_config.get("json_schema_extra") or {}).get(
            "examples", [{}])
        base = technique.spec.model_validate(examples[0]).model_dump()
    return technique.spec.model_validate({**base, **extra})


def _problem() -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(7)
    initial = {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}
    curvature = {name: rng.uniform(0.5, 2.0, shape) for name, shape in SHAPES.items()}
    noise = [{name: 0.3 * rng.standard_normal(shape) for name, shape in SHAPES.items()}
             for _ in range(STEPS)]
    return initial, [curvature, *noise]


def _grad(name: str, value: np.ndarray, step: int, problem: list[dict[str, np.ndarray]]
          ) -> np.ndarray | None:
    if step not in HAS_GRAD[name]:
        return None
    curvature, noise = problem[0], problem[1 + step]
    return curvature[name] * (value - 1.0) + noise[name]


def _trajectory_numpy(spec: optiplug.Spec) -> list[dict[str, np.ndarray]]:
    initial, problem = _problem()
    params = {name: value.copy() for name, value in initial.items()}
    opt = optiplug.build(spec, backend="numpy", params=params)
    out = []
    for step in range(STEPS):
        opt.step({name: _grad(name, value, step, problem) for name, value in params.items()})
        out.append({name: value.copy() for name, value in params.items()})
    return out


def _trajectory_torch(make: Any) -> list[dict[str, np.ndarray]]:
    initial, problem = _problem()
    params = {name: torch.nn.Parameter(torch.tensor(value)) for name, value in initial.items()}
    opt = make(params)
    out = []
    for step in range(STEPS):
        for name, param in params.items():
            grad = _grad(name, param.detach().numpy(), step, problem)
            param.grad = None if grad is None else torch.tensor(grad)
        opt.step()
        out.append({name: param.detach().numpy().copy() for name, param in params.items()})
    return out


def _torch_twin(name: str, spec: optiplug.Spec) -> Any:
    """A factory of the ``torch.optim`` optimizer computing ``spec``, or ``None``."""
    if name in NOT_TWINS:
        return None
    class_name, flags = TWINS.get(name, (None, {}))
    if class_name is None:
        class_name = next((n for n in dir(torch.optim) if n.lower() == name), None)
    if class_name is None:
        return None
    cls = getattr(torch.optim, class_name)
    accepted = set(inspect.signature(cls).parameters)
    hyper = {key: value for key, value in spec.model_dump().items()
             if key in accepted and key not in KERNEL_KEYS}
    if name in ("momentum", "nesterov") and "momentum" not in hyper:
        return None
    # torch's own default kernel (single-tensor on the CPU): the reference path.
    return lambda params: cls(list(params.values()), **hyper, **flags)


def _assert_unmoved_without_grad(trajectory: list[dict[str, np.ndarray]]) -> None:
    initial, _ = _problem()
    previous = initial
    for step, values in enumerate(trajectory):
        for name, value in values.items():
            if step not in HAS_GRAD[name]:
                np.testing.assert_array_equal(value, previous[name],
                                              err_msg=f"{name} moved on step {step} without "
                                                      f"a gradient")
        previous = values


def _assert_close(actual: list[dict[str, np.ndarray]], expected: list[dict[str, np.ndarray]],
                  label: str) -> None:
    for step, (got, want) in enumerate(zip(actual, expected, strict=True)):
        for name in SHAPES:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-10, atol=1e-12,
                                       err_msg=f"{label}: {name} at step {step}")


def _kernel_variants(name: str) -> list[dict[str, Any]]:
    fields = optiplug.registry().get("optimizer", name).spec.model_fields
    if not set(KERNEL_KEYS) <= set(fields):
        return [{}]
    return [{}, {"fused": True}, {"foreach": True}, {"fused": False, "foreach": False}]


@pytest.mark.parametrize("name", _optimizers())
def test_every_optimizer_matches_torch_optim_when_gradients_arrive_late(name: str) -> None:
    technique = optiplug.registry().get("optimizer", name)
    if getattr(technique.spec, "closure_driven", False):
        pytest.skip(f"{name} is closure-driven: its step() needs a closure re-evaluating the "
                    f"loss, which a gradient that arrives late cannot supply")
    spec = _default_spec(name)
    twin = _torch_twin(name, spec)
    reference = _trajectory_torch(twin) if twin is not None else None
    numpy_run = _trajectory_numpy(spec) if "numpy" in technique.backends else None
    if numpy_run is not None:
        _assert_unmoved_without_grad(numpy_run)
    if reference is not None and numpy_run is not None:
        _assert_close(numpy_run, reference, f"{name} numpy vs torch.optim")
    if "torch" not in technique.backends:
        return
    for kernel in _kernel_variants(name):
        try:
            kernel_spec = _default_spec(name, **kernel)
            run = _trajectory_torch(lambda params, s=kernel_spec: optiplug.build(
                s, backend="torch", params=params))
        except optiplug.ConfigError as exc:
            # The one refusal allowed: asking for a fused kernel torch does not have.
            assert kernel.get("fused") and "no fused" in str(exc), exc
            continue
        _assert_unmoved_without_grad(run)
        expected = reference if reference is not None else numpy_run
        assert expected is not None, f"{name}: nothing to compare the torch backend with"
        _assert_close(run, expected, f"{name} torch {kernel or 'default kernel'} vs "
                                     f"{'torch.optim' if reference is not None else 'numpy'}")


@pytest.mark.parametrize("name", ["momentum", "nesterov"])
def test_fused_momentum_groups_fall_back_only_on_the_step_a_buffer_is_missing(
        name: str) -> None:
    spec = _default_spec(name)
    a = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optiplug.build(spec, backend="torch", params=[("a", a), ("b", b)])
    assert opt.param_groups[0]["fused"] is True
    a.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    a.grad, b.grad = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    assert opt._groups_unsafe_for_fused() == [opt.param_groups[0]]
    opt.step()
    assert opt.param_groups[0]["fused"] is True
    assert opt._groups_unsafe_for_fused() == []
