"""End to end: hazards/s through intake → dispatch → tracking → reporting, latency at 500/s, memory.

One run on one machine (``tests.support.system.System``: real PostgreSQL with fsync on, Tansu,
the four services as processes, broker traffic direct, no proxy):

1. latency at a fixed offered load (``--rate``, 500/s): report accepted (the client got its
   201) → ``hazard.dispatched`` on the topic (record timestamp), and → visible in reporting
   (count-based: the k-th accepted report counts as visible once reporting counts k; polled);
2. throughput: the load generator offers as much as intake accepts for ``--duration`` s
   (mostly offline batches of 100-500, the peak a campaign's phones produce when they sync);
   the rate is every accepted hazard divided by the time from the first send until the last
   one is both decided by dispatch (on the topic) and counted by reporting; then again with the
   distinct mix (``DISTINCT_MIX``: every report a new hazard at a place of its own, none fixed on
   the spot, only categories a department takes, so every one is dispatched), on a fresh system
   of its own (the first phases' open hazards would be duplicates of its reports);
3. after each phase, every hazard accounted for, from the topic: accepted == reported events;
   dispatched + duplicates + fixed on site + referred to operators == accepted; nothing
   dispatched twice; reporting's ``reported`` == accepted;
4. resident memory (VmRSS) of each service at the end;
5. with the services stopped, the raw ceiling on the same broker and database
   (``bench.raw_ceiling``), and what the reliability patterns alone cost per event there
   (``bench.pattern_floor``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench import pattern_floor, raw_ceiling
from bench.cpu import CpuMeter, CpuSampler, system_parts
from bench.loadgen import BehaviourMix, LoadGenerator, Principal, percentile
from bench.otlp_sink import OtlpSink
from shared.events import dump_event, parse_event
from shared.progress import Progress
from tests.support.oracles import (
    TopicFacts,
    TopicFollower,
    account,
    reporting_count,
)

RESULTS = Path(__file__).resolve().parent / "results"
THROUGHPUT_MIX = BehaviourMix(batch_share=0.9, batch_min=100, batch_max=500, on_site=0.12)
# The second mix: every report a distinct hazard that a department receives (issue #20 asks for both).
DISTINCT_MIX = BehaviourMix(batch_share=0.9, batch_min=100, batch_max=500, on_site=0.0, distinct=True)
LATENCY_MIX = BehaviourMix(batch_share=0.2, batch_min=5, batch_max=40, on_site=0.12)


class ReportingPoller:
    """Polls reporting's count in the background: a time series of (unix time, count)."""

    def __init__(self, client: httpx.AsyncClient, base: str, supervisor: Principal, interval_s: float = 0.2):
        self.client, self.base, self.supervisor, self.interval_s = client, base, supervisor, interval_s
        self.series: list[tuple[float, int]] = []
        self.baseline = 0
        self._task: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """Note reporting's count before the phase, then poll in the background."""
        self.baseline = await reporting_count(self.client, self.base, self.supervisor) or 0
        self.start()

    async def _run(self) -> None:
        while True:
            count = await reporting_count(self.client, self.base, self.supervisor)
            if count is not None:
                self.series.append((time.time(), count))
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def reached(self, count: int) -> float | None:
        """The first poll time at which reporting counted at least ``count``."""
        for at, seen in self.series:
            if seen - self.baseline >= count:
                return at
        return None

    @property
    def counted(self) -> int | None:
        """Reports counted since the phase began (latest poll)."""
        return self.series[-1][1] - self.baseline if self.series else None


async def wait_until(predicate: Any, *, timeout_s: float, interval_s: float = 0.5) -> bool:
    """Poll an async predicate until true or timeout; return whether it became true."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(interval_s)
    return False


# ---------------------------------------------------------------- the phases


def _latencies(values: list[float]) -> dict[str, Any]:
    values = sorted(values)
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p99_ms": round(percentile(values, 99) * 1000, 1),
        "max_ms": round(values[-1] * 1000, 1),
    }


async def _rows_written(dsn: str) -> int:
    """Rows inserted, updated and deleted so far in the whole PostgreSQL cluster."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("select sum(tup_inserted + tup_updated + tup_deleted) from pg_stat_database")
        )
    finally:
        await conn.close()


