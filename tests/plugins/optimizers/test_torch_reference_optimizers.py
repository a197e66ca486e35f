"""radam, nadam, adamax, asgd, rprop, adafactor and muon follow torch.optim on a real model.

A two-layer tanh MLP on fixed data, gradients recomputed from each implementation's own
parameters every step, two param groups (different lr and weight decay), and parameters whose
gradient is ``None`` on some steps, the first ones included: 200 steps of optiplug's NumPy and
torch backends against torch.optim's single-tensor implementation (1e-10 in float64, 1e-5 in
float32, relative to each tensor's scale).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import optiplug

from .optimizer_cases import GRID, TOLERANCE, TORCH_CLASSES, assert_close, reference_kwargs

NAMES = ["radam", "nadam", "adamax", "asgd", "rprop", "adafactor"]
STEPS = 200
LR = {"radam": 0.01, "nadam": 0.01, "adamax": 0.01, "asgd": 0.05, "rprop": 0.001,
      "adafactor": 0.02, "muon": 0.02}
SHAPES = {"hidden.weight": (16, 6), "hidden.bias": (16,), "out.weight": (3, 16),
          "out.bias": (3,), "extra.weight": (3, 3)}
GROUPS = (("hidden.weight", "hidden.bias"), ("out.weight", "out.bias", "extra.weight"))



def initial(dtype: Any) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {n: (rng.standard_normal(s) / np.sqrt(s[-1])).astype(dtype)
            for n, s in SHAPES.items()}


def participating(step: int) -> set[str]:
    """The parameters the loss uses at ``step``: ``extra.weight`` first at step 4 and then
    every third step, ``out.bias`` not every fifth step; the others get ``grad=None``."""
    used = {"hidden.weight", "hidden.bias", "out.weight"}
    if step % 5:
        used.add("out.bias")
    if step >= 4 and step % 3 == 1:
        used.add("extra.weight")
    return used


def gradients(values: dict[str, Any], step: int, sign: float) -> dict[str, np.ndarray]:
    """Autograd gradients of ``sign * MSE`` of the MLP at ``values`` on this step's batch."""
    dtype = next(iter(values.values())).dtype
    rng = np.random.default_rng(100 + step % 8)
    x = torch.from_numpy(rng.standard_normal((24, 6)).astype(dtype))
    y = torch.from_numpy(np.sin(np.arange(72).reshape(24, 3) * 0.3).astype(dtype))
    used = participating(step)
    leaves = {n: torch.tensor(np.asarray(values[n]), requires_grad=True) for n in used}
    hidden = torch.tanh(x @ leaves["hidden.weight"].T + leaves["hidden.bias"])
    out = hidden @ leaves["out.weight"].T
    if "out.bias" in leaves:
        out = out + leaves["out.bias"]
    if "extra.weight" in leaves:
        out = out + hidden[:, :3] @ leaves["extra.weight"].T
    loss = sign * ((out - y) ** 2).mean()
    loss.backward()
    return {n: leaf.grad.numpy() for n, leaf in leaves.items()}


def group_settings(name: str) -> list[dict[str, Any]]:
    """Per-group overrides: half the lr in the second group, and weight decay only in the
    first where the technique has it."""
    spec = optiplug.spec("optimizer", name)
    first: dict[str, Any] = {"lr": LR[name]}
    second: dict[str, Any] = {"lr": LR[name] * 0.5}
    if "weight_decay" in spec.hyperparameters():
        first["weight_decay"], second["weight_decay"] = 0.05, 0.0
    return [first, second]


class Trajectory:
    """One implementation stepping the MLP: ``numpy``, ``torch`` (optiplug's backends) or
    ``reference`` (a torch.optim-like object from ``make_reference``)."""

    def __init__(self, kind: str, name: str, start: dict[str, np.ndarray], hyper: dict[str, Any],
                 make_reference: Callable[[list[dict[str, Any]]], Any] | None = None) -> None:
        self.kind, self.sign = kind, -1.0 if hyper.get("maximize") else 1.0
        settings = group_settings(name)
        if kind == "numpy":
            self.params: dict[str, Any] = {n: a.copy() for n, a in start.items()}
            groups = [{"params": {n: self.params[n] for n in names}, **extra}
                      for names, extra in zip(GROUPS, settings, strict=True)]
        else:
            self.params = {n: torch.nn.Parameter(torch.from_numpy(a.copy()))
                           for n, a in start.items()}
            named = kind == "torch"
            groups = [{"params": [(n, self.params[n]) if named else self.params[n]
                                  for n in names], **extra}
                      for names, extra in zip(GROUPS, settings, strict=True)]
        if kind == "reference":
            assert make_reference is not None
            self.opt = make_reference(groups)
        else:
            self.opt = optiplug.optimizer(name, groups, **hyper)

    def values(self) -> dict[str, np.ndarray]:
        return {n: (p.detach().numpy() if isinstance(p, torch.Tensor) else p).copy()
                for n, p in self.params.items()}

    def step(self, step: int) -> None:
        grads = gradients(self.values(), step, self.sign)
        if self.kind == "numpy":
            self.opt.step(grads)
            return
        for n, p in self.params.items():
            p.grad = torch.from_numpy(grads[n]) if n in grads else None
        self.opt.step()


