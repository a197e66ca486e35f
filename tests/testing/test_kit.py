"""The conformance kit catches each kind of contract breach, with a message naming it, and
passes correct plugins; its pytest plugin adds nothing unless asked."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import pytest
from numpy.typing import NDArray
from pydantic import ConfigDict, Field

import optiplug
from optiplug.backends.numpy import NumpyModule, NumpyOptimizer
from optiplug.testing import (
    CheckSkipped,
    ConformanceError,
    check_backends_agree,
    check_hyperparameters_matter,
    check_initializer_variance,
    check_numerical_gradient,
    check_numpy_without_torch,
    check_optimizer_gradient_clipping,
    check_optimizer_lr_from_param_groups,
    check_optimizer_missing_gradients,
    check_optimizer_state_dict,
    check_optimizer_trains,
    check_spec,
    check_technique,
    conformance_checks,
    example_config,
    example_spec,
    select,
)
from optiplug.testing._hyperparameter_checks import variants


# ------------------------------------------------------------------ a correct technique
class SquareSpec(optiplug.ActivationSpec):
    """``y = scale * x**2``."""

    name: Literal["kit_square"] = "kit_square"
    scale: optiplug.PositiveFloat = 1.5
    """Multiplies the square."""


class NumpySquare(NumpyModule):
    def __init__(self, scale: float, wrong_backward: bool = False) -> None:
        super().__init__()
        self.scale, self.wrong_backward = scale, wrong_backward

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        return self.scale * x * x

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        slope = self.scale * (1.0 if self.wrong_backward else 2.0)
        return grad_out * slope * self._x


def torch_square(scale: float) -> Any:
    # torch is imported here, not at module level: the kit's fresh-interpreter probe imports
    # this module to look for the technique.
    import torch

    class TorchSquare(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return scale * x * x

    return TorchSquare()


def _square(**changes: Any) -> optiplug.Technique:
    builders = {"numpy": lambda spec: NumpySquare(spec.scale),
                "torch": lambda spec: torch_square(spec.scale)}
    fields: dict[str, Any] = {"kind": "activation", "name": "kit_square", "spec": SquareSpec,
                              "builders": builders, "summary": "Scaled square, for kit tests."}
    fields.update(changes)
    return optiplug.Technique(**fields)


def test_check_technique_passes_a_correct_technique_and_reports_each_check() -> None:
    report = check_technique(_square())
    assert "activation.kit_square::gradient[numpy]" in report.passed
    assert "activation.kit_square::numpy vs torch" in report.passed
    # Not installed, and this module registers nothing: no fresh interpreter can build it.
    assert [check for check, _ in report.skipped] == ["activation.kit_square::numpy without torch"]


def test_kit_catches_a_wrong_backward_with_the_numerical_gradient() -> None:
    wrong = _square(builders={"numpy": lambda spec: NumpySquare(spec.scale, wrong_backward=True),
                              "torch": lambda spec: torch_square(spec.scale)})
    with pytest.raises(ConformanceError, match=r"gradient\[numpy\].*backward\(\) and the "
                                               r"numerical input gradient differ"):
        check_numerical_gradient(wrong)


def test_kit_catches_backends_that_disagree() -> None:
    disagreeing = _square(builders={"numpy": lambda spec: NumpySquare(spec.scale),
                                    "torch": lambda spec: torch_square(spec.scale * 1.001)})
    with pytest.raises(ConformanceError, match=r"numpy vs torch: float64 outputs"):
        check_backends_agree(disagreeing)


# ------------------------------------------------------------------------ broken specs
class NanSpec(optiplug.ActivationSpec):
    """A spec that opts out of the base's finite floats."""

    model_config = ConfigDict(allow_inf_nan=True)

    name: Literal["kit_nan"] = "kit_nan"
    alpha: float = 1.0
    """Any float, NaN included: a breach."""


class UndocumentedSpec(optiplug.ActivationSpec):
    """A spec whose field has no docstring."""

    name: Literal["kit_undocumented"] = "kit_undocumented"
    alpha: optiplug.PositiveFloat = 1.0


class LooseSpec(optiplug.ActivationSpec):
    """A spec that accepts unknown keys."""

    model_config = ConfigDict(extra="allow")
    name: Literal["kit_loose"] = "kit_loose"


