"""Fixtures of the abuse suite: one running system (real processes) for the whole package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.system import System


@pytest.fixture(scope="package")
def system() -> Iterator[System]:
    """PostgreSQL, Tansu and the four services as processes, shared by every abuse test."""
    with System() as running:
        yield running
