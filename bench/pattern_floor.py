"""The cost of the reliability patterns alone: lifecycle events consumed and published by handlers that do nothing else.

Every service pays, for each event it applies: the fetch from the broker, FastStream's batch
handling, parsing and validating the event, the inbox insert, the transaction's commit and the
offset commit. For each event it publishes it pays the outbox insert, the relay's read, the
publish and the delete. This benchmark measures those costs with a service built as every
service is (``ServiceRuntime.build``: its consumer, outbox and relay, default settings) around a
handler that writes nothing of its own, on a private PostgreSQL and Tansu:

* **consume**: N events already on the topic, applied by a handler that does nothing;
* **consume + publish**: the same, with a handler that publishes one event for each it applies
  (through the outbox and the relay, to another topic).

CPU is counted per event, by part (the consumer's process, PostgreSQL, the broker), from the
first batch committed to the last, so the consumer group's join is left out. The end-to-end
benchmark's work per hazard times these costs is what the patterns alone take of a hazard's
budget, before any service does its own work.

``python -m bench.pattern_floor [--events N] [--name NAME]``; figures are printed and written to
``bench/results/<NAME>.json`` (default ``pattern_floor``). Besides CPU, each phase reports what
does not depend on the machine's load: WAL bytes, inbox rows and inbox bytes per event applied.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY

from bench._stack import private_stack, produce_events, publish_results
from bench.cpu import CpuMeter, Part, infrastructure_parts
from bench.dispatch_throughput import workload as reported_hazards
from shared import events as ev
from shared.consumer import BatchContext
from shared.db import inbox_table, outbox_table
from shared.devstack import LocalKafka, LocalPostgres
from shared.runner import tune_gc
from shared.service import ServiceRuntime
from shared.settings import DatabaseSettings, HttpSettings, KafkaSettings, OutboxSettings, ServiceSettings

PARTITIONS = 6


def workload(n: int) -> list[ev.HazardReported]:
    """N reported hazards over the street's grids and categories (dispatch's benchmark load)."""
    return reported_hazards(n)[0]


def _echo(event: ev.AnyEvent) -> ev.HazardDuplicateLinked:
    """A small event caused by ``event`` (what a handler publishes, at the least)."""
    return ev.HazardDuplicateLinked(
        event_id=uuid.uuid4(),
        occurred_at=event.occurred_at,
        hazard_id=event.hazard_id,
        producer="test",
        causation_id=event.event_id,
        payload=ev.HazardDuplicateLinkedPayload(
            original_hazard_id=event.hazard_id, distance_m=0.0, same_building=True
        ),
    )


async def _phase(
    kafka: LocalKafka, postgres: LocalPostgres, *, n: int, publish: bool, meter_parts: list[Part]
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    service = f"floor-{tag}"
    schema = f"floor_{tag}"
    topic, out_topic, dead = f"floor-{tag}", f"floor-out-{tag}", f"floor-dlt-{tag}"
    await kafka.create_topics({topic: PARTITIONS, out_topic: PARTITIONS, dead: 1})
    metadata = sa.MetaData(schema=schema)
    inbox, outbox_rows = inbox_table(metadata), outbox_table(metadata)

    async def handler(ctx: BatchContext, events: Sequence[ev.AnyEvent]) -> None:
        if publish:
            await ctx.outbox.add(ctx.session, *[_echo(e) for e in events], topic=out_topic)

    # A service as every service is built: engine, broker, sender, outbox, relay, consumer.
    settings = ServiceSettings(
        database=DatabaseSettings(url=postgres.url()),
        kafka=KafkaSettings(
            bootstrap_servers=kafka.bootstrap_servers,
            lifecycle_topic=topic,
            dead_letter_topic=dead,
            idempotent_producer=False,
            group_id=service,
        ),
        http=HttpSettings(port=0),
    )
    runtime = ServiceRuntime.build(
        name=service, settings=settings, outbox_table=outbox_rows, inbox_table=inbox, handler=handler
    )
    async with runtime.engine.begin() as conn:
        await conn.execute(sa.text(f"create schema {schema}"))
        await conn.run_sync(metadata.create_all)
    produce_s = await produce_events(kafka.bootstrap_servers, topic, workload(n))
    meter = CpuMeter(meter_parts, include_self=False)
    writes_before = await _writes(runtime.engine, inbox)

    def counted() -> tuple[int, int]:
        # The services' own counters, read in-process: polling the tables would cost the database.
        applied = REGISTRY.get_sample_value(
            "hazard_events_consumed_total", {"service": service, "outcome": "applied"}
        )
        published = REGISTRY.get_sample_value("hazard_outbox_published_total", {"service": service})
        return int(applied or 0), int(published or 0)

    first: tuple[float, dict[str, float]] | None = None
    applied_at_first = applied = published = 0
    await runtime.start()
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            applied, published = counted()
            if first is None and applied:
                first = (time.perf_counter(), meter.snapshot())
                applied_at_first = applied
            if applied >= n and (not publish or published >= n):
                break
            await asyncio.sleep(0.01)
        done = (time.perf_counter(), meter.snapshot())
    finally:
        await runtime.stop()
    if first is None or applied < n or (publish and published < n):
        raise RuntimeError(f"only {applied} of {n} events applied and {published} published in time")
    writes = _per_event(writes_before, await _writes(runtime.engine, inbox), n)
    await runtime.engine.dispose()
    measured = n - applied_at_first
    span = done[0] - first[0]
    cpu = CpuMeter.per_item_ms(first[1], done[1], measured)
    return {
        "events": n,
        "publishes_one_per_event": publish,
        "produce_s": round(produce_s, 2),
        "events_counted": measured,
        "seconds": round(span, 2),
        "events_per_s": round(measured / span) if span > 0 else None,
        "cpu_ms_per_event": cpu,
        "writes_per_event": writes,
    }


async def _writes(engine: Any, inbox: sa.Table) -> dict[str, int]:
    """The WAL position, the inbox's rows and its size on disk (table and indexes), now."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.text(
                    "select pg_current_wal_lsn() - '0/0'::pg_lsn as wal, "
                    f"(select count(*) from {inbox.fullname}) as rows, "
                    "pg_total_relation_size(cast(:t as regclass)) as bytes"
                ),
                {"t": inbox.fullname},
            )
        ).one()
    return {"wal": int(row.wal), "rows": int(row.rows), "bytes": int(row.bytes)}


