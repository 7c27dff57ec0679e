"""Notifications: from ``hazard.dispatched`` on the topic to the webhook receiver holding the notice.

Synthetic ``hazard.dispatched`` events are published straight to a private Tansu topic at
``--rate`` hazards/s (default 500) for ``--duration-s``, each to one of the seven reference
departments in turn; every department has one webhook subscription, on loopback, served by a
receiver in its own process (one listening port per department) that notes when each call
arrives. The notifications service runs as a process (``python -m services.notifications``, the
real wiring: consumer, inbox, sender). Latency = arrival at the receiver - the event's
``occurred_at``, stamped just before it is handed to the producer (p50, p99, max; target p99 < 2 s).

``--down-minutes N`` runs the outage variant instead: after ``--warmup-s`` of load, the receiver
of one department (``fire``) is killed for N minutes while the load goes on, then started again
on the same port; the load continues ``--after-s`` more. We report: notices published, delivered
(distinct) and lost; calls received more than once; for the down department, how long after its
return its last notice arrived (target: within 2 minutes); for the other departments, p50/p99
during the outage against before it.

``--prefill N`` first stores N records on the topic, each a produce batch of its own (the densest
log the load can make: the load's batches hold one to a few records), and commits the service's
consumer group past them, so the service starts with a long log and nothing to read in it. A
steady run with it, beside one without, tells whether the latency's climb over a long run
follows the log's length (the broker) or the time the service has run.

``--split`` runs the service as two processes, the sender in one of its own
(``NOTIFICATIONS__CONSUME=false``) beside the consumer's (``NOTIFICATIONS__SEND=false``).

``python -m bench.notifications_delivery [--rate R] [--duration-s S]`` writes
``bench/results/notifications_delivery.json``; ``--down-minutes N`` writes
``bench/results/notifications_delivery_outage.json`` (``--name`` to choose).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import async_sessionmaker

from bench._stack import private_stack, publish_results
from bench.cpu import CpuSampler, Part, infrastructure_parts
from services.notifications import service, tables
from services.notifications.repository import NotificationsRepository
from shared import events as ev
from shared.db import create_engine
from shared.devstack import LocalKafka, LocalPostgres, free_port
from shared.migrate import migrate
from shared.outbox import Outbox
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings
from shared.uow import UnitOfWorkFactory

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 6
DOWN_DEPARTMENT = "fire"
NS = 1_000_000_000
WINDOW_S = 10  # the time series' window
# --pg-stats: the statements' time per phase (before, during the outage, after it).
PG_STATS_SETTINGS = {
    "shared_preload_libraries": "'pg_stat_statements'",
    "pg_stat_statements.track": "all",
}


# ---------------------------------------------------------------- the webhook receiver (own process)


async def _serve(ports: list[int], log_path: Path) -> None:
    """Answer every POST 200 and note ``<event id> <port> <arrival ns>`` per call."""
    out = log_path.open("a", buffering=1)

    def handler(port: int) -> Any:
        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    arrived = time.time_ns()
                    length, event_id = 0, "-"
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        key = name.strip().lower()
                        if key == b"content-length":
                            length = int(value.strip())
                        elif key == b"x-hazard-event-id":
                            event_id = value.strip().decode()
                    if length:
                        await reader.readexactly(length)
                    out.write(f"{event_id} {port} {arrived}\n")
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return on_connection

    servers = [await asyncio.start_server(handler(port), "127.0.0.1", port) for port in ports]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    for server in servers:
        server.close()
    out.close()


async def _start_receiver(ports: list[int], log_path: Path) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.notifications_delivery",
        "--receiver",
        ",".join(map(str, ports)),
        str(log_path),
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
    )
    for _ in range(1200):  # a loaded machine takes seconds to import
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", ports[-1])
            writer.close()
            return proc
        except OSError:
            await asyncio.sleep(0.05)
    await _stop(proc, kill=True)
    raise RuntimeError("the webhook receiver did not start")


async def _stop(proc: asyncio.subprocess.Process, *, kill: bool = False) -> None:
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout=30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# ---------------------------------------------------------------- the load


def _dispatched(department: str) -> ev.HazardDispatched:
    at = datetime.now(UTC)
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


async def _offer(
    bootstrap: str,
    topic: str,
    departments: list[str],
    *,
    rate: float,
    duration_s: float,
    round_s: float = 0.005,
) -> dict[str, tuple[str, int]]:
    """Publish ``rate`` hazard.dispatched/s for ``duration_s``; event id -> (department, publish ns).

    The events due are published in rounds ``round_s`` apart. The rounds decide how many records
    each of the broker's stored batches holds, and Tansu's fetch costs in proportion to the
    batches a partition has stored (``bench/results/broker_log_length.md``): rounds of 5 ms (the
    default) store about one batch per record; a relay publishing one round per consumer batch
    (50 ms or more apart on Tansu, which answers a fetch only after ``FETCH_MAX_WAIT_MS``) stores
    a few records per batch. Both are in the system at once: intake's relay publishes every few
    commits, dispatch's once per batch.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, request_timeout_ms=40_000
    )
    await producer.start()
    sent: dict[str, tuple[str, int]] = {}
    pending: list[asyncio.Future[Any]] = []
    try:
        started = time.monotonic()
        index = 0
        total = int(rate * duration_s)
        while index < total:
            due = int((time.monotonic() - started) * rate) + 1
            while index < min(due, total):
                department = departments[index % len(departments)]
                event = _dispatched(department)
                sent[str(event.event_id)] = (department, int(event.occurred_at.timestamp() * NS))
                pending.append(
                    await producer.send(topic, value=ev.dump_event(event), key=str(event.hazard_id).encode())
                )
                index += 1
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(round_s)
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def _prefill(bootstrap: str, topic: str, group: str, count: int) -> float:
    """Store ``count`` records on ``topic``, each a batch of its own; commit ``group`` past them.

    Returns the seconds it took. The records are never read: the group's committed offsets are
    the partitions' ends, so the service starts after them.
    """
    started = time.monotonic()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        value = b"x" * 600
        pending: list[asyncio.Future[Any]] = []
        for index in range(count):
            batch = producer.create_batch()
            batch.append(key=None, value=value, timestamp=None)
            batch.close()
            pending.append(await producer.send_batch(batch, topic, partition=index % PARTITIONS))
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(partitions)
        consumer.assign(partitions)
        await consumer.commit(dict(ends))
        if sum(ends.values()) < count:
            raise RuntimeError(f"prefill: {sum(ends.values())} records on {topic}, {count} sent")
    finally:
        await consumer.stop()
    return time.monotonic() - started


