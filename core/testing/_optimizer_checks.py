"""Optimizer checks: state dicts, lr from param groups, step hooks, the real training loop,
gradients that are ``None`` on some steps."""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from ..hookspecs import hookimpl
from ..registry import Registry, default_registry
from ..specs import Spec
from ..technique import Technique
from ._common import (
    STEPS,
    Array,
    CheckSkipped,
    _build,
    _close,
    _fail,
    _grads,
    _need,
    _numpy_groups,
    _numpy_params,
    _registered,
    _single_group,
    _step_numpy,
    _TorchParams,
)
from ._examples import (
    example_spec,
)


# --------------------------------------------------------------------------- optimizers
def _run_numpy(optimizer: Any, params: dict[str, Array], steps: Iterable[int]) -> None:
    for step in steps:
        _step_numpy(optimizer, params, step)


def _run_torch(optimizer: Any, holder: _TorchParams, steps: Iterable[int]) -> None:
    for step in steps:
        holder.step(optimizer, step)


def _optimizer(technique: Technique, spec: Spec, backend: str,
               start: Mapping[str, Array]) -> tuple[Any, Any]:
    """A fresh optimizer over a copy of ``start`` and its params holder."""
    lr = float(getattr(spec, "lr", 1e-3))
    single = _single_group(technique)
    if backend == "numpy":
        params = {name: value.copy() for name, value in start.items()}
        return _build(technique, spec, backend,
                      params=_numpy_groups(params, lr, single=single)), params
    holder = _TorchParams(start)
    return _build(technique, spec, backend, params=holder.groups(lr, single=single)), holder


def _run(backend: str, optimizer: Any, params: Any, steps: Iterable[int]) -> dict[str, Array]:
    if backend == "numpy":
        _run_numpy(optimizer, params, steps)
        return {name: value.copy() for name, value in params.items()}
    _run_torch(optimizer, params, steps)
    result: dict[str, Array] = params.numpy()
    return result


def check_optimizer_state_dict(technique: Technique, backend: str) -> None:
    """``state_dict()`` survives pickling, loads into a new optimizer over copies of the current
    params, and both continue bit-for-bit identically."""
    _need(technique, backend)
    clause = f"state_dict[{backend}]"
    spec = example_spec(technique.spec)
    first, first_params = _optimizer(technique, spec, backend, _numpy_params())
    current = _run(backend, first, first_params, range(3))
    try:
        saved = pickle.loads(pickle.dumps(first.state_dict()))
    except Exception as exc:
        raise _fail(technique, clause, f"state_dict() does not pickle: "
                                       f"{type(exc).__name__}: {exc}") from None
    second, second_params = _optimizer(technique, spec, backend, current)
    try:
        second.load_state_dict(saved)
    except Exception as exc:
        raise _fail(technique, clause, f"load_state_dict(state_dict()) raised "
                                       f"{type(exc).__name__}: {exc}") from None
    expected = _run(backend, first, first_params, range(3, 8))
    resumed = _run(backend, second, second_params, range(3, 8))
    for name in expected:
        if not np.array_equal(expected[name], resumed[name]):
            diff = float(np.max(np.abs(expected[name] - resumed[name])))
            raise _fail(technique, clause, (
                f"after loading the state dict, 5 more steps differ from the original run "
                f"(parameter {name!r}, max abs diff {diff:.3g}); state_dict() must hold every "
                f"piece of state"))


def check_optimizer_lr_from_param_groups(technique: Technique, backend: str) -> None:
    """Every step reads ``lr`` from ``param_groups`` (what schedulers rely on): quartering each
    group's ``lr`` after construction runs exactly as building with a quarter of the lr."""
    _need(technique, backend)
    clause = f"lr from param_groups[{backend}]"
    spec = example_spec(technique.spec)
    if not hasattr(spec, "lr"):
        raise CheckSkipped("the spec has no lr")
    edited, edited_params = _optimizer(technique, spec, backend, _numpy_params())
    for group in edited.param_groups:
        group["lr"] = group["lr"] * 0.25
    quarter = type(spec).model_validate({**spec.model_dump(), "lr": spec.lr * 0.25})
    built, built_params = _optimizer(technique, quarter, backend, _numpy_params())
    a = _run(backend, edited, edited_params, range(5))
    b = _run(backend, built, built_params, range(5))
    for name in a:
        _close(technique, clause, a[name], b[name], rtol=1e-12, atol=0.0,
               what=f"parameter {name!r} after editing param_groups lr vs building with it")


