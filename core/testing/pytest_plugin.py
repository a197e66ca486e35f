"""pytest plugin of the conformance kit (entry point ``pytest11``: ``optiplug``).

``pytest --optiplug-conformance=NAME`` adds one test per check of every technique ``NAME``
selects (``all``, ``builtin``, a distribution, an entry point or ``kind.name``; patterns and
commas allowed; the option may be repeated). Without the option the plugin adds an option and
a marker and nothing else: it collects nothing and imports neither numpy nor torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._kit import Check

__all__ = ["ConformanceCollector", "ConformanceItem"]

_OPTION = "optiplug_conformance"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("optiplug", "optiplug plugin conformance")
    group.addoption(
        "--optiplug-conformance", action="append", default=[], dest=_OPTION, metavar="NAME",
        help="check installed optiplug plugins against the contract: a distribution, an entry "
             "point, kind.name (patterns allowed), 'builtin' or 'all'; repeatable")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "optiplug_conformance: a check of the optiplug plugin conformance kit")


class ConformanceItem(pytest.Item):
    """One conformance check as a test."""

    def __init__(self, *, check: Check, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.add_marker("optiplug_conformance")

    def runtest(self) -> None:
        self.check.run()

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> Any:
        from ._kit import ConformanceError

        # A contract breach is explained by its message; anything else keeps its traceback.
        if isinstance(excinfo.value, ConformanceError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Any, int | None, str]:
        return self.path, None, f"optiplug conformance {self.check.id}"


class ConformanceCollector(pytest.Collector):
    """The checks of one ``--optiplug-conformance`` target."""

    def __init__(self, *, target: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target = target

    def collect(self) -> Iterator[ConformanceItem]:
        from ._kit import conformance_checks

        try:
            checks = conformance_checks(self.target)
        except LookupError as exc:
            raise pytest.UsageError(f"--optiplug-conformance: {exc}") from None
        for check in checks:
            yield ConformanceItem.from_parent(self, name=check.id, check=check)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    # tryfirst: the checks are in place before -k/-m deselection looks at the items.
    for target in config.getoption(_OPTION):
        collector = ConformanceCollector.from_parent(
            session, name=f"optiplug-conformance[{target}]",
            nodeid=f"optiplug-conformance[{target}]", target=target)
        added = list(collector.collect())
        # Report them as collected, so counts, --collect-only and other plugins see them.
        for item in added:
            config.hook.pytest_itemcollected(item=item)
        result: list[pytest.Item | pytest.Collector] = [*added]
        config.hook.pytest_collectreport(report=pytest.CollectReport(
            collector.nodeid, "passed", None, result))
        items.extend(added)
