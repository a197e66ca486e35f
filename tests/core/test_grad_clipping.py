"""Gradient clipping as a plain option of every optimizer (``clip_grad_norm``,
``clip_grad_value``), on both backends, equal to ``torch.nn.utils.clip_grad_norm_`` /
``clip_grad_value_`` applied by hand before the unclipped optimizer's step."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

import optiplug
from optiplug.backends.numpy import NumpyOptimizer

SHAPES = {"w": (4, 3), "b": (3,), "v": (5,)}
STEPS = 5
# Gradient scales per step: clipping by a total norm of 2 bites on some steps, not on others.
SCALES = (10.0, 0.05, 3.0, 0.01, 1.0)


def _start() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


def _grads(step: int) -> dict[str, np.ndarray | None]:
    rng = np.random.default_rng(100 + step)
    grads: dict[str, np.ndarray | None] = {
        name: rng.standard_normal(shape) * SCALES[step] for name, shape in SHAPES.items()}
    if step == 2:
        grads["v"] = None  # a parameter without a gradient this step: skipped, as in torch
    return grads


def _reference(name: str, hyper: dict[str, Any], clip: dict[str, Any],
               grads: list[dict[str, np.ndarray | None]] | None = None) -> dict[str, np.ndarray]:
    """The unclipped optiplug torch optimizer, with torch's own clipping function called by
    hand over all its parameters before every step (the loop users write)."""
    params = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in _start().items()}
    opt = optiplug.optimizer(name, params, **hyper)
    for step in range(STEPS):
        for n, grad in (grads[step] if grads else _grads(step)).items():
            params[n].grad = None if grad is None else torch.from_numpy(grad.copy())
        if "clip_grad_norm" in clip:
            norm_type = clip.get("clip_grad_norm_type", 2.0)
            torch.nn.utils.clip_grad_norm_(list(params.values()), clip["clip_grad_norm"],
                                           math.inf if norm_type == "inf" else norm_type)
        else:
            torch.nn.utils.clip_grad_value_(list(params.values()), clip["clip_grad_value"])
        opt.step()
    return {n: p.detach().numpy() for n, p in params.items()}


def _clipped(name: str, backend: str, hyper: dict[str, Any],
             grads: list[dict[str, np.ndarray | None]] | None = None) -> dict[str, np.ndarray]:
    """optiplug's optimizer with the clipping option, on ``backend``."""
    if backend == "numpy":
        arrays = {n: a.copy() for n, a in _start().items()}
        opt = optiplug.optimizer(name, arrays, **hyper)
        for step in range(STEPS):
            opt.step(grads[step] if grads else _grads(step))
        return arrays
    params = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in _start().items()}
    opt = optiplug.optimizer(name, params, **hyper)
    for step in range(STEPS):
        for n, grad in (grads[step] if grads else _grads(step)).items():
            params[n].grad = None if grad is None else torch.from_numpy(grad.copy())
        opt.step()
    return {n: p.detach().numpy() for n, p in params.items()}


# adam: optiplug's subclass of torch.optim.Adam; nadam: a torch_classes class; lion: a paper
# optimizer (its own foreach algorithm); chain: the transforms executor; lookahead: a wrapper
# that forwards the option to its base.
OPTIMIZERS = {
    "adam": {"lr": 0.01, "weight_decay": 0.1},
    "nadam": {"lr": 0.01},
    "lion": {"lr": 0.001, "weight_decay": 0.5},
    "momentum": {"lr": 0.05, "momentum": 0.9},
    "chain": {"lr": 0.01, "transforms": [{"name": "scale_by_adam"},
                                         {"name": "scale_by_learning_rate"}]},
    "lookahead": {"base": {"name": "adamw", "lr": 0.01}, "k": 2},
}
CLIPS = [{"clip_grad_norm": 2.0}, {"clip_grad_norm": 2.0, "clip_grad_norm_type": 1.0},
         {"clip_grad_norm": 1.5, "clip_grad_norm_type": "inf"}, {"clip_grad_value": 0.5}]


# Every kind of clipping with Adam; the other optimizers with a total L2 norm (lion by value).
CASES = [("adam", clip) for clip in CLIPS] + [(name, CLIPS[0]) for name in OPTIMIZERS
                                              if name != "adam"] + [("lion", CLIPS[3])]
IDS = [f"adam-{kind}" for kind in ("l2", "l1", "inf", "value")] + [
    f"{name}-l2" for name in OPTIMIZERS if name != "adam"] + ["lion-value"]


