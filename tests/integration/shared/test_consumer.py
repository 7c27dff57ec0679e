"""The idempotent batch consumer and its dead letters, against a real PostgreSQL and broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from services.tracking import tables
from shared.consumer import BatchContext, EventConsumer
from shared.db import create_engine, create_session_factory
from shared.events import LifecycleEvent, dump_event
from shared.kafka import BrokerSender, create_broker, subscribe_lifecycle
from shared.outbox import Outbox, OutboxRelay
from shared.settings import DatabaseSettings, KafkaSettings
from tests.support.factories import make_event
from tests.support.kafka_tools import header, produce, read_topic, wait_for

pytestmark = pytest.mark.integration

effects = sa.Table(
    "test_effects",
    sa.MetaData(),
    sa.Column("event_id", sa.Uuid, nullable=False),
    sa.Column("hazard_id", sa.Uuid, nullable=False),
    schema="tracking",
)


class Harness:
    """A consumer wired to a FastStream broker, as a service wires it, with a handler the test controls."""

    def __init__(self, db_url: str, bootstrap: str, topics: dict[str, str], group: str) -> None:
        self.engine = create_engine(DatabaseSettings(url=db_url))
        self.sessions = create_session_factory(self.engine)
        self.settings = KafkaSettings(
            bootstrap_servers=bootstrap,
            lifecycle_topic=topics["lifecycle"],
            dead_letter_topic=topics["dead_letter"],
            idempotent_producer=False,
            retry_backoff_s=0.01,
            batch_timeout_ms=50,
        )
        self.group = group
        self.fail_on: set[uuid.UUID] = set()
        self.infra_down = False
        self.calls = 0
        self.broker = None
        self.outbox = Outbox(tables.outbox, default_topic=topics["lifecycle"])

    async def handle(self, ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        self.calls += 1
        if self.infra_down:
            raise ConnectionRefusedError("database is away")
        for event in events:
            if event.event_id in self.fail_on:
                raise ValueError(f"cannot apply {event.event_id}")
            if event.TYPE == "hazard.verified":
                await ctx.reject(event, "verification before rectification")
                continue
            await ctx.session.execute(
                sa.insert(effects).values(event_id=event.event_id, hazard_id=event.hazard_id)
            )

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda c: effects.create(c, checkfirst=True))
        self.broker = create_broker(self.settings, service="test")
        sender = BrokerSender(self.broker)
        self.consumer = EventConsumer(
            service="test",
            sessions=self.sessions,
            inbox=tables.inbox,
            outbox=self.outbox,
            handler=self.handle,
            sender=sender,
            dead_letter_topic=self.settings.dead_letter_topic,
            retry_attempts=2,
            retry_backoff_s=0.01,
        )
        subscribe_lifecycle(
            self.broker, self.consumer, self.settings, group_id=self.group, description="t", retry_pause_s=0.1
        )
        self.relay = OutboxRelay(table=tables.outbox, sessions=self.sessions, sender=sender, service="test")
        await self.broker.start()

    async def stop(self) -> None:
        if self.broker is not None:
            await self.broker.stop()
        self.broker = None

    async def close(self) -> None:
        await self.stop()
        await self.engine.dispose()

    async def applied(self) -> list[uuid.UUID]:
        async with self.sessions() as session:
            return list((await session.execute(sa.select(effects.c.event_id))).scalars())


@pytest.fixture
async def harness(db_url: str, kafka, topics: dict[str, str]):
    h = Harness(db_url, kafka.bootstrap_servers, topics, group=f"g-{uuid.uuid4().hex[:8]}")
    yield h
    await h.close()


async def test_same_event_delivered_twice_has_its_effect_once(harness: Harness, kafka, topics) -> None:
    first, second = make_event("hazard.reported"), make_event("hazard.dispatched")
    await harness.start()
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [
            (str(first.hazard_id).encode(), dump_event(first)),
            (str(first.hazard_id).encode(), dump_event(first)),
            (str(second.hazard_id).encode(), dump_event(second)),
        ],
    )

    async def both_applied() -> bool:
        return len(await harness.applied()) >= 2

    await wait_for(both_applied)
    # Redelivery long after the first application is skipped too.
    await produce(kafka.bootstrap_servers, topics["lifecycle"], [(None, dump_event(first))])
    await _wait_for_consumed(harness, topics, total=4)
    assert sorted(await harness.applied()) == sorted([first.event_id, second.event_id])


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=40_000
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        total = 0
        for p in partitions:
            offset = await consumer.committed(TopicPartition(topic, p))
            total += offset or 0
        return total
    finally:
        await consumer.stop()


async def _wait_for_consumed(harness: Harness, topics, total: int) -> None:
    async def done() -> bool:
        return (
            await _committed(harness.settings.bootstrap_servers, harness.group, topics["lifecycle"]) >= total
        )

    await wait_for(done, timeout_s=30, interval_s=0.3)


async def test_handler_failure_leaves_offset_uncommitted_and_event_is_applied_after_restart(
    harness: Harness, kafka, topics
) -> None:
    event = make_event("hazard.reported")
    harness.infra_down = True
    await harness.start()
    await produce(
        kafka.bootstrap_servers, topics["lifecycle"], [(str(event.hazard_id).encode(), dump_event(event))]
    )

    async def tried_twice() -> bool:
        return harness.calls >= 2

    await wait_for(tried_twice)
    await harness.stop()
    assert await _committed(kafka.bootstrap_servers, harness.group, topics["lifecycle"]) == 0
    assert await harness.applied() == []

    harness.infra_down = False
    await harness.start()

    async def applied() -> bool:
        return await harness.applied() == [event.event_id]

    await wait_for(applied)
    await _wait_for_consumed(harness, topics, total=1)


async def test_malformed_messages_go_to_the_dead_letter_topic_and_consumption_continues(
    harness: Harness, kafka, topics
) -> None:
    good = make_event("hazard.reported")
    unknown_type = json.loads(dump_event(make_event("hazard.closed")))
    unknown_type["event_type"] = "hazard.teleported"
    await harness.start()
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [
            (b"k1", b"this is not json"),
            (b"k1", json.dumps(unknown_type).encode()),
            (b"k1", dump_event(good)),
        ],
    )

    async def applied() -> bool:
        return await harness.applied() == [good.event_id]

    await wait_for(applied)
    dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=2)
    assert next(r.value for r in dead) == b"this is not json"
    assert [header(r, "dlt_reason") for r in dead] == ["invalid", "invalid"]
    assert "Invalid JSON" in (header(dead[0], "dlt_error") or "")
    assert "hazard.teleported" in (header(dead[1], "dlt_error") or "") or "tag" in (
        header(dead[1], "dlt_error") or ""
    )
    assert header(dead[0], "dlt_origin_topic") == topics["lifecycle"]
    assert header(dead[0], "dlt_origin_offset") == "0"
    assert header(dead[0], "dlt_consumer") == "test"


async def test_poison_event_is_dead_lettered_after_bounded_retries_without_blocking_others(
    harness: Harness, kafka, topics
) -> None:
    hazard = uuid.uuid4()
    before, poison, after = (make_event("hazard.reported", hazard_id=hazard) for _ in range(3))
    harness.fail_on.add(poison.event_id)
    await harness.start()
    key = str(hazard).encode()
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(key, dump_event(before)), (key, dump_event(poison)), (key, dump_event(after))],
    )

    async def others_applied() -> bool:
        return sorted(await harness.applied()) == sorted([before.event_id, after.event_id])

    await wait_for(others_applied)
    await harness.relay.drain()
    [dead] = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=1)
    assert header(dead, "event_id") == str(poison.event_id)
    assert header(dead, "dlt_reason") == "failed"
    assert header(dead, "dlt_error") == f"ValueError: cannot apply {poison.event_id}"
    assert header(dead, "dlt_origin_offset") == "1"


async def test_event_refused_by_the_domain_is_dead_lettered_with_the_reason(
    harness: Harness, kafka, topics
) -> None:
    refused, fine = make_event("hazard.verified"), make_event("hazard.reported")
    await harness.start()
    await produce(
        kafka.bootstrap_servers, topics["lifecycle"], [(None, dump_event(refused)), (None, dump_event(fine))]
    )

    async def applied() -> bool:
        return await harness.applied() == [fine.event_id]

    await wait_for(applied)
    await harness.relay.drain()
    [dead] = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=1)
    assert json.loads(dead.value)["event_id"] == str(refused.event_id)
    assert header(dead, "dlt_reason") == "rejected"
    assert header(dead, "dlt_error") == "verification before rectification"
