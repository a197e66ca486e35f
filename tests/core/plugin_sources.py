"""Source text of small real plugin modules, written into fixture distributions by tests."""

from __future__ import annotations

TOY_OPTIMIZER = '''
from typing import Literal
import optiplug

class ToySpec(optiplug.OptimizerSpec):
    """A toy optimizer used by the registry tests."""
    name: Literal["{name}"] = "{name}"
    betas: tuple[optiplug.Beta, optiplug.Beta] = (0.9, 0.999)
    """Moment decay rates."""
    steps: optiplug.PositiveInt = 3
    """A positive count."""
    nesterov: bool = False
    """A switch."""

def build_numpy(spec, params):
    return ("{dist}", spec, params)

@optiplug.hookimpl
def optiplug_optimizers():
    return [optiplug.Technique(kind="optimizer", name="{name}", spec=ToySpec,
                               builders={{"numpy": build_numpy}}, summary="Toy from {dist}.")]
'''

RAISES_ON_IMPORT = '''
raise RuntimeError("boom at import")
'''

RAISES_IN_HOOK = '''
import optiplug

@optiplug.hookimpl
def optiplug_activations():
    raise ValueError("boom in hook")
'''

RETURNS_GARBAGE = '''
import optiplug

@optiplug.hookimpl
def optiplug_activations():
    return ["not a technique"]
'''

MISSING_DEPENDENCY = '''
import package_that_is_not_installed_anywhere  # noqa: F401
'''

UNKNOWN_HOOK = '''
import optiplug

@optiplug.hookimpl
def optiplug_optimisers():
    return []
'''
