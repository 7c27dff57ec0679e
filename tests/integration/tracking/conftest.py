"""Fixtures of the tracking integration tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.tracking.tracking_helpers import AppFactory, app_factory


@pytest.fixture
def tracking_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    """Start a tracking app in-process (lifespan included) with an HTTP client."""
    return app_factory(db_url, kafka, topics)
