"""Fixtures of the dispatch integration tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.dispatch.dispatch_helpers import AppFactory, app_factory


@pytest.fixture
def dispatch_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    """Start a dispatch app in-process (lifespan included) with an HTTP client; several may run at once."""
    return app_factory(db_url, kafka, topics)
