"""Two processes of each consuming service in one consumer group: both do work, every effect happens once.

(Dispatch's own two-process test is ``tests/integration/dispatch/test_dispatch_replicas.py``.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shared import events as ev
from shared.db import create_engine
from shared.settings import DatabaseSettings
from tests.integration.tracking.tracking_helpers import Hazard, publish
from tests.support.kafka_tools import read_topic, wait_for
from tests.support.replicas import applied, replicas

pytestmark = pytest.mark.integration
COUNT = 300


async def _life_so_far(kafka: Any, topics: dict[str, str]) -> list[Hazard]:
    """Reported, dispatched and acknowledged, for COUNT hazards on every partition; every tenth event twice."""
    hazards = [Hazard(building_id=f"B-{n}", lat=22.60 + n * 0.001) for n in range(COUNT)]
    events = [e for h in hazards for e in (h.reported(), h.dispatched(), h.acknowledged())]
    await publish(kafka.bootstrap_servers, topics["lifecycle"], *events, *events[::10])
    return hazards


async def _count(engine: Any, query: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.text(query))).scalar_one())


async def test_two_tracking_processes_share_the_cases_and_order_each_rectification_once(
    db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        async with replicas(
            "tracking", 2, db_url=db_url, bootstrap=kafka.bootstrap_servers, topics=topics, log_dir=tmp_path
        ) as ports:
            hazards = await _life_so_far(kafka, topics)

            async def all_ordered() -> bool:
                query = "select count(*) from tracking.cases where state = 'rectification_ordered'"
                return await _count(engine, query) == COUNT

            await wait_for(all_ordered, timeout_s=180, interval_s=0.5)
            records = await read_topic(
                kafka.bootstrap_servers, topics["lifecycle"], expect=COUNT * 4 + COUNT * 3 // 10
            )
            done = [await applied("tracking", port) for port in ports]
    finally:
        await engine.dispose()
    orders = Counter(
        e.hazard_id
        for e in (ev.parse_event(r.value) for r in records)
        if isinstance(e, ev.HazardRectificationOrdered)
    )
    assert orders.keys() == {h.hazard_id for h in hazards}
    assert set(orders.values()) == {1}
    print(f"\nevents applied per tracking process: {done}")
    assert sum(done) == COUNT * 3
    assert min(done) > 0, "both processes applied some of the events"


async def test_two_reporting_processes_share_the_stream_and_count_each_hazard_once(
    db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        async with replicas(
            "reporting", 2, db_url=db_url, bootstrap=kafka.bootstrap_servers, topics=topics, log_dir=tmp_path
        ) as ports:
            await _life_so_far(kafka, topics)

            async def all_acknowledged() -> bool:
                query = "select count(*) from reporting.dispatches where acknowledged_at is not null"
                return await _count(engine, query) == COUNT

            await wait_for(all_acknowledged, timeout_s=180, interval_s=0.5)
            hazards = await _count(engine, "select count(*) from reporting.hazards")
            dispatches = await _count(engine, "select count(*) from reporting.dispatches")
            done = [await applied("reporting", port) for port in ports]
    finally:
        await engine.dispose()
    assert (hazards, dispatches) == (COUNT, COUNT)
    print(f"\nevents applied per reporting process: {done}")
    assert sum(done) == COUNT * 3
    assert min(done) > 0, "both processes applied some of the events"