# PostgreSQL 15 flushes a backend's table counters at most once a second, and a backend that went
# idle with counters pending (flushed less than a second before) only after 10 s: snapshots of the
# counters wait this long after the work so that they include all of it.
STATS_SETTLE_S = 11.0


async def _table_writes(postgres: Any) -> dict[str, dict[str, int]]:
    """Rows written so far by table (``pg_stat_user_tables``), in every database of the cluster.

    Keyed ``schema.table`` (``database/schema.table`` outside the default database); a partition
    counts towards its root table. Values: inserted, updated (of which HOT), deleted.
    """
    conn = await asyncpg.connect(postgres.dsn())
    try:
        default = await conn.fetchval("select current_database()")
        databases = [
            r["datname"]
            for r in await conn.fetch(
                "select datname from pg_database where datallowconn and not datistemplate"
            )
        ]
    finally:
        await conn.close()
    out: dict[str, dict[str, int]] = {}
    for database in databases:
        conn = await asyncpg.connect(postgres.dsn(database))
        try:
            rows = await conn.fetch(
                """
                select n.nspname as schemaname, c.relname,
                       sum(s.n_tup_ins)::bigint as ins, sum(s.n_tup_upd)::bigint as upd,
                       sum(s.n_tup_hot_upd)::bigint as hot, sum(s.n_tup_del)::bigint as del
                from pg_stat_user_tables s
                join pg_class c on c.oid = coalesce(pg_partition_root(s.relid), s.relid)
                join pg_namespace n on n.oid = c.relnamespace
                group by n.nspname, c.relname
                """
            )
        finally:
            await conn.close()
        prefix = "" if database == default else f"{database}/"
        for r in rows:
            out[f"{prefix}{r['schemaname']}.{r['relname']}"] = {
                "inserted": int(r["ins"]),
                "updated": int(r["upd"]),
                "hot_updated": int(r["hot"]),
                "deleted": int(r["del"]),
            }
    return out


def table_writes_per_hazard(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]], hazards: int
) -> list[dict[str, Any]]:
    """Rows written per hazard by table between two ``_table_writes`` snapshots, largest first.

    ``total`` = inserted + updated + deleted (as ``pg_stat_database`` counts them); ``hot_updated``
    is the part of ``updated`` that touched no index. Tables with no write are left out.
    """
    rows: list[dict[str, Any]] = []
    for table, now in after.items():
        then = before.get(table, {})
        diff = {key: now[key] - then.get(key, 0) for key in now}
        total = diff["inserted"] + diff["updated"] + diff["deleted"]
        if total <= 0:
            continue
        per = max(1, hazards)
        rows.append(
            {
                "table": table,
                "inserted": round(diff["inserted"] / per, 3),
                "updated": round(diff["updated"] / per, 3),
                "hot_updated": round(diff["hot_updated"] / per, 3),
                "deleted": round(diff["deleted"] / per, 3),
                "total": round(total / per, 3),
                "rows": total,
            }
        )
    rows.sort(key=lambda r: -r["rows"])
    return rows


async def _event_counters(client: httpx.AsyncClient, system: Any) -> dict[str, float]:
    """Events applied and published so far, summed over the services (their own Prometheus counters)."""
    totals = {"applied": 0.0, "published": 0.0}
    for name in system.service_names:
        text = (await client.get(system.url(name) + "/metrics")).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if (
                    sample.name == "hazard_events_consumed_total"
                    and sample.labels.get("outcome") == "applied"
                ):
                    totals["applied"] += sample.value
                elif sample.name == "hazard_outbox_published_total":
                    totals["published"] += sample.value
    return totals


def patterns_share(work: dict[str, Any], floor: dict[str, Any]) -> dict[str, Any]:
    """CPU ms per hazard the reliability patterns alone take, at this run's work per hazard.

    ``floor`` is ``bench.pattern_floor``'s measurement on the same broker and database: the CPU
    (consumer, PostgreSQL, broker) of applying one event with a handler that does nothing, and of
    publishing one through the outbox. Events a consumer skips by their type header, and intake's
    HTTP handling, are left out, so this is a lower bound.
    """
    applied, published = work["events_applied"], work["events_published"]
    consume = floor["consume"]["cpu_ms_per_event"]["total"]
    publish = floor["cpu_ms_per_published_event"]["total"]
    return {
        "cpu_ms_per_applied_event": consume,
        "cpu_ms_per_published_event": publish,
        "cpu_ms_per_hazard": round(applied * consume + published * publish, 3),
    }