# ---------------------------------------------------------------- the run


async def _subscribe(url: str, secret_key: str, ports: dict[str, int]) -> None:
    engine = create_engine(DatabaseSettings(url=url))
    secrets = service.Secrets(secret_key)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    work = UnitOfWorkFactory(sessions, Outbox(tables.outbox, default_topic="unused"), NotificationsRepository)
    try:
        async with work() as uow:
            for department, port in ports.items():
                await service.create_subscription(
                    uow,
                    scope="department",
                    scope_id=department,
                    channel="webhook",
                    target=f"http://127.0.0.1:{port}/hook/{department}",
                    fmt="json",
                    language="zh",
                    secret="bench-signing-secret-0123456789",
                    description="bench",
                    created_by="bench",
                    secrets=secrets,
                )
    finally:
        await engine.dispose()


def _log_file(path: Path) -> Any:
    """A file for the service's stderr (the child process holds it)."""
    return path.open("wb")


def _read_log(path: Path) -> list[tuple[str, int, int]]:
    rows = []
    for line in path.read_text().splitlines():
        event_id, port, arrived = line.split()
        rows.append((event_id, int(port), int(arrived)))
    return rows


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def _figures(values: list[float]) -> dict[str, Any]:
    return {
        "count": len(values),
        "p50_s": _pct(values, 0.5),
        "p99_s": _pct(values, 0.99),
        "max_s": round(max(values), 3) if values else None,
        "mean_s": round(statistics.fmean(values), 3) if values else None,
    }


