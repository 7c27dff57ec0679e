"""Notifications: what one consumer batch costs, with and without an outage's held deliveries.

The consumer's time (event -> delivery row) grew under load and during a receiver's outage
(#16). This measures it alone, on a private PostgreSQL, through the service's real consumer code
(:class:`shared.consumer.EventConsumer` with the notifications handler and repository, fed
records in memory: no broker, no HTTP):

1. the schema is migrated, one webhook subscription per reference department (7);
2. the tables are filled as after minutes at 500 hazards/s: ``--sent`` delivered notices (their
   inbox rows, two pending reminders per hazard) and, with ``--held N``, N deliveries of one
   department (``fire``) held by its open circuit (pending and due, a few retrying), as a
   10-minute outage leaves them; then ``VACUUM ANALYZE`` (what autovacuum would have done);
3. batches of ``hazard.dispatched`` (the departments in turn) go through ``EventConsumer.process``
   and each batch is timed; with ``--sender`` a stand-in of the sender works the same database
   meanwhile (the real claim and record statements at ``--sender-rate`` deliveries/s, the held
   target's circuit open, its expired-deliveries look every 5 s), as in the service;
4. ``pg_stat_statements`` splits the time by statement, and one batch of each size is run again
   under ``auto_explain`` (``ANALYZE, BUFFERS``): the plans are written to the results.

``python -m bench.notifications_consumer [--held 45000] [--sent 300000] [--sizes 100,500,2000]
[--sender]``; writes ``bench/results/notifications_consumer.json`` (``--name`` to change).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import logging
import re
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped, unused-ignore]
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from bench._stack import publish_results
from bench.notifications_delivery import _start_receiver, _stop
from services.notifications import handlers, repository, service, tables
from services.notifications.repository import NotificationsRepository
from services.notifications.sender import SenderLoop
from services.notifications.settings import DeliverySettings, SmtpSettings
from shared import events as ev
from shared.consumer import EventConsumer
from shared.db import create_engine
from shared.devstack import LocalPostgres, free_port
from shared.migrate import migrate
from shared.outbox import Outbox, OutgoingMessage
from shared.reference import load_reference_data
from shared.runner import tune_gc
from shared.settings import DatabaseSettings
from shared.uow import UnitOfWorkFactory

ROOT = Path(__file__).resolve().parent.parent
HELD_DEPARTMENT = "fire"
PG_SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements,auto_explain'",
    "pg_stat_statements.track": "all",
    "track_io_timing": "on",
    "auto_explain.log_analyze": "on",
    "auto_explain.log_buffers": "on",
    "auto_explain.log_nested_statements": "on",
    "log_min_messages": "log",
}


@dataclass
class _Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)
    timestamp: int = 0


class _NoBroker:
    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        raise RuntimeError(f"no broker here ({len(messages)} dead letters)")


@contextlib.contextmanager
def _postgres(base: Path) -> Any:
    base.chmod(0o755)
    postgres = LocalPostgres(
        data_dir=base / "pg", port=free_port(), log_path=base / "pg.log", extra_settings=PG_SETTINGS
    )
    try:
        postgres.start()
        yield postgres
    finally:
        postgres.stop(mode="immediate")


def _dispatched(department: str, at: datetime) -> ev.HazardDispatched:
    return ev.HazardDispatched(
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=uuid.uuid4(),
        producer="dispatch",
        payload=ev.HazardDispatchedPayload(
            dispatch_id=uuid.uuid4(),
            department_id=department,
            rule_id="bench",
            receipt_deadline=at + timedelta(hours=2),
            deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
        ),
    )


def _records(events: Sequence[ev.AnyEvent], offset: int) -> list[_Record]:
    return [
        _Record(
            topic="bench-lifecycle",
            partition=i % 6,
            offset=offset + i,
            key=str(e.hazard_id).encode(),
            value=ev.dump_event(e),
            headers=(("event_type", e.TYPE.encode()),),
        )
        for i, e in enumerate(events)
    ]


# ---------------------------------------------------------------- the filled database

_NOTICE = {
    "notification_id": "00000000-0000-0000-0000-000000000000",
    "trigger": "dispatched",
    "hazard_id": "00000000-0000-0000-0000-000000000000",
    "department_id": "fire",
    "audience": {"scope": "department", "id": "fire"},
    "occurred_at": "2026-03-02T09:00:00+00:00",
    "facts": {
        "event_type": "hazard.dispatched",
        "dispatch_id": "00000000-0000-0000-0000-000000000000",
        "receipt_deadline": "2026-03-02T11:00:00+00:00",
        "reason": "routed",
    },
}

# Delivered notices of the last `minutes`, the departments in turn, each with its inbox row and the
# two pending receipt reminders its dispatch planned; the held department's notices of the outage
# (pending and due, never attempted: its circuit is open; one in a hundred retrying, tried before
# the circuit opened) likewise.
_FILL = """
with subs as (
    select subscription_id, scope_id, target, row_number() over (order by scope_id) - 1 as k
    from notifications.subscriptions
), n as (select count(*) as c from subs),
g as (
    select i, gen_random_uuid() as e, gen_random_uuid() as h,
           now() - make_interval(secs => $2::float8 * ($1 - i) / $1) as at
    from generate_series(1, $1) i
), rows as (
    select g.*, s.subscription_id, s.scope_id, s.target
    from g, n, subs s
    where ($4::text is null and s.k = g.i % n.c) or ($4::text is not null and s.scope_id = $4)
), ins as (
    insert into notifications.deliveries
        (event_id, subscription_id, hazard_id, department_id, trigger, channel, target, notice, status,
         attempts, next_attempt_at, event_at, created_at, sent_at, last_error)
    select e, subscription_id, h, scope_id, 'dispatched', 'webhook', target,
           jsonb_set(jsonb_set($3::jsonb, '{hazard_id}', to_jsonb(h::text)), '{department_id}', to_jsonb(scope_id)),
           case when $4::text is null then 'sent' when i % 100 = 0 then 'retrying' else 'pending' end,
           case when $4::text is null or i % 100 <> 0 then case when $4::text is null then 1 else 0 end
                else 1 + i % 5 end,
           case when $4::text is not null and i % 100 = 0 then now() + interval '30 minutes' else at end,
           at, at,
           case when $4::text is null then at + interval '0.2 seconds' end,
           case when $4::text is not null and i % 100 = 0 then 'ClientConnectorError: refused' end
    from rows
    returning event_id, hazard_id, department_id, event_at
), inbox as (
    insert into notifications.inbox_batches (event_ids, applied_at) select array_agg(event_id), max(event_at) from ins
)
insert into notifications.reminders (reminder_id, hazard_id, kind, department_id, fraction, deadline, due_at, status)
select gen_random_uuid(), hazard_id, 'receipt', department_id, f, event_at + interval '2 hours',
       event_at + f * interval '2 hours', 'pending'
