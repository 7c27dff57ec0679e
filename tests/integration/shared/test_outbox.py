"""The transactional outbox against a real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from services.intake import tables
from shared.db import create_engine, create_session_factory
from shared.devstack.broker import LocalKafka
from shared.devstack.ports import free_port
from shared.kafka import BrokerSender, connected_producer, create_broker
from shared.outbox import Outbox, OutboxRelay
from shared.settings import DatabaseSettings, KafkaSettings
from tests.support.factories import make_event
from tests.support.kafka_tools import header, read_topic

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


async def test_two_relays_running_at_once_publish_each_row_exactly_once(
    db_url: str, kafka, topics: dict[str, str]
) -> None:
    engines = [create_engine(DatabaseSettings(url=db_url)) for _ in range(2)]
    factories = [create_session_factory(e) for e in engines]
    outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])
    staged: list[uuid.UUID] = []
    for _ in range(6):
        staged += await _stage(factories[0], outbox, 500)

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
        )
        for i in range(2)
    ]
    claimed = [0, 0]

    async def run(i: int) -> None:
        while True:
            sent = await relays[i].relay_once()
            claimed[i] += sent
            if not sent:
                return

    try:
        await asyncio.gather(run(0), run(1))
    finally:
        for broker in brokers:
            await broker.stop()
        for engine in engines:
            await engine.dispose()
    records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=len(staged), timeout_s=60)
    published = [header(r, "event_id") for r in records]
    assert len(published) == 3000
    assert sorted(published) == sorted(str(i) for i in staged)
    assert min(claimed) > 0, f"both relays should have worked: {claimed}"
    assert sum(claimed) == 3000


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
