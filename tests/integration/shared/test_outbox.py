"""The transactional outbox against a real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from services.dispatch import tables as dispatch_tables
from services.intake import tables
from shared.db import create_engine, create_session_factory
from shared.devstack.broker import LocalKafka
from shared.devstack.ports import free_port
from shared.kafka import BrokerSender, connected_producer, create_broker
from shared.outbox import Outbox, OutboxRelay, replay_published
from shared.settings import DatabaseSettings, KafkaSettings
from tests.support.factories import make_event
from tests.support.kafka_tools import header, read_topic, wait_for

pytestmark = pytest.mark.integration


def _kafka_settings(bootstrap: str, topics: dict[str, str]) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap,
        lifecycle_topic=topics["lifecycle"],
        dead_letter_topic=topics["dead_letter"],
        idempotent_producer=False,
    )


@pytest.fixture
async def sessions(db_url: str):
    engine = create_engine(DatabaseSettings(url=db_url))
    yield create_session_factory(engine)
    await engine.dispose()


async def _stage(sessions, outbox: Outbox, n: int) -> list[uuid.UUID]:
    events = [make_event("hazard.reported") for _ in range(n)]
    async with sessions() as session, session.begin():
        await outbox.add(session, *events)
    return [e.event_id for e in events]


async def test_row_committed_while_broker_is_down_is_published_when_it_returns(
    sessions, topics: dict[str, str], tmp_path
) -> None:
    port = free_port()
    late_broker = LocalKafka(port=port, log_path=tmp_path / "tansu.log")
    settings = _kafka_settings(late_broker.bootstrap_servers, topics)
    outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])
    staged = await _stage(sessions, outbox, 3)

    broker = create_broker(settings, service="test")
    with pytest.raises(Exception, match="Unable to bootstrap"):
        await broker.start()
    assert connected_producer(broker) is None  # the sender goes through broker.publish, which fails
    relay = OutboxRelay(
        table=tables.outbox,
        sessions=sessions,
        sender=BrokerSender(broker),
        service="test",
        error_backoff_s=0.2,
    )
    with pytest.raises(Exception):  # noqa: B017 - any failure to publish must keep the rows
        await relay.relay_once()
    async with sessions() as session:
        assert await outbox.pending(session) == 3

    late_broker.start()
    try:
        await late_broker.create_topics({topics["lifecycle"]: 3, topics["dead_letter"]: 1})
        await broker.start()
        # Connected, the sender publishes on aiokafka itself (a FastStream upgrade that moves the
        # producer would silently slow every relay down: this is where it shows).
        assert connected_producer(broker) is not None
        await relay.drain()
        records = await read_topic(late_broker.bootstrap_servers, topics["lifecycle"], expect=3)
        assert sorted(header(r, "event_id") for r in records) == sorted(str(i) for i in staged)
        async with sessions() as session:
            assert await outbox.pending(session) == 0
    finally:
        await broker.stop()
        late_broker.stop()


async def test_rolled_back_transaction_publishes_nothing(sessions, kafka, topics: dict[str, str]) -> None:
    outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])
    rolled_back = make_event("hazard.reported")
    async with sessions() as session, session.begin():
        await outbox.add(session, rolled_back)
        await session.rollback()
    committed = await _stage(sessions, outbox, 1)

    broker = create_broker(_kafka_settings(kafka.bootstrap_servers, topics), service="test")
    await broker.start()
    try:
        relay = OutboxRelay(
            table=tables.outbox, sessions=sessions, sender=BrokerSender(broker), service="test"
        )
        await relay.drain()
    finally:
        await broker.stop()
    records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=1)
    assert [header(r, "event_id") for r in records] == [str(committed[0])]


async def test_two_relays_running_at_once_publish_each_row_exactly_once_and_in_order_per_hazard(
    db_url: str, kafka, topics: dict[str, str]
) -> None:
    engines = [create_engine(DatabaseSettings(url=db_url)) for _ in range(2)]
    factories = [create_session_factory(e) for e in engines]
    outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])
    hazards = [uuid.uuid4() for _ in range(50)]
    staged: list[uuid.UUID] = []
    for round_ in range(6):
        events = [make_event("hazard.reported", hazard_id=hazards[(round_ + i) % 50]) for i in range(500)]
        async with factories[round_ % 2]() as session, session.begin():
            await outbox.add(session, *events)
        staged += [e.event_id for e in events]
    hazard_of = {}
    for round_ in range(6):
        for i in range(500):
            hazard_of[str(staged[round_ * 500 + i])] = str(hazards[(round_ + i) % 50])

    brokers = [
        create_broker(_kafka_settings(kafka.bootstrap_servers, topics), service=f"r{i}") for i in range(2)
    ]
    for broker in brokers:
        await broker.start()
    relays = [
        OutboxRelay(
            table=tables.outbox,
            sessions=factories[i],
            sender=BrokerSender(brokers[i]),
            service=f"r{i}",
            batch_size=100,
            poll_interval_s=0.01,
        )
        for i in range(2)
    ]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:

        async def all_published() -> bool:
            async with factories[0]() as session:
                return await outbox.pending(session) == 0

        await wait_for(all_published, timeout_s=60)
    finally:
        for relay in relays:
            relay.stop()
        await asyncio.gather(*tasks)
        for broker in brokers:
            await broker.stop()
        for engine in engines:
            await engine.dispose()
    records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=len(staged), timeout_s=60)
    published = [header(r, "event_id") for r in records]
    assert len(published) == 3000
    assert sorted(published) == sorted(str(i) for i in staged)
    for hazard in hazards:
        on_topic = [i for i in published if hazard_of[i] == str(hazard)]  # one partition: offset order
        assert on_topic == [str(i) for i in staged if hazard_of[str(i)] == str(hazard)]


async def test_messages_are_keyed_by_hazard_id(sessions, kafka, topics: dict[str, str]) -> None:
    outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])
    event = make_event("hazard.reported")
    async with sessions() as session, session.begin():
        await outbox.add(session, event)
        assert (
            await session.execute(sa.select(sa.func.count()).select_from(tables.outbox))
        ).scalar_one() == 1
    broker = create_broker(_kafka_settings(kafka.bootstrap_servers, topics), service="test")
    await broker.start()
    try:
        await OutboxRelay(
            table=tables.outbox, sessions=sessions, sender=BrokerSender(broker), service="t"
        ).drain()
    finally:
        await broker.stop()
    [record] = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=1)
    assert record.key == str(event.hazard_id).encode()
    assert header(record, "event_type") == "hazard.reported"


class _RecordingSender:
    """Confirms every message at once and notes when each batch arrived."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[str]]] = []
        self.sent = asyncio.Event()

    async def send_many(self, messages) -> None:  # type: ignore[no-untyped-def]
        self.batches.append((asyncio.get_running_loop().time(), [m.headers["event_id"] for m in messages]))
        self.sent.set()


