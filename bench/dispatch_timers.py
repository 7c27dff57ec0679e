"""Dispatch timers: 100,000 pending receipt deadlines falling due within one minute all fire, once, on time.

100,000 pending dispatches are written with their schedules (receipt deadline, and the
escalation chain: the level-1 reminder is due with the deadline, levels 2 and 3 hours
later; since #20 the dispatch row carries them and ``dispatch.timers`` records each step fired), their deadlines spread evenly over one minute starting a little after the
service starts. The dispatch service runs as `--replicas` processes (``python -m services.dispatch``,
the real wiring: timer loop, outbox relay to the broker, consumer). We report lateness = fired_at - due_at (p50, p99,
max; target p99 under 2 s), check that every due timer fired, and read the topic back
to check that no ``hazard.receipt_overdue`` or ``hazard.escalated`` was published twice.

``python -m bench.dispatch_timers [--dispatches N] [--window-s S] [--replicas R]``; figures are
printed and written to ``bench/results/dispatch_timers.json``.

``--backlog`` measures draining instead: once every replica is ready, all the deadlines are made
due at once (spread over the `window` just past), and we report how long the replicas take to
fire them all (drain seconds, timers/s) and how many each fired (from each process's metrics),
in ``bench/results/dispatch_timers_backlog_<R>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench._stack import private_stack, publish_results
from services.dispatch import domain, tables
from services.dispatch import repository as repo
from shared import events as ev
from shared.db import create_engine
from shared.devstack import LocalKafka, LocalPostgres, free_port
from shared.migrate import migrate
from shared.outbox import unpublished_count_query
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
FAR = datetime(2100, 1, 1, tzinfo=UTC)


async def _seed(url: str, count: int) -> float:
    """Write `count` pending dispatches with their schedules, due far in the future for now."""
    reference = load_reference_data()
    engine = create_engine(DatabaseSettings(url=url))
    started = time.perf_counter()
    try:
        created = datetime.now(UTC)
        for start in range(0, count, 5000):
            dispatch_rows: list[dict[str, Any]] = []
            for index in range(start, min(count, start + 5000)):
                dispatch_id = uuid.uuid4()
                # The offset (in microseconds of the window) rides on the deadline; _arm moves it to now.
                deadline = FAR + timedelta(microseconds=index)
                facts = domain.HazardFacts(
                    hazard_id=uuid.uuid4(),
                    category="locked_rooftop_door",
                    community_id="liuyue",
                    grid_id="liuyue-01",
                )
                dispatch = domain.Dispatch(
                    dispatch_id=dispatch_id,
                    hazard_id=facts.hazard_id,
                    department_id="fire",
                    rule_id="r-locked-rooftop-door",
                    category=facts.category,
                    community_id=facts.community_id,
                    grid_id=facts.grid_id,
                    status="pending",
                    receipt_deadline=deadline,
                    deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
                    created_at=created,
                    escalation=domain.escalation_plan(
                        deadline=deadline, steps=reference.escalation_steps, reference=reference
                    ),
                )
                dispatch_rows.append(repo.dispatch_row(dispatch, dispatched_by="system"))
            async with engine.begin() as conn:
                await conn.execute(sa.insert(tables.dispatches), dispatch_rows)
        async with engine.begin() as conn:
            await conn.execute(sa.text("analyze dispatch.dispatches"))
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def _arm(url: str, *, count: int, window_s: float, lead_s: float) -> datetime:
    """Spread the deadlines evenly over `window_s` seconds starting `lead_s` from now; returns the start."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as conn:
            begin: datetime = (await conn.execute(sa.text("select now()"))).scalar_one() + timedelta(
                seconds=lead_s
            )
            # microseconds since FAR = index; deadline = begin + index * window / count
            spread = sa.text(
                "(cast(:begin as timestamptz) + (extract(epoch from (receipt_deadline - cast(:far as timestamptz)))"
                " * 1000000 * cast(:step as double precision)) * interval '1 microsecond')"
            )
            params = {"begin": begin, "far": FAR, "step": window_s * 1_000_000 / count}
            # The deadline, the next due step and every escalation step move together (each step keeps
            # its distance from the deadline; the SET expressions read the row before the update).
            await conn.execute(
                sa.text(
                    f"update dispatch.dispatches set receipt_deadline = {spread.text}, "
                    f"next_due_at = {spread.text}, "
                    "escalation = (select jsonb_agg(jsonb_set(s, '{due_at}', to_jsonb("
                    f"{spread.text} + (cast(s ->> 'due_at' as timestamptz) - receipt_deadline))) "
                    "order by cast(s ->> 'level' as int)) from jsonb_array_elements(escalation) s)"
                ),
                params,
            )
        async with engine.begin() as conn:
            await conn.execute(sa.text("analyze dispatch.dispatches"))
    finally:
        await engine.dispose()
    return begin


