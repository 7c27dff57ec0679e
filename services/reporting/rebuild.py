"""Rebuild the reporting projection from the lifecycle topic, then swap it in atomically.

``python -m services.reporting.rebuild --database-url URL --bootstrap-servers HOST:PORT --topic T``

1. Create the projection tables afresh in a staging schema (``reporting_rebuild``), with their
   primary keys only: the other indexes are built once after the bulk load.
2. Replay the topic from the beginning up to its current end into them, in worker processes
   each on its own partitions, in large batches (one multi-row upsert per fact table per batch,
   with the live projection's merge rules; parsing of the next batch overlaps the database write
   of the previous one). The staging tables are not visible to anyone, so these writes commit
   without waiting for the WAL flush (a rebuild that crashes is simply run again).
3. Copy the hazards' places onto the dispatches whose report came in another batch (one
   set-based update), build the fact tables' indexes, compute the whole rollup from the facts
   with the store's ``rollups.rebuild_rollup``, build the rollup tables' indexes, analyze.
4. In one durable transaction: lock the live projection tables (the live consumer waits), replay
   whatever reached the topic meanwhile, drop the live tables and move the staging ones
   into the ``reporting`` schema. Readers and the live consumer then see the new tables.

The live consumer may re-apply events the rebuild already holds after the swap: fact rows
merge idempotently by natural key, so nothing is counted twice. The inbox and outbox are
not touched.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from services.reporting import domain, tables
from services.reporting.store import facts, rollups
from shared import roles
from shared.events import parse_event
from shared.progress import Progress
from shared.reference import load_reference_data

log = logging.getLogger(__name__)

STAGING_SCHEMA = "reporting_rebuild"
FACT_TABLES: tuple[sa.Table, ...] = (tables.hazards, tables.dispatches, tables.relapses, tables.actions)
# The rebuild's own sessions: nothing it writes before the swap is visible or needs to survive a
# crash (a failed rebuild is run again), so commits do not wait for the WAL flush; the swap itself
# sets synchronous_commit back on. Sorting and hashing room for the rollup passes and index builds.
_SESSION_SETTINGS = {
    "synchronous_commit": "off",
    "work_mem": "128MB",
    "maintenance_work_mem": "256MB",
}


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
    setup_s: float = 0.0
    places_s: float = 0.0
    index_s: float = 0.0

    @property
    def events_per_second(self) -> float:
        """Events per second over the whole rebuild: staging tables, replay, indexes, rollup and swap."""
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def replay_events_per_second(self) -> float:
        """Events per second of the replay phase alone (reading, parsing, folding, writing the facts)."""
        return self.events / self.replay_s if self.replay_s else 0.0


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
            # Tansu holds a fetch that finds nothing for the whole wait: at the end of the topic
            # (once per worker, and again in the swap) that is time spent waiting for nothing.
            fetch_max_wait_ms=50,
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
            fetched = await self.consumer.getmany(timeout_ms=100, max_records=self.batch_size)
            values = [r.value or b"" for records in fetched.values() for r in records]
            if values:
                empty_rounds = 0
                yield values
                continue
            empty_rounds += 1
            if all([await self._caught_up(tp) for tp in self.partitions]) or empty_rounds >= 60:
                return

    async def _caught_up(self, tp: TopicPartition) -> bool:
        high = self.consumer.highwater(tp)
        return high is not None and await self.consumer.position(tp) >= high


def _engine(database_url: str) -> AsyncEngine:
    """An engine for the rebuild's own sessions (see ``_SESSION_SETTINGS``)."""
    return create_async_engine(
        database_url,
        pool_size=2,
        max_overflow=2,
        connect_args={
            "server_settings": {"application_name": "hazard-reporting-rebuild", **_SESSION_SETTINGS}
        },
    )


@contextlib.contextmanager
def _bulk_gc() -> Iterator[None]:
    """Fewer garbage collector passes while replaying.

    Parsing allocates ~10 tracked objects per event (models, tuples, dicts) and the default
    thresholds start a collection every 700 of them, each one also walking every long-lived
    object again from time to time: that cost more than parsing itself. Everything alive
    before the replay is frozen out of the collector, and young collections run every 100,000
    allocations. Restored afterwards (the single-process path runs in the caller's process).
    """
    thresholds, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if not frozen_before:  # leave a caller's own frozen objects as they were
            gc.unfreeze()


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


def _staged(table: sa.Table | sa.Index) -> str:
    return f"{STAGING_SCHEMA}.{table.name}"


async def _create_staging(conn: AsyncConnection) -> None:
    """The projection tables afresh in the staging schema, primary keys only (see _create_indexes)."""
    await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {STAGING_SCHEMA} CASCADE"))
    await conn.execute(sa.text(f"CREATE SCHEMA {STAGING_SCHEMA}"))
    staged = await conn.execution_options(schema_translate_map={tables.SCHEMA: STAGING_SCHEMA})
    for table in tables.PROJECTION_TABLES:
        await staged.execute(sa.schema.CreateTable(table))


