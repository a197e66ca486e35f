"""`import optiplug` is cheap: no plugin, no torch; torch only for the torch backend."""

from __future__ import annotations

import subprocess
import sys


def python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, check=True)
    return result.stdout.strip()


def test_import_optiplug_loads_no_plugin_and_no_torch():
    out = python("import sys, optiplug; "
                 "print(sorted(m for m in sys.modules if m == 'torch' or "
                 "m.startswith('optiplug.plugins') or m.startswith('optiplug.backends')))")
    assert out == "[]"


def test_listing_every_plugin_and_building_numpy_objects_never_imports_torch():
    out = python("import sys, optiplug, numpy as np; r = optiplug.registry(); "
                 "techniques = r.techniques(); optiplug.json_schema(); "
                 "optiplug.activation('relu')(np.ones(3)); "
                 "print(len(techniques) > 0, 'torch' in sys.modules)")
    assert out == "True False"


def test_torch_is_imported_when_the_torch_backend_is_asked_for():
    out = python("import sys, optiplug; optiplug.activation('relu', backend='torch'); "
                 "print('torch' in sys.modules)")
    assert out == "True"