def machine_speed_probe(rounds: int = 5, per_round: int = 5000) -> float:
    """Microseconds to parse one reported-hazard event (best of ``rounds``): this machine's speed now.

    The CPU per hazard moves with the host (the same code measured 20-25 % apart on one
    machine within an hour, every process alike); this fixed piece of pure-Python work,
    timed at the start, says how fast the machine was when the figures were taken.
    """
    raw = dump_event(pattern_floor.workload(1)[0])
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_round):
            parse_event(raw)
        best = min(best, (time.perf_counter() - started) / per_round)
    return round(best * 1e6, 2)


def infrastructure_floor(work: dict[str, Any], ceiling: dict[str, Any]) -> dict[str, Any]:
    """What the broker and the database alone would allow, priced at this machine's raw ceiling.

    Each raw-ceiling figure is what the whole machine does when it does nothing else, so one
    produced record costs ``1 / produce_msgs_per_s`` machine-seconds, and so on. Summing the
    system's measured work per hazard (records produced, each fetched by every consumer group,
    rows written) gives the machine-seconds per hazard that no application code could avoid.
    """
    kafka, postgres = ceiling["kafka"], ceiling["postgres"]
    produced = work["records_produced"]
    consumed = produced * work["consumer_groups"]
    seconds = (
        produced / kafka["produce_msgs_per_s"]
        + consumed / kafka["consume_msgs_per_s"]
        + work["rows_written"] / postgres["batched_insert_rows_per_s"]
    )
    return {
        "machine_ms_per_hazard": round(seconds * 1000, 4),
        "hazards_per_s": round(1 / seconds, 1) if seconds else None,
    }


async def _drain(
    follower: TopicFollower, generator: LoadGenerator, poller: ReportingPoller, *, timeout_s: float
) -> TopicFacts:
    """Wait until dispatch decided every accepted hazard and reporting counted them; return the topic facts."""
    accepted = generator.result.accepted

    async def dispatch_done() -> bool:
        result = account(accepted, await follower.catch_up())
        decided = (
            result["dispatched"]
            + result["duplicates"]
            + result["rectified_on_site"]
            + result["referred_to_operators"]
        )
        return bool(decided >= result["accepted"])

    async def reporting_done() -> bool:
        return (poller.counted or 0) >= len(accepted)

    await wait_until(dispatch_done, timeout_s=timeout_s, interval_s=1.0)
    await wait_until(reporting_done, timeout_s=timeout_s, interval_s=0.5)
    # One more poll so the figures include whatever arrived last.
    return await follower.catch_up()