@pytest.mark.parametrize(("spec", "message"), [
    (NanSpec, "accepts NaN for 'alpha'"),
    (UndocumentedSpec, "hyperparameter 'alpha' has no description"),
    (LooseSpec, r"model_config\['extra'\] is 'allow'"),
])
def test_kit_catches_spec_breaches(spec: type[optiplug.Spec], message: str) -> None:
    technique = optiplug.Technique(kind="activation", name=spec.technique_name(), spec=spec,
                                   builders={"numpy": lambda s: NumpySquare(1.0)},
                                   summary="Breach.")
    with pytest.raises(ConformanceError, match=message):
        check_spec(technique)


class RequiredSpec(optiplug.SchedulerSpec):
    """Required fields: one with an example, one made up from its bounds."""

    name: Literal["kit_required"] = "kit_required"
    steps: Annotated[int, Field(gt=0, examples=[40])]
    """Has an example."""
    factor: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]
    """Made up: the middle of (0, 1]."""


class ExampleSpec(optiplug.SchedulerSpec):
    """A model-level example wins over everything."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"steps": 7}]})
    name: Literal["kit_example"] = "kit_example"
    steps: optiplug.PositiveInt
    """Required."""


def test_example_config_uses_field_examples_bounds_and_model_examples() -> None:
    assert example_config(RequiredSpec) == {"kind": "scheduler", "name": "kit_required",
                                            "steps": 40, "factor": 0.5}
    assert example_spec(ExampleSpec).steps == 7  # type: ignore[attr-defined]


# ------------------------------------------------------------------- broken optimizers
class PlainSGD(NumpyOptimizer):
    def __init__(self, params: Any, lr: float, momentum: float = 0.5, *, forget: bool = False,
                 frozen_lr: bool = False) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum}, threads=1)
        self.forget, self.frozen_lr, self.built_lr = forget, frozen_lr, lr

    state_keys = ("buffer",)

    def prepare(self, group: Mapping[str, Any], state: dict[str, Any]) -> Any:
        lr = self.built_lr if self.frozen_lr else group["lr"]
        return lr, group["momentum"]

    def update(self, param: NDArray[Any], grad: NDArray[Any], state: Sequence[NDArray[Any]],
               scratch: Sequence[NDArray[Any]], scalars: Any) -> None:
        lr, momentum = scalars
        state[0][...] = momentum * state[0] + grad
        param -= lr * state[0]

    def state_dict(self) -> dict[str, Any]:
        saved = super().state_dict()
        if self.forget:
            for entry in saved["state"].values():
                entry["buffer"] = np.zeros_like(entry["buffer"])
        return saved


class PlainSpec(optiplug.OptimizerSpec):
    """Momentum SGD for kit tests."""

    name: Literal["kit_sgd"] = "kit_sgd"


def _sgd(**options: bool) -> optiplug.Technique:
    return optiplug.Technique(
        kind="optimizer", name="kit_sgd", spec=PlainSpec,
        builders={"numpy": lambda spec, params: PlainSGD(params, spec.lr, **options)},
        summary="Momentum SGD.")


def test_kit_passes_a_correct_numpy_optimizer() -> None:
    check_optimizer_state_dict(_sgd(), "numpy")
    check_optimizer_lr_from_param_groups(_sgd(), "numpy")


def test_kit_catches_a_state_dict_that_drops_state() -> None:
    with pytest.raises(ConformanceError, match=r"state_dict\[numpy\]: after loading the state "
                                               r"dict, 5 more steps differ"):
        check_optimizer_state_dict(_sgd(forget=True), "numpy")


def test_kit_catches_an_optimizer_that_ignores_param_group_lr() -> None:
    with pytest.raises(ConformanceError, match=r"lr from param_groups\[numpy\]"):
        check_optimizer_lr_from_param_groups(_sgd(frozen_lr=True), "numpy")


def test_torch_checks_skip_when_the_technique_has_no_torch_backend() -> None:
    with pytest.raises(CheckSkipped, match="no 'torch' backend"):
        check_optimizer_state_dict(_sgd(), "torch")


# ----------------------------------------------------------------- broken initializers
class HonestNormalSpec(optiplug.InitializerSpec):
    """``N(0, 0.5**2)``, declared as such."""

    name: Literal["kit_normal"] = "kit_normal"
    std: optiplug.PositiveFloat = 0.5
    """Standard deviation drawn with."""
    declared: optiplug.PositiveFloat = 0.5
    """Standard deviation declared to the kit."""

    def expected_variance(self, shape: tuple[int, ...]) -> float:
        return self.declared**2

    def expected_mean(self, shape: tuple[int, ...]) -> float:
        return 0.0


class DishonestNormalSpec(HonestNormalSpec):
    """``N(0, 0.5**2)`` declared as ``N(0, 0.51**2)``."""

    name: Literal["kit_normal_2"] = "kit_normal_2"  # type: ignore[assignment]
    declared: optiplug.PositiveFloat = 0.51
    """Standard deviation declared to the kit: 2% off."""


def _normal(spec: type[HonestNormalSpec]) -> optiplug.Technique:
    def build(spec: HonestNormalSpec) -> Callable[..., NDArray[Any]]:
        def fill(shape: Sequence[int], *, dtype: Any, rng: np.random.Generator) -> NDArray[Any]:
            return rng.normal(0.0, spec.std, size=tuple(shape)).astype(dtype)

        return fill

    return optiplug.Technique(kind="initializer", name=spec.technique_name(), spec=spec,
                              builders={"numpy": build}, summary="Normal.")


def test_kit_passes_initializer_samples_with_the_declared_variance() -> None:
    check_initializer_variance(_normal(HonestNormalSpec), "numpy")


def test_kit_catches_initializer_samples_off_the_declared_variance() -> None:
    # 2% off in standard deviation is 4% in variance: ~10 standard errors on 131072 samples.
    with pytest.raises(ConformanceError, match=r"have variance 0\.2\d+, the spec declares "
                                               r"0\.2601"):
        check_initializer_variance(_normal(DishonestNormalSpec), "numpy")


# ------------------------------------------------------------ installed broken plugins
TORCH_AT_IMPORT = '''
import torch  # a breach: the NumPy path must not import torch
from typing import Literal
import optiplug
from optiplug.plugins.activations.relu import NumpyReLU

class TorchySpec(optiplug.ActivationSpec):
    """Imports torch at module level."""
    name: Literal["kit_torchy"] = "kit_torchy"

@optiplug.hookimpl
def optiplug_activations():
    return [optiplug.Technique(kind="activation", name="kit_torchy", spec=TorchySpec,
                               builders={"numpy": lambda spec: NumpyReLU()},
                               summary="Imports torch at import.")]
'''

RAISES_ON_IMPORT = 'raise RuntimeError("boom at import")\n'


def test_kit_catches_a_numpy_build_that_imports_torch(make_dist: Callable[..., Path],
                                                      fresh_registry: Callable[..., Any]) -> None:
    make_dist("kit-torchy", entry_points={"activation.kit_torchy": "kit_torchy"},
              modules={"kit_torchy": TORCH_AT_IMPORT})
    technique = fresh_registry().get("activation", "kit_torchy")
    with pytest.raises(ConformanceError, match="on NumPy imported torch"):
        check_numpy_without_torch(technique)


def test_a_broken_plugin_fails_the_kit_with_its_error(make_dist: Callable[..., Path],
                                                      fresh_registry: Callable[..., Any]) -> None:
    make_dist("kit-broken", "2.0", entry_points={"optimizer.kit_broken": "kit_broken"},
              modules={"kit_broken": RAISES_ON_IMPORT})
    (check,) = conformance_checks("kit-broken", registry=fresh_registry())
    assert check.id == "optimizer.kit_broken::loads"
    with pytest.raises(ConformanceError, match=r"kit-broken 2\.0 is broken \(import\): "
                                               r"RuntimeError: boom at import"):
        check.function()


def test_select_understands_patterns_distributions_and_builtin() -> None:
    registry = optiplug.registry()
    names = {f"{t.kind}.{t.name}" for t in select("activation.re*,initializer.zeros",
                                                  registry).techniques}
    assert names == {"activation.relu", "activation.relu6", "initializer.zeros"}
    assert {t.origin.distribution for t in select("builtin", registry).techniques
            if t.origin} == {"optiplug"}
    with pytest.raises(LookupError, match="'no_such_thing' names no installed technique"):
        select("no_such_thing", registry)


# ---------------------------------------------------------------------- pytest plugin
def _pytest(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    installed = any(ep.value == "optiplug.testing.pytest_plugin"
                    for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "optiplug.testing.pytest_plugin"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "OPTIPLUG_"))}
    return subprocess.run([sys.executable, "-m", "pytest", *plugin, "-p", "no:cacheprovider",
                           "-q", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300, check=False)


def test_pytest_option_collects_and_passes_the_checks_of_a_builtin(tmp_path: Path) -> None:
    done = _pytest(["--optiplug-conformance=activation.relu", "-k", "not without"], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:]
    # spec, schema, 2 builds, gradient, numpy vs torch ("numpy without torch" deselected).
    assert done.stdout.strip().splitlines()[-1].startswith("6 passed, 1 deselected")


def test_pytest_option_rejects_an_unknown_name(tmp_path: Path) -> None:
    done = _pytest(["--optiplug-conformance=optimizer.nope"], tmp_path)
    assert done.returncode == 4
    assert "'optimizer.nope' names no installed technique" in done.stderr


def test_pytest_plugin_is_inert_without_the_option(tmp_path: Path) -> None:
    (tmp_path / "test_one.py").write_text(textwrap.dedent("""
        import sys

        def test_nothing_heavy_was_imported():
            assert "torch" not in sys.modules
            assert "optiplug.testing._kit" not in sys.modules
    """), encoding="utf-8")
    done = _pytest([], tmp_path)
    assert done.returncode == 0, done.stdout[-2000:]
    assert done.stdout.strip().splitlines()[-1].startswith("1 passed")


# ---------------------------------------------- hyperparameters, None gradients, training
class MomentumSpec(optiplug.OptimizerSpec):
    """Momentum SGD whose momentum is a hyperparameter, for kit tests."""

    name: Literal["kit_momentum"] = "kit_momentum"
    momentum: optiplug.Beta = 0.5
    """Decay of the buffer."""


def _momentum(ignore_momentum: bool = False) -> optiplug.Technique:
    def build(spec: MomentumSpec, params: Any) -> PlainSGD:
        return PlainSGD(params, spec.lr, 0.5 if ignore_momentum else spec.momentum)

    return optiplug.Technique(kind="optimizer", name="kit_momentum", spec=MomentumSpec,
                              builders={"numpy": build}, summary="Momentum SGD.")


def test_kit_passes_an_optimizer_that_uses_every_hyperparameter() -> None:
    check_hyperparameters_matter(_momentum(), "numpy")


def test_kit_catches_a_builder_that_ignores_a_hyperparameter() -> None:
    with pytest.raises(ConformanceError, match=r"every hyperparameter matters\[numpy\]: moving "
                                               r"momentum \(0.5 -> 0.75\) did not change"):
        check_hyperparameters_matter(_momentum(ignore_momentum=True), "numpy")


def test_hyperparameter_variants_stay_in_bounds_and_skip_policy_fields() -> None:
    spec = optiplug.spec("optimizer", "adam")
    moved = dict(variants(spec))
    assert {"lr", "betas[0]", "betas[1]", "eps", "weight_decay", "amsgrad",
            "maximize"} <= set(moved)
    assert "nonfinite" not in moved and "param_groups" not in moved
    assert moved["betas[1]"].betas == (0.9, 0.4995)       # 0.999 * 1.5 is out of [0, 1)
    assert moved["amsgrad"].amsgrad is True


class ZeroGradSGD(PlainSGD):
    """Treats a missing gradient as zero, so momentum keeps moving the parameter."""

    def step(self, grads: Any = None) -> None:
        names = [n for group in self.param_groups for n in group["param_names"]]
        full = {n: np.zeros_like(p) for group in self.param_groups
                for n, p in zip(group["param_names"], group["params"], strict=True)}
        full.update(grads or {})
        super().step({n: full[n] for n in names})


def test_kit_catches_an_optimizer_that_moves_parameters_without_gradients() -> None:
    good = _sgd()
    check_optimizer_missing_gradients(good, "numpy")
    bad = optiplug.Technique(
        kind="optimizer", name="kit_sgd", spec=PlainSpec,
        builders={"numpy": lambda spec, params: ZeroGradSGD(params, spec.lr)},
        summary="Momentum SGD that steps parameters without gradients.")
    with pytest.raises(ConformanceError, match=r"step 4 changed 'v', whose gradient was None"):
        check_optimizer_missing_gradients(bad, "numpy")


def test_kit_trains_in_the_real_loop_and_catches_a_builder_refusing_named_params() -> None:
    pytest.importorskip("torch")
    registry = optiplug.registry()
    adam = registry.get("optimizer", "adam")
    check_optimizer_trains(adam, "torch")

    def only_tensors(spec: Any, params: Any) -> Any:
        import torch

        # Written for bare tensors: the loop hands it param groups of (name, parameter)
        # pairs (the builder contract normalizes params, so no builder sees an nn.Module),
        # and zeros_like raises TypeError on a (name, parameter) tuple.
        flat = [p for group in params for p in group["params"]]
        moments = [torch.zeros_like(p) for p in flat]
        optimizer = torch.optim.Adam(flat, lr=spec.lr)
        optimizer.moments = moments
        return optimizer

    refusing = optiplug.Technique(kind="optimizer", name="kit_refusing", spec=RefusingSpec,
                                  builders={"torch": only_tensors}, summary="x")
    registry.register(refusing)
    try:
        with pytest.raises(ConformanceError, match=r"trains in optiplug.training\[torch\]: "
                                                   r"training raised TypeError"):
            check_optimizer_trains(refusing, "torch")
    finally:
        registry.unregister("optimizer.kit_refusing")


class RefusingSpec(optiplug.OptimizerSpec):
    """Adam for a bare list of tensors only (not named param groups), for kit tests."""

    name: Literal["kit_refusing"] = "kit_refusing"


def test_normalizers_choose_their_input_shape_and_initializers_their_weights() -> None:
    spec = optiplug.spec("normalizer", "batch_norm", dims=2)
    assert spec.example_input_shape(8, 12) == (8, 12, 3, 3)
    assert optiplug.spec("normalizer", "layer_norm").example_input_shape(8, 12) == (8, 12)
    assert optiplug.spec("initializer", "he_normal").example_shapes()[0] == (256, 512)
    check_backends_agree(optiplug.registry().get("normalizer", "batch_norm"))


# --------------------------------------------------------- closure-driven optimizers
class Extragradient(NumpyOptimizer):
    """Extragradient (Korpelevich 1976): look ahead along the gradient, step with the gradient
    there. Closure-driven; ``frozen_lr=True`` ignores edits of the groups' lr (a broken one)."""

    requires_closure = True

    def __init__(self, params: Any, lr: float, *, frozen_lr: bool = False) -> None:
        super().__init__(params, {"lr": lr}, threads=1)
        self.built_lr = lr if frozen_lr else None

    def closure_step(self, closure: Any) -> Any:
        loss, first = closure()
        pairs = [(self.built_lr or group["lr"], name, param) for group in self.param_groups
                 for name, param in zip(group["param_names"], group["params"], strict=True)]
        start = {name: param.copy() for _, name, param in pairs}
        for lr, name, param in pairs:
            if first.get(name) is not None:
                param -= lr * first[name]
        _, ahead = closure()
        for lr, name, param in pairs:
            param[...] = start[name]
            if ahead.get(name) is not None:
                param -= lr * ahead[name]
        return loss


