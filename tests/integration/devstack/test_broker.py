"""The local Tansu broker: topics with partitions, round trips, consumer-group offsets, pause/resume."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from shared.devstack.broker import BrokerError, LocalKafka
from shared.devstack.ports import free_port, port_is_free
from tests.support.stack import unique_name

pytestmark = pytest.mark.integration

# Tansu completes a group join after half the session timeout: keep it short in tests.
FAST_GROUP = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 500}


async def _partitions(bootstrap: str, *topics: str) -> dict[str, set[int] | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # one metadata round trip
        return {topic: consumer.partitions_for_topic(topic) for topic in topics}
    finally:
        await consumer.stop()


async def _read(consumer: AIOKafkaConsumer, count: int) -> list[Any]:
    records: list[Any] = []
    async with asyncio.timeout(20):
        while len(records) < count:
            batch = await consumer.getmany(timeout_ms=200, max_records=count - len(records))
            for partition_records in batch.values():
                records.extend(partition_records)
    return records


async def test_topics_fixture_creates_partitioned_topics(kafka: LocalKafka, topics: dict[str, str]) -> None:
    found = await _partitions(kafka.bootstrap_servers, topics["lifecycle"], topics["dead_letter"])
    assert found == {topics["lifecycle"]: {0, 1, 2}, topics["dead_letter"]: {0}}


async def test_create_topics_is_idempotent_and_refuses_another_partition_count(kafka: LocalKafka) -> None:
    name = unique_name("t-idem")
    await kafka.create_topics({name: 6})
    await kafka.create_topics({name: 6})
    with pytest.raises(BrokerError, match="has 6 \\(wanted 2\\)"):
        await kafka.create_topics({name: 2})
    assert (await _partitions(kafka.bootstrap_servers, name))[name] == set(range(6))
    await kafka.delete_topics([name])
    assert name not in await kafka.list_topics()


async def test_round_trip_and_group_resumes_after_committed_offset(
    kafka: LocalKafka, topics: dict[str, str]
) -> None:
    topic = topics["lifecycle"]
    tp = TopicPartition(topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(
                topic, f"value-{i}".encode(), key=b"hazard-1", partition=1, headers=[("n", str(i).encode())]
            )
    finally:
        await producer.stop()

    group = unique_name("g")
    options = {"group_id": group, "auto_offset_reset": "earliest", "enable_auto_commit": False, **FAST_GROUP}
    first = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, **options)
    await first.start()
    try:
        records = await _read(first, 5)
        assert [(r.partition, r.offset, r.key, r.value, r.headers) for r in records] == [
            (1, i, b"hazard-1", f"value-{i}".encode(), (("n", str(i).encode()),)) for i in range(5)
        ]
        await first.commit({tp: 3})  # processed offsets 0..2; 3 and 4 are still to do
        assert await first.committed(tp) == 3
    finally:
        await first.stop()

    second = AIOKafkaConsumer(topic, bootstrap_servers=kafka.bootstrap_servers, **options)
    await second.start()
    try:
        resumed = await _read(second, 2)
        assert [(r.offset, r.value) for r in resumed] == [(3, b"value-3"), (4, b"value-4")]
    finally:
        await second.stop()


async def test_paused_broker_answers_nothing_until_resumed(kafka: LocalKafka, topics: dict[str, str]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topics["lifecycle"], b"before", partition=0)
        kafka.pause()
        try:
            pending = await producer.send(topics["lifecycle"], b"during", partition=0)
            done, _ = await asyncio.wait([pending], timeout=1.5)
            assert not done, "a paused broker must not acknowledge anything"
        finally:
            kafka.resume()
        metadata = await asyncio.wait_for(pending, timeout=20)
        assert (metadata.partition, metadata.offset) == (0, 1)
    finally:
        await producer.stop()


async def test_restart_gives_an_empty_broker_and_stop_frees_the_port() -> None:
    base = Path(tempfile.mkdtemp(prefix="hazard-devstack-kafka-"))
    broker = LocalKafka(port=free_port(), log_path=base / "tansu.log")
    try:
        broker.start()
        await broker.create_topics({"kept-in-memory": 2})
        assert "kept-in-memory" in await broker.list_topics()
        broker.restart()
        assert "kept-in-memory" not in await broker.list_topics()
        broker.pause()  # stop must also end a paused broker
    finally:
        broker.stop()
        shutil.rmtree(base, ignore_errors=True)
    assert not broker.is_running()
    assert port_is_free(broker.port)