async def throughput_phase(
    system: Any,
    follower: TopicFollower,
    *,
    duration_s: float,
    concurrency: int,
    drain_timeout_s: float,
    behaviour: BehaviourMix = THROUGHPUT_MIX,
    seed: int = 11,
) -> dict[str, Any]:
    """Offer as much as intake accepts for ``duration_s``; rate = accepted / (first send → last visible)."""
    supervisor = system.principal("supervisor")
    generator = LoadGenerator(
        intake=system.url("intake"),
        principals=system.principals,
        reference=system.reference,
        seed=seed,
        concurrency=concurrency,
        behaviour=behaviour,
        timeout_s=120.0,
    )
    meter = CpuMeter(system_parts(system))
    async with httpx.AsyncClient(timeout=30) as client:
        poller = ReportingPoller(client, system.url("reporting"), supervisor, interval_s=1.0)
        await poller.begin()
        try:
            records_before = (await follower.catch_up()).records
            await asyncio.sleep(STATS_SETTLE_S)  # the previous phase's last counters
            rows_before = await _rows_written(system.postgres.dsn())
            tables_before = await _table_writes(system.postgres)
            events_before = await _event_counters(client, system)
            cpu_before = meter.snapshot()
            label = "throughput phase (distinct mix)" if behaviour.distinct else "throughput phase"
            progress = Progress(label, unit="reports", interval_s=10.0)
            async with progress.ticking(generator.sent, period_s=0.2):
                progress.update(0, stage=f"offering as much as intake accepts for {duration_s:.0f} s")
                await generator.run_max(duration_s=duration_s, chunk=1000)
                sent_done = time.time()
                progress.update(generator.sent(), stage="draining: until dispatch and reporting have all")
                facts = await _drain(follower, generator, poller, timeout_s=drain_timeout_s)
            cpu_after = meter.snapshot()
            await asyncio.sleep(STATS_SETTLE_S)  # PostgreSQL publishes its table counters late
            rows_after = await _rows_written(system.postgres.dsn())
            tables_after = await _table_writes(system.postgres)
            events_after = await _event_counters(client, system)
        finally:
            await poller.stop()
    result = generator.result
    accepted = result.accepted
    accounting = account(accepted, facts)
    visible_at = poller.reached(len(accepted))
    dispatched_last = max(
        (facts.dispatched_ts[a.hazard_id] for a in accepted if a.hazard_id in facts.dispatched_ts),
        default=None,
    )
    decided_last = max(filter(None, [dispatched_last, facts.last_ts]), default=None)
    end = max(filter(None, [visible_at, decided_last])) if visible_at else None
    reporting_final = poller.counted
    cpu_ms = CpuMeter.per_item_ms(cpu_before, cpu_after, len(accepted))
    system_ms = cpu_ms["total"] - cpu_ms.get("load generator", 0.0)
    if reporting_final != len(accepted):
        accounting["problems"].append(f"reporting counts {reporting_final} reports, {len(accepted)} accepted")
    return {
        "duration_s": duration_s,
        "mix": {
            "batch_share": behaviour.batch_share,
            "batch_sizes": [behaviour.batch_min, behaviour.batch_max],
            "on_site": behaviour.on_site,
            "distinct": behaviour.distinct,
        },
        "offered": result.offered,
        "accepted": len(accepted),
        "rejected": result.rejected,
        "send_seconds": round(sent_done - result.started_at, 1),
        "intake_accepted_per_s": round(len(accepted) / max(1e-9, sent_done - result.started_at), 1),
        "end_to_end_seconds": round(end - result.started_at, 1) if end else None,
        "end_to_end_hazards_per_s": round(len(accepted) / (end - result.started_at), 1) if end else None,
        "reporting_counted": reporting_final,
        "accounting": accounting,
        "cpu_ms_per_hazard": cpu_ms,
        "work_per_hazard": {
            "records_produced": round((facts.records - records_before) / max(1, len(accepted)), 2),
            "consumer_groups": len(system.service_names),
            "rows_written": round((rows_after - rows_before) / max(1, len(accepted)), 2),
            # The same by table (pg_stat_user_tables; the cluster figure above also counts catalogs).
            "rows_written_by_table": table_writes_per_hazard(tables_before, tables_after, len(accepted)),
            # Summed over the services: each applies the event types it is interested in.
            "events_applied": round(
                (events_after["applied"] - events_before["applied"]) / max(1, len(accepted)), 2
            ),
            "events_published": round(
                (events_after["published"] - events_before["published"]) / max(1, len(accepted)), 2
            ),
        },
        # What the CPU alone allows: every core busy with this code and nothing else.
        "cpu_bound_hazards_per_s": round((os.cpu_count() or 1) * 1000 / system_ms, 1) if system_ms else None,
        "errors": result.errors[:5],
        **(
            {"places_reused": generator.planner.places.reused} if generator.planner.places is not None else {}
        ),
    }


SERIES_WINDOW_S = 5.0
# The latency phase's figures are also given without its first seconds: the wake from idle (#20).
WARMUP_S = 5.0


