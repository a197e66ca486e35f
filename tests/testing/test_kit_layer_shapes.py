"""The conformance kit on layers that change the shape (gated units: ``output_shape`` on the
spec) and on initializers defined only for some ranks (``eye``, ``dirac``): correct ones pass,
undeclared shape changes and backends that disagree on a shape fail with a message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pytest
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule
from optiplug.testing import (
    ConformanceError,
    check_backends_agree,
    check_build,
    check_numerical_gradient,
)

torch = pytest.importorskip("torch")


class PairSumSpec(optiplug.ActivationSpec):
    """``y = a + b`` over the halves of the last axis."""

    name: Literal["kit_pair_sum"] = "kit_pair_sum"

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:-1], input_shape[-1] // 2)


class UndeclaredPairSumSpec(optiplug.ActivationSpec):
    """``y = a + b``, without declaring the halved output."""

    name: Literal["kit_pair_sum_2"] = "kit_pair_sum_2"


class NumpyPairSum(NumpyModule):
    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        a, b = np.split(x, 2, axis=-1)
        return a + b

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return np.concatenate([grad_out, grad_out], axis=-1)


def _torch_pair_sum() -> Any:
    class PairSum(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            a, b = x.chunk(2, dim=-1)
            return a + b

    return PairSum()


def _pair_sum(spec: type[optiplug.ActivationSpec]) -> optiplug.Technique:
    return optiplug.Technique(kind="activation", name=spec.technique_name(), spec=spec,
                              builders={"numpy": lambda s: NumpyPairSum(),
                                        "torch": lambda s: _torch_pair_sum()},
                              summary="Sum of halves.")


def test_kit_passes_a_layer_that_declares_its_output_shape() -> None:
    technique = _pair_sum(PairSumSpec)
    for backend in ("numpy", "torch"):
        check_build(technique, backend)
    check_numerical_gradient(technique)
    check_backends_agree(technique)


def test_kit_catches_a_layer_that_changes_the_shape_undeclared() -> None:
    with pytest.raises(ConformanceError, match=r"expected float32 \(8, 12\).*output_shape"):
        check_build(_pair_sum(UndeclaredPairSumSpec), "numpy")


class CubeOnlySpec(optiplug.InitializerSpec):
    """Ones, for 3-D weights only."""

    name: Literal["kit_cube_ones"] = "kit_cube_ones"

    def expected_mean(self, shape: tuple[int, ...]) -> float | None:
        return 1.0 if len(shape) == 3 else None

    def expected_variance(self, shape: tuple[int, ...]) -> float | None:
        return 0.0 if len(shape) == 3 else None

    def example_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((64, 32, 3),)


class CubeAndConvSpec(CubeOnlySpec):
    """Ones, declared for 3-D and 4-D weights."""

    def example_shapes(self) -> tuple[tuple[int, ...], ...]:
        return ((64, 32, 3), (64, 32, 3, 3))


def _cube_ones(torch_ranks: Sequence[int]) -> optiplug.Technique:
    def numpy_build(spec: CubeOnlySpec) -> Any:
        def fill(shape: Sequence[int], *, dtype: Any, rng: np.random.Generator) -> Any:
            if len(shape) != 3:
                raise ValueError(f"3-D only, got {tuple(shape)}")
            return np.ones(tuple(shape), dtype=dtype)

        return fill

    def torch_build(spec: CubeOnlySpec) -> Any:
        def fill(tensor: Any, *, generator: Any = None) -> Any:
            if tensor.dim() not in torch_ranks:
                raise ValueError(f"rank {tensor.dim()} refused")
            with torch.no_grad():
                return tensor.fill_(1.0)

        return fill

    return optiplug.Technique(kind="initializer", name="kit_cube_ones", spec=CubeOnlySpec,
                              builders={"numpy": numpy_build, "torch": torch_build},
                              summary="Ones for 3-D weights.")


def test_kit_passes_an_initializer_defined_only_for_some_ranks() -> None:
    # The spec declares the shapes it takes (example_shapes(): 3-D only), so the kit checks
    # those rather than its default 2-D and 4-D weights, and the initializer passes.
    technique = _cube_ones([3])
    check_build(technique, "numpy")
    check_build(technique, "torch")
    check_backends_agree(technique)
    # Declaring a shape neither backend takes is the spec's defect, and the kit says so.
    overdeclared = optiplug.Technique(kind="initializer", name="kit_cube_ones",
                                      spec=CubeAndConvSpec, builders=technique.builders,
                                      summary="Ones.")
    with pytest.raises(ConformanceError, match=r"numpy refuses shape \(64, 32, 3, 3\), which "
                                               r"the spec's example_shapes\(\) declares"):
        check_backends_agree(overdeclared)


def test_kit_catches_backends_that_disagree_on_a_shape() -> None:
    def with_4d(spec: CubeOnlySpec) -> Any:
        def fill(shape: Sequence[int], *, dtype: Any, rng: np.random.Generator) -> Any:
            if len(shape) not in (3, 4):
                raise ValueError("refused")
            return np.ones(tuple(shape), dtype=dtype)

        return fill

    technique = _cube_ones([3])
    disagreeing = optiplug.Technique(kind="initializer", name="kit_cube_ones",
                                     spec=CubeAndConvSpec,
                                     builders={"numpy": with_4d,
                                               "torch": technique.builders["torch"]},
                                     summary="Ones.")
    with pytest.raises(ConformanceError, match=r"only one backend refuses shape \(64, 32, 3, 3\)"):
        check_backends_agree(disagreeing)
    agreeing = _cube_ones([3, 4])
    agreeing = optiplug.Technique(kind="initializer", name="kit_cube_ones", spec=CubeAndConvSpec,
                                  builders={"numpy": with_4d,
                                            "torch": agreeing.builders["torch"]},
                                  summary="Ones.")
    check_backends_agree(agreeing)
