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
import multiprocessing
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
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
    replay_s: float = 0.0
    rollup_s: float = 0.0
    swap_s: float = 0.0
    parse_s: float = 0.0

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

    async def start(
        self, *, only: Sequence[int] | None = None, positions: dict[int, int] | None = None
    ) -> None:
        """Connect, assign the partitions (``only`` those, if given) and seek to the beginning or ``positions``."""
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
        self.partitions = [TopicPartition(self.topic, p) for p in sorted(parts) if only is None or p in only]
        self.consumer.assign(self.partitions)
        await self.consumer.seek_to_beginning(*self.partitions)
        for partition, offset in (positions or {}).items():
            self.consumer.seek(TopicPartition(self.topic, partition), offset)

    async def topic_partitions(self) -> list[int]:
        """The partition numbers of the topic."""
        return [tp.partition for tp in self.partitions]

    async def positions(self) -> dict[int, int]:
        """Where reading stands in every assigned partition."""
        return {tp.partition: await self.consumer.position(tp) for tp in self.partitions}

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
    started = time.perf_counter()
    try:
        return _parse_timed(values, tz, result)
    finally:
        result.parse_s += time.perf_counter() - started


def _parse_timed(values: Sequence[bytes], tz: ZoneInfo, result: RebuildResult) -> domain.FactBatch:
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


@dataclass
class WorkerResult:
    """What one replay worker did: events, invalid messages, seconds parsing, and where it stopped."""

    events: int
    invalid: int
    parse_s: float
    positions: dict[int, int]


async def _replay_partitions(
    database_url: str,
    bootstrap_servers: str,
    topic: str,
    timezone: str,
    batch_size: int,
    partitions: list[int],
) -> WorkerResult:
    result = RebuildResult()
    engine = create_engine(DatabaseSettings(url=database_url), application_name="hazard-reporting-rebuild")
    reader = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
    try:
        await reader.start(only=partitions)
        await _replay(engine, reader, ZoneInfo(timezone), result)
        return WorkerResult(result.events, result.invalid, result.parse_s, await reader.positions())
    finally:
        await reader.stop()
        await engine.dispose()


def replay_worker(
    database_url: str,
    bootstrap_servers: str,
    topic: str,
    timezone: str,
    batch_size: int,
    partitions: list[int],
) -> WorkerResult:
    """One process replaying some partitions into the staging tables.

    Facts are keyed by hazard (dispatches and relapses ride with their hazard, and the topic
    is keyed by hazard id), so workers on different partitions never write the same row.
    """
    return asyncio.run(
        _replay_partitions(database_url, bootstrap_servers, topic, timezone, batch_size, partitions)
    )


async def _replay_parallel(
    *,
    database_url: str,
    bootstrap_servers: str,
    topic: str,
    timezone: str,
    batch_size: int,
    partitions: list[int],
    workers: int,
    result: RebuildResult,
) -> dict[int, int]:
    groups = [partitions[i::workers] for i in range(workers) if partitions[i::workers]]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(
        max_workers=len(groups), mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        done = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool, replay_worker, database_url, bootstrap_servers, topic, timezone, batch_size, group
                )
                for group in groups
            )
        )
    positions: dict[int, int] = {}
    for worker in done:
        result.events += worker.events
        result.invalid += worker.invalid
        result.parse_s += worker.parse_s
        positions.update(worker.positions)
    return positions


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
    workers: int = 1,
) -> RebuildResult:
    """Replay the topic into fresh projection tables and swap them in; returns the counts and time.

    With ``workers`` > 1 the bulk replay runs in that many processes, each on its own partitions.
    """
    started = time.perf_counter()
    result = RebuildResult()
    tz = ZoneInfo(timezone)
    engine = create_engine(DatabaseSettings(url=database_url), application_name="hazard-reporting-rebuild")
    reader = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
    try:
        async with engine.begin() as conn:
            await _create_staging(conn)
        phase = time.perf_counter()
        if workers > 1:
            probe = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
            await probe.start()
            partitions = await probe.topic_partitions()
            await probe.stop()
            positions = await _replay_parallel(
                database_url=database_url,
                bootstrap_servers=bootstrap_servers,
                topic=topic,
                timezone=timezone,
                batch_size=batch_size,
                partitions=partitions,
                workers=workers,
                result=result,
            )
            await reader.start(positions=positions)
        else:
            await reader.start()
            await _replay(engine, reader, tz, result)
        result.replay_s = time.perf_counter() - phase
        phase = time.perf_counter()
        async with engine.begin() as conn:
            await repository.rebuild_rollup(conn, schema=STAGING_SCHEMA)
            await conn.execute(sa.text(f"ANALYZE {STAGING_SCHEMA}.hazards"))
            await conn.execute(sa.text(f"ANALYZE {STAGING_SCHEMA}.dispatches"))
        result.rollup_s = time.perf_counter() - phase
        phase = time.perf_counter()
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
        result.swap_s = time.perf_counter() - phase
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
    parser.add_argument(
        "--workers",
        type=int,
        default=min(os.cpu_count() or 1, 4),
        help="processes replaying partitions in parallel (default %(default)s)",
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
            workers=max(1, args.workers),
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
