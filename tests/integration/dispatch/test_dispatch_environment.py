"""Dispatch when its database is not what the code expects: events wait, readiness says why, nothing is lost (#14)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from shared.events import dump_event
from tests.integration.dispatch.dispatch_helpers import AppFactory, reported, scalar
from tests.support.kafka_tools import produce, read_topic, wait_for

pytestmark = pytest.mark.integration


async def _execute(app: Any, statement: str) -> None:
    async with app.state.runtime.engine.begin() as conn:
        await conn.execute(sa.text(statement))


async def test_a_renamed_hazards_table_holds_reports_back_and_readiness_says_why_until_it_is_back(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    """The issue's case: the table away for a few seconds while reports arrive; none is dead-lettered."""
    events = [reported("locked_rooftop_door") for _ in range(3)]
    async with dispatch_app() as (app, client):

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await wait_for(ready, timeout_s=60, interval_s=0.2)
        await _execute(app, "alter table dispatch.hazards rename to hazards_away")
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
        )
        answers: list[dict[str, Any]] = []

        async def unready() -> bool:
            response = await client.get("/readyz")
            answers.append(response.json())
            return response.status_code == 503

        await wait_for(unready, timeout_s=30, interval_s=0.2)
        consumers = answers[-1]["checks"]["consumers"]
        assert consumers.startswith("blocked (schema)"), consumers
        assert "hazards" in consumers
        # Several seconds: with three attempts of 0.2 s backoff, a message fault is dead-lettered in ~1 s.
        await asyncio.sleep(4)
        runtime = app.state.runtime
        await runtime.relay.drain()
        assert await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=2) == []
        assert await scalar(app, "select count(*) from dispatch.inbox_batches, unnest(event_ids)") == 0
        metrics = (await client.get("/metrics")).text
        assert 'hazard_consumer_blocked{reason="schema",service="dispatch"} 1.0' in metrics
        assert 'hazard_consumer_environment_errors_total{reason="schema",service="dispatch"}' in metrics

        await _execute(app, "alter table dispatch.hazards_away rename to hazards")

        async def dispatched() -> bool:
            return int(await scalar(app, "select count(*) from dispatch.dispatches") or 0) == 3

        await wait_for(dispatched, timeout_s=60, interval_s=0.2)
        await wait_for(ready, timeout_s=30, interval_s=0.2)
        assert await scalar(app, "select count(*) from dispatch.inbox_batches, unnest(event_ids)") == 3
        metrics = (await client.get("/metrics")).text
        assert 'hazard_consumer_blocked{reason="schema",service="dispatch"} 0.0' in metrics
        await runtime.relay.drain()
        assert await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=2) == []
