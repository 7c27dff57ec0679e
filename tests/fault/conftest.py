"""Fixtures of the fault suite: the whole system as processes, with short receipt deadlines."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fault_checks import fast_deadline_reference
from tests.support.system import System


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """PostgreSQL, Tansu behind a controllable proxy, and the four services, for one test module."""
    reference = fast_deadline_reference(tmp_path_factory.mktemp("fault") / "reference")
    with System(reference_dir=reference) as running:
        yield running