async def test_a_commit_wakes_the_relay_long_before_its_poll_and_a_rollback_does_not(sessions) -> None:
    sender = _RecordingSender()
    outbox = Outbox(tables.outbox, default_topic="life")
    relay = OutboxRelay(
        table=tables.outbox, sessions=sessions, sender=sender, service="test", poll_interval_s=60
    )
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.3)  # the first (empty) poll is done: the relay now waits up to 60 s
        async with sessions() as session, session.begin():
            await outbox.add(session, make_event("hazard.reported"))
            await session.rollback()
        await asyncio.sleep(0.3)
        assert sender.batches == [], "nothing was committed, so nothing is sent"

        loop = asyncio.get_running_loop()
        committed_at = loop.time()
        staged = await _stage(sessions, outbox, 3)
        await asyncio.wait_for(sender.sent.wait(), 5)
        sent_at, ids = sender.batches[0]
        assert ids == [str(i) for i in staged], "one batch, in commit order"
        assert sent_at - committed_at < 2.0, "woken by the commit, not by the 60 s poll"
    finally:
        relay.stop()
        await asyncio.wait_for(task, 5)
    async with sessions() as session:
        assert await outbox.pending(session) == 0


async def _retained(sessions) -> list[str]:  # type: ignore[no-untyped-def]
    """The event ids of the rows in intake's outbox, in id order."""
    async with sessions() as session:
        rows = await session.execute(sa.select(tables.outbox.c.event_id).order_by(tables.outbox.c.id))
        return [str(r.event_id) for r in rows]


async def _written_days_ago(sessions, event_ids, days: int) -> None:  # type: ignore[no-untyped-def]
    async with sessions() as session, session.begin():
        await session.execute(
            sa.update(tables.outbox)
            .where(tables.outbox.c.event_id.in_(event_ids))
            .values(created_at=sa.func.now() - timedelta(days=days))
        )


