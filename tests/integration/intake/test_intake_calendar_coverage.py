"""A service whose working calendar ends within 60 days says so in /readyz and /metrics, and stays ready."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from shared.reference import ReferenceData, load_reference_data
from tests.integration.intake.intake_helpers import AppFactory

pytestmark = pytest.mark.integration

_COVERAGE = re.compile(r'^hazard_calendar_coverage_days\{service="intake"\} (\S+)$', re.MULTILINE)


def _with_calendar(**update: object) -> ReferenceData:
    reference = load_reference_data()
    return reference.model_copy(update={"calendar": reference.calendar.model_copy(update=update)})


async def test_a_calendar_that_ends_soon_is_a_readiness_warning_and_a_metric(intake_app: AppFactory) -> None:
    # No listed year and no package: not even today is covered.
    async with intake_app(reference=_with_calendar(years=(), country=None), broker=False) as (_, client):
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["status"] == "ready"
        assert body["checks"]["database"] == "ok"
        warning = body["checks"]["calendar"]
        assert warning.startswith("warning: "), warning
        assert "calendar.yaml" in warning
        scraped = _COVERAGE.search((await client.get("/metrics")).text)
        assert scraped is not None
        assert float(scraped.group(1)) == 0


async def test_a_calendar_covering_the_next_years_is_ok(intake_app: AppFactory) -> None:
    this_year = datetime.now(UTC).year
    listed = _with_calendar(years=(this_year, this_year + 1, this_year + 2))
    async with intake_app(reference=listed, broker=False) as (_, client):
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["calendar"] == "ok"
        scraped = _COVERAGE.search((await client.get("/metrics")).text)
        assert scraped is not None
        assert float(scraped.group(1)) > 365