async def _fired_by(client: httpx.AsyncClient, port: int) -> int:
    """How many overdue and escalation events one replica's timer loop fired (its own counters)."""
    text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(("hazard_dispatch_receipt_overdue_total{", "hazard_dispatch_escalations_total{")):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def _count_published(
    bootstrap: str, topic: str, expect: int, timeout_s: float
) -> Counter[tuple[str, str, int]]:
    """(event type, dispatch id, level) of every overdue and escalation event on the topic."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=40_000
    )
    await consumer.start()
    seen: Counter[tuple[str, str, int]] = Counter()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if not batch:
                if sum(seen.values()) >= expect and time.monotonic() - quiet_since > 2:
                    break
                continue
            quiet_since = time.monotonic()
            for records in batch.values():
                for record in records:
                    event = ev.parse_event(record.value)
                    payload: Any = event.payload
                    if isinstance(event, ev.HazardReceiptOverdue | ev.HazardEscalated):
                        seen[(event.TYPE, str(payload.dispatch_id), getattr(payload, "level", 0))] += 1
    finally:
        await consumer.stop()
    return seen


async def run(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    *,
    count: int,
    window_s: float,
    replicas: int,
    backlog: bool = False,
) -> dict[str, Any]:
    """Seed, arm, run dispatch until every due timer fired, then measure lateness and duplicates."""
    url = postgres.url()
    await migrate(url)
    lifecycle, dead = f"bench-lifecycle-{uuid.uuid4().hex[:6]}", f"bench-dlt-{uuid.uuid4().hex[:6]}"
    await kafka.create_topics({lifecycle: PARTITIONS, dead: 1})
    seed_s = await _seed(url, count)
    group = f"bench-dispatch-{uuid.uuid4().hex[:6]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH__")}
    env.update(
        {
            "DISPATCH__DATABASE__URL": url,
            "DISPATCH__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "DISPATCH__KAFKA__LIFECYCLE_TOPIC": lifecycle,
            "DISPATCH__KAFKA__DEAD_LETTER_TOPIC": dead,
            "DISPATCH__KAFKA__IDEMPOTENT_PRODUCER": "false",
            "DISPATCH__KAFKA__GROUP_ID": group,
            "DISPATCH__LOG_LEVEL": "WARNING",
        }
    )
    due_timers = count * 2  # the deadline and the level-1 reminder due with it
    engine = create_engine(DatabaseSettings(url=url))
    procs: list[asyncio.subprocess.Process] = []
    try:
        ports = [free_port() for _ in range(replicas)]
        for port in ports:
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "services.dispatch",
                    cwd=ROOT,
                    env={**env, "DISPATCH__HTTP__PORT": str(port)},
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
            )
        async with httpx.AsyncClient() as client:
            for port in ports:
                for _ in range(600):
                    with contextlib.suppress(httpx.TransportError):
                        if (
                            await client.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
                        ).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
                else:
                    raise RuntimeError(f"dispatch on port {port} never became ready")
        # A backlog: everything falls due in the window just past, the moment the arming commits.
        begin = await _arm(url, count=count, window_s=window_s, lead_s=-window_s if backlog else 10)
        async with engine.connect() as conn:
            armed_at = (await conn.execute(sa.text("select clock_timestamp()"))).scalar_one()
        end = max(begin + timedelta(seconds=window_s), datetime.now(UTC))
        all_fired_at: datetime | None = None
        while True:
            async with engine.connect() as conn:
                fired, unpublished, seen_at = (
                    await conn.execute(
                        sa.text(
                            "select (select count(*) from dispatch.timers where fired_at is not null), "
                            f"({unpublished_count_query('dispatch')}), clock_timestamp()"
                        )
                    )
                ).one()
            if fired >= due_timers and all_fired_at is None:
                all_fired_at = seen_at
            if fired >= due_timers and unpublished == 0:
                all_published_at = seen_at
                break
            if datetime.now(UTC) > end + timedelta(seconds=600):
                raise RuntimeError(f"only {fired} of {due_timers} timers fired in time")
            await asyncio.sleep(0.1 if backlog else 0.5)
        async with engine.connect() as conn:
            stats = (
                await conn.execute(
                    sa.text(
                        "select count(*) as fired, "
                        "percentile_cont(0.5) within group (order by extract(epoch from fired_at - due_at)) as p50, "
                        "percentile_cont(0.99) within group (order by extract(epoch from fired_at - due_at)) as p99, "
                        "max(extract(epoch from fired_at - due_at)) as worst, "
                        "min(due_at) as first_due, max(due_at) as last_due, "
                        "count(*) filter (where cancelled) as cancelled "
                        "from dispatch.timers where fired_at is not null"
                    )
                )
            ).one()
            early = (
                await conn.execute(sa.text("select count(*) from dispatch.timers where fired_at < due_at"))
            ).scalar_one()
            premature = (
                await conn.execute(
                    sa.text("select count(*) from dispatch.timers where level >= 2 and fired_at is not null")
                )
            ).scalar_one()
        async with httpx.AsyncClient() as client:
            per_replica = [await _fired_by(client, port) for port in ports]
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=60)
            except TimeoutError:
                proc.kill()
        await engine.dispose()
    seen = await _count_published(kafka.bootstrap_servers, lifecycle, due_timers, timeout_s=300)
    duplicates = sum(1 for n in seen.values() if n > 1)
    # Seen by polling every 0.1 s: each figure is late by at most that much.
    drain_s = ((all_fired_at or all_published_at) - armed_at).total_seconds()
    published_s = (all_published_at - armed_at).total_seconds()
    return {
        "mode": "backlog" if backlog else "window",
        "dispatches": count,
        "timers_due": due_timers,
        "window_s": window_s,
        "replicas": replicas,
        "seed_s": round(seed_s, 1),
        "timers_fired": int(stats.fired),
        "cancelled": int(stats.cancelled),
        "fired_before_due": int(early),
        "later_steps_fired_early": int(premature),
        "due_span_s": round((stats.last_due - stats.first_due).total_seconds(), 1),
        "lateness_p50_s": round(float(stats.p50), 3),
        "lateness_p99_s": round(float(stats.p99), 3),
        "lateness_max_s": round(float(stats.worst), 3),
        "drain_s": round(drain_s, 2),
        "drain_timers_per_s": round(due_timers / drain_s) if drain_s > 0 else None,
        "drain_and_publish_s": round(published_s, 2),
        "fired_per_replica": per_replica,
        "events_on_topic": sum(seen.values()),
        "distinct_events_on_topic": len(seen),
        "published_more_than_once": duplicates,
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    if result["mode"] == "backlog":
        return backlog_table(result)
    return "\n".join(
        [
            "| what | figure |",
            "| --- | ---: |",
            f"| pending dispatches, deadlines spread over {result['window_s']} s | {result['dispatches']:,} |",
            f"| timers due (deadline + level-1 reminder) / fired | {result['timers_due']:,} / {result['timers_fired']:,} |",
            f"| dispatch replicas (timer loops) | {result['replicas']} |",
            f"| lateness p50 | {result['lateness_p50_s']} s |",
            f"| **lateness p99** (target < 2 s) | **{result['lateness_p99_s']} s** |",
            f"| lateness max | {result['lateness_max_s']} s |",
            f"| fired before due / later steps fired early | {result['fired_before_due']} / {result['later_steps_fired_early']} |",
            f"| overdue + escalation events on the topic (distinct) | {result['events_on_topic']:,} ({result['distinct_events_on_topic']:,}) |",
            f"| **published more than once** | **{result['published_more_than_once']}** |",
        ]
    )


def backlog_table(result: dict[str, Any]) -> str:
    """The draining figures as a small Markdown table."""
    return "\n".join(
        [
            "| what | figure |",
            "| --- | ---: |",
            f"| due at once: deadlines + level-1 reminders of {result['dispatches']:,} dispatches | {result['timers_due']:,} |",
            f"| dispatch replicas (each with its timer loops) | {result['replicas']} |",
            f"| **drained in** (arming committed → every timer seen fired, polled each 0.1 s) | **{result['drain_s']} s** |",
            f"| **timers fired per second** | **{result['drain_timers_per_s']:,}** |",
            f"| drained and every event relayed to the broker | {result['drain_and_publish_s']} s |",
            f"| fired by each replica | {', '.join(f'{n:,}' for n in result['fired_per_replica'])} |",
            f"| fired / fired before due / later steps fired early | {result['timers_fired']:,} / {result['fired_before_due']} / {result['later_steps_fired_early']} |",
            f"| **published more than once** | **{result['published_more_than_once']}** |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatch_timers", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dispatches", type=int, default=100_000)
    parser.add_argument("--window-s", type=float, default=60.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--backlog", action="store_true", help="measure draining deadlines all due at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_stack("dispatch_timers") as (postgres, kafka):
        result = asyncio.run(
            run(
                kafka,
                postgres,
                count=args.dispatches,
                window_s=args.window_s,
                replicas=args.replicas,
                backlog=args.backlog,
            )
        )
    name = f"dispatch_timers_backlog_{args.replicas}" if args.backlog else "dispatch_timers"
    publish_results(name, result, table(result), note="shared machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
