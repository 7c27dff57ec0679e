"""Rebuild the reporting projection from the lifecycle topic, then swap it in atomically.

``python -m services.reporting.rebuild --database-url URL --bootstrap-servers HOST:PORT --topic T``

1. Create the projection tables afresh in a staging schema (``reporting_rebuild``).
2. Replay the topic from the beginning up to its current end into them, in large batches
   (one multi-row upsert per table per batch; parsing of the next batch overlaps the
   database write of the previous one).
3. Compute the whole daily rollup from the facts.
4. In one transaction: lock the live projection tables (the live consumer waits), replay
   whatever reached the topic meanwhile, drop the live tables and move the staging ones
   into the ``reporting`` schema. Readers and the live consumer then see the new tables.

The live consumer may re-apply events the rebuild already holds after the swap: fact rows
merge idempotently by natural key, so nothing is counted twice. The inbox and outbox are
not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.reporting import domain, repository, tables
from shared.db import create_engine
from shared.events import parse_event
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings

log = logging.getLogger(__name__)

STAGING_SCHEMA = "reporting_rebuild"


@dataclass
class RebuildResult:
    """What a rebuild did."""

    events: int = 0
    invalid: int = 0
    caught_up: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        """Replay throughput, swap included."""
        return self.events / self.seconds if self.seconds else 0.0


class TopicReader:
    """Reads every partition of a topic from the beginning, without a consumer group."""

    def __init__(self, bootstrap_servers: str, topic: str, *, batch_size: int) -> None:
        self.topic = topic
        self.batch_size = batch_size
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            request_timeout_ms=40_000,
            max_partition_fetch_bytes=8 * 1024 * 1024,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        self.partitions: list[TopicPartition] = []

    async def start(self) -> None:
        """Connect, assign every partition and seek to the beginning."""
        await self.consumer.start()
        parts = self.consumer.partitions_for_topic(self.topic)
        for _ in range(50):
            if parts:
                break
            await self.consumer.client.force_metadata_update()
            parts = self.consumer.partitions_for_topic(self.topic)
            await asyncio.sleep(0.1)
        if not parts:
            raise SystemExit(f"topic {self.topic!r} does not exist on the broker")
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts)]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)

    async def stop(self) -> None:
        """Disconnect."""
        await self.consumer.stop()

    async def batches(self) -> Any:
        """Yield lists of record values until every partition is caught up with its high-water mark.

        The high-water mark comes from fetch responses: Tansu's ListOffsets answers 1 for every
        partition, so ``end_offsets`` cannot be trusted there.
        """
        empty_rounds = 0
        while True:
            fetched = await self.consumer.getmany(timeout_ms=300, max_records=self.batch_size)
            values = [r.value or b"" for records in fetched.values() for r in records]
            if values:
                empty_rounds = 0
                yield values
                continue
            empty_rounds += 1
            if all([await self._caught_up(tp) for tp in self.partitions]) or empty_rounds >= 20:
                return

    async def _caught_up(self, tp: TopicPartition) -> bool:
        high = self.consumer.highwater(tp)
        return high is not None and await self.consumer.position(tp) >= high


def _parse(values: Sequence[bytes], tz: ZoneInfo, result: RebuildResult) -> domain.FactBatch:
    events = []
    for value in values:
        try:
            events.append(parse_event(value))
        except ValidationError:
            result.invalid += 1  # the live consumer dead-letters these; they state no facts
    result.events += len(events)
    return domain.project_events(events, tz=tz)


async def _create_staging(conn: AsyncConnection) -> None:
    await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {STAGING_SCHEMA} CASCADE"))
    await conn.execute(sa.text(f"CREATE SCHEMA {STAGING_SCHEMA}"))
    staged = await conn.execution_options(schema_translate_map={tables.SCHEMA: STAGING_SCHEMA})

    def create(sync_conn: sa.Connection) -> None:
        for table in tables.PROJECTION_TABLES:
            table.create(sync_conn)

    await staged.run_sync(create)


async def _replay(
    engine: AsyncEngine,
    reader: TopicReader,
    tz: ZoneInfo,
    result: RebuildResult,
) -> None:
    """Replay the topic into the staging tables, one transaction per batch, writes overlapping parsing."""

    async def write(batch: domain.FactBatch) -> None:
        async with engine.begin() as conn:
            await repository.upsert_facts(conn, batch, schema=STAGING_SCHEMA)

    inflight: asyncio.Task[None] | None = None
    async for values in reader.batches():
        batch = _parse(values, tz, result)
        if inflight is not None:
            await inflight
        inflight = asyncio.create_task(write(batch))
    if inflight is not None:
        await inflight


async def _swap(engine: AsyncEngine, reader: TopicReader, tz: ZoneInfo, result: RebuildResult) -> None:
    live = ", ".join(f"{tables.SCHEMA}.{t.name}" for t in tables.PROJECTION_TABLES)
    async with engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
        await conn.execute(sa.text(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"))
        # Catch up with what reached the topic while the bulk replay ran (live consumer now waits).
        before = result.events
        async for values in reader.batches():
            batch = _parse(values, tz, result)
            await repository.upsert_facts(conn, batch, schema=STAGING_SCHEMA)
            await repository.mark_dirty(conn, batch.touched_hazards(), schema=STAGING_SCHEMA)
        result.caught_up = result.events - before
        await repository.refresh_rollup(conn, schema=STAGING_SCHEMA)
        for table in tables.PROJECTION_TABLES:
            await conn.execute(sa.text(f"DROP TABLE {tables.SCHEMA}.{table.name}"))
        for table in tables.PROJECTION_TABLES:
            await conn.execute(
                sa.text(f"ALTER TABLE {STAGING_SCHEMA}.{table.name} SET SCHEMA {tables.SCHEMA}")
            )
        await conn.execute(sa.text(f"DROP SCHEMA {STAGING_SCHEMA}"))


async def rebuild(
    *,
    database_url: str,
    bootstrap_servers: str,
    topic: str,
    timezone: str,
    batch_size: int = 5000,
) -> RebuildResult:
    """Replay the topic into fresh projection tables and swap them in; returns the counts and time."""
    started = time.perf_counter()
    result = RebuildResult()
    tz = ZoneInfo(timezone)
    engine = create_engine(DatabaseSettings(url=database_url), application_name="hazard-reporting-rebuild")
    reader = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
    try:
        async with engine.begin() as conn:
            await _create_staging(conn)
        await reader.start()
        await _replay(engine, reader, tz, result)
        async with engine.begin() as conn:
            await repository.rebuild_rollup(conn, schema=STAGING_SCHEMA)
            await conn.execute(sa.text(f"ANALYZE {STAGING_SCHEMA}.hazards"))
            await conn.execute(sa.text(f"ANALYZE {STAGING_SCHEMA}.dispatches"))
        for attempt in range(1, 6):
            positions = {tp: await reader.consumer.position(tp) for tp in reader.partitions}
            events_before = result.events
            try:
                await _swap(engine, reader, tz, result)
                break
            except sa.exc.DBAPIError as exc:  # a deadlock or lock timeout against the live consumer
                if attempt == 5:
                    raise
                log.warning("swap attempt %d failed (%s); retrying", attempt, exc.orig)
                for tp, offset in positions.items():  # the catch-up rolled back: read it again
                    reader.consumer.seek(tp, offset)
                result.events = events_before
                await asyncio.sleep(attempt)
    finally:
        await reader.stop()
        await engine.dispose()
    result.seconds = time.perf_counter() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m services.reporting.rebuild",
        description="Replay the lifecycle topic into fresh reporting projection tables and swap them in.",
    )
    parser.add_argument("--database-url", required=True, help="postgresql+asyncpg://user@host:port/db")
    parser.add_argument("--bootstrap-servers", required=True, help="host:port[,host:port]")
    parser.add_argument(
        "--topic", default="hazard.lifecycle", help="the lifecycle topic (default %(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=5000, help="events per transaction (default %(default)s)"
    )
    parser.add_argument(
        "--reference-data-dir", type=Path, default=None, help="reference data replacing the default"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    reference = load_reference_data(args.reference_data_dir)
    result = asyncio.run(
        rebuild(
            database_url=args.database_url,
            bootstrap_servers=args.bootstrap_servers,
            topic=args.topic,
            timezone=reference.calendar.timezone,
            batch_size=args.batch_size,
        )
    )
    print(
        f"rebuilt the reporting projection from {result.events} events "
        f"({result.invalid} invalid skipped, {result.caught_up} caught up during the swap) "
        f"in {result.seconds:.1f} s: {result.events_per_second:,.0f} events/s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