async def _wait_all_sent(url: str, expect: int, timeout_s: float) -> float:
    """Poll until ``expect`` deliveries are sent; returns the seconds waited.

    The poll counts the deliveries still waiting (the partial index of the pending and retrying:
    cheap), and the sent ones (every row: 129 ms for 325,000, 116 ms/s of the database's time at a
    poll every 0.5 s while a backlog drained) only once none waits.
    """
    engine = create_engine(DatabaseSettings(url=url))
    started = time.monotonic()
    waiting_sql = sa.text(
        "select count(*) from notifications.deliveries where status in ('pending', 'retrying')"
    )
    sent_sql = sa.text("select count(*) from notifications.deliveries where status = 'sent'")
    try:
        while time.monotonic() - started < timeout_s:
            async with engine.connect() as conn:
                waiting = (await conn.execute(waiting_sql)).scalar_one()
                if waiting == 0 and (await conn.execute(sent_sql)).scalar_one() >= expect:
                    break
            await asyncio.sleep(0.5)
        return time.monotonic() - started
    finally:
        await engine.dispose()


async def _delivery_stats(url: str) -> dict[str, Any]:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.text("select status, count(*) from notifications.deliveries group by status")
            )
            stats: dict[str, Any] = {str(status): int(n) for status, n in rows}
            # Where the time goes: event -> delivery row (consumer), row -> sent (sender queue and send).
            split = (
                await conn.execute(
                    sa.text(
                        "select percentile_cont(array[0.5, 0.99]) within group "
                        "(order by extract(epoch from created_at - event_at)), "
                        "percentile_cont(array[0.5, 0.99]) within group "
                        "(order by extract(epoch from sent_at - created_at)) "
                        "from notifications.deliveries where status = 'sent'"
                    )
                )
            ).one()
            stats["event_to_row_p50_p99_s"] = [round(float(x), 3) for x in split[0] or []]
            stats["row_to_sent_p50_p99_s"] = [round(float(x), 3) for x in split[1] or []]
            return stats
    finally:
        await engine.dispose()


# ---------------------------------------------------------------- the time series


class _Sampler(CpuSampler):
    """Every ``WINDOW_S``: CPU seconds so far of the service, PostgreSQL and the broker, and the load average.

    Read from ``/proc`` (no statement on the database under test); the windows' figures are the
    differences between the samples nearest their ends.
    """

    def __init__(self, parts: list[Part]) -> None:
        super().__init__(parts, interval_s=WINDOW_S)
        self.loads: list[float] = []  # the load average at each sample

    def sample(self) -> None:
        super().sample()
        self.loads.append(float(Path("/proc/loadavg").read_text().split()[0]))

    async def run(self) -> None:
        await self._run()

    def window_ns(self, start_ns: int, end_ns: int) -> dict[str, Any]:
        """CPU % of a core by part and the load average, between the samples nearest the window's ends."""
        cpu = self.window(start_ns / NS, end_ns / NS)
        if not cpu:
            return {}
        last = min(range(len(self.samples)), key=lambda i: abs(self.samples[i][0] - end_ns / NS))
        return {"cpu_pct": cpu, "load1": self.loads[last]}


def _phase(start_ns: int, outage: dict[str, Any]) -> str:
    if "down_at_ns" not in outage:
        return "load"
    if start_ns < outage["down_at_ns"]:
        return "before"
    if start_ns < outage["back_at_ns"]:
        return "down"
    return "after"


