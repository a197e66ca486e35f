"""The README's technique table lists every builtin technique with its backends.

Every code block of the README (and of CONTRIBUTING.md and docs/) is run by tests/test_docs.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import optiplug

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_table_lists_every_builtin_technique_with_its_backends():
    text = README.read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| (\w+) \| `(\w+)` \| ([\w, ]+) \|", text, re.M))
    builtins = {(t.kind, t.name, ", ".join(t.backends))
                for t in optiplug.registry().techniques()
                if t.origin is not None and t.origin.distribution == "optiplug"}
    assert builtins <= rows, sorted(builtins - rows)
