"""Chain: an optimizer assembled from composable update rules, in a config.

Lists transforms of the update (optax-style gradient transformations shipped in
:mod:`optiplug.transforms`), applied in order; the result is added to the parameters. Use it
to try a variation of a known optimizer (clipping, decoupled decay, Nesterov momentum) from a
config file without writing code. Every transform runs on NumPy and torch::

    {"name": "chain", "lr": 0.001,
     "transforms": [{"name": "clip_by_global_norm", "max_norm": 1.0},
                    {"name": "scale_by_adam"},
                    {"name": "add_decayed_weights", "weight_decay": 0.01},
                    {"name": "scale_by_learning_rate"}]}

Reference: the optax library's ``chain`` of gradient transformations (DeepMind, 2020).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict

import optiplug
from optiplug.transforms import ChainSpecBase, build_numpy, build_torch


class ChainSpec(ChainSpecBase):
    """A chain of update transforms; ``lr`` feeds ``scale_by_learning_rate``."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "lr": 0.01,
        "transforms": [{"name": "clip_by_global_norm", "max_norm": 1.0},
                       {"name": "scale_by_adam"},
                       {"name": "add_decayed_weights", "weight_decay": 0.01},
                       {"name": "scale_by_learning_rate"}]}]})

    name: Literal["chain"] = "chain"


@optiplug.hookimpl
def optiplug_optimizers() -> list[optiplug.Technique]:
    return [optiplug.Technique(
        kind="optimizer", name="chain", spec=ChainSpec,
        builders={"numpy": build_numpy, "torch": build_torch},
        summary="An optimizer assembled from composable update rules (clip, scale_by_adam, "
                "add_decayed_weights, scale_by_learning_rate, ...) listed in the config.",
        reference="optax chain of gradient transformations")]
