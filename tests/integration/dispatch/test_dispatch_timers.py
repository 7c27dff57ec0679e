"""Durable receipt deadlines: due while stopped fires once on return; acknowledgement vs deadline races."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.dispatch import domain, service, tables, timers
from services.dispatch.repository import DispatchRepository
from shared import events as ev
from shared.auth import Principal
from shared.db import create_engine, create_session_factory
from shared.events import dump_event
from shared.outbox import Outbox
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings
from tests.integration.dispatch.dispatch_helpers import (
    AppFactory,
    reported,
    scalar,
    seed_due,
    set_deadline,
    work_on,
)
from tests.support.kafka_tools import produce, read_topic, wait_for

pytestmark = pytest.mark.integration


async def test_deadline_due_while_dispatch_is_stopped_fires_once_when_it_comes_back(
    dispatch_app: AppFactory, db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    hazard = reported("locked_rooftop_door")
    group = f"dispatch-{uuid.uuid4().hex[:8]}"
    async with dispatch_app(group_id=group) as (app, _):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(hazard.hazard_id).encode(), dump_event(hazard))],
        )

        async def dispatched() -> bool:
            return int(await scalar(app, "select count(*) from dispatch.dispatches")) == 1

        await wait_for(dispatched, timeout_s=60)
    # The service is stopped. Bring the deadline (and the level-1 reminder due with it) to just ahead.
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        async with engine.begin() as conn:
            ids = list((await conn.execute(sa.text("select dispatch_id from dispatch.dispatches"))).scalars())
            due = (await conn.execute(sa.text("select now() + interval '300 milliseconds'"))).scalar_one()
            await set_deadline(conn, ids, due)
        await asyncio.sleep(1.0)
        async with engine.connect() as conn:
            fired_while_stopped = (
                await conn.execute(sa.text("select count(*) from dispatch.timers"))
            ).scalar()
            state = (
                await conn.execute(
                    sa.text("select overdue_at, escalation_level, next_due_at from dispatch.dispatches")
                )
            ).one()
        # Nothing fired while stopped: no step recorded, the dispatch still waits on its deadline.
        assert fired_while_stopped == 0
        assert tuple(state) == (None, 0, due)
    finally:
        await engine.dispose()

    # Back, as two replicas at once: the overdue and the reminder each fire exactly once.
    async with dispatch_app(group_id=group) as (first, _), dispatch_app(group_id=group) as (second, _):

        async def fired() -> bool:
            return (
                int(await scalar(first, "select count(*) from dispatch.timers where fired_at is not null"))
                == 2
            )

        await wait_for(fired, timeout_s=30)
        await asyncio.sleep(1.0)  # give a second firing every chance to happen
        assert await scalar(second, "select count(*) from dispatch.timers where fired_at is not null") == 2
        assert await scalar(first, "select escalation_level from dispatch.dispatches") == 1
        records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=4, timeout_s=30)
    # Publishing is at least once: a relay stopped between the broker's confirmation and its commit
    # sends the same event (same id) again, which consumers skip. What must happen once is each event.
    published = list({e.event_id: e for e in (ev.parse_event(r.value) for r in records)}.values())
    assert Counter(e.TYPE for e in published) == Counter(
        {"hazard.reported": 1, "hazard.dispatched": 1, "hazard.receipt_overdue": 1, "hazard.escalated": 1}
    )
    (escalated,) = [e for e in published if isinstance(e, ev.HazardEscalated)]
    assert (escalated.payload.level, escalated.payload.target) == (1, "department")


async def _published_and_unfired_due(sessions: Any) -> tuple[list[ev.AnyEvent], int]:
    """The events in the outbox, and how many dispatches have a step due that has not fired."""
    async with sessions() as session:
        published = [
            ev.parse_event(r[0]) for r in await session.execute(sa.text("select value from dispatch.outbox"))
        ]
        unfired_due = (
            await session.execute(
                sa.text("select count(*) from dispatch.dispatches where next_due_at <= now()")
            )
        ).scalar_one()
    return published, int(unfired_due)


async def test_acknowledgement_racing_the_deadline_has_exactly_one_outcome_a_thousand_times(
    db_url: str,
) -> None:
    count, per_round = 1000, 50
    engine = create_engine(DatabaseSettings(url=db_url, pool_size=30, max_overflow=30))
    sessions = create_session_factory(engine)
    outbox = Outbox(tables.outbox, default_topic="race")
    reference = load_reference_data()
    work = work_on(sessions, outbox)
    fire = Principal("dept-fire", "department", None, "fire")
    # Due a day ahead for now; each round brings its share's deadline to just ahead.
    ids = await seed_due(sessions, reference, count, due_at=datetime.now(UTC) + timedelta(days=1))

    loops = [work_on(sessions, outbox) for _ in range(2)]
    rng = random.Random(4)

    async def acknowledge_after(dispatch_id: uuid.UUID, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with work() as uow:
            await service.acknowledge_dispatch(uow, dispatch_id, principal=fire)

    async def fire_until(loop: Any, until: float) -> None:
        while time.monotonic() < until:
            await timers.fire_due(loop, batch_size=per_round)
            await asyncio.sleep(0.002)

    for start in range(0, count, per_round):
        batch = ids[start : start + per_round]
        # The deadline comes due 50 ms from now on the database's clock; the acknowledgements arrive
        # over the 100 ms around it while both timer loops pass again and again.
        async with sessions() as session, session.begin():
            deadline = (
                await session.execute(sa.text("select clock_timestamp() + interval '50 milliseconds'"))
            ).scalar_one()
            await set_deadline(session, batch, deadline)
        until = time.monotonic() + 0.15
        racers = [acknowledge_after(d, rng.uniform(0, 0.1)) for d in batch]
        racers += [fire_until(loop, until) for loop in loops]
        rng.shuffle(racers)
        await asyncio.gather(*racers)
    # Timers skipped while an acknowledgement held their dispatch are now found acknowledged.
    while await timers.fire_due(loops[0], batch_size=per_round):
        pass

    async with sessions() as session:
        rows = (await session.execute(sa.select(tables.dispatches))).all()
    published, unfired_due = await _published_and_unfired_due(sessions)
    await engine.dispose()

    assert unfired_due == 0
    by_dispatch: dict[uuid.UUID, Counter[str]] = {d: Counter() for d in ids}
    acknowledged_on_time: dict[uuid.UUID, bool] = {}
    for event in published:
        payload: Any = event.payload
        by_dispatch[payload.dispatch_id][event.TYPE] += 1
        if isinstance(event, ev.HazardAcknowledged):
            acknowledged_on_time[payload.dispatch_id] = payload.on_time
    outcomes: Counter[str] = Counter()
    for row in rows:
        seen = by_dispatch[row.dispatch_id]
        assert row.status == "acknowledged"
        assert seen["hazard.acknowledged"] == 1, seen
        assert acknowledged_on_time[row.dispatch_id] is row.on_time
        if row.on_time:
            # On time: the deadline never fired and nothing escalated.
            assert seen == Counter({"hazard.acknowledged": 1}), seen
            assert row.overdue_at is None
            outcomes["on_time"] += 1
        else:
            # The timer won: overdue fired once (the level-1 reminder, due at the same moment, at most
            # once: the acknowledgement may land between the two), and the acknowledgement is late.
            assert seen["hazard.receipt_overdue"] == 1, seen
            assert seen["hazard.escalated"] <= 1, seen
            assert seen["hazard.acknowledged"] == 1, seen
            assert row.overdue_at is not None
            outcomes["late"] += 1
    assert sum(outcomes.values()) == count
    print(f"\nrace outcomes: {dict(outcomes)}")
    # Both sides won some races: the race was real.
    assert outcomes["on_time"] > 0
    assert outcomes["late"] > 0


async def test_two_timer_passes_over_a_backlog_share_it_and_nothing_fires_twice(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A backlog of 300 overdue dispatches, passes of 100 timers. The first pass holds its claim
    # (its transaction open) while the second runs: the second must take other dispatches, not
    # find the same oldest 100 locked and give up.
    engine = create_engine(DatabaseSettings(url=db_url, pool_size=10))
    sessions = create_session_factory(engine)
    outbox = Outbox(tables.outbox, default_topic="backlog")
    reference = load_reference_data()
    async with sessions() as session:
        past = (await session.execute(sa.text("select now() - interval '1 hour'"))).scalar_one()
    ids = await seed_due(sessions, reference, 300, due_at=past)
    work = work_on(sessions, outbox)

    claim = DispatchRepository.claim_due_timers
    first_holds = asyncio.Event()
    second_done = asyncio.Event()
    claimed_by: dict[int, set[uuid.UUID]] = {0: set(), 1: set()}
    callers: list[int] = []

    async def claim_and_hold(repo: DispatchRepository, **kwargs: Any) -> list[domain.DueDispatch]:
        me = len(callers)
        callers.append(me)
        found = await claim(repo, **kwargs)
        if me < 2:
            claimed_by[me] = {c.dispatch_id for c in found}
        if me == 0:
            first_holds.set()
            await second_done.wait()
        return found

    monkeypatch.setattr(DispatchRepository, "claim_due_timers", claim_and_hold)

    async def second() -> int:
        await first_holds.wait()
        try:
            return await timers.fire_due(work, batch_size=100)
        finally:
            second_done.set()

    fired = await asyncio.wait_for(
        asyncio.gather(timers.fire_due(work, batch_size=100), second()), timeout=60
    )
    monkeypatch.setattr(DispatchRepository, "claim_due_timers", claim)
    # Both passes fired a full share of the backlog, and not the same dispatches.
    assert fired[0] > 0, fired
    assert fired[1] > 0, fired
    assert len(claimed_by[0]) == 100
    assert len(claimed_by[1]) == 100
    assert not claimed_by[0] & claimed_by[1]
    while await timers.fire_due(work, batch_size=100):
        pass
    published, unfired_due = await _published_and_unfired_due(sessions)
    await engine.dispose()
    assert unfired_due == 0
    # Every dispatch: one overdue and one level-1 escalation, each exactly once.
    seen = Counter((e.TYPE, e.payload.dispatch_id) for e in published)  # type: ignore[attr-defined]
    assert set(seen.values()) == {1}
    assert seen.keys() == {(kind, d) for d in ids for kind in ("hazard.receipt_overdue", "hazard.escalated")}