async def _create_indexes(conn: AsyncConnection, of: Sequence[sa.Table]) -> None:
    """Build the secondary indexes of staging tables once they are filled (cheaper than maintaining them)."""
    staged = await conn.execution_options(schema_translate_map={tables.SCHEMA: STAGING_SCHEMA})
    for table in of:
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            await staged.execute(sa.schema.CreateIndex(index))
        await conn.execute(sa.text(f"ANALYZE {_staged(table)}"))


async def _merge_facts(conn: AsyncConnection, batch: domain.FactBatch) -> None:
    """Merge a batch's fact rows into the staging tables with the live projection's statements.

    Unlike ``facts.upsert_facts``, the dispatches stored before their hazard's report (in an
    earlier batch) do not get its place here: _fill_places copies it once for all of them after
    the replay (the hazards' places never change once known, so the result is the same). A
    dispatch merged after its report takes the place as it is merged, as live.
    """
    await facts.merge_rows(conn, batch, schema=STAGING_SCHEMA)


async def _fill_places(conn: AsyncConnection) -> None:
    """Copy the hazards' places onto the dispatches that lack them (as ``facts.upsert_facts`` does per batch)."""
    await conn.execute(facts.fill_places_sql(schema=STAGING_SCHEMA, of_hazards=False))


async def _rebuild_rollup(conn: AsyncConnection) -> None:
    await rollups.rebuild_rollup(conn, schema=STAGING_SCHEMA)


async def _in_transaction(engine: AsyncEngine, work: Any, *args: Any) -> None:
    async with engine.begin() as conn:
        await work(conn, *args)


async def _timed(work: Awaitable[None], result: RebuildResult, field: str) -> None:
    started = time.perf_counter()
    await work
    setattr(result, field, time.perf_counter() - started)


