"""Two dispatch processes in one consumer group dispatch every hazard exactly once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shared import events as ev
from shared.db import create_engine
from shared.events import dump_event
from shared.settings import DatabaseSettings
from tests.integration.dispatch.dispatch_helpers import reported
from tests.support.kafka_tools import produce, read_topic, wait_for
from tests.support.replicas import applied, replicas

pytestmark = pytest.mark.integration
CATEGORIES = (
    "locked_rooftop_door",
    "ebike_indoor_charging",
    "public_security_hazard",
    "gas_leak",
    "road_hazard",
)


async def _exactly_once(count: int, db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path) -> None:
    hazards = [reported(CATEGORIES[i % len(CATEGORIES)], f"liuyue-{i % 12 + 1:02d}") for i in range(count)]
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        async with replicas(
            "dispatch", 2, db_url=db_url, bootstrap=kafka.bootstrap_servers, topics=topics, log_dir=tmp_path
        ) as ports:
            await _deliver_and_check(count, hazards, engine, kafka, topics, ports)
    finally:
        await engine.dispose()


async def _deliver_and_check(
    count: int,
    hazards: list[ev.HazardReported],
    engine: Any,
    kafka: Any,
    topics: dict[str, str],
    ports: list[int],
) -> None:
    # Every tenth event is delivered twice, as an at-least-once producer would.
    messages = [(str(h.hazard_id).encode(), dump_event(h)) for h in hazards]
    messages += messages[::10]
    await produce(kafka.bootstrap_servers, topics["lifecycle"], messages)

    async def all_dispatched() -> bool:
        async with engine.connect() as conn:
            done = (await conn.execute(sa.text("select count(*) from dispatch.dispatches"))).scalar_one()
        return int(done) >= count

    await wait_for(all_dispatched, timeout_s=240, interval_s=0.5)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("select hazard_id from dispatch.dispatches"))).scalars().all()
    assert len(rows) == count
    assert set(rows) == {h.hazard_id for h in hazards}

    records = await read_topic(
        kafka.bootstrap_servers, topics["lifecycle"], expect=len(messages) + count, timeout_s=120
    )
    dispatched = [e for e in (ev.parse_event(r.value) for r in records) if isinstance(e, ev.HazardDispatched)]
    per_hazard = Counter(e.hazard_id for e in dispatched)
    assert len(per_hazard) == count
    assert set(per_hazard.values()) == {1}
    done = [await applied("dispatch", port) for port in ports]
    print(f"\nevents applied per process: {done}")
    assert sum(done) == count
    assert min(done) > 0, "both processes applied some of the events"


async def test_two_dispatch_processes_dispatch_each_of_2000_hazards_exactly_once(
    db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    await _exactly_once(2000, db_url, kafka, topics, tmp_path)


@pytest.mark.slow
async def test_two_dispatch_processes_dispatch_each_of_10000_hazards_exactly_once(
    db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path
) -> None:
    # 35 s on a quiet 2-core machine, 75 s on a busy one: outside the default run.
    await _exactly_once(10_000, db_url, kafka, topics, tmp_path)
