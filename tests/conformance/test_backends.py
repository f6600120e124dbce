"""Backends, timeouts and route attachment on one live gateway."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.support import conformance
from tests.support.conformance import Case, Suite

TOPICS = ("backends", "timeouts", "attachment")
CASES = conformance.load_cases(*TOPICS)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    with ExitStack() as stack:
        yield conformance.start(stack, tmp_path_factory.mktemp("backends"), *TOPICS)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(suite: Suite, case: Case) -> None:
    conformance.check(suite, case)