class _StepCounter:
    """An in-process plugin counting the lifecycle hooks it receives."""

    def __init__(self) -> None:
        self.built: list[Any] = []
        self.before: list[Any] = []
        self.after: list[Any] = []

    @hookimpl
    def optiplug_built(self, technique: Technique, spec: Spec, backend: str, obj: Any) -> None:
        self.built.append(obj)

    @hookimpl
    def optiplug_before_step(self, optimizer: Any, backend: str) -> None:
        self.before.append(optimizer)

    @hookimpl
    def optiplug_after_step(self, optimizer: Any, backend: str) -> None:
        self.after.append(optimizer)


def check_optimizer_step_hooks(technique: Technique, backend: str) -> None:
    """Lifecycle hooks reach the optimizer: ``optiplug_built`` once, ``optiplug_before_step``
    and ``optiplug_after_step`` once per step (the optimizer must support torch's
    ``register_step_pre_hook`` / ``register_step_post_hook``)."""
    _need(technique, backend)
    clause = f"step hooks[{backend}]"
    registry = Registry(autoload=False)
    registry.register(technique, override=True)
    counter = _StepCounter()
    registry.register(counter, name="optiplug-conformance-step-counter")
    spec = example_spec(technique.spec)
    lr = float(getattr(spec, "lr", 1e-3))
    single = _single_group(technique)
    if backend == "numpy":
        params = _numpy_params()
        optimizer = registry.build(spec, backend=backend,
                                   params=_numpy_groups(params, lr, single=single))
        _run_numpy(optimizer, params, range(2))
    else:
        holder = _TorchParams(_numpy_params())
        optimizer = registry.build(spec, backend=backend, params=holder.groups(lr, single=single))
        _run_torch(optimizer, holder, range(2))
    calls = (len(counter.built), len(counter.before), len(counter.after))
    if calls != (1, 2, 2) or any(o is not optimizer for o in counter.before + counter.after):
        raise _fail(technique, clause, (
            f"(built, before_step, after_step) hooks were called {calls} times for one build "
            f"and two steps, expected (1, 2, 2)"))


def _optimizer_trajectory(technique: Technique, spec: Spec, backend: str,
                          steps: int = STEPS) -> list[dict[str, Array]]:
    optimizer, params = _optimizer(technique, spec, backend, _numpy_params())
    return [_run(backend, optimizer, params, [step]) for step in range(steps)]




# ------------------------------------------------------------------ the real training loop
TRAIN_EPOCHS: Final = 3


def training_recipe(spec: Spec, backend: str) -> dict[str, Any]:
    """The small recipe the kit trains every optimizer with: 256 two-moons samples, one hidden
    layer of 16 tanh units, 3 epochs of batch 32 on ``backend``."""
    return {"name": "conformance",
            "data": {"dataset": "moons", "samples": 256, "seed": 0, "normalizer": None},
            "model": {"layers": [{"units": 16, "initializer": {"name": "xavier_uniform"},
                                  "activation": {"name": "tanh"}}],
                      "output_initializer": {"name": "xavier_uniform"}},
            "optimizer": json.loads(spec.model_dump_json()),
            "train": {"epochs": TRAIN_EPOCHS, "batch_size": 32, "seed": 0, "backend": backend}}


