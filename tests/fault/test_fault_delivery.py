"""Faults under load against the real processes: broker, network, database, crashes, duplicates, poison.

Each test offers realistic reports (``bench.loadgen``) through intake's API while it injects
one fault, then checks (``tests/fault/checks.py``): every accepted report accounted for, no
hazard dispatched twice, no escalation (or overdue, order, closure) fired twice, and
reporting's figures equal to a recount from the topic. One system serves the whole module;
each test leaves it healthy for the next.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from bench.loadgen import Accepted, BehaviourMix, LoadGenerator, building
from shared import events as ev
from shared.db import create_engine
from shared.settings import DatabaseSettings
from tests.support.fault_checks import (
    FAST_CATEGORIES,
    assert_all_accepted,
    assert_invariants,
    generator,
    settled,
)
from tests.support.kafka_tools import read_topic
from tests.support.system import System

pytestmark = pytest.mark.integration


async def _load_with_fault(
    system: System,
    *,
    seed: int,
    rate: float,
    duration_s: float,
    fault_at_s: float,
    fault: Callable[[], None],
    **options: object,
) -> LoadGenerator:
    """Offer ``rate`` reports/s for ``duration_s`` and run ``fault`` (blocking, in a thread) at ``fault_at_s``."""
    gen = generator(system, seed=seed, **options)  # type: ignore[arg-type]
    load = asyncio.create_task(gen.run_rate(rate=rate, duration_s=duration_s))
    await asyncio.sleep(fault_at_s)
    await asyncio.to_thread(fault)
    await load
    return gen


def _report_ids_unique(facts: object) -> None:
    reported = facts.reported  # type: ignore[attr-defined]
    counts = Counter(str(p.get("report_id")) for p in reported.values())
    twice = [r for r, n in counts.items() if n > 1]
    assert twice == [], f"{len(twice)} report_ids became two hazards"


async def test_broker_paused_during_load_loses_nothing(system: System) -> None:
    def fault() -> None:
        system.pause_broker()
        time.sleep(6)
        system.resume_broker()

    gen = await _load_with_fault(system, seed=101, rate=40, duration_s=12, fault_at_s=3, fault=fault)
    assert_all_accepted(gen)  # intake keeps accepting into its outbox while the broker is frozen
    outcome = await settled(system, gen.result.accepted)
    assert outcome.accounting["dispatched"] > 0


async def test_network_pause_between_dispatch_and_broker(system: System) -> None:
    def fault() -> None:
        system.pause_link("dispatch")
        time.sleep(8)
        system.resume_link("dispatch")

    gen = await _load_with_fault(system, seed=202, rate=40, duration_s=12, fault_at_s=2, fault=fault)
    assert_all_accepted(gen)
    await settled(system, gen.result.accepted)
    assert system.proxy.accepted.get("dispatch", 0) > 0, "dispatch's broker traffic went through the proxy"


# A transaction of dispatch's that has written to its inbox: a consumer batch being applied.
_OPEN_BATCH = sa.text(
    """
    select a.pid, a.backend_xid::text as xid
    from pg_stat_activity a join pg_locks l on l.pid = a.pid
    where a.application_name = 'hazard-dispatch' and a.backend_xid is not null
      and l.locktype = 'relation' and l.relation = 'dispatch.inbox_batches'::regclass and l.mode = 'RowExclusiveLock'
    limit 1
    """
)
_STILL_OPEN = sa.text("select count(*) from pg_stat_activity where pid = :pid and backend_xid::text = :xid")


async def _freeze_mid_batch(system: System, name: str, *, timeout_s: float) -> str:
    """SIGSTOP the service while one of its consumer batches is half-written; returns that transaction's id.

    Frozen, the process cannot commit: if the transaction is still open once it is stopped, killing
    it now kills a batch in flight.
    """
    engine = create_engine(DatabaseSettings(url=system.database_url))
    pid = system.services[name].pid
    assert pid is not None
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                found = (await conn.execute(_OPEN_BATCH)).first()
            if found is None:
                await asyncio.sleep(0.002)
                continue
            os.killpg(pid, signal.SIGSTOP)
            await asyncio.sleep(0.2)
            async with engine.connect() as conn:
                still = (await conn.execute(_STILL_OPEN, {"pid": found.pid, "xid": found.xid})).scalar()
            if still:
                return str(found.xid)
            os.killpg(pid, signal.SIGCONT)  # it committed just before it stopped: try again
        raise AssertionError(f"no {name} batch was seen in flight within {timeout_s} s")
    finally:
        await engine.dispose()


async def _transaction_status(system: System, xid: str) -> str | None:
    engine = create_engine(DatabaseSettings(url=system.database_url))
    try:
        async with engine.connect() as conn:
            status = (await conn.execute(sa.text("select txid_status(:x)"), {"x": int(xid)})).scalar()
            return None if status is None else str(status)
    finally:
        await engine.dispose()


async def test_dispatch_killed_mid_batch_and_restarted(system: System) -> None:
    in_flight: list[str] = []

    def fault() -> None:
        in_flight.append(asyncio.run(_freeze_mid_batch(system, "dispatch", timeout_s=15)))
        system.kill("dispatch")
        time.sleep(1)
        system.start_service("dispatch")

    gen = await _load_with_fault(
        system,
        seed=303,
        rate=150,
        duration_s=8,
        fault_at_s=2,
        fault=fault,
        behaviour=BehaviourMix(batch_share=0.8, batch_min=20, batch_max=100),
    )
    # The batch the kill caught never committed: its events were applied again after the restart.
    (xid,) = in_flight
    assert await _transaction_status(system, xid) == "aborted"
    assert_all_accepted(gen)
    await settled(system, gen.result.accepted)


async def test_intake_killed_mid_batch_and_restarted_keeps_every_report_once(system: System) -> None:
    def fault() -> None:
        system.kill("intake")
        system.start_service("intake")

    gen = await _load_with_fault(
        system,
        seed=404,
        rate=150,
        duration_s=5,
        fault_at_s=2,
        fault=fault,
        behaviour=BehaviourMix(batch_share=0.8, batch_min=20, batch_max=100),
        attempts=60,
        backoff_s=0.2,
    )
    assert gen.result.actions.get("resent", 0) > 0, "some requests met the dead intake and were sent again"
    assert_all_accepted(gen)
    outcome = await settled(system, gen.result.accepted)
    _report_ids_unique(outcome.facts)


async def test_postgres_restarted_during_load(system: System) -> None:
    gen = await _load_with_fault(
        system,
        seed=505,
        rate=40,
        duration_s=12,
        fault_at_s=3,
        fault=lambda: system.restart_postgres(down_s=3),
        attempts=60,
        backoff_s=0.2,
    )
    assert_all_accepted(gen)
    outcome = await settled(system, gen.result.accepted)
    _report_ids_unique(outcome.facts)


def _synthetic_reports(system: System, count: int, rng: random.Random) -> list[ev.HazardReported]:
    """Valid ``hazard.reported`` events for new hazards, as if from intake (producer ``test``)."""
    now = datetime.now(UTC)
    grids = [g.id for g in system.reference.grids]
    events = []
    for _ in range(count):
        grid = rng.choice(grids)
        place = building(system.reference, grid, rng.randrange(5000, 9000))
        community = system.reference.community_of_grid(grid)
        events.append(
            ev.HazardReported(
                event_id=uuid.uuid4(),
                occurred_at=now,
                hazard_id=uuid.uuid4(),
                producer="test",
                payload=ev.HazardReportedPayload(
                    report_id=uuid.uuid4(),
                    category="locked_rooftop_door",
                    description="Rooftop door padlocked (synthetic, duplicated and reordered)",
                    location=ev.Location(
                        lat=place.lat, lon=place.lon, address=place.address, building_id=place.building_id
                    ),
                    grid_id=grid,
                    community_id=community.id,
                    street_id=system.reference.street.id,
                    reporter_id=f"gm-{grid}-1",
                    observed_at=now - timedelta(minutes=5),
                    accepted_at=now,
                ),
            )
        )
    return events


async def _produce(
    system: System, topic: str, records: list[tuple[bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send records; return (partition, offset) of each."""
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap_servers, request_timeout_ms=40_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        metadata = await asyncio.gather(*futures)
        return [(m.partition, m.offset) for m in metadata]
    finally:
        await producer.stop()


