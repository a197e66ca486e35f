"""Isolation check: building for NumPy never imports torch (fresh interpreter)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Final

from ..technique import Technique
from ._common import CheckSkipped, _fail, _need

# ------------------------------------------------------------- no torch for NumPy builds
_PROBE_SCRIPT: Final = """
import importlib, json, sys
import optiplug
from optiplug.testing import _exercise
registry = optiplug.registry()
results = {}
for key, kind, name, module, in_process in json.loads(sys.argv[1]):
    try:
        if in_process:
            try:
                registry.register(importlib.import_module(module), override=True)
                technique = registry.get(kind, name)
            except Exception as exc:
                results[key] = f"skip: not installed, and its module {module!r} does not "\\
                    f"register it in a new process ({type(exc).__name__}: {exc})"
                continue
        else:
            technique = registry.get(kind, name)
        _exercise.exercise(technique, "numpy")
        results[key] = "torch" if "torch" in sys.modules else "ok"
    except Exception as exc:
        results[key] = f"error: {type(exc).__name__}: {exc}"
    if "torch" in sys.modules:
        break
print(json.dumps(results))
"""
_probe_results: dict[str, str] = {}


def _probe_key(technique: Technique) -> str:
    return f"{technique.kind}.{technique.name}:{technique.spec.__module__}." \
           f"{technique.spec.__qualname__}"


def _probe(techniques: Sequence[Technique]) -> None:
    """Exercise NumPy builds in fresh interpreters, recording for each whether torch got
    imported (one process for all, a new one after each culprit)."""
    import os
    import subprocess

    todo = [t for t in techniques if _probe_key(t) not in _probe_results
            and "numpy" in t.builders]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    while todo:
        payload = json.dumps([[_probe_key(t), t.kind, t.name, t.spec.__module__,
                               t.origin is None or t.origin.distribution is None]
                              for t in todo])
        done = subprocess.run([sys.executable, "-c", _PROBE_SCRIPT, payload],
                              capture_output=True, text=True, env=environment, timeout=300,
                              check=False)
        lines = done.stdout.strip().splitlines()
        try:
            results: dict[str, str] = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            results = {}
        if not results:
            message = f"error: the probe process failed: {done.stderr.strip()[-2000:]}"
            results = {_probe_key(t): message for t in todo}
        _probe_results.update(results)
        todo = [t for t in todo if _probe_key(t) not in _probe_results]


def check_numpy_without_torch(technique: Technique,
                              batch: Sequence[Technique] = ()) -> None:
    """Building and using the technique on NumPy in a fresh interpreter does not import torch.

    Args:
        batch: Other techniques to probe in the same subprocess (results are cached), so a
            session checking many plugins starts one interpreter, not one each.
    """
    _need(technique, "numpy")
    _probe([technique, *batch])
    result = _probe_results.get(_probe_key(technique), "error: not probed")
    if result == "ok":
        return
    if result.startswith("skip: "):
        raise CheckSkipped(result[len("skip: "):])
    if result == "torch":
        raise _fail(technique, "numpy without torch", (
            "building and using it on NumPy imported torch; import torch only inside the torch "
            "builder (or a module imported from there)"))
    raise _fail(technique, "numpy without torch", f"in a fresh interpreter: {result}")


