"""Intake keeps accepting while the broker is away; the relay delivers every report once it is back."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared import events as ev
from shared.devstack.broker import LocalKafka
from shared.devstack.ports import free_port
from shared.outbox import unpublished_count_query
from tests.integration.intake.intake_helpers import app_factory, auth, report, scalar
from tests.support.kafka_tools import read_topic, wait_for

pytestmark = pytest.mark.integration

REPORTS = 1000


async def test_reports_accepted_while_the_broker_is_down_all_reach_the_topic_exactly_once(
    db_url: str, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet: the broker is "down"
    topics = {
        "lifecycle": f"outage-{uuid.uuid4().hex[:8]}",
        "dead_letter": f"outage-{uuid.uuid4().hex[:8]}-dlt",
    }
    start = app_factory(db_url, f"127.0.0.1:{port}", topics)
    broker = LocalKafka(port=port, log_path=tmp_path / "tansu.log")
    try:
        async with start(outbox={"poll_interval_s": 0.1, "error_backoff_s": 0.5}) as (app, client):
            ready = await client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["checks"]["broker"] != "ok"

            gate = asyncio.Semaphore(32)

            async def one(i: int) -> Any:
                # Spread the reports out so they are not all linked as duplicates of one another.
                body = report(
                    description=f"outage report {i}",
                    location={"lat": 22.619 + (i % 40) * 0.0005, "lon": 114.166 + (i // 40) * 0.0005},
                )
                async with gate:
                    return await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))

            responses = await asyncio.gather(*(one(i) for i in range(REPORTS)))
            assert [r.status_code for r in responses] == [201] * REPORTS
            accepted = {uuid.UUID(r.json()["hazard_id"]) for r in responses}
            assert len(accepted) == REPORTS
            assert await scalar(app, "select count(*) from intake.reports") == REPORTS
            pending = await scalar(app, unpublished_count_query("intake"))
            assert pending == REPORTS  # nothing could be published yet

            # The broker comes up (empty: Tansu keeps nothing), with its topics.
            await asyncio.to_thread(broker.start)
            await broker.create_topics({topics["lifecycle"]: 4, topics["dead_letter"]: 1})

            async def drained() -> bool:
                return int(await scalar(app, unpublished_count_query("intake"))) == 0

            await wait_for(drained, timeout_s=120, interval_s=0.5)

        records = await read_topic(
            broker.bootstrap_servers, topics["lifecycle"], expect=REPORTS, timeout_s=60
        )
        events = [ev.parse_event(r.value) for r in records]
        reported = [e for e in events if isinstance(e, ev.HazardReported)]
        assert len(reported) == REPORTS
        assert len({e.event_id for e in reported}) == REPORTS
        assert {e.hazard_id for e in reported} == accepted
        # Keyed by hazard id, so each hazard's events stay in order.
        assert all(r.key == str(ev.parse_event(r.value).hazard_id).encode() for r in records)
    finally:
        broker.stop()