async def test_duplicate_and_reordered_delivery_changes_nothing(system: System) -> None:
    """Redelivery of applied history changes nothing. Order itself, every type, for new hazards, is
    tested per consumer: ``tests/integration/*/test_*_reordered_delivery.py`` (#14)."""
    rng = random.Random(606)
    # New hazards, each event sent twice, all shuffled (per key the order changes too).
    fresh = _synthetic_reports(system, 60, rng)
    records = [(str(e.hazard_id).encode(), ev.dump_event(e)) for e in fresh for _ in range(2)]
    rng.shuffle(records)
    await _produce(system, system.lifecycle_topic, records)
    accepted = [
        Accepted(
            report_id=str(e.payload.report_id),
            hazard_id=str(e.hazard_id),
            grid_id=e.payload.grid_id,
            category=e.payload.category,
            on_site=False,
            building_id=e.payload.location.building_id or "",
            duplicate_of=None,
            scheduled_at=0,
            sent_at=0,
            accepted_at=0,
            batch=False,
        )
        for e in fresh
    ]
    before = await settled(system, accepted)
    assert before.accounting["dispatched"] == len(fresh)
    # Then the whole history so far again, shuffled: every consumer has applied all of it already.
    history = await read_topic(system.bootstrap_servers, system.lifecycle_topic, timeout_s=10)
    replay = [(r.key, r.value) for r in history]
    rng.shuffle(replay)
    await _produce(system, system.lifecycle_topic, replay)
    after = await settled(system, accepted)
    assert after.recount == before.recount
    assert after.reporting == before.reporting
    assert after.facts.redelivered >= len(replay)


