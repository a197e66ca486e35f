"""The optiplug conformance kit over this distribution: every check of lion and
squareplus."""

from __future__ import annotations

import optiplug
import pytest
from optiplug.testing import Check, check_technique, conformance_checks


@pytest.mark.parametrize("check", conformance_checks("optiplug-extras"), ids=str)
def test_extras_pass_the_conformance_kit(check: Check) -> None:
    check.run()


def test_extras_are_listed_with_this_distribution() -> None:
    for kind, name in (("optimizer", "lion_extras"), ("activation", "squareplus")):
        origin = optiplug.registry().get(kind, name).origin
        assert origin is not None
        assert (origin.distribution, origin.version) == ("optiplug-extras", "0.1.0")


def test_check_technique_reports_every_check_passed_or_skipped() -> None:
    report = check_technique("activation.squareplus")
    assert "activation.squareplus::gradient[numpy]" in report.passed
    assert not [check for check in report.skipped if "numpy" in check[0]]