from ins, unnest(array[0.5, 0.8]::float8[]) f
"""


async def _fill(dsn: str, *, sent: int, held: int, minutes: float) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        notice = json.dumps(_NOTICE)
        # In chunks, as the consumer wrote them, so the heap and indexes are in arrival order.
        chunk = 20_000
        for first in range(0, sent, chunk):
            await conn.execute(_FILL, min(chunk, sent - first), minutes * 60, notice, None)
        for first in range(0, held, chunk):
            await conn.execute(_FILL, min(chunk, held - first), minutes * 60, notice, HELD_DEPARTMENT)
        filled = time.perf_counter() - started
        await conn.execute("vacuum analyze notifications.deliveries")
        await conn.execute("vacuum analyze notifications.inbox_batches")
        await conn.execute("vacuum analyze notifications.reminders")
        sizes = await conn.fetch(
            "select relname, pg_total_relation_size(oid) as b from pg_class "
            "where relnamespace = 'notifications'::regnamespace and relkind in ('r', 'i') order by relname"
        )
        return {"fill_s": round(filled, 1), **{r["relname"]: round(r["b"] / 2**20, 1) for r in sizes}}
    finally:
        await conn.close()


# ---------------------------------------------------------------- the sender's stand-in


class SenderStandIn:
    """The sender's statements on the same database, without HTTP: claim due deliveries (the held
    target's circuit open), record them sent a moment later, look for the held target's expired
    deliveries every 5 s, as :class:`services.notifications.sender.SenderLoop` does."""

    def __init__(self, sessions: async_sessionmaker[Any], *, rate: float, held_target: str | None) -> None:
        self.sessions = sessions
        self.rate = rate
        self.held_target = held_target
        self.claimed = 0
        self.claim_s: list[float] = []
        self.expired_s: list[float] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        pending: list[repository.Attempted] = []
        next_sweep = time.monotonic()
        limits = {self.held_target: 0} if self.held_target else {}
        while not self._stop.is_set():
            started = time.monotonic()
            async with self.sessions() as session, session.begin():
                repo = NotificationsRepository(session)
                await repo.record_attempts(pending)
                now = datetime.now(UTC)
                claimed = await repo.claim_deliveries(
                    now=now, limit=200, per_target=16, in_flight={}, lease_s=60.0, limits=limits
                )
                self.claim_s.append(time.monotonic() - started)
                if self.held_target and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + 5.0
                    t0 = time.monotonic()
                    await repo.claim_expired(
                        [self.held_target],
                        created_before=now - timedelta(days=1),
                        now=now,
                        limit=200,
                        lease_s=60.0,
                    )
                    self.expired_s.append(time.monotonic() - t0)
            self.claimed += len(claimed)
            pending = [
                repository.Attempted(
                    delivery_id=c.delivery_id, status="sent", next_attempt_at=None, error=None, now=now
                )
                for c in claimed
            ]
            # At most `rate` deliveries/s, as a sender sharing one core with the consumer manages.
            pause = len(claimed) / self.rate - (time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.01, pause))

    def stop(self) -> None:
        self._stop.set()


def _sender_loop(url: str, secret_key: str) -> SenderLoop:
    """The service's sender with its default settings (private targets allowed: loopback receivers)."""
    engine = create_engine(DatabaseSettings(url=url), application_name="bench-sender")
    return SenderLoop(
        sessions=async_sessionmaker(engine, expire_on_commit=False),
        settings=DeliverySettings(allow_private_targets=True),
        smtp=SmtpSettings(),
        secrets=service.Secrets(secret_key),
        department_name=lambda department_id, language: department_id,
        outbox=Outbox(tables.outbox, default_topic="bench-lifecycle"),
    )