def _series(
    sent: dict[str, tuple[str, int]],
    first: dict[str, int],
    outage: dict[str, Any],
    sampler: _Sampler | None,
) -> list[dict[str, Any]]:
    """Per ``WINDOW_S`` of publishing: the other receivers' latency, what waits, and the CPU.

    ``others``: notices to the receivers that stay up, published in the window (count, p50, p99 of
    topic -> receiver). ``held``: the down department's notices published and not yet received at
    the window's end; ``queued``: the same for the other receivers (their backlog).
    """
    if not sent:
        return []
    start = min(at for _, at in sent.values())
    end = max(max(at for _, at in sent.values()), max(first.values(), default=start))
    count = (end - start) // (WINDOW_S * NS) + 1
    latencies: list[list[float]] = [[] for _ in range(count)]
    held = [0] * (count + 1)  # +1 at the publish window, -1 at the arrival window: summed, waiting
    queued = [0] * (count + 1)
    for event_id, (department, at) in sent.items():
        window = (at - start) // (WINDOW_S * NS)
        arrived = first.get(event_id)
        gone = count if arrived is None else (arrived - start) // (WINDOW_S * NS)
        track = held if department == DOWN_DEPARTMENT else queued
        track[window] += 1
        track[gone] -= 1
        if department != DOWN_DEPARTMENT and arrived is not None:
            latencies[window].append((arrived - at) / NS)
    rows = []
    waiting_held = waiting_queued = 0
    for window in range(count):
        waiting_held += held[window]
        waiting_queued += queued[window]
        w_start = start + window * WINDOW_S * NS
        values = latencies[window]
        row: dict[str, Any] = {
            "t_s": window * WINDOW_S,
            "phase": _phase(w_start, outage),
            "others_count": len(values),
            "others_p50_s": _pct(values, 0.5),
            "others_p99_s": _pct(values, 0.99),
            "held": waiting_held,
            "queued": waiting_queued,
        }
        if sampler is not None:
            row.update(sampler.window_ns(w_start, w_start + WINDOW_S * NS))
        rows.append(row)
    return rows


def series_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase: the windows' others p99 (median, max), the largest backlog and the load average (median).

    The machine is shared: a window's p99 follows the load average as much as anything the service
    does, so each phase is summed up with the load it ran under.
    """
    out: dict[str, Any] = {}
    for phase in dict.fromkeys(row["phase"] for row in rows):
        these = [r for r in rows if r["phase"] == phase and r["others_count"] >= 100]
        p99s = [r["others_p99_s"] for r in these if r["others_p99_s"] is not None]
        loads = [r["load1"] for r in these if "load1" in r]
        if not p99s:
            continue
        out[phase] = {
            "windows": len(these),
            "others_p99_s_median": round(statistics.median(p99s), 3),
            "others_p99_s_max": max(p99s),
            "queued_max": max(r["queued"] for r in these),
            "load1_median": round(statistics.median(loads), 2) if loads else None,
            "load1_max": max(loads) if loads else None,
        }
    # The outage's windows that ran under no more load than the warm-up did (plus one runnable
    # process): what the outage itself costs, apart from what other work on the machine costs.
    before = [r["load1"] for r in rows if r["phase"] == "before" and "load1" in r]
    if before:
        ceiling = max(before) + 1.0
        alike = [
            r["others_p99_s"]
            for r in rows
            if r["phase"] == "down" and r["others_count"] >= 100 and r.get("load1", 99.0) <= ceiling
        ]
        if alike:
            out["down_at_warmup_load"] = {
                "load1_at_most": round(ceiling, 2),
                "windows": len(alike),
                "others_p99_s_median": round(statistics.median(alike), 3),
                "others_p99_s_max": max(alike),
            }
    return out


def _series_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One compact line per window."""
    lines = ["t_s phase  others(n p50 p99)      held  queued  cpu% svc/pg/broker  load1"]
    for row in rows:
        cpu = row.get("cpu_pct", {})
        lines.append(
            f"{row['t_s']:>4} {row['phase']:<6} {row['others_count']:>5} "
            f"{row['others_p50_s'] if row['others_p50_s'] is not None else '-':>6} "
            f"{row['others_p99_s'] if row['others_p99_s'] is not None else '-':>6} "
            f"{row['held']:>8} {row['queued']:>7}  "
            f"{cpu.get('notifications', '-')}/{cpu.get('postgresql', '-')}/{cpu.get('broker', '-')}"
            f"  {row.get('load1', '-')}"
        )
    return lines


_PG_STATS = sa.text(
    """
    select queryid, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) as query,
           calls, total_exec_time, rows
    from pg_stat_statements
    where dbid = (select oid from pg_database where datname = current_database())
    """
)


async def _pg_stats_snapshot(url: str) -> dict[int, tuple[str, int, float, int]]:
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(_PG_STATS)
            return {
                int(r.queryid): (r.query, int(r.calls), float(r.total_exec_time), int(r.rows)) for r in rows
            }
    finally:
        await engine.dispose()