async def _replay(
    engine: AsyncEngine,
    reader: TopicReader,
    tz: ZoneInfo,
    result: RebuildResult,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Replay the topic into the staging tables, one transaction per batch, writes overlapping parsing."""

    async def write(batch: domain.FactBatch) -> None:
        async with engine.begin() as conn:
            await _merge_facts(conn, batch)

    inflight: asyncio.Task[None] | None = None
    with _bulk_gc():
        async for values in reader.batches():
            batch = _parse(values, tz, result)
            if inflight is not None:
                await inflight
            inflight = asyncio.create_task(write(batch))
            if on_batch is not None:
                on_batch(result.events)
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
    slot: int,
) -> WorkerResult:
    result = RebuildResult()
    counts = _WORKER_EVENTS

    def tell(events: int) -> None:
        if counts is not None and 0 <= slot < len(counts):
            counts[slot] = events

    engine = _engine(database_url)
    reader = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
    try:
        await reader.start(only=partitions)
        await _replay(engine, reader, ZoneInfo(timezone), result, tell)
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
    slot: int = -1,
) -> WorkerResult:
    """One process replaying some partitions into the staging tables (events so far in ``slot``).

    Facts are keyed by hazard (dispatches and relapses ride with their hazard, and the topic
    is keyed by hazard id), so workers on different partitions never write the same row.
    """
    return asyncio.run(
        _replay_partitions(database_url, bootstrap_servers, topic, timezone, batch_size, partitions, slot)
    )


# Events replayed so far by each worker process, in memory shared with the forked workers
# (None when they are spawned): what the progress line counts during a parallel replay.
_WORKER_EVENTS: Any = None


def replayed_by_workers() -> int:
    """Events the worker processes have replayed so far (0 when they cannot tell)."""
    counts = _WORKER_EVENTS
    return sum(counts) if counts is not None else 0


async def _start_workers(workers: int) -> ProcessPoolExecutor:
    """The replay worker processes, started now: before the rebuild opens any connection.

    They are forked where the platform can: a worker then starts in milliseconds with the modules
    already imported (spawned, each imports SQLAlchemy, pydantic and aiokafka again, ~1.3 s of CPU
    when no bytecode cache is written). Forking before the first connection or resolver thread
    means a worker inherits no socket or lock of this process's; it opens its own connections.
    """
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    global _WORKER_EVENTS
    _WORKER_EVENTS = context.Array("q", workers, lock=False) if "fork" in methods else None
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    await asyncio.get_running_loop().run_in_executor(pool, os.getpid)  # starts every worker
    return pool


async def _replay_parallel(
    *,
    pool: ProcessPoolExecutor,
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
    with pool:  # shut down once the replay is done
        done = await asyncio.gather(
            *(
                loop.run_in_executor(
                    pool,
                    replay_worker,
                    database_url,
                    bootstrap_servers,
                    topic,
                    timezone,
                    batch_size,
                    group,
                    slot,
                )
                for slot, group in enumerate(groups)
            )
        )
    if _WORKER_EVENTS is not None:  # counted in result.events from now on
        for slot in range(len(_WORKER_EVENTS)):
            _WORKER_EVENTS[slot] = 0
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
        await conn.execute(sa.text("SET LOCAL synchronous_commit = on"))  # the swap is durable
        await conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
        await conn.execute(sa.text(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE"))
        # Catch up with what reached the topic while the bulk replay ran (live consumer now waits).
        before = result.events
        async for values in reader.batches():
            batch = _parse(values, tz, result)
            await facts.upsert_facts(conn, batch, schema=STAGING_SCHEMA)
            await facts.mark_dirty(conn, batch.touched_hazards(), schema=STAGING_SCHEMA)
        result.caught_up = result.events - before
        await rollups.refresh_rollup(conn, schema=STAGING_SCHEMA)
        for table in tables.PROJECTION_TABLES:
            await conn.execute(sa.text(f"DROP TABLE {tables.SCHEMA}.{table.name}"))
        for table in tables.PROJECTION_TABLES:
            await conn.execute(
                sa.text(f"ALTER TABLE {STAGING_SCHEMA}.{table.name} SET SCHEMA {tables.SCHEMA}")
            )
        await conn.execute(sa.text(f"DROP SCHEMA {STAGING_SCHEMA}"))
        # The swapped-in tables are new objects: give the service's role its rows again (shared.roles).
        await conn.run_sync(roles.grant_schema, tables.SCHEMA)


async def rebuild(
    *,
    database_url: str,
    bootstrap_servers: str,
    topic: str,
    timezone: str,
    batch_size: int = 5000,
    workers: int = 1,
    progress: Progress | None = None,
) -> RebuildResult:
    """Replay the topic into fresh projection tables and swap them in; returns the counts and time.

    With ``workers`` > 1 the bulk replay runs in that many processes, each on its own partitions.
    ``progress`` is told the events replayed and the phase as the rebuild goes.
    """
    if progress is None:
        return await _rebuild(database_url, bootstrap_servers, topic, timezone, batch_size, workers, None)
    state = {"result": RebuildResult()}
    async with progress.ticking(lambda: state["result"].events + replayed_by_workers(), period_s=0.5):
        return await _rebuild(
            database_url, bootstrap_servers, topic, timezone, batch_size, workers, progress, state
        )


async def _rebuild(
    database_url: str,
    bootstrap_servers: str,
    topic: str,
    timezone: str,
    batch_size: int,
    workers: int,
    progress: Progress | None,
    state: dict[str, RebuildResult] | None = None,
) -> RebuildResult:
    def stage(name: str) -> None:
        if progress is not None:
            progress.update(progress.done, stage=name)

    started = time.perf_counter()
    result = state["result"] if state is not None else RebuildResult()
    tz = ZoneInfo(timezone)
    stage("starting")
    pool = await _start_workers(workers) if workers > 1 else None
    engine = _engine(database_url)
    reader = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
    try:
        async with engine.begin() as conn:
            await _create_staging(conn)
        if pool is not None:
            probe = TopicReader(bootstrap_servers, topic, batch_size=batch_size)
            await probe.start()
            partitions = await probe.topic_partitions()
            await probe.stop()
            result.setup_s = time.perf_counter() - started
            phase = time.perf_counter()
            stage(f"replaying the topic in {workers} processes")
            positions = await _replay_parallel(
                pool=pool,
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
            result.setup_s = time.perf_counter() - started
            phase = time.perf_counter()
            stage("replaying the topic")
            await _replay(engine, reader, tz, result)
        result.replay_s = time.perf_counter() - phase
        phase = time.perf_counter()
        stage("places")
        async with engine.begin() as conn:
            await _fill_places(conn)
        result.places_s = time.perf_counter() - phase
        phase = time.perf_counter()
        stage("rollup and indexes")
        # The rollup only reads the facts (whole-table passes that need no index) and the index
        # builds only read them too: on two connections they run side by side, one core each.
        await asyncio.gather(
            _timed(_in_transaction(engine, _create_indexes, FACT_TABLES), result, "index_s"),
            _timed(_in_transaction(engine, _rebuild_rollup), result, "rollup_s"),
        )
        async with engine.begin() as conn:
            await _create_indexes(conn, [t for t in tables.PROJECTION_TABLES if t not in FACT_TABLES])
        result.rollup_s = time.perf_counter() - phase
        phase = time.perf_counter()
        stage("catching up and swapping in")
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
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        await reader.stop()
        await engine.dispose()
    result.seconds = time.perf_counter() - started
    stage("done")
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
        "--result-json", type=Path, default=None, help="also write the counts and phase times here"
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
            # A bar on a terminal, a log line every 10 s otherwise.
            progress=Progress("reporting rebuild", unit="events", logger=log),
        )
    )
    print(
        f"rebuilt the reporting projection from {result.events} events "
        f"({result.invalid} invalid skipped, {result.caught_up} caught up during the swap) "
        f"in {result.seconds:.1f} s: {result.events_per_second:,.0f} events/s "
        f"(replay {result.replay_s:.1f} s, {result.replay_events_per_second:,.0f} events/s; "
        f"places {result.places_s:.1f} s, rollup and indexes {result.rollup_s:.1f} s "
        f"(fact indexes {result.index_s:.1f} s alongside), swap {result.swap_s:.1f} s)",
        file=sys.stderr,
    )
    if args.result_json is not None:
        args.result_json.write_text(json.dumps(dataclasses.asdict(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
