"""A summary waits for a rollup refresh only when the oldest change not in it is older than the bound."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from shared.db import create_engine
from shared.events import dump_event
from shared.settings import DatabaseSettings
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for, wait_applied
from tests.support.factories import make_event
from tests.support.kafka_tools import produce

pytestmark = pytest.mark.integration

APRIL = {"from": "2026-04-01", "to": "2026-04-30", "group_by": "department"}


async def test_summary_serves_the_rollup_within_the_bound_and_refreshes_past_it(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    settings = settings_for(db_url, kafka.bootstrap_servers, topics)
    # No background refresh during the test (the gauges' refresh brings the rollup up to date
    # first, so it waits too; both run once at start, before the report is produced); a change
    # may stay out of answers for 10 minutes.
    settings.projection.rollup_refresh_s = 3600
    settings.projection.metrics_refresh_s = 3600
    settings.projection.max_staleness_s = 600
    reported = make_event("hazard.reported")
    async with running_app(settings) as (_app, client):
        await produce(kafka.bootstrap_servers, topics["lifecycle"], [(b"k", dump_event(reported))])
        await wait_applied(db_url, 1)

        fresh = await client.get("/api/v1/reports/summary", params=APRIL, headers=auth())
        assert fresh.status_code == 200, fresh.text
        assert fresh.json()["totals"]["reported"] == 0, "a change marked just now may wait for the refresher"

        engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
        try:
            async with engine.begin() as conn:
                aged = await conn.execute(
                    sa.text("UPDATE reporting.rollup_changes SET changed_at = now() - interval '1 hour'")
                )
                assert aged.rowcount == 1, "the applied report recorded its change to the rollup"
        finally:
            await engine.dispose()

        stale = await client.get("/api/v1/reports/summary", params=APRIL, headers=auth())
        assert stale.status_code == 200, stale.text
        assert stale.json()["totals"]["reported"] == 1, "past the bound the summary refreshes first"
