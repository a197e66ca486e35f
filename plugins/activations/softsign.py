"""Softsign: ``x / (1 + |x|)``.

A squashing function to ``(-1, 1)`` like tanh but with polynomial rather than exponential
tails, so it saturates more slowly; used in some recurrent and early deep networks.

Reference: Glorot & Bengio, "Understanding the difficulty of training deep feedforward neural
networks", AISTATS 2010.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule


class SoftsignSpec(optiplug.ActivationSpec):
    """``softsign(x) = x / (1 + |x|)``; no hyperparameters."""

    name: Literal["softsign"] = "softsign"


class NumpySoftsign(NumpyModule):
    """``dy/dx = 1 / (1 + |x|)**2``."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._denominator = 1.0 + np.abs(x)
        return x / self._denominator

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        # Divided twice: the squared denominator would overflow for |x| > 1e154.
        return grad_out / self._denominator / self._denominator


def build_numpy(spec: SoftsignSpec) -> NumpySoftsign:
    return NumpySoftsign()


def build_torch(spec: SoftsignSpec) -> Any:
    import torch

    return torch.nn.Softsign()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="softsign", spec=SoftsignSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="Squashing x / (1 + |x|) to (-1, 1) with slower, polynomial saturation than "
                "tanh.",
        reference="Glorot & Bengio 2010")]
