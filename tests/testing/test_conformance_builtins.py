"""Every builtin plugin passes the conformance kit (a broken builtin fails its ``loads`` check)."""

from __future__ import annotations

import pytest

from optiplug.testing import Check, conformance_checks


@pytest.mark.parametrize("check", conformance_checks("builtin"), ids=str)
def test_builtin_plugin_passes_the_conformance_kit(check: Check) -> None:
    check.run()