def torch_reference(name: str, hyper: dict[str, Any]) -> Callable[[list[dict[str, Any]]], Any]:
    cls = getattr(torch.optim, TORCH_CLASSES[name])
    return lambda groups: cls(groups, **reference_kwargs(name, hyper), foreach=False)


def run_against(reference: Trajectory, others: dict[str, Trajectory], dtype: Any,
                steps: int = STEPS) -> None:
    start = reference.values()
    for step in range(1, steps + 1):
        for run in (reference, *others.values()):
            run.step(step)
        if step % 20 == 0 or step <= 4:
            expected = reference.values()
            for label, run in others.items():
                for n, value in run.values().items():
                    assert_close(value, expected[n], TOLERANCE[dtype], f"{label} {n} at {step}")
    moved = max(float(np.max(np.abs(reference.values()[n] - start[n]))) for n in start)
    assert moved > 1e-3, "the trajectory must actually move"


CASES = [(name, hyper) for name in NAMES for hyper in GRID[name]]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=[f"{n}-{i}" for n, grid in
                                             ((n, GRID[n]) for n in NAMES)
                                             for i in range(len(grid))])
def test_mlp_trajectory_matches_torch_optim_with_groups_and_missing_grads(
        case: tuple[str, dict[str, Any]], dtype: Any) -> None:
    name, hyper = case
    start = initial(dtype)
    reference = Trajectory("reference", name, start, hyper, torch_reference(name, hyper))
    run_against(reference, {"numpy": Trajectory("numpy", name, start, hyper),
                            "torch": Trajectory("torch", name, start, hyper)}, dtype)


@pytest.mark.parametrize("name", ["radam", "nadam", "adamax", "asgd", "rprop", "adafactor"])
def test_torch_foreach_kernel_matches_the_for_loop_with_missing_grads(name: str) -> None:
    # The kernel torch picks on accelerators: equal numbers when grads are None on some steps.
    from optiplug.plugins.optimizers import torch_classes

    hyper = GRID[name][-1]
    cls = getattr(torch_classes, TORCH_CLASSES[name])
    start = initial(np.float64)
    reference = Trajectory("reference", name, start, hyper, torch_reference(name, hyper))
    foreach = Trajectory("reference", name, start, hyper,
                         lambda groups: cls(groups, **reference_kwargs(name, hyper),
                                            foreach=True))
    assert foreach.opt.param_groups[0]["foreach"] is True
    # torch's foreach ASGD computes eta from the float32 step tensor (the for-loop in Python
    # floats) and folds the decay differently: float32 rounding apart, not float64's.
    run_against(reference, {"foreach": foreach}, np.float32 if name == "asgd" else np.float64)


# ---------------------------------------------------------------------------------- muon
MUON = {"lr": 0.02, "momentum": 0.9, "adamw": {"lr": 0.005, "weight_decay": 0.02}}


def muon_reference(hyper: dict[str, Any]) -> Callable[[list[dict[str, Any]]], Any]:
    """torch.optim.Muon for the matrices and torch.optim.AdamW for the rest, stepped together,
    with the same groups: the usual split, written by hand."""
    spec = optiplug.spec("optimizer", "muon", **hyper)
    adamw = spec.adamw

    class Pair:
        def __init__(self, groups: list[dict[str, Any]]) -> None:
            # A group's lr and weight_decay are Muon's; AdamW's come from the adamw config.
            matrices = [{**g, "params": [p for p in g["params"] if p.ndim == 2]} for g in groups]
            others = [{"params": [p for p in g["params"] if p.ndim != 2]} for g in groups]
            self.muon = torch.optim.Muon(
                matrices, lr=spec.lr, weight_decay=spec.weight_decay, momentum=spec.momentum,
                nesterov=spec.nesterov, ns_coefficients=spec.ns_coefficients, eps=spec.eps,
                ns_steps=spec.ns_steps, adjust_lr_fn=spec.adjust_lr_fn)
            self.adamw = torch.optim.AdamW(others, lr=adamw.lr, betas=adamw.betas,
                                           eps=adamw.eps, weight_decay=adamw.weight_decay,
                                           foreach=False)

        def step(self) -> None:
            self.muon.step()
            self.adamw.step()

    return Pair


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("hyper", [MUON, {**MUON, "nesterov": False,
                                          "adjust_lr_fn": "match_rms_adamw"}],
                         ids=["nesterov", "plain-match_rms_adamw"])