async def test_published_rows_are_retained_and_pruned_in_batches_after_the_retention(sessions) -> None:
    sender = _RecordingSender()
    outbox = Outbox(tables.outbox, default_topic="life")
    staged = await _stage(sessions, outbox, 5)
    relay = OutboxRelay(
        table=tables.outbox,
        sessions=sessions,
        sender=sender,
        service="test",
        retention=timedelta(days=7),
        prune_batch_size=2,
    )
    await relay.drain()
    assert await _retained(sessions) == [str(i) for i in staged], "published rows stay"
    async with sessions() as session:
        assert await outbox.pending(session) == 0
    assert await relay.prune() == 0, "nothing is older than the retention yet"

    # Three rows were written 8 days ago, one 6 days ago.
    await _written_days_ago(sessions, staged[:3], 8)
    await _written_days_ago(sessions, staged[3:4], 6)
    assert await relay.prune_once() == 2, "one bounded batch"
    assert await relay.prune() == 1
    assert await _retained(sessions) == [str(i) for i in staged[3:]]


async def test_replay_from_t_publishes_every_row_published_since_t_again_in_publish_order(sessions) -> None:
    sender = _RecordingSender()
    outbox = Outbox(tables.outbox, default_topic="life")
    relay = OutboxRelay(table=tables.outbox, sessions=sessions, sender=sender, service="test", batch_size=2)
    hazard = uuid.uuid4()
    before = [make_event("hazard.reported", hazard_id=hazard)]
    async with sessions() as session, session.begin():
        await outbox.add(session, *before)
    await relay.drain()
    async with sessions() as session:
        t = (await session.execute(sa.select(sa.func.clock_timestamp()))).scalar_one()
    after = [make_event(kind, hazard_id=hazard) for kind in ("hazard.dispatched", "hazard.acknowledged")]
    others = await _stage(sessions, outbox, 3)
    async with sessions() as session, session.begin():
        await outbox.add(session, *after)
    await relay.drain()
    first_time = [i for _, ids in sender.batches for i in ids]
    sender.batches.clear()

    replayed = await relay.replay(t)

    again = [i for _, ids in sender.batches for i in ids]
    assert replayed == 5
    assert again == first_time[1:], "everything published since T, in the order it was first published"
    assert again == [str(i) for i in others] + [str(e.event_id) for e in after]
    async with sessions() as session:
        assert await outbox.pending(session) == 0, "a replay leaves the rows published"


class _BlockingSender:
    """Records what it sends into a shared list; the first batch waits until released."""

    def __init__(self, sent: list[str], *, block: bool) -> None:
        self.sent = sent
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        if not block:
            self.release.set()

    async def send_many(self, messages) -> None:  # type: ignore[no-untyped-def]
        self.entered.set()
        await self.release.wait()
        self.sent.extend(m.headers["event_id"] for m in messages)


async def test_two_relays_publish_one_hazards_events_in_commit_order(db_url: str) -> None:
    engines = [create_engine(DatabaseSettings(url=db_url)) for _ in range(2)]
    factories = [create_session_factory(e) for e in engines]
    outbox = Outbox(tables.outbox, default_topic="life")
    hazard = uuid.uuid4()
    events = [make_event(k, hazard_id=hazard) for k in ("hazard.reported", "hazard.dispatched")]
    for event in events:  # two transactions, the first commits first
        async with factories[0]() as session, session.begin():
            await outbox.add(session, event)
    sent: list[str] = []
    slow, fast = _BlockingSender(sent, block=True), _BlockingSender(sent, block=False)
    relay_a = OutboxRelay(table=tables.outbox, sessions=factories[0], sender=slow, service="a", batch_size=1)
    relay_b = OutboxRelay(table=tables.outbox, sessions=factories[1], sender=fast, service="b", batch_size=1)
    try:
        a = asyncio.create_task(relay_a.relay_once())
        await asyncio.wait_for(slow.entered.wait(), 5)  # A holds the hazard's first event, unsent
        b_sent = await asyncio.wait_for(relay_b.relay_once(), 5)
        slow.release.set()
        assert await a == 1
        await relay_b.drain()
    finally:
        for engine in engines:
            await engine.dispose()
    assert sent == [str(e.event_id) for e in events], f"replica B published first: {b_sent} row(s)"