def _pg_stats_delta(
    before: dict[int, tuple[str, int, float, int]],
    after: dict[int, tuple[str, int, float, int]],
    *,
    seconds: float,
) -> list[dict[str, Any]]:
    """The statements that took most of the database's time between two snapshots (top 10)."""
    out: list[dict[str, Any]] = []
    for key, (query, calls, total, rows) in after.items():
        _, c0, t0, r0 = before.get(key, (query, 0, 0.0, 0))
        if calls > c0:
            out.append(
                {
                    "query": query,
                    "calls": calls - c0,
                    "ms_per_s": round((total - t0) / seconds, 2),
                    "mean_ms": round((total - t0) / (calls - c0), 3),
                    "rows_per_call": round((rows - r0) / (calls - c0), 1),
                }
            )
    return sorted(out, key=lambda x: -float(x["ms_per_s"]))[:10]


async def run(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    *,
    rate: float,
    duration_s: float,
    down_minutes: float | None,
    warmup_s: float,
    after_s: float,
    split: bool = False,
    pg_stats: bool = False,
    prefill: int = 0,
    round_ms: float = 5.0,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Subscribe, start receivers and the service, offer the load, and measure the arrivals."""
    url = postgres.url()
    await migrate(url)
    lifecycle, dead = f"bench-lifecycle-{uuid.uuid4().hex[:6]}", f"bench-dlt-{uuid.uuid4().hex[:6]}"
    group = f"bench-notifications-{uuid.uuid4().hex[:6]}"
    await kafka.create_topics({lifecycle: PARTITIONS, dead: 1})
    prefill_s = await _prefill(kafka.bootstrap_servers, lifecycle, group, prefill) if prefill else None
    departments = [d.id for d in load_reference_data().departments]
    ports = {department: free_port() for department in departments}
    secret_key = Fernet.generate_key().decode()
    await _subscribe(url, secret_key, ports)
    work = Path(tempfile.mkdtemp(prefix="hazard-bench-notify-"))
    log_path = work / "webhooks.log"
    healthy = [p for d, p in ports.items() if d != DOWN_DEPARTMENT]
    receivers = [await _start_receiver(healthy, log_path)]
    try:
        receivers.append(await _start_receiver([ports[DOWN_DEPARTMENT]], log_path))
        result = await _measure(
            url,
            kafka,
            lifecycle,
            dead,
            group,
            departments,
            ports,
            secret_key,
            work,
            log_path,
            receivers,
            rate=rate,
            duration_s=duration_s,
            down_minutes=down_minutes,
            warmup_s=warmup_s,
            after_s=after_s,
            split=split,
            pg_stats=pg_stats,
            round_ms=round_ms,
            settings=settings,
            infrastructure=infrastructure_parts(postgres, kafka),
        )
    finally:
        for receiver in receivers:
            await _stop(receiver)
    result["prefill_records"] = prefill
    result["prefill_s"] = round(prefill_s, 1) if prefill_s is not None else None
    return result


async def _measure(
    url: str,
    kafka: LocalKafka,
    lifecycle: str,
    dead: str,
    group: str,
    departments: list[str],
    ports: dict[str, int],
    secret_key: str,
    work: Path,
    log_path: Path,
    receivers: list[asyncio.subprocess.Process],
    *,
    rate: float,
    duration_s: float,
    down_minutes: float | None,
    warmup_s: float,
    after_s: float,
    split: bool = False,
    pg_stats: bool = False,
    round_ms: float = 5.0,
    settings: dict[str, str] | None = None,
    infrastructure: list[Part] | None = None,
) -> dict[str, Any]:
    http_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFICATIONS__")}
    env.update(
        {
            "NOTIFICATIONS__DATABASE__URL": url,
            "NOTIFICATIONS__KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "NOTIFICATIONS__KAFKA__LIFECYCLE_TOPIC": lifecycle,
            "NOTIFICATIONS__KAFKA__DEAD_LETTER_TOPIC": dead,
            "NOTIFICATIONS__KAFKA__IDEMPOTENT_PRODUCER": "false",
            "NOTIFICATIONS__KAFKA__GROUP_ID": group,
            "NOTIFICATIONS__HTTP__PORT": str(http_port),
            "NOTIFICATIONS__SECRET_KEY": secret_key,
            "NOTIFICATIONS__DELIVERY__ALLOW_PRIVATE_TARGETS": "true",
            "NOTIFICATIONS__LOG_LEVEL": "WARNING",
        }
    )
    # --set NAME=VALUE: the service's own settings, e.g. DELIVERY__DRAIN_PER_TARGET=16.
    env.update({f"NOTIFICATIONS__{name.upper()}": value for name, value in (settings or {}).items()})
    # NOTIFY_BENCH_PROFILE=<file>: run the service under cProfile, its stats written there.
    profile = os.environ.get("NOTIFY_BENCH_PROFILE")
    # --split: the sender in a process of its own beside the consumer's (NOTIFICATIONS__SEND / CONSUME).
    roles = [{"NOTIFICATIONS__SEND": "false"}, {"NOTIFICATIONS__CONSUME": "false"}] if split else [{}]
    http_ports = [http_port] + [free_port() for _ in roles[1:]]
    procs = []
    for role, port in zip(roles, http_ports, strict=True):
        procs.append(
            await asyncio.create_subprocess_exec(
                sys.executable,
                *(["-m", "cProfile", "-o", f"{profile}.{port}"] if profile else []),
                "-m",
                "services.notifications",
                cwd=ROOT,
                env={**env, **role, "NOTIFICATIONS__HTTP__PORT": str(port)},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=_log_file(work / f"notifications-{port}.log"),
            )
        )
    outage: dict[str, Any] = {}
    sampler = _Sampler(
        [Part("notifications" if i == 0 else f"notifications-{i}", p.pid) for i, p in enumerate(procs)]
        + list(infrastructure or [])
    )
    sampling: asyncio.Task[None] | None = None
    snapshots: list[tuple[str, int, dict[int, tuple[str, int, float, int]]]] = []

    async def snapshot(phase: str) -> None:
        if pg_stats:
            snapshots.append((phase, time.time_ns(), await _pg_stats_snapshot(url)))

    try:
        async with httpx.AsyncClient() as client:
            for port in http_ports:
                for _ in range(600):
                    with contextlib.suppress(httpx.TransportError):
                        if (
                            await client.get(f"http://127.0.0.1:{port}/readyz", timeout=3)
                        ).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
                else:
                    raise RuntimeError(
                        f"notifications never became ready; see {work}/notifications-{port}.log"
                    )
        load_s = duration_s if down_minutes is None else warmup_s + down_minutes * 60 + after_s
        if pg_stats:
            engine = create_engine(DatabaseSettings(url=url))
            async with engine.begin() as conn:
                await conn.execute(sa.text("create extension if not exists pg_stat_statements"))
            await engine.dispose()
        await snapshot("start")
        sampling = asyncio.create_task(sampler.run())
        load = asyncio.create_task(
            _offer(
                kafka.bootstrap_servers,
                lifecycle,
                departments,
                rate=rate,
                duration_s=load_s,
                round_s=round_ms / 1000,
            )
        )
        if down_minutes is not None:
            await asyncio.sleep(warmup_s)
            await snapshot("before")
            await _stop(receivers[1], kill=True)
            outage["down_at_ns"] = time.time_ns()
            await asyncio.sleep(down_minutes * 60)
            await snapshot("down")
            receivers[1] = await _start_receiver([ports[DOWN_DEPARTMENT]], log_path)
            outage["back_at_ns"] = time.time_ns()
        sent = await load
        load_ended = time.monotonic()
        drain_s = await _wait_all_sent(url, len(sent), timeout_s=600)
        sampler.sample()
        await snapshot("after" if down_minutes is not None else "load")
        statuses = await _delivery_stats(url)
    finally:
        if sampling is not None:
            sampling.cancel()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), timeout=60)
            except TimeoutError:
                proc.kill()
        for receiver in receivers:
            await _stop(receiver)
    arrivals = _read_log(log_path)
    calls = Counter(event_id for event_id, _, _ in arrivals)
    first: dict[str, int] = {}
    for event_id, _, arrived in arrivals:
        first[event_id] = min(arrived, first.get(event_id, arrived))
    lost = [e for e in sent if e not in first]
    latencies = {e: (first[e] - sent[e][1]) / NS for e in sent if e in first}
    result: dict[str, Any] = {
        "mode": "steady" if down_minutes is None else "outage",
        "sender_in_own_process": split,
        "rate_offered_per_s": rate,
        "publish_round_ms": round_ms,
        "service_settings": settings or {},
        "departments": len(departments),
        "subscriptions": len(departments),
        "published": len(sent),
        "delivered_distinct": len(first),
        "lost": len(lost),
        "received_more_than_once": sum(1 for n in calls.values() if n > 1),
        "drain_after_load_s": round(drain_s, 1),
        "deliveries_by_status": statuses,
        "latency": _figures(list(latencies.values())),
    }
    if down_minutes is not None:
        down_at, back_at = outage["down_at_ns"], outage["back_at_ns"]
        down_events = [e for e in sent if sent[e][0] == DOWN_DEPARTMENT]
        held = [e for e in down_events if sent[e][1] < back_at]
        last_held = max((first[e] for e in held if e in first), default=None)
        others_during = [
            v
            for e, v in latencies.items()
            if sent[e][0] != DOWN_DEPARTMENT and down_at <= sent[e][1] < back_at
        ]
        others_before = [
            v for e, v in latencies.items() if sent[e][0] != DOWN_DEPARTMENT and sent[e][1] < down_at
        ]
        result.update(
            {
                "down_department": DOWN_DEPARTMENT,
                "down_minutes": down_minutes,
                "warmup_s": warmup_s,
                "after_s": after_s,
                "down_department_published": len(down_events),
                "down_department_held_by_outage": len(held),
                "down_department_lost": sum(1 for e in down_events if e not in first),
                "last_held_delivered_after_return_s": (
                    round((last_held - back_at) / NS, 1) if last_held is not None else None
                ),
                "others_before_outage": _figures(others_before),
                "others_during_outage": _figures(others_during),
            }
        )
    if down_minutes is not None:
        # The other receivers while the down one's backlog drains: published from its return until
        # its last held notice arrived.
        drain_end = last_held if last_held is not None else back_at
        others_drain = [
            v
            for e, v in latencies.items()
            if sent[e][0] != DOWN_DEPARTMENT and back_at <= sent[e][1] < max(drain_end, back_at + NS)
        ]
        result["others_during_drain"] = _figures(others_drain)
    result["series_window_s"] = WINDOW_S
    result["series"] = _series(sent, first, outage, sampler)
    result["series_summary"] = series_summary(result["series"])
    if snapshots:
        result["pg_statements_by_phase"] = {
            phase: _pg_stats_delta(prev, stats, seconds=(at - prev_at) / NS)
            for (_, prev_at, prev), (phase, at, stats) in itertools.pairwise(snapshots)
        }
    result["load_ended_to_now_s"] = round(time.monotonic() - load_ended, 1)
    return result


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    lat = result["latency"]
    rows = [
        "| what | figure |",
        "| --- | ---: |",
        f"| offered hazard.dispatched/s (one webhook subscription per department, {result['departments']}) | {result['rate_offered_per_s']:g} |",
        f"| published / delivered (distinct) / **lost** | {result['published']:,} / {result['delivered_distinct']:,} / **{result['lost']}** |",
        f"| received more than once (at least once; receivers dedupe on Idempotency-Key) | {result['received_more_than_once']} |",
    ]
    if result.get("publish_round_ms") is not None:
        rows.append(f"| published in rounds this far apart | {result['publish_round_ms']:g} ms |")
    if result.get("prefill_records"):
        rows.append(
            f"| records on the topic before the load (one batch each, never read) | {result['prefill_records']:,} |"
        )
    if result["mode"] == "steady":
        rows += [
            f"| topic → receiver p50 | {lat['p50_s']} s |",
            f"| **topic → receiver p99** (target < 2 s) | **{lat['p99_s']} s** |",
            f"| topic → receiver max | {lat['max_s']} s |",
        ]
    else:
        before, during = result["others_before_outage"], result["others_during_outage"]
        rows += [
            f"| `{result['down_department']}` receiver down for | {result['down_minutes']:g} min |",
            f"| its notices published while down (held) / lost | {result['down_department_held_by_outage']:,} / {result['down_department_lost']} |",
            f"| **last held notice delivered after its return** (target < 120 s) | **{result['last_held_delivered_after_return_s']} s** |",
            f"| other receivers p50 / p99 before the outage | {before['p50_s']} / {before['p99_s']} s |",
            f"| **other receivers p50 / p99 during the outage** | **{during['p50_s']} / {during['p99_s']} s** |",
            f"| other receivers p50 / p99 while its backlog drains | {result['others_during_drain']['p50_s']} / {result['others_during_drain']['p99_s']} s |",
        ]
    rows += [
        "",
        f"Per {result['series_window_s']} s of publishing:",
        "```",
        *_series_lines(result["series"]),
        "```",
        "",
        "Windows' others p99 by phase (median / max), largest backlog, load average (median / max):",
    ]
    rows += [
        f"- {phase}: {x['windows']} windows, p99 {x['others_p99_s_median']} / {x['others_p99_s_max']} s, "
        + (
            f"queued <= {x['queued_max']}, load {x['load1_median']} / {x['load1_max']}"
            if "queued_max" in x
            else f"load <= {x['load1_at_most']}"
        )
        for phase, x in result.get("series_summary", {}).items()
    ]
    for phase, statements in result.get("pg_statements_by_phase", {}).items():
        rows += ["", f"Statements, {phase} (ms of database time per s, calls, mean ms):"]
        rows += [
            f"- {x['ms_per_s']} ms/s, {x['calls']} calls, {x['mean_ms']} ms: {x['query']}" for x in statements
        ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, run the benchmark, print and write the results."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--receiver"]:
        asyncio.run(_serve([int(p) for p in argv[1].split(",")], Path(argv[2])))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.notifications_delivery", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rate", type=float, default=500.0, help="hazard.dispatched offered per second")
    parser.add_argument("--duration-s", type=float, default=60.0, help="seconds of load (steady mode)")
    parser.add_argument(
        "--down-minutes", type=float, default=None, help="run the outage variant: one receiver down N minutes"
    )
    parser.add_argument("--warmup-s", type=float, default=20.0, help="outage: load before the receiver dies")
    parser.add_argument("--after-s", type=float, default=30.0, help="outage: load after it returns")
    parser.add_argument(
        "--split",
        action="store_true",
        help="the sender in a process of its own (NOTIFICATIONS__SEND/CONSUME)",
    )
    parser.add_argument(
        "--pg-stats",
        action="store_true",
        help="preload pg_stat_statements; report the statements' time per phase",
    )
    parser.add_argument(
        "--prefill",
        type=int,
        default=0,
        help="store N records on the topic first, one batch each, that the service never reads",
    )
    parser.add_argument(
        "--round-ms",
        type=float,
        default=5.0,
        help="publish the events due in rounds this far apart (default 5; 50: as dispatch's relay on Tansu)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the service (NOTIFICATIONS__NAME), e.g. DELIVERY__DRAIN_PER_TARGET=16",
    )
    parser.add_argument("--name", default=None, help="results file name (default by mode)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = PG_STATS_SETTINGS if args.pg_stats else None
    with private_stack("notifications_delivery", pg_settings=settings) as (postgres, kafka):
        result = asyncio.run(
            run(
                kafka,
                postgres,
                rate=args.rate,
                duration_s=args.duration_s,
                down_minutes=args.down_minutes,
                warmup_s=args.warmup_s,
                after_s=args.after_s,
                split=args.split,
                pg_stats=args.pg_stats,
                prefill=args.prefill,
                round_ms=args.round_ms,
                settings=dict(item.split("=", 1) for item in args.set),
            )
        )
    name = args.name or (
        "notifications_delivery" if args.down_minutes is None else "notifications_delivery_outage"
    )
    result["command"] = "python -m bench.notifications_delivery " + " ".join(argv)
    publish_results(name, result, table(result), note="shared 2-core machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
