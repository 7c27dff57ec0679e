"""Reading topics in tests: every record from the beginning, without a consumer group; and
consumed records made in memory, to drive ``shared.consumer.EventConsumer.process`` directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.events import LifecycleEvent, dump_event


@dataclass(frozen=True)
class ConsumedRecord:
    """A consumed Kafka record as ``shared.consumer.Record`` reads it, made without a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


def consumed_records(
    events: Sequence[LifecycleEvent], *, partition: int = 0, first_offset: int = 0, topic: str = "lifecycle"
) -> list[ConsumedRecord]:
    """The events as records of one partition at consecutive offsets, keyed by hazard as published."""
    return [
        ConsumedRecord(topic, partition, first_offset + i, str(e.hazard_id).encode(), dump_event(e))
        for i, e in enumerate(events)
    ]


async def read_topic(
    bootstrap: str, topic: str, *, expect: int | None = None, timeout_s: float = 20.0
) -> list[Any]:
    """All records of a topic; waits until ``expect`` are there (or the timeout), then a little more for extras."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=40_000
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout_s
        while not partitions and time.monotonic() < deadline:
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        assert partitions, f"topic {topic} does not exist"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        settle_until: float | None = None
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            now = time.monotonic()
            if expect is not None and len(records) >= expect and settle_until is None:
                settle_until = now + 0.5  # look for unexpected extras (duplicates) briefly
            if settle_until is not None and now >= settle_until:
                return records
            if expect is None and not batch and now > deadline - timeout_s + 1.0:
                return records
            if now >= deadline:
                return records
    finally:
        await consumer.stop()


async def produce(bootstrap: str, topic: str, values: list[tuple[bytes | None, bytes]]) -> None:
    """Send (key, value) pairs and wait for every confirmation."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=40_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in values]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def header(record: Any, name: str) -> str | None:
    """One header of a record, decoded."""
    for key, value in record.headers or ():
        if key == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


async def wait_for(predicate: Any, *, timeout_s: float = 20.0, interval_s: float = 0.1) -> None:
    """Wait until an async predicate is true, or fail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