def check_optimizer_trains(technique: Technique, backend: str) -> None:
    """A few epochs of :mod:`optiplug.training`'s own loop (``optiplug run`` and ``compare``),
    which builds the optimizer by name with what the loop holds (an ``nn.Module`` on torch, the
    model's named arrays on NumPy), run without error and lower the training loss."""
    _need(technique, backend)
    clause = f"trains in optiplug.training[{backend}]"
    if getattr(technique.spec, "closure_driven", False) and \
            not getattr(technique.spec, "loop_closure", False):
        raise CheckSkipped("closure-driven, and the training loop cannot drive it (its spec "
                           "does not set loop_closure)")
    registry = default_registry()
    added = False
    if not _registered(technique, registry):
        # The loop builds by name from the process-wide registry: register the technique there
        # for the check (unless its name is taken by another one).
        if technique.name in registry.names(technique.kind):
            raise CheckSkipped("another technique of this name is in the process-wide "
                               "registry the training loop builds from")
        registry.register(technique)
        added = True
    try:
        _train(technique, backend, clause)
    finally:
        if added:
            registry.unregister(f"{technique.kind}.{technique.name}")


def _train(technique: Technique, backend: str, clause: str) -> None:
    from ..training.loop import Trainer
    from ..training.recipe import load_recipe

    spec = example_spec(technique.spec)
    try:
        trainer = Trainer(load_recipe(training_recipe(spec, backend)))
        before, _ = trainer.runner.evaluate("train")
        trainer.fit()
        after, _ = trainer.runner.evaluate("train")
    except Exception as exc:
        raise _fail(technique, clause, (
            f"training raised {type(exc).__name__}: {exc}. The loop builds the optimizer with "
            f"params={'an nn.Module' if backend == 'torch' else 'the NumPy model'}; the builder "
            f"must accept every params form of the builder contract (optiplug.hookspecs)")
                    ) from None
    losses = [record["train_loss"] for record in trainer.history]
    if not all(math.isfinite(loss) for loss in [before, *losses, after]):
        raise _fail(technique, clause, f"training losses are not finite: {losses}")
    if not after < before:
        raise _fail(technique, clause, (
            f"{TRAIN_EPOCHS} epochs did not lower the training loss ({before:.6g} before, "
            f"{after:.6g} after) with the spec's default hyperparameters"))


# ------------------------------------------------------------------ gradients that are None
LATE: Final = "v"
"""The parameter whose gradient is ``None`` on the first steps and on step 4."""
ABSENT_STEPS: Final = frozenset({0, 1, 4})


def _run_with_missing(technique: Technique, spec: Spec, backend: str,
                      start: Mapping[str, Array], names: Sequence[str],
                      steps: int) -> list[dict[str, Array]]:
    """Run over the parameters ``names``; ``LATE`` (when among them) gets no gradient on
    :data:`ABSENT_STEPS`. One param group; returns the values after every step."""
    lr = float(getattr(spec, "lr", 1e-3))
    history = []
    if backend == "numpy":
        params = {name: start[name].copy() for name in names}
        optimizer = _build(technique, spec, backend, params=[{"params": params, "lr": lr}])
        for step in range(steps):
            _step_numpy(optimizer, params, step, absent=_absent(step))
            history.append({name: value.copy() for name, value in params.items()})
        return history
    holder = _TorchParams({name: start[name] for name in names})
    optimizer = _build(technique, spec, backend,
                       params=[{"params": list(holder.params.values()), "lr": lr}])
    for step in range(steps):
        holder.step(optimizer, step, absent=_absent(step))
        history.append(holder.numpy())
    return history


def _absent(step: int) -> tuple[str, ...]:
    return (LATE,) if step in ABSENT_STEPS else ()


