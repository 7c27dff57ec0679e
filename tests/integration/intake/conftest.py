"""Fixtures of the intake integration tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.reference import Campaign, ReferenceData, load_reference_data
from tests.integration.intake.intake_helpers import AppFactory, app_factory


@pytest.fixture
def intake_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    """Start an intake app in-process with an HTTP client (relay on, real broker)."""
    return app_factory(db_url, kafka.bootstrap_servers, topics)


@pytest.fixture
def test_reference() -> ReferenceData:
    """The packaged reference data plus campaigns whose windows do not depend on today's date."""
    reference = load_reference_data()
    today = datetime.now(UTC).date()
    extra = (
        Campaign(
            id="test-rooftop-campaign",
            name_en="Test rooftop campaign",
            name_zh="测试天台行动",
            starts_on=today - timedelta(days=40),
            ends_on=today + timedelta(days=40),
            categories=("locked_rooftop_door",),
        ),
        Campaign(
            id="test-gas-campaign",
            name_en="Test gas campaign",
            name_zh="测试燃气行动",
            starts_on=today - timedelta(days=40),
            ends_on=today + timedelta(days=40),
            categories=("gas_leak",),
        ),
        Campaign(
            id="test-past-campaign",
            name_en="Test past campaign",
            name_zh="测试往期行动",
            starts_on=today - timedelta(days=400),
            ends_on=today - timedelta(days=300),
            categories=("locked_rooftop_door",),
        ),
        Campaign(
            id="test-future-campaign",
            name_en="Test future campaign",
            name_zh="测试未来行动",
            starts_on=today + timedelta(days=300),
            ends_on=today + timedelta(days=400),
            categories=("locked_rooftop_door",),
        ),
    )
    return reference.model_copy(update={"campaigns": extra})