async def test_a_row_committed_after_a_larger_id_is_published_not_skipped(sessions) -> None:
    sender = _RecordingSender()
    outbox = Outbox(tables.outbox, default_topic="life")
    relay = OutboxRelay(table=tables.outbox, sessions=sessions, sender=sender, service="test")
    async with sessions() as session:
        t = (await session.execute(sa.select(sa.func.clock_timestamp()))).scalar_one()
    early, late = make_event("hazard.reported"), make_event("hazard.reported")
    async with sessions() as slow_tx, slow_tx.begin():
        await outbox.add(slow_tx, early)  # takes the smaller id, commits last
        async with sessions() as session, session.begin():
            await outbox.add(session, late)
        assert await relay.relay_once() == 1
    assert await relay.relay_once() == 1, "the smaller id is published once it commits"
    assert await _retained(sessions) == [str(early.event_id), str(late.event_id)], "early has the smaller id"
    published = [i for _, batch in sender.batches for i in batch]
    assert published == [str(late.event_id), str(early.event_id)], "in commit order"
    sender.batches.clear()
    await relay.replay(t)
    # Two hazards' events: a replay goes by id (commit order within each hazard, see
    # test_a_replay_keeps_a_hazards_order_across_services_when_ids_and_start_times_cross).
    assert [i for _, batch in sender.batches for i in batch] == [str(early.event_id), str(late.event_id)]


async def test_a_replay_of_several_services_merges_their_outboxes_in_publish_order(sessions) -> None:
    sender = _RecordingSender()
    intake_outbox = Outbox(tables.outbox, default_topic="life")
    dispatch_outbox = Outbox(dispatch_tables.outbox, default_topic="life")
    relays = {
        "intake": OutboxRelay(table=tables.outbox, sessions=sessions, sender=sender, service="i"),
        "dispatch": OutboxRelay(table=dispatch_tables.outbox, sessions=sessions, sender=sender, service="d"),
    }
    async with sessions() as session:
        t = (await session.execute(sa.select(sa.func.clock_timestamp()))).scalar_one()
    hazard = uuid.uuid4()
    steps = [
        ("intake", intake_outbox, "hazard.reported"),
        ("dispatch", dispatch_outbox, "hazard.dispatched"),
        ("dispatch", dispatch_outbox, "hazard.acknowledged"),
        ("intake", intake_outbox, "hazard.reported"),
        ("dispatch", dispatch_outbox, "hazard.rectification_ordered"),
    ]
    for service, outbox, kind in steps:
        async with sessions() as session, session.begin():
            await outbox.add(session, make_event(kind, hazard_id=hazard))
        await relays[service].drain()
    first_time = [i for _, ids in sender.batches for i in ids]
    sender.batches.clear()

    sent = await replay_published(sessions, sender, [dispatch_tables.outbox, tables.outbox], t, batch_size=2)

    assert sent == 5
    assert [i for _, ids in sender.batches for i in ids] == first_time


async def test_the_replay_command_sends_retained_rows_to_the_broker_again(
    sessions, db_url: str, kafka, topics: dict[str, str]
) -> None:
    outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])
    staged = await _stage(sessions, outbox, 4)
    await OutboxRelay(table=tables.outbox, sessions=sessions, sender=_RecordingSender(), service="t").drain()
    command = [
        sys.executable,
        "-m",
        "shared.outbox_replay",
        "--database-url",
        db_url,
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--since",
        "2000-01-01T00:00:00Z",
        "--no-idempotent-producer",
        "intake",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()
    assert "4 events sent again" in output.decode()
    records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=4)
    assert sorted(header(r, "event_id") for r in records) == sorted(str(i) for i in staged)


async def test_the_running_relay_prunes_one_bounded_batch_per_round(sessions) -> None:
    outbox = Outbox(tables.outbox, default_topic="life")
    staged = await _stage(sessions, outbox, 5)
    relay = OutboxRelay(
        table=tables.outbox,
        sessions=sessions,
        sender=_RecordingSender(),
        service="test",
        poll_interval_s=0.05,
        prune_batch_size=2,
        prune_interval_s=3600,
    )
    await relay.drain()
    await _written_days_ago(sessions, staged[:4], 8)
    task = asyncio.create_task(relay.run())
    try:

        async def pruned() -> bool:
            return await _retained(sessions) == [str(staged[4])]

        await wait_for(pruned, timeout_s=10)
    finally:
        relay.stop()
        await asyncio.wait_for(task, 5)