def check_optimizer_missing_gradients(technique: Technique, backend: str) -> None:
    """A parameter whose gradient is ``None`` on some steps (the first two among them, as for a
    branch unused at first or a frozen layer) is left exactly as it is on those steps and
    changed on the others, and until its first gradient the other parameters step exactly as
    they would without it."""
    _need(technique, backend)
    clause = f"gradients None on some steps[{backend}]"
    spec = example_spec(technique.spec)
    start = _numpy_params()
    others = [name for name in start if name != LATE]
    try:
        mixed = _run_with_missing(technique, spec, backend, start, list(start), 6)
    except Exception as exc:
        raise _fail(technique, clause, (
            f"a step where {LATE!r} has no gradient raised {type(exc).__name__}: {exc}"
            )) from None
    alone = _run_with_missing(technique, spec, backend, start, others, 6)
    previous = start[LATE]
    first_gradient = min(set(range(6)) - ABSENT_STEPS)
    # Steps a parameter's first gradients only initialize its state (ADOPT's first step).
    initializing = int(getattr(technique.spec, "initializing_steps", 0))
    # A None gradient that counts as zeros in a coupled direction (L-BFGS) may move the
    # parameter once there is history; before its first gradient it must not.
    coupled = bool(getattr(technique.spec, "missing_grad_as_zero", False))
    seen = 0
    for step, (values, reference) in enumerate(zip(mixed, alone, strict=True)):
        seen += step not in ABSENT_STEPS
        if step in ABSENT_STEPS and not np.array_equal(values[LATE], previous) and \
                not (coupled and step > first_gradient):
            raise _fail(technique, clause, (
                f"step {step} changed {LATE!r}, whose gradient was None (torch.optim leaves "
                f"such a parameter untouched)"))
        if step not in ABSENT_STEPS and seen > initializing and \
                np.array_equal(values[LATE], previous):
            raise _fail(technique, clause, f"step {step} gave {LATE!r} a gradient but did not "
                                           f"change it")
        previous = values[LATE]
        if step >= first_gradient:
            continue    # from here on a rule coupling parameters (a global norm) may differ
        for name in others:
            _close(technique, clause, values[name], reference[name], rtol=1e-12, atol=1e-15,
                   what=f"parameter {name!r} at step {step} (with {LATE!r} present vs absent)")


_CLIP_NORM: Final = 1.0


def check_optimizer_gradient_clipping(technique: Technique, backend: str) -> None:
    """``clip_grad_norm`` (a field of every :class:`~optiplug.OptimizerSpec`) steps exactly as
    the unclipped optimizer given the gradients clipped by hand before each step
    (``torch.nn.utils.clip_grad_norm_`` on torch, its formula on NumPy): the base classes clip,
    so an optimizer that builds its own class around them must pass the option on."""
    _need(technique, backend)
    clause = f"gradient clipping[{backend}]"
    spec = example_spec(technique.spec)
    if "clip_grad_norm" not in type(spec).model_fields:
        raise CheckSkipped("the spec has no clip_grad_norm (not an optiplug.OptimizerSpec)")
    if getattr(technique.spec, "closure_driven", False):
        raise CheckSkipped("a closure-driven optimizer evaluates its closure within the step, "
                           "so its gradients cannot be clipped before it (the spec refuses)")
    clipped_spec = type(spec).model_validate({**spec.model_dump(), "clip_grad_norm": _CLIP_NORM})
    clipped, clipped_params = _optimizer(technique, clipped_spec, backend, _numpy_params())
    plain, plain_params = _optimizer(technique, spec, backend, _numpy_params())
    for step in range(4):
        if backend == "numpy":
            clipped.step(_grads(clipped_params, step))
            grads = _grads(plain_params, step)
            norm = math.sqrt(math.fsum(float(np.vdot(g, g)) for g in grads.values()))
            coef = min(_CLIP_NORM / (norm + 1e-6), 1.0)
            plain.step({name: g * coef for name, g in grads.items()})
            continue
        import torch

        clipped_params.set_grads(step)
        clipped.step()
        plain_params.set_grads(step)
        torch.nn.utils.clip_grad_norm_(list(plain_params.params.values()), _CLIP_NORM)
        plain.step()
    got = clipped_params if backend == "numpy" else clipped_params.numpy()
    want = plain_params if backend == "numpy" else plain_params.numpy()
    for name in sorted(want):
        _close(technique, clause, got[name], want[name], rtol=1e-9, atol=1e-12,
               what=f"parameter {name!r} after 4 steps with clip_grad_norm={_CLIP_NORM}, against "
                    f"the unclipped optimizer stepping on gradients clipped by hand")