def _per_event(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """What the phase wrote per event applied: WAL bytes (all of it, the whole phase), inbox rows
    and inbox bytes on disk. Load-independent, unlike the CPU figures."""
    return {
        "wal_bytes": round((after["wal"] - before["wal"]) / n, 1),
        "inbox_rows": round((after["rows"] - before["rows"]) / n, 4),
        "inbox_bytes": round((after["bytes"] - before["bytes"]) / n, 1),
    }


async def run(kafka: LocalKafka, postgres: LocalPostgres, *, events: int) -> dict[str, Any]:
    """Both phases, each on its own topic, tables and consumer group."""
    tune_gc()  # as every service process does (shared.runner)
    parts = [Part("consumer", os.getpid()), *infrastructure_parts(postgres, kafka)]
    consume = await _phase(kafka, postgres, n=events, publish=False, meter_parts=parts)
    both = await _phase(kafka, postgres, n=events, publish=True, meter_parts=parts)
    per_publish = {
        part: round(both["cpu_ms_per_event"][part] - consume["cpu_ms_per_event"][part], 4)
        for part in consume["cpu_ms_per_event"]
    }
    defaults = KafkaSettings(bootstrap_servers="unused")
    return {
        "settings": {
            "max_batch": defaults.max_batch,
            "batch_linger_ms": defaults.batch_linger_ms,
            "outbox_batch_size": OutboxSettings().batch_size,
            "partitions": PARTITIONS,
        },
        "consume": consume,
        "consume_and_publish": both,
        "cpu_ms_per_published_event": per_publish,
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    c, b, p = result["consume"], result["consume_and_publish"], result["cpu_ms_per_published_event"]
    parts = [k for k in c["cpu_ms_per_event"] if k != "total"]
    lines = [
        "| CPU ms per event | " + " | ".join(parts) + " | total |",
        "| --- |" + " ---: |" * (len(parts) + 1),
    ]
    for label, figures in (
        ("applied (fetch, parse, inbox, commit)", c["cpu_ms_per_event"]),
        ("applied and one event published", b["cpu_ms_per_event"]),
        ("one event published (difference)", p),
    ):
        lines.append(
            f"| {label} | " + " | ".join(f"{figures[k]:.4f}" for k in parts) + f" | {figures['total']:.4f} |"
        )
    lines.append("")
    for label, phase in (("applied", c), ("applied and one event published", b)):
        w = phase["writes_per_event"]
        lines.append(
            f"Per event {label}: {w['wal_bytes']:.0f} WAL bytes, {w['inbox_rows']:.4f} inbox rows, "
            f"{w['inbox_bytes']:.0f} inbox bytes on disk."
        )
    lines.append(
        f"Applied {c['events_per_s']:,} events/s alone, {b['events_per_s']:,} events/s with publishing."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, run both phases, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.pattern_floor", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--name", default="pattern_floor", help="results file: bench/results/<name>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_stack("pattern_floor") as (postgres, kafka):
        result = asyncio.run(run(kafka, postgres, events=args.events))
    publish_results(args.name, result, table(result), note="shared machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
