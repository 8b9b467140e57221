"""The test stages, in the order a run takes them: tests/unit, then
tests/integration, then tests/e2e.

The unit tests take seconds; the integration and e2e tests load models and
start servers for minutes. A run therefore starts with the unit tests
(pytest alone would collect e2e first, in name order) and, when any unit test
fails or errors, stops once the unit stage is done, with one line saying so:
a broken unit is fixed first, and the later stages would only fail on it
more slowly. Within a stage the collected order is kept (file order, which
some modules rely on). A test outside these directories runs after them.

tests/conftest.py registers `StageOrder`; tests/unit/test_stages.py runs it
on a small tree of its own.
"""

from __future__ import annotations

from collections.abc import Generator
from itertools import pairwise
from pathlib import Path
from typing import TypeVar

import pytest

STAGES = ("unit", "integration", "e2e")
UNIT = STAGES.index("unit")
UNIT_FAILED = "unit tests failed: integration and e2e tests not run"

T = TypeVar("T")
Wrapper = Generator[None, T, T]  # a hook wrapper: gets the inner hooks' result at its yield, returns it


def stage_of(path: Path) -> int:
    """The index in STAGES of the `tests/<stage>` directory holding `path`;
    len(STAGES) for a test in none of them."""
    parts = path.parts
    for directory, child in pairwise(parts):
        if directory == "tests" and child in STAGES:
            return STAGES.index(child)
    return len(STAGES)


class StageOrder:
    """Runs the stages in order; after a unit test failed, nothing past the unit stage."""

    def __init__(self) -> None:
        self.unit_failures = 0

    @pytest.hookimpl(trylast=True)  # after any other reordering: the stages have the last word
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        items.sort(key=lambda item: stage_of(item.path))  # stable: the order within a stage is kept

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item) -> Wrapper[pytest.TestReport]:
        report = yield
        if report.failed and stage_of(item.path) == UNIT:  # setup, call or teardown; not an xfail
            self.unit_failures += 1
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> Wrapper[object]:
        ran = yield
        if self.unit_failures and nextitem is not None and stage_of(nextitem.path) != UNIT:
            item.session.shouldfail = UNIT_FAILED  # the run loop stops before `nextitem`, exit code 1
        return ran