async def _sender_child(url: str, secret_key: str) -> None:
    """``--sender-child URL KEY``: the sender alone, until SIGTERM."""
    tune_gc()
    task = asyncio.create_task(_sender_loop(url, secret_key).run())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _log_size(path: Path) -> int:
    return path.stat().st_size


def _plans(path: Path, mark: int) -> list[str]:
    """The plans auto_explain wrote after ``mark`` for the notifications schema's statements."""
    with path.open(errors="replace") as f:
        f.seek(mark)
        return [
            p
            for p in re.split(r"\n(?=\d{4}-\d\d-\d\d )", f.read())
            if "plan:" in p and "notifications." in p and "pg_catalog" not in p
        ]


async def _count_sent(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("select count(*) from notifications.deliveries where status = 'sent'"))
    finally:
        await conn.close()


# ---------------------------------------------------------------- the measurement


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _ms(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
    }


async def _statements(dsn: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            select query, calls, rows, total_exec_time, total_plan_time,
                   shared_blks_hit, shared_blks_read, shared_blks_dirtied, wal_bytes
            from pg_stat_statements
            where query not ilike '%pg_stat_statements%' and query not ilike 'explain%'
            order by total_exec_time desc limit 15
            """
        )
        return [
            {
                "query": re.sub(r"\s+", " ", r["query"])[:160],
                "calls": r["calls"],
                "rows": r["rows"],
                "total_ms": round(r["total_exec_time"], 1),
                "ms_per_call": round(r["total_exec_time"] / max(1, r["calls"]), 2),
                "blocks_hit": r["shared_blks_hit"],
                "blocks_read": r["shared_blks_read"],
                "blocks_dirtied": r["shared_blks_dirtied"],
                "wal_mb": round(float(r["wal_bytes"]) / 2**20, 2),
            }
            for r in rows
        ]
    finally:
        await conn.close()


async def _wal_lsn(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("select pg_current_wal_lsn() - '0/0'::pg_lsn"))
    finally:
        await conn.close()


async def _reset_statements(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("create extension if not exists pg_stat_statements")
        await conn.execute("select pg_stat_statements_reset()")
    finally:
        await conn.close()


def _consumer(url: str, *, explain: bool) -> tuple[EventConsumer, AsyncEngine]:
    """The service's consumer and handler on an engine of its own; ``explain``: every statement of
    its sessions logs its plan (auto_explain, ANALYZE and BUFFERS)."""
    if explain:
        engine = create_async_engine(
            url,
            connect_args={
                "server_settings": {
                    "application_name": "bench-explain",
                    "jit": "off",
                    "auto_explain.log_min_duration": "0",
                }
            },
        )
    else:
        engine = create_engine(DatabaseSettings(url=url), application_name="bench-notifications")
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    notifier = service.Notifier(fractions=(0.5, 0.8))
    consumer = EventConsumer(
        service="notifications",
        sessions=sessions,
        inbox=tables.inbox,
        outbox=Outbox(tables.outbox, default_topic="bench-lifecycle"),
        handler=handlers.make_handler(notifier=notifier),
        sender=_NoBroker(),
        dead_letter_topic="bench-dlt",
        interested=handlers.INTERESTED,
        repository=NotificationsRepository,
    )
    return consumer, engine


async def run(
    postgres: LocalPostgres,
    *,
    sent: int,
    held: int,
    minutes: float,
    sizes: Sequence[int],
    batches: int,
    sender: str,
    sender_rate: float,
    pace: float = 0.0,
    revision: str = "head",
    profile: str | None = None,
) -> dict[str, Any]:
    profiler = cProfile.Profile() if profile else None
    url, dsn = postgres.url(), postgres.dsn()
    await migrate(url, ("notifications",), revision=revision)
    engine = create_engine(DatabaseSettings(url=url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    work = UnitOfWorkFactory(sessions, Outbox(tables.outbox, default_topic="unused"), NotificationsRepository)
    secret_key = Fernet.generate_key().decode()
    secrets = service.Secrets(secret_key)
    departments = [d.id for d in load_reference_data().departments]
    ports = {department: free_port() for department in departments}
    async with work() as uow:
        for department in departments:
            await service.create_subscription(
                uow,
                scope="department",
                scope_id=department,
                channel="webhook",
                target=f"http://127.0.0.1:{ports[department]}/hook/{department}",
                fmt="json",
                language="zh",
                secret="bench-signing-secret-0123456789",
                description="bench",
                created_by="bench",
                secrets=secrets,
            )
    held_target = f"http://127.0.0.1:{ports[HELD_DEPARTMENT]}/hook/{HELD_DEPARTMENT}"
    filled = await _fill(dsn, sent=sent, held=held, minutes=minutes)
    print(f"filled: {filled}", flush=True)
    await _reset_statements(dsn)
    consumer, consumer_engine = _consumer(url, explain=False)
    stand_in = SenderStandIn(sessions, rate=sender_rate, held_target=held_target if held else None)
    sender_task = asyncio.create_task(stand_in.run()) if sender == "standin" else None
    # The real sender, sending to receivers in a process of their own (the held department's port
    # has none: its circuit opens), in this event loop ("loop", as the service runs it) or in a
    # process of its own ("process", as NOTIFICATIONS__CONSUME=false runs it).
    receiver = child = None
    real: SenderLoop | None = None
    if sender in ("loop", "process"):
        healthy = [p for d, p in ports.items() if d != HELD_DEPARTMENT]
        receiver = await _start_receiver(healthy, postgres.log_path.parent / "webhooks.log")
        if sender == "loop":
            real = _sender_loop(url, secret_key)
            sender_task = asyncio.create_task(real.run())
        else:
            child = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.notifications_consumer",
                "--sender-child",
                url,
                secret_key,
                cwd=ROOT,
            )
    offset = 0
    by_size: dict[str, Any] = {}
    try:
        # Warm-up: statements prepared, caches warm.
        for _ in range(3):
            events = [_dispatched(departments[i % len(departments)], datetime.now(UTC)) for i in range(100)]
            await consumer.process(_records(events, offset))
            offset += len(events)
        await _reset_statements(dsn)
        for size in sizes:
            times: list[float] = []
            cpu: list[float] = []
            # Paced: batch i is taken when its last event has arrived (at `pace` events/s from the
            # start); how long after that it is applied is what the consumer adds to event -> row.
            late: list[float] = []
            wal_started = await _wal_lsn(dsn)
            start = time.perf_counter()
            for i in range(batches):
                due = start + (i + 1) * size / pace if pace else time.perf_counter()
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                at = datetime.now(UTC)
                events = [_dispatched(departments[i % len(departments)], at) for i in range(size)]
                records = _records(events, offset)
                offset += size
                started, cpu_started = time.perf_counter(), time.process_time()
                if profiler is not None:
                    profiler.enable()
                await consumer.process(records)
                if profiler is not None:
                    profiler.disable()
                times.append(time.perf_counter() - started)
                late.append(time.perf_counter() - due)
                cpu.append(time.process_time() - cpu_started)
            wal = await _wal_lsn(dsn) - wal_started
            by_size[str(size)] = {
                **_ms(times),
                # WAL written meanwhile (the stand-in's too when it runs), per event applied.
                "wal_bytes_per_event": round(wal / (batches * size)),
                "ms_per_event": round(statistics.median(times) * 1000 / size, 3),
                "applied_after_last_event": _ms(late) | {"p99_ms": round(_pct(late, 0.99) * 1000, 1)},
                # This process's CPU (the consumer's Python; the stand-in's too when it runs).
                "python_cpu_ms_per_event": round(statistics.median(cpu) * 1000 / size, 3),
            }
            print(f"batch of {size}: {by_size[str(size)]}", flush=True)
        statements = await _statements(dsn)
        if profiler is not None and profile:
            profiler.dump_stats(profile)
    finally:
        if sender_task is not None:
            stand_in.stop()
            sender_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender_task
        if child is not None:
            child.send_signal(signal.SIGTERM)
            await child.wait()
        if receiver is not None:
            await _stop(receiver)
        await consumer_engine.dispose()
    sent_rows = await _count_sent(dsn)
    # One batch of each size under auto_explain (ANALYZE, BUFFERS): its plans.
    log_path = Path(postgres.log_path)
    mark = _log_size(log_path)
    explain_consumer, explain_engine = _consumer(url, explain=True)
    try:
        for size in sizes:
            events = [_dispatched(departments[i % len(departments)], datetime.now(UTC)) for i in range(size)]
            await explain_consumer.process(_records(events, offset))
            offset += size
    finally:
        await explain_engine.dispose()
    plans = _plans(log_path, mark)
    await engine.dispose()
    return {
        "sent_rows": sent,
        "held_rows": held,
        "filled": filled,
        "revision": revision,
        "sender": sender,
        "pace_events_per_s": pace or None,
        "sent_during_measure": sent_rows - sent,
        "sender_stand_in": (
            {
                "rate_per_s": sender_rate,
                "claimed": stand_in.claimed,
                "claim": _ms(stand_in.claim_s) if stand_in.claim_s else None,
                "expired_look": _ms(stand_in.expired_s) if stand_in.expired_s else None,
            }
            if sender == "standin"
            else None
        ),
        "batches": by_size,
        "statements": statements,
        "plans": [re.sub(r"^\S+ \S+ \S+ \[\d+\] \S+ ", "", p.strip())[:4000] for p in plans],
    }


def table(result: dict[str, Any]) -> str:
    """The batch times as a small Markdown table."""
    rows = [
        f"held rows: {result['held_rows']:,}, sent rows: {result['sent_rows']:,}, "
        f"sender: {result['sender']}, pace: {result['pace_events_per_s']} events/s, "
        f"delivered meanwhile: {result['sent_during_measure']:,}",
        "",
        "| batch of | p50 | max | mean | per event | Python CPU per event | WAL per event "
        "| applied after its last event p50 / p99 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for size, f in result["batches"].items():
        rows.append(
            f"| {size} | {f['p50_ms']} ms | {f['max_ms']} ms | {f['mean_ms']} ms | {f['ms_per_event']} ms | {f['python_cpu_ms_per_event']} ms | {f['wal_bytes_per_event']} B | "
            f"{f['applied_after_last_event']['p50_ms']} / {f['applied_after_last_event']['p99_ms']} ms |"
        )
    rows += ["", "| statement | calls | ms/call | total ms |", "| --- | ---: | ---: | ---: |"]
    for st in result["statements"][:10]:
        rows.append(f"| `{st['query'][:90]}` | {st['calls']} | {st['ms_per_call']} | {st['total_ms']} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL, fill it, time the consumer's batches, print and write the results."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--sender-child"]:
        asyncio.run(_sender_child(argv[1], argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.notifications_consumer", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--sent", type=int, default=300_000, help="delivered notices already in the table")
    parser.add_argument(
        "--held", type=int, default=45_000, help="deliveries of `fire` held by its open circuit"
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="the span the filled rows cover")
    parser.add_argument("--sizes", default="100,500,2000", help="batch sizes, comma-separated")
    parser.add_argument("--batches", type=int, default=10, help="batches of each size")
    parser.add_argument(
        "--sender",
        choices=("none", "standin", "loop", "process"),
        default="none",
        help="meanwhile: no sender, its statements' stand-in, the real sender in this event loop "
        "(as the service runs it) or in a process of its own",
    )
    parser.add_argument("--revision", default="head", help="the notifications schema's revision to measure")
    parser.add_argument("--pace", type=float, default=0.0, help="events/s offered (0: batches back to back)")
    parser.add_argument("--sender-rate", type=float, default=430.0, help="deliveries/s the stand-in sends")
    parser.add_argument("--profile", default=None, help="cProfile the measured batches into this file")
    parser.add_argument("--name", default="notifications_consumer", help="results file name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    tune_gc()  # as the service's process does (shared.runner)
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="hazard-bench-notifications-consumer-"))
    try:
        with _postgres(base) as postgres:
            result = asyncio.run(
                run(
                    postgres,
                    sent=args.sent,
                    held=args.held,
                    minutes=args.minutes,
                    sizes=[int(x) for x in args.sizes.split(",")],
                    batches=args.batches,
                    sender=args.sender,
                    sender_rate=args.sender_rate,
                    pace=args.pace,
                    revision=args.revision,
                    profile=args.profile,
                )
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result["command"] = "python -m bench.notifications_consumer " + " ".join(argv)
    publish_results(args.name, result, table(result), note="shared 2-core machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