@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize(("name", "clip"), CASES, ids=IDS)
def test_clipping_equals_torch_clip_functions_before_the_unclipped_step(
        name: str, clip: dict[str, Any], backend: str) -> None:
    hyper = OPTIMIZERS[name]
    expected = _reference(name, hyper, clip)
    got = _clipped(name, backend, {**hyper, **clip})
    unclipped = _clipped(name, backend, hyper)
    for n in SHAPES:
        np.testing.assert_allclose(got[n], expected[n], rtol=1e-12, atol=1e-14, err_msg=n)
    # The option changes the trajectory (the clip bites on the workload's large steps).
    assert any(not np.allclose(got[n], unclipped[n], rtol=1e-6) for n in SHAPES)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_clipping_that_never_bites_is_bit_identical_to_none(backend: str) -> None:
    hyper = {"lr": 0.01, "weight_decay": 0.1}
    spec = optiplug.spec("optimizer", "adam", **hyper)
    assert not {"clip_grad_norm", "clip_grad_norm_type", "clip_grad_value"} & set(
        spec.optimizer_arguments())
    plain = _clipped("adam", backend, hyper)
    huge = _clipped("adam", backend, {**hyper, "clip_grad_norm": 1e6})
    for n in SHAPES:
        assert np.array_equal(plain[n], huge[n]), n


def test_numpy_clipping_leaves_the_given_gradients_unchanged_and_torch_clips_grad() -> None:
    arrays = {n: a.copy() for n, a in _start().items()}
    opt = optiplug.optimizer("sgd", arrays, lr=0.1, clip_grad_norm=1.0)
    grads = _grads(0)
    copies = {n: None if g is None else g.copy() for n, g in grads.items()}
    opt.step(grads)
    for n, g in grads.items():
        assert g is not None and np.array_equal(g, copies[n])
    params = {n: torch.nn.Parameter(torch.from_numpy(a.copy())) for n, a in _start().items()}
    topt = optiplug.optimizer("sgd", params, lr=0.1, clip_grad_norm=1.0)
    for n, g in copies.items():
        assert g is not None
        params[n].grad = torch.from_numpy(g.copy())
    topt.step()
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params.values()]))
    assert float(total) == pytest.approx(1.0 / (1.0 + 1e-6 / float(np.sqrt(sum(
        float((g ** 2).sum()) for g in copies.values() if g is not None)))), rel=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_nonfinite_skip_runs_before_clipping_and_ignore_clips_like_torch(backend: str) -> None:
    bad = [_grads(step) for step in range(STEPS)]
    w = bad[1]["w"]
    assert w is not None
    w[0, 0] = np.inf
    # skip: the step with the infinite gradient changes nothing (a clipped step would turn
    # every gradient into NaN or zero); the others equal the hand loop without that step.
    skipped = _clipped("adam", backend, {"lr": 0.01, "clip_grad_norm": 2.0,
                                         "nonfinite": "skip"}, bad)
    without = [g if step != 1 else {n: None for n in SHAPES} for step, g in enumerate(bad)]
    expected = _reference("adam", {"lr": 0.01}, {"clip_grad_norm": 2.0}, without)
    for n in SHAPES:
        np.testing.assert_allclose(skipped[n], expected[n], rtol=1e-12, atol=1e-14, err_msg=n)
    # ignore: torch's clip_grad_norm_ with an infinite total norm scales every gradient by 0
    # (the infinite element: inf * 0 = NaN); optiplug does the same arithmetic on both backends.
    ignored = _clipped("sgd", backend, {"lr": 0.1, "clip_grad_norm": 2.0}, bad)
    reference = _reference("sgd", {"lr": 0.1}, {"clip_grad_norm": 2.0}, bad)
    for n in SHAPES:
        np.testing.assert_array_equal(np.isnan(ignored[n]), np.isnan(reference[n]))
        np.testing.assert_allclose(ignored[n], reference[n], rtol=1e-12, atol=1e-14)
    assert np.isnan(ignored["w"][0, 0]) and np.isfinite(ignored["w"].reshape(-1)[1:]).all()


def test_clipping_options_are_validated_with_paths() -> None:
    with pytest.raises(optiplug.ConfigError, match="clip_grad_norm or clip_grad_value"):
        optiplug.spec("optimizer", "adam", clip_grad_norm=1.0, clip_grad_value=1.0)
    with pytest.raises(optiplug.ConfigError, match="clip_grad_norm"):
        optiplug.spec("optimizer", "adam", clip_grad_norm=-1.0)
    with pytest.raises(optiplug.ConfigError, match="clip_grad_norm_type"):
        optiplug.spec("optimizer", "adam", clip_grad_norm=1.0, clip_grad_norm_type=0.0)
    with pytest.raises(optiplug.ConfigError, match="closure"):
        optiplug.spec("optimizer", "lbfgs", clip_grad_norm=1.0)
    # "inf" (a string: specs hold no infinite numbers) is torch's norm_type=inf.
    spec = optiplug.spec("optimizer", "adam", clip_grad_norm=1.0, clip_grad_norm_type="inf")
    assert spec.optimizer_arguments()["clip_grad_norm_type"] == math.inf
    with pytest.raises(optiplug.ConfigError, match="clip_grad_norm_type"):
        optiplug.spec("optimizer", "adam", clip_grad_norm_type=math.inf)
    with pytest.raises(optiplug.ConfigError, match="clip_grad_value"):
        NumpyOptimizer({"w": np.zeros(2)}, {}, clip_grad_value=0.0)
