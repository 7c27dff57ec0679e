"""The lifecycle subscriber's wiring, with FastStream's in-memory broker and a fake consumer.

The in-memory broker has no offsets, commits or redelivery: ack/nack behaviour is proven against
the real broker in tests/integration/shared/test_consumer.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faststream.kafka import TestKafkaBroker
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser

from shared.kafka import _batch_parser, create_broker, subscribe_lifecycle
from shared.settings import KafkaSettings


class FakeConsumer:
    """Same interface as EventConsumer.process; records what it was given."""

    service = "fake"

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []

    async def process(self, records: Sequence[Any]) -> None:
        self.batches.append([r.value for r in records])


def _settings() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="in-memory:9092", lifecycle_topic="life", idempotent_producer=False
    )


async def test_subscriber_hands_raw_records_to_the_consumer_undecoded() -> None:
    broker = create_broker(_settings(), service="fake")
    consumer = FakeConsumer()
    subscriber = subscribe_lifecycle(broker, consumer, _settings(), group_id="g", description="d")  # type: ignore[arg-type]
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"not json at all", "life")
        await test_broker.publish(b'{"event_type": "x"}', "life")
    assert consumer.batches == [[b"not json at all"], [b'{"event_type": "x"}']]
    assert subscriber.calls, "the handler is registered on the subscriber"


def test_subscriber_uses_the_configured_fetch_wait_and_batching() -> None:
    """Tansu holds an empty fetch for the whole wait, so the wait is a setting with a short default."""
    settings = KafkaSettings(
        bootstrap_servers="in-memory:9092", lifecycle_topic="life", idempotent_producer=False
    )
    assert settings.fetch_max_wait_ms == 50
    tuned = settings.model_copy(update={"fetch_max_wait_ms": 250, "max_batch": 123})
    broker = create_broker(tuned, service="fake")
    subscriber = subscribe_lifecycle(broker, FakeConsumer(), tuned, group_id="g", description="d")  # type: ignore[arg-type]
    # FastStream keeps the aiokafka consumer's arguments here until it starts the consumer.
    assert subscriber._connection_args["fetch_max_wait_ms"] == 250
    assert subscriber.max_records == 123


class FakeTime:
    """A clock that moves only when work or a pause says so; records every pause."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


class SlowConsumer(FakeConsumer):
    """Takes ``seconds`` (on the fake clock) over every batch, as a real one takes its transaction's time."""

    def __init__(self, time: FakeTime, seconds: float) -> None:
        super().__init__()
        self.time = time
        self.seconds = seconds

    async def process(self, records: Sequence[Any]) -> None:
        self.time.now += self.seconds
        await super().process(records)


async def _publish(
    settings: KafkaSettings, consumer: SlowConsumer, *batches: tuple[bytes, ...]
) -> list[float]:
    """The pauses the subscriber took after each batch (the in-memory broker runs the handler inside publish)."""
    broker = create_broker(settings, service="fake")
    subscribe_lifecycle(
        broker,
        consumer,  # type: ignore[arg-type]
        settings,
        group_id="g",
        description="d",
        clock=consumer.time.clock,
        sleep=consumer.time.sleep,
    )
    pauses = []
    async with TestKafkaBroker(broker) as test_broker:
        for batch in batches:
            before = len(consumer.time.pauses)
            await test_broker.publish_batch(*batch, topic="life")
            pauses.append(sum(consumer.time.pauses[before:]))
    return pauses


async def test_after_a_batch_that_was_not_full_the_subscriber_waits_as_long_as_the_batch_took() -> None:
    """So that a consumer that keeps up still gathers records into larger batches."""
    settings = _settings().model_copy(update={"batch_linger_ms": 1000, "max_batch": 2})
    consumer = SlowConsumer(FakeTime(), 0.2)
    small, full = await _publish(settings, consumer, (b"less than max_batch",), (b"first", b"second"))
    assert consumer.batches == [[b"less than max_batch"], [b"first", b"second"]]
    assert small == 0.2  # 0.2 s of work, then as long again
    assert full == 0  # a full batch: more may be waiting, no pause


async def test_the_wait_after_a_batch_is_capped_by_the_linger_setting() -> None:
    settings = _settings().model_copy(update={"batch_linger_ms": 50, "max_batch": 100})
    (paused,) = await _publish(settings, SlowConsumer(FakeTime(), 0.3), (b"alone",))
    assert paused == 0.05


async def test_no_linger_when_it_is_turned_off() -> None:
    settings = _settings().model_copy(update={"batch_linger_ms": 0, "max_batch": 100})
    consumer = SlowConsumer(FakeTime(), 0.2)
    (paused,) = await _publish(settings, consumer, (b"alone",))
    assert paused == 0
    assert consumer.batches == [[b"alone"]]


def _record(offset: int, partition: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    headers = [
        ("event_type", b"hazard.reported"),
        ("event_id", str(offset).encode()),
        ("correlation_id", b"c1"),
    ]
    return ConsumerRecord(
        "life", partition, offset, 1_700_000_000_000 + offset, 0, b"key", value, None, 3, len(value), headers
    )


async def test_the_batch_message_is_faststream_s_but_for_the_headers_of_later_records() -> None:
    records = (_record(7, 0, b"a"), _record(3, 1, b""), _record(8, 0, b"c"))
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    full = await parser.parse_batch(records)
    lean = await _batch_parser(records, parser.parse_batch)
    assert type(lean) is type(full)
    assert lean.raw_message == records
    assert lean.body == full.body == [b"a", b"", b"c"]
    assert lean.message_id == full.message_id == f"7-8-{1_700_000_000_007}"
    assert (
        lean.headers
        == full.headers
        == {"event_type": "hazard.reported", "event_id": "7", "correlation_id": "c1"}
    )
    assert (lean.correlation_id, lean.reply_to, lean.content_type, lean.path) == (
        full.correlation_id,
        full.reply_to,
        full.content_type,
        full.path,
    )
    assert lean.batch_headers == [full.headers]  # the later records' are not decoded
    single = await _batch_parser(records[:1], parser.parse_batch)
    assert (single.raw_message, single.body, single.message_id) == (
        records[:1],
        [b"a"],
        f"7-7-{1_700_000_000_007}",
    )


async def test_a_nacked_batch_rewinds_every_partition_it_holds() -> None:
    records = (_record(7, 0, b"a"), _record(3, 1, b"b"), _record(8, 0, b"c"))
    parser = AioKafkaBatchParser(msg_class=KafkaAckableMessage, regex=None)
    seeks: list[tuple[Any, int]] = []

    class Consumer:
        async def commit(self) -> None:
            raise AssertionError("a nack commits nothing")

        def seek(self, partition: Any, offset: int) -> None:
            seeks.append((partition, offset))

    parser._setup(Consumer())
    message = await _batch_parser(records, parser.parse_batch)
    await message.nack()
    assert sorted((tp.partition, offset) for tp, offset in seeks) == [(0, 7), (1, 3)]