async def test_poison_messages_go_to_the_dead_letter_topic_and_consumers_keep_going(system: System) -> None:
    valid = ev.dump_event(_synthetic_reports(system, 1, random.Random(7))[0])
    poison = [
        (b"poison-1", b"this is not json"),
        (b"poison-2", b"{}"),
        (b"poison-3", b'{"event_type": "hazard.teleported", "schema_version": 1}'),
        (b"poison-4", valid.replace(b'"lat":', b'"lat":999, "x":')),
        (b"poison-5", b"\xff\xfe" * 50_000),
    ]
    positions = await _produce(system, system.lifecycle_topic, poison)
    # Work after the poison must still flow through every consumer.
    gen = generator(system, seed=707)
    await gen.run_rate(rate=30, duration_s=3)
    assert_all_accepted(gen)
    await settled(system, gen.result.accepted)
    dead = await read_topic(
        system.bootstrap_servers, system.dead_letter_topic, expect=len(poison) * 4, timeout_s=60
    )
    seen = {
        (h.get("dlt_consumer"), int(h.get("dlt_origin_partition", -1)), int(h.get("dlt_origin_offset", -1)))
        for h in ({k: v.decode() for k, v in (r.headers or ())} for r in dead)
    }
    for service in ("intake", "dispatch", "tracking", "reporting"):
        for partition, offset in positions:
            assert (service, partition, offset) in seen, (
                f"{service} did not dead-letter poison at {partition}/{offset}"
            )
    for service in ("intake", "dispatch", "tracking", "reporting"):
        system.wait_ready(service, timeout_s=30)


async def test_overdue_receipts_and_escalations_fire_once_per_dispatch(system: System) -> None:
    """Categories with a one-minute receipt deadline here: overdue and level-1 escalation exactly once each."""
    deadline = time.monotonic() + 150
    while True:
        facts = await assert_invariants(system)
        now = time.time()
        due = [
            dispatch_id
            for dispatch_id, (hazard, ts) in facts.dispatch_hazard.items()
            if facts.reported.get(hazard, {}).get("category") in FAST_CATEGORIES
            and now - ts > 75
            and dispatch_id not in facts.acknowledged
        ]
        missing = [d for d in due if facts.receipt_overdue[d] != 1 or facts.escalations[(d, 1)] != 1]
        if due and not missing:
            break
        assert time.monotonic() < deadline, (
            f"{len(due)} overdue dispatches, {len(missing)} without one overdue+escalation"
        )
        await asyncio.sleep(5)
    assert facts.types["hazard.receipt_overdue"] >= len(due) > 0
