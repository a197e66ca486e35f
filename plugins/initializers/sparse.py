"""Sparse initialization: normal weights with a fixed fraction of each column set to zero.

``W ~ N(0, std**2)``, then in every column ``ceil(sparsity * rows)`` entries, at positions
drawn uniformly without replacement, are zeroed: each unit sees only a few of its inputs.
Martens used it (15 nonzero incoming weights per unit) to train deep autoencoders with
Hessian-free optimization; it breaks symmetry without the large initial activations of a dense
random weight. Only for 2-D weights.

Unlike ``torch.nn.init.sparse_``, which draws its zero positions with ``torch.randperm`` from
torch's global generator whatever ``generator`` it is given, both backends draw everything from
the given generator (NumPy ``rng``, torch ``generator``): the same seed gives the same weight.
The values are the normal draws of that generator in order (as ``torch.nn.init.normal_``
gives them), then one uniform key per element orders each column's rows (a uniform random
permutation per column) and its first ``ceil(sparsity * rows)`` rows are zeroed. The
distribution is torch's, draw for draw it is not.

Reference: Martens, "Deep learning via Hessian-free optimization", ICML 2010;
``torch.nn.init.sparse_``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

import optiplug
from optiplug.init_math import NumpyFill, Shape, TorchFill, numpy_fill


class SparseSpec(optiplug.InitializerSpec):
    """``W ~ N(0, std**2)`` with ``ceil(sparsity * rows)`` zeros in every column; 2-D only."""

    name: Literal["sparse"] = "sparse"
    sparsity: optiplug.Probability = Field(examples=[0.1])
    """Fraction of each column's entries set to zero, in [0, 1] (required, as torch's)."""
    std: optiplug.PositiveFloat = 0.01
    """Standard deviation of the nonzero entries, > 0."""

    def zeros_per_column(self, rows: int) -> int:
        """``ceil(sparsity * rows)``: how many entries of each column are zeroed."""
        return math.ceil(self.sparsity * rows)

    def example_shapes(self) -> tuple[tuple[int, ...], ...]:
        """2-d weights only: the shapes the conformance kit draws."""
        return ((256, 512), (64, 128))

    def expected_mean(self, shape: tuple[int, ...]) -> float | None:
        return 0.0 if len(shape) == 2 else None

    def expected_variance(self, shape: tuple[int, ...]) -> float | None:
        if len(shape) != 2:
            return None
        rows = shape[0]
        return self.std**2 * (rows - self.zeros_per_column(rows)) / rows


def _check_2d(shape: tuple[int, ...]) -> None:
    if len(shape) != 2:
        raise ValueError(f"sparse initialization needs a 2-D weight, got shape {shape}")


def build_numpy(spec: SparseSpec) -> NumpyFill:
    def draw(rng: np.random.Generator, shape: Shape) -> NDArray[np.float64]:
        _check_2d(shape)
        weight = rng.normal(0.0, spec.std, size=shape)
        zeroed = rng.random(shape).argsort(axis=0)[:spec.zeros_per_column(shape[0])]
        np.put_along_axis(weight, zeroed, 0.0, axis=0)
        return weight

    return numpy_fill(draw)


def build_torch(spec: SparseSpec) -> TorchFill:
    import torch

    def fill(tensor: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_2d(tuple(tensor.shape))
        with torch.no_grad():
            tensor.normal_(0.0, spec.std, generator=generator)
            keys = torch.rand(tensor.shape, generator=generator, device=tensor.device,
                              dtype=torch.float64)
            zeroed = keys.argsort(dim=0)[:spec.zeros_per_column(tensor.shape[0])]
            tensor.scatter_(0, zeroed, 0.0)
        return tensor

    return fill


@optiplug.hookimpl
def optiplug_initializers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="initializer", name="sparse", spec=SparseSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Normal weights with a fraction of every column zeroed, so each unit sees few "
                "inputs; reproducible from the generator, unlike torch's sparse_.",
        reference="Martens 2010; torch.nn.init.sparse_")]
