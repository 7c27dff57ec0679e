"""The outbox relay publishing by snapshot (#20): nothing committed late is skipped, each hazard keeps its
order, a relay killed mid-batch republishes, prune keeps what is unpublished, replay keeps causal order."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.dispatch import tables as dispatch_tables
from services.intake import tables
from shared.db import create_engine, create_session_factory
from shared.outbox import Outbox, OutboxRelay, OutgoingMessage, RelayStateAheadError, replay_published
from shared.settings import DatabaseSettings
from tests.support.factories import make_event

pytestmark = pytest.mark.integration


@pytest.fixture
async def sessions(db_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(DatabaseSettings(url=db_url, pool_size=12, max_overflow=4))
    yield create_session_factory(engine)
    await engine.dispose()


class _Sender:
    """Records every message it is given, in order; can be told to hang on one batch (a relay killed there)."""

    def __init__(self, *, hang_on_batch: int | None = None) -> None:
        self.sent: list[str] = []
        self.batches = 0
        self.hang_on_batch = hang_on_batch
        self.hanging = asyncio.Event()

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        self.batches += 1
        self.sent.extend(m.headers["event_id"] for m in messages)  # the broker has them
        if self.batches == self.hang_on_batch:
            self.hanging.set()
            await asyncio.Event().wait()  # never confirmed: the relay is killed here


async def _stage(sessions, outbox: Outbox, events) -> list[str]:  # type: ignore[no-untyped-def]
    for event in events:
        async with sessions() as session, session.begin():
            await outbox.add(session, event)
    return [str(e.event_id) for e in events]


async def _pending(sessions, outbox: Outbox) -> int:  # type: ignore[no-untyped-def]
    async with sessions() as session:
        return await outbox.pending(session)


async def test_a_row_committed_late_with_a_smaller_id_than_rows_already_published_is_published(
    sessions,
) -> None:
    sender = _Sender()
    outbox = Outbox(tables.outbox, default_topic="life")
    relay = OutboxRelay(table=tables.outbox, sessions=sessions, sender=sender, service="t", batch_size=2)
    early = make_event("hazard.reported")
    async with sessions() as slow, slow.begin():
        await outbox.add(slow, early)  # the smallest id, committed last
        later = await _stage(sessions, outbox, [make_event("hazard.reported") for _ in range(4)])
        # A full batch: the target (which does not see ``early``) is kept, with after_id past it.
        assert await relay.relay_once() == 2
        assert sender.sent == later[:2]
        await slow.commit()
    # ``early`` is committed now, and its id is below after_id, but the target in progress does
    # not see it: the rest of the target goes first, then a new target publishes it.
    assert await relay.relay_once() == 2
    assert await relay.relay_once() == 0, "the target is done: published_through moves to it"
    assert await _pending(sessions, outbox) == 1
    assert await relay.relay_once() == 1
    assert sender.sent == [*later, str(early.event_id)]
    assert await _pending(sessions, outbox) == 0
    await relay.drain()
    assert sender.sent == [*later, str(early.event_id)], "each row once"


async def test_a_hazards_events_keep_their_order_under_concurrent_writers(sessions) -> None:
    sender = _Sender()
    outbox = Outbox(tables.outbox, default_topic="life")
    relay = OutboxRelay(
        table=tables.outbox, sessions=sessions, sender=sender, service="t", batch_size=7, poll_interval_s=0.01
    )
    hazards = [uuid.uuid4() for _ in range(4)]
    committed: dict[uuid.UUID, list[str]] = defaultdict(list)
    rng = random.Random(20)

    async def writer(n: int) -> None:
        for i in range(15):
            hazard = hazards[(n + i) % len(hazards)]
            event = make_event("hazard.reported", hazard_id=hazard)
            async with sessions() as session, session.begin():
                # The hazard's row lock every writer takes, held until commit: the order in which
                # writers get it is the hazard's commit order.
                await session.execute(
                    sa.text("select pg_advisory_xact_lock(hashtext(:h))"), {"h": str(hazard)}
                )
                committed[hazard].append(str(event.event_id))
                await asyncio.sleep(rng.random() * 0.004)  # other transactions take ids meanwhile
                await outbox.add(session, event)
                await asyncio.sleep(rng.random() * 0.004)

    task = asyncio.create_task(relay.run())
    try:
        await asyncio.gather(*(writer(n) for n in range(8)))
        await relay.drain()
    finally:
        relay.stop()
        await asyncio.wait_for(task, 10)
    assert len(sender.sent) == len(set(sender.sent)) == 120
    for hazard in hazards:
        assert [i for i in sender.sent if i in set(committed[hazard])] == committed[hazard]


async def test_a_relay_killed_mid_batch_republishes_that_batch_and_skips_nothing(sessions) -> None:
    outbox = Outbox(tables.outbox, default_topic="life")
    hazard = uuid.uuid4()
    staged = await _stage(
        sessions, outbox, [make_event("hazard.reported", hazard_id=hazard) for _ in range(8)]
    )
    killed = _Sender(hang_on_batch=2)
    relay = OutboxRelay(table=tables.outbox, sessions=sessions, sender=killed, service="t", batch_size=3)
    task = asyncio.create_task(relay.drain())
    await asyncio.wait_for(killed.hanging.wait(), 5)
    task.cancel()  # the process dies with the second batch on the broker, unconfirmed
    with pytest.raises(asyncio.CancelledError):
        await task
    assert killed.sent == staged[:6]
    assert await _pending(sessions, outbox) == 5, "the first batch's state was committed, not the second's"

    successor = _Sender()
    await OutboxRelay(
        table=tables.outbox, sessions=sessions, sender=successor, service="t", batch_size=3
    ).drain()
    assert successor.sent == staged[3:], "the killed batch again, then the rest: at least once, in order"
    assert await _pending(sessions, outbox) == 0


async def test_prune_never_deletes_a_row_that_is_not_published(sessions) -> None:
    sender = _Sender()
    outbox = Outbox(tables.outbox, default_topic="life")
    staged = await _stage(sessions, outbox, [make_event("hazard.reported") for _ in range(3)])
    async with sessions() as session, session.begin():
        await session.execute(sa.update(tables.outbox).values(created_at=sa.func.now() - timedelta(days=8)))
    relay = OutboxRelay(
        table=tables.outbox, sessions=sessions, sender=sender, service="t", batch_size=2, prune_batch_size=10
    )
    assert await relay.prune() == 0, "past the retention, but never published"
    assert await relay.relay_once() == 2  # a target in progress: two rows published, one not
    assert await relay.prune() == 0, "only rows visible in published_through go"
    await relay.drain()
    assert sender.sent == staged
    assert await relay.prune() == 3
    assert await _pending(sessions, outbox) == 0


async def test_a_replay_keeps_a_hazards_order_across_services_when_ids_and_start_times_cross(
    sessions,
) -> None:
    sender = _Sender()
    intake, dispatch = (
        Outbox(tables.outbox, default_topic="life"),
        Outbox(dispatch_tables.outbox, default_topic="life"),
    )
    relays = [
        OutboxRelay(table=t, sessions=sessions, sender=sender, service=s)
        for t, s in ((tables.outbox, "i"), (dispatch_tables.outbox, "d"))
    ]
    hazard = uuid.uuid4()
    async with sessions() as session:
        since = (await session.execute(sa.select(sa.func.now()))).scalar_one()
    first, second = (
        make_event("hazard.reported", hazard_id=hazard),
        make_event("hazard.duplicate_linked", hazard_id=hazard),
    )
    async with sessions() as slow, slow.begin():
        await slow.execute(sa.select(1))  # started (its created_at) before ``first``'s transaction
        await asyncio.sleep(0.01)
        async with sessions() as session, session.begin():
            await intake.add(session, first)
        await intake.add(slow, second)  # a larger id, an earlier created_at
    for relay in relays:
        await relay.drain()
    reaction = make_event("hazard.dispatched", hazard_id=hazard)  # written after both were published
    async with sessions() as session, session.begin():
        await dispatch.add(session, reaction)
    for relay in relays:
        await relay.drain()
    order = [str(first.event_id), str(second.event_id), str(reaction.event_id)]
    assert sender.sent == order
    sender.sent.clear()

    sent = await replay_published(
        sessions, sender, [dispatch_tables.outbox, tables.outbox], since, batch_size=1
    )

    assert sent == 3
    assert sender.sent == order, "by id within a service, by created_at across them"


async def test_a_relay_state_ahead_of_the_databases_transaction_ids_stops_the_relay_rather_than_skip(
    sessions,
) -> None:
    sender = _Sender()
    outbox = Outbox(tables.outbox, default_topic="life")
    staged = await _stage(sessions, outbox, [make_event("hazard.reported")])
    async with sessions() as session, session.begin():  # as after a logical restore into a new cluster
        await session.execute(
            sa.text("update intake.outbox_relay set published_through = '900000000:900000000:'")
        )
    relay = OutboxRelay(table=tables.outbox, sessions=sessions, sender=sender, service="t")
    with pytest.raises(RelayStateAheadError):
        await relay.relay_once()
    assert sender.sent == []
    async with sessions() as session, session.begin():  # the reset docs/OPERATIONS.md describes
        await session.execute(sa.text("update intake.outbox set xid = pg_current_xact_id()"))
        await session.execute(sa.text("update intake.outbox_relay set published_through = '4:4:'"))
    await relay.drain()
    assert sender.sent == staged
