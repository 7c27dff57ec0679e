"""The idempotent batch consumer and its dead letters, against a real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from services.dispatch import tables as dispatch_tables
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

ROOT = Path(__file__).resolve().parents[3]


def _effects(schema: str) -> sa.Table:
    return sa.Table(
        "test_effects",
        sa.MetaData(),
        sa.Column("event_id", sa.Uuid, nullable=False),
        sa.Column("hazard_id", sa.Uuid, nullable=False),
        schema=schema,
    )


effects = _effects("tracking")
# A second consuming "service" of the same topic, with its own inbox, outbox and effects.
SCHEMAS = {
    "tracking": (tables.inbox, tables.outbox, effects),
    "dispatch": (dispatch_tables.inbox, dispatch_tables.outbox, _effects("dispatch")),
}


class Harness:
    """A consumer wired to a FastStream broker, as a service wires it, with a handler the test controls."""

    def __init__(
        self,
        db_url: str,
        bootstrap: str,
        topics: dict[str, str],
        group: str,
        *,
        service: str = "test",
        schema: str = "tracking",
    ) -> None:
        self.service = service
        self.inbox, self.outbox_table, self.effects = SCHEMAS[schema]
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
        self.reject_verified = True
        self.calls = 0
        self.seen: list[uuid.UUID] = []
        self.broker = None
        self.outbox = Outbox(self.outbox_table, default_topic=topics["lifecycle"])

    async def handle(self, ctx: BatchContext, events: Sequence[LifecycleEvent]) -> None:
        self.calls += 1
        if self.infra_down:
            raise ConnectionRefusedError("database is away")
        self.seen.extend(e.event_id for e in events)
        for event in events:
            if event.event_id in self.fail_on:
                raise ValueError(f"cannot apply {event.event_id}")
            if event.TYPE == "hazard.verified" and self.reject_verified:
                await ctx.reject(event, "verification before rectification")
                continue
            await ctx.session.execute(
                sa.insert(self.effects).values(event_id=event.event_id, hazard_id=event.hazard_id)
            )

    async def start(self) -> None:
        async with self.engine.begin() as conn:
            await conn.run_sync(lambda c: self.effects.create(c, checkfirst=True))
        self.broker = create_broker(self.settings, service=self.service)
        sender = BrokerSender(self.broker)
        self.consumer = EventConsumer(
            service=self.service,
            sessions=self.sessions,
            inbox=self.inbox,
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
        self.relay = OutboxRelay(
            table=self.outbox_table, sessions=self.sessions, sender=sender, service=self.service
        )
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
            return list((await session.execute(sa.select(self.effects.c.event_id))).scalars())

    async def in_inbox(self) -> set[uuid.UUID]:
        async with self.sessions() as session:
            return set((await session.execute(sa.select(sa.func.unnest(self.inbox.c.event_ids)))).scalars())


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


# ---------------------------------------------------------------------- the environment's faults (#14)


async def _rename_effects(harness: Harness, to: str, back: bool = False) -> None:
    schema, name = harness.effects.schema, harness.effects.name
    old, new = (to, name) if back else (name, to)
    async with harness.engine.begin() as conn:
        await conn.execute(sa.text(f"alter table {schema}.{old} rename to {new}"))


async def test_a_missing_table_holds_the_batch_back_without_limit_and_nothing_is_lost(
    harness: Harness, kafka, topics
) -> None:
    """Code ahead of its migration (a table missing) is the environment's fault, never the message's."""
    events = [make_event("hazard.reported") for _ in range(3)]
    await harness.start()
    await _rename_effects(harness, "test_effects_away")
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )

    async def blocked_a_while() -> bool:
        # Far more attempts than retry_attempts (2): a message fault would have been dead-lettered.
        return harness.calls >= 6

    await wait_for(blocked_a_while, timeout_s=60)
    blocked = harness.consumer.blocked
    assert blocked is not None
    assert blocked.kind == "schema"
    assert "test_effects" in blocked.detail
    assert await harness.in_inbox() == set()
    await harness.relay.drain()
    assert await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=2) == []

    await _rename_effects(harness, "test_effects_away", back=True)

    async def applied() -> bool:
        return sorted(await harness.applied()) == sorted(e.event_id for e in events)

    await wait_for(applied, timeout_s=60)
    await _wait_for_consumed(harness, topics, total=3)
    assert harness.consumer.blocked is None
    assert await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=2) == []


async def test_a_dead_lettered_event_is_not_recorded_as_applied(harness: Harness, kafka, topics) -> None:
    """Neither the event that failed after retries nor the one the handler refused is in the inbox."""
    poison, refused, fine = (
        make_event("hazard.reported"),
        make_event("hazard.verified"),
        make_event("hazard.reported"),
    )
    harness.fail_on.add(poison.event_id)
    await harness.start()
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(None, dump_event(poison)), (None, dump_event(refused)), (None, dump_event(fine))],
    )
    await _wait_for_consumed(harness, topics, total=3)
    await harness.relay.drain()
    dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=2)
    assert sorted(header(r, "event_id") or "" for r in dead) == sorted(
        [str(poison.event_id), str(refused.event_id)]
    )
    assert await harness.applied() == [fine.event_id]
    assert await harness.in_inbox() == {fine.event_id}


async def _replay(kafka, topics, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "shared.replay_dead_letters",
        "--bootstrap-servers",
        kafka.bootstrap_servers,
        "--lifecycle-topic",
        topics["lifecycle"],
        "--dead-letter-topic",
        topics["dead_letter"],
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_replayed_dead_letters_are_applied_once_by_the_service_that_failed_and_by_no_other(
    db_url: str, kafka, topics
) -> None:
    alpha = Harness(db_url, kafka.bootstrap_servers, topics, f"ga-{uuid.uuid4().hex[:8]}", service="alpha")
    beta = Harness(
        db_url,
        kafka.bootstrap_servers,
        topics,
        f"gb-{uuid.uuid4().hex[:8]}",
        service="beta",
        schema="dispatch",
    )
    try:
        fine, poison, refused = (
            make_event("hazard.reported"),
            make_event("hazard.reported"),
            make_event("hazard.verified"),
        )
        alpha.fail_on.add(poison.event_id)  # alpha fails on it; beta applies it
        # Both refuse the verification: only alpha's condition will be fixed.
        await alpha.start()
        await beta.start()
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in (fine, poison, refused)],
        )
        await _wait_for_consumed(alpha, topics, total=3)
        await _wait_for_consumed(beta, topics, total=3)
        await alpha.relay.drain()
        await beta.relay.drain()
        dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=3)
        assert sorted((header(r, "dlt_consumer"), header(r, "event_id")) for r in dead) == sorted(
            [
                ("alpha", str(poison.event_id)),
                ("alpha", str(refused.event_id)),
                ("beta", str(refused.event_id)),
            ]
        )
        assert sorted(await beta.applied()) == sorted([fine.event_id, poison.event_id])
        beta_seen = list(beta.seen)

        # The condition is fixed for alpha only.
        alpha.fail_on.clear()
        alpha.reject_verified = False
        dry = await _replay(kafka, topics, "--service", "alpha", "--dry-run")
        assert str(poison.event_id) in dry
        assert str(refused.event_id) in dry
        assert len(await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=3)) == 3

        out = await _replay(kafka, topics, "--service", "alpha")
        assert "2 dead letters replayed" in out

        async def alpha_applied_all() -> bool:
            return len(await alpha.applied()) >= 3

        await wait_for(alpha_applied_all, timeout_s=60)
        await _wait_for_consumed(alpha, topics, total=5)
        await _wait_for_consumed(beta, topics, total=5)
        # Replaying again is harmless: alpha's inbox skips what it applied.
        await _replay(kafka, topics, "--service", "alpha")
        await _wait_for_consumed(alpha, topics, total=7)
        await _wait_for_consumed(beta, topics, total=7)
        await alpha.relay.drain()
        await beta.relay.drain()

        assert sorted(await alpha.applied()) == sorted([fine.event_id, poison.event_id, refused.event_id])
        # Beta neither applied nor refused anything again: it never even looked at alpha's replays.
        assert sorted(await beta.applied()) == sorted([fine.event_id, poison.event_id])
        assert beta.seen == beta_seen
        dead_after = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=3)
        assert len(dead_after) == 3
        replayed = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=7)
        copies = [r for r in replayed if header(r, "replay_for") == "alpha"]
        assert len(copies) == 4
        assert {json.loads(r.value)["event_id"] for r in copies} == {
            str(poison.event_id),
            str(refused.event_id),
        }
        assert {r.key for r in copies} == {str(poison.hazard_id).encode(), str(refused.hazard_id).encode()}
    finally:
        await alpha.close()
        await beta.close()


# ---------------------------------------------------------------------- dead letters that fit (#14 item 9)

# aiokafka's default max_request_size: the services' producers refuse a record larger than this.
PRODUCER_LIMIT = 1_048_576


async def _produce_large(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, request_timeout_ms=40_000, max_request_size=4_000_000
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def test_an_invalid_record_too_large_to_dead_letter_whole_does_not_block_its_partition(
    harness: Harness, kafka, topics
) -> None:
    """A record just under the limit; with dead-letter headers added it would be over it."""
    big = b"x" * (PRODUCER_LIMIT - 150)
    after = make_event("hazard.reported")
    await harness.start()
    await _produce_large(
        kafka.bootstrap_servers, topics["lifecycle"], [(b"k", big), (b"k", dump_event(after))]
    )

    async def applied() -> bool:
        return await harness.applied() == [after.event_id]

    await wait_for(applied, timeout_s=30)
    [dead] = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=1)
    assert header(dead, "dlt_reason") == "invalid"
    assert header(dead, "dlt_value_truncated") == "true"
    assert header(dead, "dlt_original_size") == str(len(big))
    assert header(dead, "dlt_original_sha256") == hashlib.sha256(big).hexdigest()
    assert header(dead, "dlt_origin_topic") == topics["lifecycle"]
    assert len(dead.value) < len(big)
    assert big.startswith(dead.value)


async def test_a_failing_event_too_large_to_dead_letter_whole_is_staged_bounded_so_the_relay_sends_it(
    harness: Harness, kafka, topics
) -> None:
    poison = make_event("hazard.reported")
    padded = dump_event(poison) + b" " * (PRODUCER_LIMIT - 150 - len(dump_event(poison)))
    harness.fail_on.add(poison.event_id)
    await harness.start()
    await _produce_large(
        kafka.bootstrap_servers, topics["lifecycle"], [(str(poison.hazard_id).encode(), padded)]
    )
    await _wait_for_consumed(harness, topics, total=1)
    async with asyncio.timeout(30):
        await harness.relay.drain()
    [dead] = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=1)
    assert header(dead, "event_id") == str(poison.event_id)
    assert header(dead, "dlt_reason") == "failed"
    assert header(dead, "dlt_value_truncated") == "true"
    assert header(dead, "dlt_original_size") == str(len(padded))
    assert header(dead, "dlt_original_sha256") == hashlib.sha256(padded).hexdigest()
    assert header(dead, "dlt_origin_offset") == "0"
    assert await harness.in_inbox() == set()

    # Replay finds the whole original at its origin (the dead letter holds only its beginning).
    harness.fail_on.clear()
    out = await _replay(kafka, topics, "--event-id", str(poison.event_id))
    assert "1 dead letters replayed" in out

    async def applied() -> bool:
        return await harness.applied() == [poison.event_id]

    await wait_for(applied, timeout_s=30)
