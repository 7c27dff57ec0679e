"""Fixtures of the abuse suite: one running system (real processes) for the whole package."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.system import System


@pytest.fixture(scope="package")
def system() -> Iterator[System]:
    """PostgreSQL, Tansu and the four services as processes, shared by every abuse test."""
    # The public Open311 GETs are rate limited per client address, and every abuse test calls
    # from 127.0.0.1: unlimited here, so hostile values reach the parsers instead of a 429.
    # (The limit itself: tests/integration/intake/test_intake_open311_public.py.)
    with System(service_env={"intake": {"OPEN311__RATE_LIMIT__ENABLED": "false"}}) as running:
        yield running