def latency_series(
    accepted: list[Any], facts: TopicFacts, sampler: CpuSampler | None, *, window_s: float = SERIES_WINDOW_S
) -> list[dict[str, Any]]:
    """Per ``window_s`` of accept time: accepted → dispatched and → decided by dispatch, and the CPU.

    A hazard falls in the window in which intake accepted it. ``dispatched``: accepted →
    ``hazard.dispatched`` on the topic; ``decided``: ``hazard.reported`` on the topic → dispatch's
    decision (the dispatched event's ``occurred_at``), i.e. dispatch's fetch and apply. ``cpu_pct``:
    each part's CPU % of one core over the window (from ``sampler``). If dispatch's p99 climbs from
    window to window while the broker's CPU climbs with it, the broker slows as its log grows; if it
    is flat and spread, the time goes elsewhere.
    """
    if not accepted:
        return []
    start = min(a.accepted_at for a in accepted)
    buckets: dict[int, list[Any]] = {}
    for a in accepted:
        buckets.setdefault(int((a.accepted_at - start) // window_s), []).append(a)
    rows = []
    for index in range(max(buckets) + 1):
        these = buckets.get(index, [])
        dispatched = [
            facts.dispatched_ts[a.hazard_id] - a.accepted_at
            for a in these
            if a.hazard_id in facts.dispatched_ts
        ]
        decided = [
            facts.dispatched_decided[a.hazard_id] - facts.reported_ts[a.hazard_id]
            for a in these
            if a.hazard_id in facts.dispatched_decided and a.hazard_id in facts.reported_ts
        ]
        w_start = start + index * window_s
        row: dict[str, Any] = {
            "t_s": round(index * window_s, 1),
            "accepted": len(these),
            "accepted_to_dispatched": _latencies(dispatched),
            "reported_to_dispatch_decided": _latencies(decided),
        }
        if sampler is not None:
            row["cpu_pct"] = sampler.window(w_start, w_start + window_s)
        rows.append(row)
    return rows


def accepted_latencies(
    accepted: list[Any],
    dispatched_ts: dict[Any, float],
    reached: Any,
    *,
    after_s: float = 0.0,
) -> tuple[list[float], list[float]]:
    """Accepted → dispatched and accepted → counted by reporting (seconds), of what was accepted
    ``after_s`` or more after the phase's first report.

    ``reached(k)``: when reporting first counted k of the phase's reports (the k-th accepted, in
    accept order), or None. With ``after_s`` = ``WARMUP_S``, the wake from idle is left out: the
    stack is idle before the latency phase, so every consumer is in its idle fetch wait
    (``IDLE_FETCH_MAX_WAIT_MS``, 2 s), which the local broker holds to its end even when records
    arrive, and the phase's first records wait for it (#20).
    """
    first = min((a.accepted_at for a in accepted), default=0.0)
    to_dispatch = [
        dispatched_ts[a.hazard_id] - a.accepted_at
        for a in accepted
        if a.hazard_id in dispatched_ts and a.accepted_at >= first + after_s
    ]
    to_reporting = [
        max(0.0, seen - a.accepted_at)
        for k, a in enumerate(sorted(accepted, key=lambda a: a.accepted_at), start=1)
        if a.accepted_at >= first + after_s and (seen := reached(k)) is not None
    ]
    return to_dispatch, to_reporting


async def latency_phase(
    system: Any, follower: TopicFollower, *, rate: float, duration_s: float, drain_timeout_s: float
) -> dict[str, Any]:
    """Offer ``rate`` reports/s for ``duration_s``; latency accepted → dispatched and → visible in reporting."""
    supervisor = system.principal("supervisor")
    generator = LoadGenerator(
        intake=system.url("intake"),
        principals=system.principals,
        reference=system.reference,
        seed=23,
        concurrency=64,
        behaviour=LATENCY_MIX,
    )
    async with httpx.AsyncClient(timeout=30) as client:
        poller = ReportingPoller(client, system.url("reporting"), supervisor, interval_s=0.2)
        await poller.begin()
        sampler = CpuSampler(system_parts(system), interval_s=1.0)
        sampler.start()
        try:
            progress = Progress(
                "latency phase", total=int(rate * duration_s), unit="reports", interval_s=10.0
            )
            async with progress.ticking(generator.sent, period_s=0.2):
                progress.update(0, stage=f"{rate:.0f} reports/s for {duration_s:.0f} s")
                await generator.run_rate(rate=rate, duration_s=duration_s)
                progress.update(generator.sent(), stage="draining: until dispatch and reporting have all")
                facts = await _drain(follower, generator, poller, timeout_s=drain_timeout_s)
        finally:
            await sampler.stop()
            await poller.stop()
    accepted = generator.result.accepted
    to_dispatch, to_reporting = accepted_latencies(accepted, facts.dispatched_ts, poller.reached)
    to_dispatch_warm, to_reporting_warm = accepted_latencies(
        accepted, facts.dispatched_ts, poller.reached, after_s=WARMUP_S
    )
    # The two hops of that path: intake's relay (accepted → reported on the topic) and dispatch
    # (reported on the topic → dispatched on the topic), by the records' timestamps.
    to_topic = [
        facts.reported_ts[a.hazard_id] - a.accepted_at for a in accepted if a.hazard_id in facts.reported_ts
    ]
    topic_to_dispatched = [
        facts.dispatched_ts[a.hazard_id] - facts.reported_ts[a.hazard_id]
        for a in accepted
        if a.hazard_id in facts.dispatched_ts and a.hazard_id in facts.reported_ts
    ]
    # ... and dispatch's hop split at its decision (the event's occurred_at, its transaction's clock):
    # fetching and applying, then its outbox relay.
    topic_to_decided = [
        facts.dispatched_decided[a.hazard_id] - facts.reported_ts[a.hazard_id]
        for a in accepted
        if a.hazard_id in facts.dispatched_decided and a.hazard_id in facts.reported_ts
    ]
    decided_to_topic = [
        facts.dispatched_ts[a.hazard_id] - facts.dispatched_decided[a.hazard_id]
        for a in accepted
        if a.hazard_id in facts.dispatched_decided and a.hazard_id in facts.dispatched_ts
    ]
    http = [a.accepted_at - a.scheduled_at for a in accepted]
    accounting = account(accepted, facts)
    return {
        "offered_rate": rate,
        "duration_s": duration_s,
        "accepted": len(accepted),
        "achieved_rate": round(
            len(accepted) / max(1e-9, generator.result.finished_at - generator.result.started_at), 1
        ),
        "http_accept": _latencies(http),
        "accepted_to_dispatched": _latencies(to_dispatch),
        "accepted_to_reported_on_topic": _latencies(to_topic),
        "reported_on_topic_to_dispatched": _latencies(topic_to_dispatched),
        "reported_on_topic_to_dispatch_decided": _latencies(topic_to_decided),
        "dispatch_decided_to_dispatched_on_topic": _latencies(decided_to_topic),
        "accepted_to_reporting": _latencies(to_reporting),
        "warmup_s": WARMUP_S,
        "accepted_to_dispatched_after_warmup": _latencies(to_dispatch_warm),
        "accepted_to_reporting_after_warmup": _latencies(to_reporting_warm),
        "reporting_poll_interval_s": poller.interval_s,
        "series": latency_series(accepted, facts, sampler),
        "series_window_s": SERIES_WINDOW_S,
        # The same by second (a transient shorter than a window shows here).
        "series_1s": latency_series(accepted, facts, sampler, window_s=1.0),
        "accounting": accounting,
        "errors": generator.result.errors[:5],
    }


async def _phases(
    system: Any,
    *,
    rate: float,
    latency_duration_s: float,
    duration_s: float,
    concurrency: int,
    drain_timeout_s: float,
) -> tuple[dict[str, Any], dict[str, Any]]:
    follower = TopicFollower(system.bootstrap_servers, system.lifecycle_topic)
    await follower.start()
    try:
        latency = await latency_phase(
            system, follower, rate=rate, duration_s=latency_duration_s, drain_timeout_s=drain_timeout_s
        )
        throughput = await throughput_phase(
            system, follower, duration_s=duration_s, concurrency=concurrency, drain_timeout_s=drain_timeout_s
        )
    finally:
        await follower.stop()
    return latency, throughput


async def _distinct_phase(
    system: Any, *, duration_s: float, concurrency: int, drain_timeout_s: float
) -> dict[str, Any]:
    follower = TopicFollower(system.bootstrap_servers, system.lifecycle_topic)
    await follower.start()
    try:
        return await throughput_phase(
            system,
            follower,
            duration_s=duration_s,
            concurrency=concurrency,
            drain_timeout_s=drain_timeout_s,
            behaviour=DISTINCT_MIX,
            seed=12,
        )
    finally:
        await follower.stop()


def run(
    *,
    duration_s: float = 60.0,
    rate: float = 500.0,
    latency_duration_s: float = 30.0,
    concurrency: int = 8,
    ceiling_messages: int = 200_000,
    ceiling_rows: int = 100_000,
    floor_events: int = 50_000,
    drain_timeout_s: float = 600.0,
    tracing: bool = False,
    tracing_sample: float = 1.0,
) -> dict[str, Any]:
    """Start the system, measure everything, stop it; return the figures.

    ``tracing``: every service records spans and exports them by OTLP to a sink in this process
    (:mod:`bench.otlp_sink`), which counts them; off, no service records any (the default).
    """
    from tests.support.system import SERVICES, System

    probe_us = machine_speed_probe()
    sink = OtlpSink() if tracing else None
    env = (
        {"TRACING__OTLP_ENDPOINT": sink.endpoint, "TRACING__SAMPLE_RATIO": str(tracing_sample)}
        if sink is not None
        else {}
    )
    system = System(services=SERVICES, proxy=False, env=env)
    started = time.time()
    if sink is not None:
        sink.__enter__()
    system.start()
    try:
        latency, throughput = asyncio.run(
            _phases(
                system,
                rate=rate,
                latency_duration_s=latency_duration_s,
                duration_s=duration_s,
                concurrency=concurrency,
                drain_timeout_s=drain_timeout_s,
            )
        )
        rss = {name: system.rss_kib(name) for name in SERVICES}
        # The ceilings last, on the same broker and database with the services stopped, so that
        # neither their scratch data nor the idle services stand in the other's measurement.
        for name in SERVICES:
            system.terminate(name)
        ceiling = asyncio.run(
            raw_ceiling.measure(
                system.bootstrap_servers, system.postgres.dsn(), messages=ceiling_messages, rows=ceiling_rows
            )
        )
        kafka, postgres = system.kafka, system.postgres
        assert kafka is not None
        floor = asyncio.run(pattern_floor.run(kafka, postgres, events=floor_events))
    finally:
        system.stop()
    # The second mix on a system of its own: the first phases' open hazards, at random places,
    # would make duplicates of distinct reports.
    second = System(services=SERVICES, proxy=False, env=env)
    second.start()
    try:
        distinct = asyncio.run(
            _distinct_phase(
                second, duration_s=duration_s, concurrency=concurrency, drain_timeout_s=drain_timeout_s
            )
        )
    finally:
        second.stop()
        if sink is not None:
            sink.__exit__(None, None, None)
    e2e = throughput.get("end_to_end_hazards_per_s")
    for phase in (throughput, distinct):
        if phase.get("work_per_hazard"):
            phase["infrastructure_floor"] = infrastructure_floor(phase["work_per_hazard"], ceiling)
            phase["patterns_share"] = patterns_share(phase["work_per_hazard"], floor)
    ratio = {}
    if e2e:
        ratio = {
            "vs_kafka_produce_and_consume": round(
                e2e / ceiling["kafka"]["produce_and_consume_msgs_per_s"], 4
            ),
            "vs_postgres_batched_insert": round(e2e / ceiling["postgres"]["batched_insert_rows_per_s"], 4),
        }
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_at_start": os.getloadavg(),
            "speed_probe_us_per_event_parse": probe_us,
        },
        "raw_ceiling": ceiling,
        "pattern_floor": floor,
        "throughput": throughput,
        "throughput_distinct": distinct,
        "ratio_to_raw_ceiling": ratio,
        "latency": latency,
        "rss_kib": rss,
        "tracing": {"enabled": True, "sample_ratio": tracing_sample, **sink.figures()}
        if sink is not None
        else {"enabled": False},
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.end_to_end``: run and write ``bench/results/end_to_end.json``."""
    parser = argparse.ArgumentParser(prog="python -m bench.end_to_end", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--latency-duration", type=float, default=30.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="services record spans and export them by OTLP (to a local sink)",
    )
    parser.add_argument(
        "--small-ceilings",
        action="store_true",
        help="measure the raw ceiling and pattern floor on a tenth of the data (they do not depend on the services' settings)",
    )
    parser.add_argument(
        "--tracing-sample", type=float, default=None, help="with tracing: the share of new traces recorded"
    )
    args = parser.parse_args(argv)
    extra: dict[str, Any] = (
        {"ceiling_messages": 20_000, "ceiling_rows": 10_000, "floor_events": 5_000}
        if args.small_ceilings
        else {}
    )
    result = run(
        duration_s=args.duration,
        rate=args.rate,
        latency_duration_s=args.latency_duration,
        concurrency=args.concurrency,
        tracing=args.tracing or args.tracing_sample is not None,
        tracing_sample=1.0 if args.tracing_sample is None else args.tracing_sample,
        **extra,
    )
    RESULTS.mkdir(exist_ok=True)
    name = "end_to_end"
    if args.tracing or args.tracing_sample is not None:
        name += "_tracing" if args.tracing_sample is None else f"_tracing_{args.tracing_sample:g}"
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
