"""Log-sigmoid: ``log(sigmoid(x)) = -softplus(-x)``.

The log-probability of a logistic output, for losses written on log-probabilities (binary
log-likelihoods, the log-odds terms of word2vec's negative sampling and of DPO), where
``log(sigmoid(x))`` computed in two steps would underflow to ``-inf``.

Reference: Mikolov et al., "Distributed Representations of Words and Phrases and their
Compositionality", NeurIPS 2013 (the negative-sampling objective).
"""

from __future__ import annotations

from typing import Any, Literal

from numpy.typing import NDArray

import optiplug
from optiplug.backends.numpy import NumpyModule, sigmoid, softplus


class LogSigmoidSpec(optiplug.ActivationSpec):
    """``logsigmoid(x) = -log(1 + exp(-x))``; no hyperparameters."""

    name: Literal["logsigmoid"] = "logsigmoid"


class NumpyLogSigmoid(NumpyModule):
    """``dy/dx = sigmoid(-x)``, accurate for inputs of any size."""

    def forward(self, x: NDArray[Any]) -> NDArray[Any]:
        self._x = x
        return -softplus(-x)

    def backward(self, grad_out: NDArray[Any]) -> NDArray[Any]:
        return grad_out * sigmoid(-self._x)


def build_numpy(spec: LogSigmoidSpec) -> NumpyLogSigmoid:
    return NumpyLogSigmoid()


def build_torch(spec: LogSigmoidSpec) -> Any:
    import torch

    return torch.nn.LogSigmoid()


@optiplug.hookimpl
def optiplug_activations() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="activation", name="logsigmoid", spec=LogSigmoidSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="log(sigmoid(x)) computed without underflow, for losses on log-probabilities "
                "of logistic outputs.",
        reference="torch.nn.LogSigmoid; Mikolov et al. 2013")]