class ExtragradientSpec(optiplug.OptimizerSpec):
    """Extragradient for kit tests."""

    closure_driven: ClassVar[bool] = True
    name: Literal["kit_extragradient"] = "kit_extragradient"
    lr: optiplug.PositiveFloat = 0.1


def _extragradient(**options: bool) -> optiplug.Technique:
    return optiplug.Technique(
        kind="optimizer", name="kit_extragradient", spec=ExtragradientSpec,
        builders={"numpy": lambda spec, params: Extragradient(params, spec.lr, **options)},
        summary="Extragradient.")


def test_kit_steps_a_closure_driven_optimizer_through_its_closure() -> None:
    # The optimizer's own rule, on a bowl: the second gradient is taken at the look-ahead point.
    params = {"w": np.array([1.0, -2.0])}
    Extragradient([{"params": params}], 0.1).step(
        lambda: (float(np.sum(params["w"] ** 2)), {"w": 2 * params["w"]}))
    np.testing.assert_allclose(params["w"], np.array([1.0, -2.0]) * (1 - 0.2 * 0.8),
                               rtol=1e-15)
    correct = _extragradient()
    for check in (check_optimizer_state_dict, check_optimizer_lr_from_param_groups,
                  check_optimizer_missing_gradients):
        check(correct, "numpy")     # step(closure): gradients given directly would raise
    with pytest.raises(ConformanceError, match=r"lr from param_groups\[numpy\]"):
        check_optimizer_lr_from_param_groups(_extragradient(frozen_lr=True), "numpy")
    with pytest.raises(CheckSkipped, match="closure-driven"):
        check_optimizer_gradient_clipping(correct, "numpy")
    with pytest.raises(CheckSkipped, match="closure-driven"):
        check_optimizer_trains(correct, "numpy")
