"""Config-driven training recipes: ``optiplug run`` and ``optiplug compare``.

A recipe (YAML, TOML or JSON; see :mod:`optiplug.training.recipe`) names a dataset, an MLP whose
every layer takes an initializer, activation and optional normalizer from the registry, an
optimizer, a scheduler, param-group rules and the training loop's settings. The same recipe
trains on the NumPy backend (no torch needed) or the torch backend::

    from optiplug.training.compare import compare
    from optiplug.training.run import run

    result = run("examples/recipes/digits.yaml", out="runs/digits")   # a run folder
    print(compare(None, ["optimizer=adam,sgd(lr=0.1)"]).table())      # default digits recipe

This package imports nothing heavy until one of its names is used, so ``optiplug --help`` stays
fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["DEFAULT_RECIPE", "Recipe", "Trainer", "load_recipe"]

# Submodules ``run`` and ``compare`` hold the functions of the same names.
_WHERE = {"DEFAULT_RECIPE": "recipe", "Recipe": "recipe", "load_recipe": "recipe",
          "Trainer": "loop"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