def test_muon_torch_backend_equals_torch_muon_plus_adamw(hyper: dict[str, Any],
                                                         dtype: Any) -> None:
    start = initial(dtype)
    reference = Trajectory("reference", "muon", start, hyper, muon_reference(hyper))
    torch_backend = Trajectory("torch", "muon", start, hyper)
    run_against(reference, {"torch": torch_backend}, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_muon_numpy_backend_follows_the_torch_backend(dtype: Any) -> None:
    # ns_dtype="param": the Newton-Schulz iteration in the parameter's dtype on both backends.
    hyper = {**MUON, "ns_dtype": "param"}
    start = initial(dtype)
    reference = Trajectory("torch", "muon", start, hyper)
    run_against(reference, {"numpy": Trajectory("numpy", "muon", start, hyper)}, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_muon_numpy_bfloat16_emulation_follows_torch_muon_while_bits_agree(dtype: Any) -> None:
    # torch's bfloat16 iteration against NumPy's emulation: the same bits for 20 steps here;
    # later a rare one-ulp difference in a float32 sum (summation order) makes the two drift
    # apart by bfloat16 rounding, as two torch builds would (see the next test).
    start = initial(dtype)
    reference = Trajectory("torch", "muon", start, MUON)
    run_against(reference, {"numpy": Trajectory("numpy", "muon", start, MUON)}, dtype,
                steps=20)


@pytest.mark.parametrize("shape", [(6, 5), (5, 6), (16, 6), (3, 16), (64, 32), (40, 100),
                                   (128, 128)])
def test_muon_numpy_bfloat16_newton_schulz_follows_torchs(shape: tuple[int, int]) -> None:
    from torch.optim._muon import _zeropower_via_newtonschulz

    from optiplug.plugins.optimizers.muon import newton_schulz

    coefficients = (3.4445, -4.7750, 2.0315)
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        matrix = rng.standard_normal(shape).astype(np.float32)
        expected = _zeropower_via_newtonschulz(torch.from_numpy(matrix), coefficients, 5,
                                               1e-7).float().numpy()
        actual = newton_schulz(matrix, coefficients, 5, 1e-7, "bfloat16")
        error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
        if matrix.size <= 2048:
            # Short sums: float32 accumulation order never crosses a bfloat16 rounding boundary.
            assert np.mean(actual == expected) >= 0.99 and error <= 1e-3
        else:
            # Long sums: a rare one-ulp difference spreads through the iteration, to bfloat16
            # noise (the float64 iteration is ~1.2e-2 away from torch's on these).
            assert error <= 1e-2


def test_muon_state_holds_momentum_for_matrices_and_adamw_moments_for_the_rest() -> None:
    start = initial(np.float64)
    for kind in ("numpy", "torch"):
        run = Trajectory(kind, "muon", start, MUON)
        for step in range(1, 5):
            run.step(step)
        state = run.opt.state_dict()["state"]
        keys = {len(s): sorted(k for k in s if k != "step") for s in state.values()}
        assert sorted(map(tuple, keys.values())) == [("exp_avg", "exp_avg_sq"),
                                                      ("momentum_buffer",)], kind


def test_muon_param_group_rules_set_both_parts() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = optiplug.optimizer("muon", model, lr=0.02, adamw={"lr": 0.001},
                             param_groups=[{"role": "bias", "weight_decay": 0.0},
                                           {"match": "1.*", "lr_mult": 0.5}])
    by_name = {name: group for group in opt.param_groups for name in group["param_names"]}
    assert by_name["0.bias"]["adamw_weight_decay"] == 0.0
    assert by_name["0.weight"]["adamw_weight_decay"] == 0.01
    assert by_name["1.weight"]["lr"] == pytest.approx(0.01)
    assert by_name["1.weight"]["adamw_lr"] == pytest.approx(0.0005)


# ------------------------------------------------------------------------------ state
@pytest.mark.parametrize("backend", ["numpy", "torch"])
@pytest.mark.parametrize("name", [*NAMES, "muon"])
def test_state_dict_round_trip_mid_way_continues_identically(backend: str, name: str) -> None:
    hyper = MUON if name == "muon" else GRID[name][-1]
    start = initial(np.float64)
    original = Trajectory(backend, name, start, hyper)
    for step in range(1, 101):
        original.step(step)
    saved = pickle.loads(pickle.dumps(copy.deepcopy(original.opt.state_dict())))
    resumed = Trajectory(backend, name, original.values(), hyper)
    resumed.opt.load_state_dict(saved)
    for step in range(101, 201):
        original.step(step)
        resumed.step(step)
    for n, value in original.values().items():
        np.testing.assert_array_equal(resumed.values()[n], value, err_msg=n)


@pytest.mark.parametrize("name", ["nadam", "asgd", "adafactor"])
def test_numpy_state_keys_and_shapes_correspond_to_torch(name: str) -> None:
    start = initial(np.float64)
    runs = {kind: Trajectory(kind, name, start, {}) for kind in ("numpy", "torch")}
    for run in runs.values():
        for step in range(1, 6):
            run.step(step)
    numpy_state = runs["numpy"].opt.state_dict()["state"]
    torch_state = runs["torch"].opt.state_dict()["state"]
    names = [n for group in runs["torch"].opt.param_groups for n in group["param_names"]]
    torch_by_name = {names[index]: entry for index, entry in torch_state.items()}
    assert set(numpy_state) == set(torch_by_name)
    for n, entry in numpy_state.items():
        assert set(entry) == set(torch_by_name[n]), n
        for key, value in entry.items():
            expected = torch_by_name[n][key]
            if key == "step":
                assert value == int(expected)
            else:
                assert value.shape == tuple(expected.shape), (n, key)
                np.testing.assert_allclose(value, expected.double().numpy(), rtol=1e-10,
                                           atol=1e-300, err_msg=f"{n} {key}")


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(("name", "bad", "path"), [
    ("radam", {"betas": (0.9, 1.0)}, "betas.1"),
    ("radam", {"eps": -1e-8}, "eps"),
    ("nadam", {"momentum_decay": -0.1}, "momentum_decay"),
    ("nadam", {"weight_decay": -1.0}, "weight_decay"),
    ("adamax", {"betas": (-0.1, 0.9)}, "betas.0"),
    ("asgd", {"t0": -1.0}, "t0"),
    ("asgd", {"lr": 0.0}, "lr"),
    ("rprop", {"etas": (1.2, 0.5)}, "etas"),
    ("rprop", {"etas": (0.5, 1.0)}, "etas"),
    ("rprop", {"step_sizes": (1.0, 0.1)}, "step_sizes"),
    ("adafactor", {"beta2_decay": 0.5}, "beta2_decay"),
    ("adafactor", {"d": 0.5}, "d"),
    ("adafactor", {"eps": (-1.0, 1e-3)}, "eps.0"),
    ("muon", {"ns_steps": 100}, "ns_steps"),
    ("muon", {"adjust_lr_fn": "sqrt"}, "adjust_lr_fn"),
    ("muon", {"adamw": {"betas": (0.9, 1.5)}}, "adamw.betas.1"),
    ("muon", {"adamw": {"learning_rate": 0.1}}, "adamw.learning_rate"),
])
def test_spec_validation_errors_name_the_field(name: str, bad: dict[str, Any],
                                                path: str) -> None:
    with pytest.raises(optiplug.ConfigError) as raised:
        optiplug.spec("optimizer", name, **bad)
    assert f"{path}:" in str(raised.value)


@pytest.mark.parametrize("name", [*NAMES, "muon"])
def test_spec_defaults_equal_torch_optim_defaults(name: str) -> None:
    import inspect

    cls = torch.optim.Muon if name == "muon" else getattr(torch.optim, TORCH_CLASSES[name])
    signature = inspect.signature(cls)
    spec = optiplug.spec("optimizer", name)
    for key, value in spec.hyperparameters().items():
        if key in {*optiplug.OptimizerSpec.policy_fields, "adamw", "ns_dtype"}:
            continue
        default = signature.parameters[key].default
        assert default == value, key
    if name == "muon":
        adamw = inspect.signature(torch.optim.AdamW).parameters
        assert spec.adamw.betas == adamw["betas"].default
        assert spec.adamw.weight_decay == adamw["weight_decay"].default
        assert spec.ns_dtype == "bfloat16"
