"""The raw ceiling: what the broker and the database do with no service in between.

* Kafka: aiokafka produces ~300-byte messages (the size of our events) in batches
  (``linger_ms``, many sends in flight, acks=all) and a consumer reads them back; we report
  produce msgs/s, consume msgs/s and the pipeline (produce and consume at once).
* PostgreSQL (fsync on): rows/s for batched ``executemany`` INSERTs (1,000 rows per
  transaction), for COPY, and durable commits/s with one row per commit.

``python -m bench.raw_ceiling`` starts its own PostgreSQL and Tansu; ``bench.end_to_end`` calls
:func:`measure` on the system it benchmarks, so the ceiling and the services share the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench._stack import private_stack, publish_results

MESSAGE_BYTES = 300


def sample_message(i: int) -> bytes:
    """A ~300-byte JSON message shaped like a lifecycle event."""
    body = {
        "event_id": str(uuid.uuid4()),
        "event_type": "hazard.dispatched",
        "schema_version": 1,
        "occurred_at": "2026-04-07T09:30:00+00:00",
        "hazard_id": str(uuid.uuid4()),
        "producer": "dispatch",
        "payload": {"dispatch_id": str(uuid.uuid4()), "department_id": "fire", "n": i},
    }
    raw = json.dumps(body, separators=(",", ":")).encode()
    return raw + b" " * max(0, MESSAGE_BYTES - len(raw))


async def _create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=40_000)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], in_flight: int) -> float:
    """Send all messages (``in_flight`` unconfirmed at most); return the seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
        max_batch_size=512 * 1024,
        request_timeout_ms=40_000,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        pending: list[asyncio.Future[Any]] = []
        for key, value in messages:
            pending.append(await producer.send(topic, value=value, key=key))
            if len(pending) >= in_flight:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def _consume(bootstrap: str, topic: str, expect: int, timeout_s: float = 300.0) -> float:
    """Read ``expect`` messages from the beginning of every partition; return the seconds taken."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=40_000,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=16 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer.client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        started = time.perf_counter()
        seen = 0
        deadline = started + timeout_s
        while seen < expect and time.perf_counter() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=20_000)
            seen += sum(len(records) for records in batch.values())
        if seen < expect:
            raise RuntimeError(f"consumed only {seen} of {expect} messages in {timeout_s}s")
        return time.perf_counter() - started
    finally:
        await consumer.stop()


async def kafka_ceiling(bootstrap: str, *, messages: int = 200_000, partitions: int = 6) -> dict[str, Any]:
    """Produce, consume, and produce+consume at once; messages/s of each."""
    payload = [(str(i % 10_000).encode(), sample_message(i)) for i in range(messages)]
    topic = f"raw-ceiling-{uuid.uuid4().hex[:8]}"
    await _create_topic(bootstrap, topic, partitions)
    produce_s = await _produce(bootstrap, topic, payload, in_flight=5_000)
    consume_s = await _consume(bootstrap, topic, messages)
    pipeline_topic = topic + "-pipeline"
    await _create_topic(bootstrap, pipeline_topic, partitions)
    started = time.perf_counter()
    consumer = asyncio.create_task(_consume(bootstrap, pipeline_topic, messages))
    await _produce(bootstrap, pipeline_topic, payload, in_flight=5_000)
    await consumer
    pipeline_s = time.perf_counter() - started
    return {
        "messages": messages,
        "message_bytes": MESSAGE_BYTES,
        "partitions": partitions,
        "produce_msgs_per_s": round(messages / produce_s),
        "consume_msgs_per_s": round(messages / consume_s),
        "produce_and_consume_msgs_per_s": round(messages / pipeline_s),
    }


async def postgres_ceiling(dsn: str, *, rows: int = 100_000, batch: int = 1_000) -> dict[str, Any]:
    """Rows/s for batched INSERT (executemany, one transaction per batch) and COPY; commits/s."""
    conn = await asyncpg.connect(dsn)
    table = f"raw_ceiling_{uuid.uuid4().hex[:8]}"
    try:
        fsync = await conn.fetchval("show fsync")
        sync_commit = await conn.fetchval("show synchronous_commit")
        await conn.execute(
            f"create table {table} (id uuid primary key, hazard_id uuid not null, "
            "event_type text not null, payload bytea not null, created_at timestamptz not null default now())"
        )
        data = [(uuid.uuid4(), uuid.uuid4(), "hazard.dispatched", sample_message(i)) for i in range(rows)]
        started = time.perf_counter()
        for offset in range(0, rows, batch):
            async with conn.transaction():
                await conn.executemany(
                    f"insert into {table} (id, hazard_id, event_type, payload) values ($1, $2, $3, $4)",
                    data[offset : offset + batch],
                )
        insert_s = time.perf_counter() - started
        await conn.execute(f"truncate {table}")
        started = time.perf_counter()
        for offset in range(0, rows, batch * 10):
            await conn.copy_records_to_table(
                table,
                records=data[offset : offset + batch * 10],
                columns=["id", "hazard_id", "event_type", "payload"],
            )
        copy_s = time.perf_counter() - started
        commits = 0
        started = time.perf_counter()
        while time.perf_counter() - started < 3.0:
            await conn.execute(
                f"insert into {table} (id, hazard_id, event_type, payload) values ($1, $2, $3, $4)",
                uuid.uuid4(),
                uuid.uuid4(),
                "hazard.dispatched",
                b"x",
            )
            commits += 1
        commit_s = time.perf_counter() - started
    finally:
        await conn.execute(f"drop table if exists {table}")
        await conn.close()
    return {
        "rows": rows,
        "fsync": fsync,
        "synchronous_commit": sync_commit,
        "insert_batch_rows": batch,
        "batched_insert_rows_per_s": round(rows / insert_s),
        "copy_rows_per_s": round(rows / copy_s),
        "single_row_commits_per_s": round(commits / commit_s),
    }


async def measure(
    bootstrap: str, dsn: str, *, messages: int = 200_000, rows: int = 100_000
) -> dict[str, Any]:
    """Both ceilings on the given broker and database."""
    return {
        "kafka": await kafka_ceiling(bootstrap, messages=messages),
        "postgres": await postgres_ceiling(dsn, rows=rows),
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    k, p = result["kafka"], result["postgres"]
    lines = [
        "| what | figure |",
        "| --- | ---: |",
        f"| Kafka produce ({k['message_bytes']} B msgs, {k['partitions']} partitions) | {k['produce_msgs_per_s']:,} msgs/s |",
        f"| Kafka consume | {k['consume_msgs_per_s']:,} msgs/s |",
        f"| Kafka produce + consume at once | {k['produce_and_consume_msgs_per_s']:,} msgs/s |",
        f"| PostgreSQL batched INSERT ({p['insert_batch_rows']} rows/tx, fsync {p['fsync']}) | {p['batched_insert_rows_per_s']:,} rows/s |",
        f"| PostgreSQL COPY | {p['copy_rows_per_s']:,} rows/s |",
        f"| PostgreSQL one row per durable commit | {p['single_row_commits_per_s']:,} commits/s |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, measure, print, and write ``bench/results/raw_ceiling.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.raw_ceiling", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args(argv)
    with private_stack("raw_ceiling") as (postgres, kafka):
        result = asyncio.run(
            measure(kafka.bootstrap_servers, postgres.dsn(), messages=args.messages, rows=args.rows)
        )
    publish_results("raw_ceiling", result, table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
