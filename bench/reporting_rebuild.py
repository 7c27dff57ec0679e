"""Rebuild speed of the reporting projection: events replayed per second from a Tansu topic.

About a million realistic lifecycle events are produced to a private Tansu first (pre-serialised
JSON built from templates: reported, dispatched, acknowledged on time or late, some returned and
rerouted, rectification orders with rework, rectified, verified, closed, relapses, duplicates,
on-site fixes). Then the command ``python -m services.reporting.rebuild`` runs as a subprocess,
as an operator would run it: it replays the topic into fresh tables and swaps them in.

Two rates are reported, both over every event of the topic:

* **replay** — events / seconds of the replay phase (read, parse and validate, fold, merge into
  the staging tables), the part that grows with the topic;
* **whole command** — events / wall seconds of the whole command: interpreter start and imports,
  staging tables, replay, index builds, rollup, swap.

Besides wall time, the CPU seconds of each part (the command and its worker processes,
PostgreSQL, the broker) are measured from ``getrusage``/``/proc`` and given per event: unlike the
rates they hardly depend on what else the shared machine runs, and the load average at the start
and end says how busy it was.

``python -m bench.reporting_rebuild [--events N] [--batch-size N] [--workers N]``; figures are
printed and written to ``bench/results/reporting_rebuild.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from bench._stack import private_stack, publish_results
from shared.db import create_engine
from shared.devstack import LocalKafka, LocalPostgres
from shared.migrate import migrate
from shared.settings import DatabaseSettings

PARTITIONS = 6
CATEGORIES = {
    "locked_rooftop_door": "fire",
    "ebike_indoor_charging": "fire",
    "blocked_fire_passage": "fire",
    "direct_vent_water_heater": "gas",
    "sporadic_construction_works": "safety_supervision",
    "public_security_hazard": "police",
}
COMMUNITIES = ("liuyue", "huale", "hongmian", "songbai", "zhisheng", "silian")
RULE = {"minutes": 120, "working_time": False}


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


class EventWriter:
    """Builds the JSON of one hazard's events from templates, without pydantic on the hot path."""

    def __init__(self) -> None:
        self.out: list[tuple[bytes, bytes]] = []
        self.at: list[datetime] = []  # occurred_at of each event of ``out``
        self.closed: list[tuple[str, str, datetime]] = []  # (hazard, place, closed_at)

    def emit(
        self, event_type: str, hazard: str, at: datetime, producer: str, payload: dict[str, Any]
    ) -> None:
        body = {
            "event_id": str(uuid.uuid4()),
            "schema_version": 1,
            "occurred_at": _iso(at),
            "hazard_id": hazard,
            "producer": producer,
            "causation_id": None,
            "event_type": event_type,
            "payload": payload,
        }
        self.out.append((hazard.encode(), orjson.dumps(body)))
        self.at.append(at)

    def hazard(self, rng: random.Random, at: datetime) -> None:
        """One hazard's life: 1 to 12 events."""
        h = str(uuid.uuid4())
        category = rng.choice(tuple(CATEGORIES))
        department = CATEGORIES[category]
        community = rng.choice(COMMUNITIES)
        grid = f"{community}-{rng.randint(1, 12):02d}"
        building = f"B-{rng.randint(1, 400)}"
        on_site = rng.random() < 0.15
        duplicate_of = self.closed[-1][0] if self.closed and rng.random() < 0.03 else None
        self.emit(
            "hazard.reported",
            h,
            at,
            "intake",
            {
                "report_id": str(uuid.uuid4()),
                "category": category,
                "description": "bench hazard",
                "location": {"lat": 22.65, "lon": 114.2, "address": "Road 1", "building_id": building},
                "grid_id": grid,
                "community_id": community,
                "street_id": "henggang",
                "reporter_id": f"gm-{grid}",
                "observed_at": _iso(at - timedelta(minutes=5)),
                "accepted_at": _iso(at),
                "photos": [],
                "rectified_on_site": on_site,
                "campaign_ids": ["spring-fire-2026"] if department == "fire" else [],
                "urgency": None,
                "source": "app",
                "duplicate_of": duplicate_of,
            },
        )
        if duplicate_of:
            return
        if on_site:
            self.emit(
                "hazard.closed",
                h,
                at,
                "tracking",
                {"reason": "rectified_on_site", "department_id": None, "closed_by": "gm"},
            )
            return
        if self.closed and rng.random() < 0.05:
            original, place, closed_at = self.closed[rng.randrange(len(self.closed))]
            if closed_at < at:
                self.emit(
                    "hazard.relapsed",
                    h,
                    at + timedelta(seconds=1),
                    "tracking",
                    {
                        "original_hazard_id": original,
                        "original_department_id": department,
                        "original_closed_at": _iso(closed_at),
                        "days_since_closure": (at - closed_at).total_seconds() / 86400,
                        "same_building": True,
                        "distance_m": 0.0,
                        "place_key": place,
                    },
                )
        d = str(uuid.uuid4())
        t = at + timedelta(minutes=rng.randint(1, 10))
        deadline = t + timedelta(hours=2)
        self.emit("hazard.dispatched", h, t, "dispatch", self._dispatch(d, department, deadline))
        if rng.random() < 0.08:  # returned, rerouted
            returned_at = t + timedelta(minutes=rng.randint(10, 200))
            self.emit(
                "hazard.returned",
                h,
                returned_at,
                "dispatch",
                {"dispatch_id": d, "department_id": department, "reason": "not ours", "returned_by": "x"},
            )
            prev, d = d, str(uuid.uuid4())
            t = returned_at + timedelta(minutes=1)
            deadline = t + timedelta(hours=2)
            self.emit(
                "hazard.dispatched",
                h,
                t,
                "dispatch",
                {
                    **self._dispatch(d, "urban_management", deadline),
                    "reason": "rerouted",
                    "previous_dispatch_id": prev,
                },
            )
            department = "urban_management"
        if rng.random() < 0.04:
            return  # never acknowledged: open overdue
        ack = t + timedelta(minutes=rng.choice((5, 20, 45, 90, 150, 300)))
        self.emit(
            "hazard.acknowledged",
            h,
            ack,
            "dispatch",
            {
                "dispatch_id": d,
                "department_id": department,
                "acknowledged_at": _iso(ack),
                "receipt_deadline": _iso(deadline),
                "on_time": ack <= deadline,
                "acknowledged_by": f"dept-{department}",
            },
        )
        rounds = 2 if rng.random() < 0.1 else 1
        moment = ack
        for r in range(1, rounds + 1):
            moment += timedelta(minutes=10)
            self.emit(
                "hazard.rectification_ordered",
                h,
                moment,
                "tracking",
                {
                    "department_id": department,
                    "deadline": _iso(moment + timedelta(days=3)),
                    "deadline_rule": RULE,
                    "round": r,
                },
            )
            if rng.random() < 0.1:
                return  # not rectified yet
            moment += timedelta(hours=rng.randint(2, 60))
            self.emit(
                "hazard.rectified",
                h,
                moment,
                "tracking",
                {
                    "department_id": department,
                    "note": "",
                    "photos": [],
                    "rectified_by": f"dept-{department}",
                    "round": r,
                    "on_site": False,
                },
            )
            moment += timedelta(hours=4)
            self.emit(
                "hazard.verified",
                h,
                moment,
                "tracking",
                {"passed": r == rounds, "note": "", "photos": [], "verified_by": "gm", "round": r},
            )
        moment += timedelta(minutes=1)
        self.emit(
            "hazard.closed",
            h,
            moment,
            "tracking",
            {"reason": "verified", "department_id": department, "closed_by": "gm"},
        )
        self.closed.append((h, f"{grid}/{building}", moment))

    @staticmethod
    def _dispatch(d: str, department: str, deadline: datetime) -> dict[str, Any]:
        return {
            "dispatch_id": d,
            "department_id": department,
            "rule_id": None,
            "receipt_deadline": _iso(deadline),
            "deadline_rule": RULE,
            "reason": "routed",
            "previous_dispatch_id": None,
            "dispatched_by": "system",
        }


ORDERS = ("time", "hazard")


def generate(events: int, *, seed: int = 6, order: str = "time") -> tuple[list[tuple[bytes, bytes]], int]:
    """At least ``events`` events for as many hazards as that takes, one report every 30 s.

    ``order="time"`` puts them on the topic in the order they happened, as the services publish
    them: a hazard's events (reported, dispatched minutes later, rectified hours or days later)
    are far apart, so the rebuild merges most hazards across many batches and copies most
    dispatches' places from stored reports. ``order="hazard"`` keeps each hazard's events
    together (the easy case: nearly everything folds within one batch).
    """
    rng = random.Random(seed)
    writer = EventWriter()
    at = datetime(2026, 1, 1, 1, tzinfo=UTC)
    hazards = 0
    while len(writer.out) < events:
        writer.hazard(rng, at)
        hazards += 1
        at += timedelta(seconds=30)
    if order == "hazard":
        return writer.out, hazards
    by_time = sorted(range(len(writer.out)), key=writer.at.__getitem__)  # stable: ties keep their order
    return [writer.out[i] for i in by_time], hazards


async def produce_all(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> float:
    """Produce everything, waiting for every confirmation; returns seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        max_batch_size=512 * 1024,
        request_timeout_ms=60_000,
        acks=1,
    )
    await producer.start()
    started = time.perf_counter()
    try:
        chunk = 20_000
        for i in range(0, len(values), chunk):
            futures = [await producer.send(topic, value=v, key=k) for k, v in values[i : i + chunk]]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds of a process, its reaped children and its live children (PostgreSQL backends)."""
    if pid is None:
        return 0.0

    def stat(p: int) -> list[str] | None:
        try:
            return Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None

    me = stat(pid)
    if me is None:
        return 0.0
    total = sum(int(x) for x in me[11:15])
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            child = stat(int(entry))
            if child is not None and int(child[1]) == pid:
                total += sum(int(x) for x in child[11:13])
    return total / _TICKS


def _own_cpu() -> float:
    """CPU seconds of this process and its reaped children (the rebuild command and its workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def rebuild_command(url: str, bootstrap: str, topic: str, *, batch_size: int, workers: int) -> dict[str, Any]:
    """Run ``python -m services.reporting.rebuild``; returns its result and the wall seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "services.reporting.rebuild",
                "--database-url",
                url,
                "--bootstrap-servers",
                bootstrap,
                "--topic",
                topic,
                "--batch-size",
                str(batch_size),
                "--workers",
                str(workers),
                "--result-json",
                str(out),
            ],
            check=True,
        )
        wall = time.perf_counter() - started
        result: dict[str, Any] = json.loads(out.read_text())
    result["command_s"] = wall
    return result


async def run(
    kafka: LocalKafka,
    postgres: LocalPostgres,
    *,
    events: int,
    batch_size: int,
    workers: int,
    order: str = "time",
) -> dict[str, Any]:
    """Produce, rebuild, check the counts."""
    topic = "hazard.lifecycle"
    await kafka.create_topics({topic: PARTITIONS})
    await postgres.acreate_database("bench")
    url = postgres.url("bench")
    await migrate(url)
    t0 = time.perf_counter()
    values, hazards = generate(events, order=order)
    generated_s = time.perf_counter() - t0
    produced_s = await produce_all(kafka.bootstrap_servers, topic, values)
    produced = len(values)
    del values
    await asyncio.sleep(2)  # let the broker and autovacuum settle after the load
    load_before = os.getloadavg()
    cpu_before = (_own_cpu(), _proc_cpu(postgres.pid()), _proc_cpu(kafka.pid))
    result = await asyncio.to_thread(
        rebuild_command, url, kafka.bootstrap_servers, topic, batch_size=batch_size, workers=workers
    )
    cpu_after = (_own_cpu(), _proc_cpu(postgres.pid()), _proc_cpu(kafka.pid))
    load_after = os.getloadavg()
    engine = create_engine(DatabaseSettings(url=url))
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT count(*) FROM reporting.hazards"))).scalar_one()
        reported = (
            await conn.execute(sa.text("SELECT sum(reported + duplicates) FROM reporting.rollup"))
        ).scalar_one()
    await engine.dispose()
    n = result["events"]
    cpu = {
        name: after - before
        for name, before, after in zip(
            ("rebuild_command", "postgres", "broker"), cpu_before, cpu_after, strict=True
        )
    }
    cpu_total = sum(cpu.values())
    return {
        "events": produced,
        "hazards": hazards,
        "order": order,
        "generate_s": round(generated_s, 1),
        "produce_s": round(produced_s, 1),
        "produce_events_per_s": round(produced / produced_s),
        "rebuild_events": n,
        "invalid": result["invalid"],
        "batch_size": batch_size,
        "workers": workers,
        "command_s": round(result["command_s"], 1),
        "command_events_per_s": round(n / result["command_s"]),
        "rebuild_s": round(result["seconds"], 1),
        "rebuild_events_per_s": round(n / result["seconds"]),
        "replay_events_per_s": round(n / result["replay_s"]),
        "phases_s": {
            "start_and_imports": round(result["command_s"] - result["seconds"], 1),
            "staging_tables": round(result["setup_s"], 1),
            "replay": round(result["replay_s"], 1),
            "places": round(result["places_s"], 1),
            "rollup_and_indexes": round(result["rollup_s"], 1),
            "swap": round(result["swap_s"], 1),
        },
        "fact_indexes_alongside_rollup_s": round(result["index_s"], 1),
        "worker_parse_and_fold_s": round(result["parse_s"], 1),
        "cpu_s": {k: round(v, 1) for k, v in cpu.items()},
        "cpu_us_per_event": {k: round(v / n * 1e6, 1) for k, v in cpu.items()}
        | {"total": round(cpu_total / n * 1e6, 1)},
        "cpu_bound_events_per_s": round((os.cpu_count() or 1) / (cpu_total / n)),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "hazard_rows": int(stored),
        "hazards_counted_in_rollup": int(reported or 0),
        "target_events_per_s": 20_000,
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    cpu = result["cpu_us_per_event"]
    rows = [
        (
            "events produced",
            f"{result['events']:,} ({result['hazards']:,} hazards), in {result['order']} order",
        ),
        ("produce to Tansu", f"{result['produce_s']} s ({result['produce_events_per_s']:,}/s)"),
        (
            "whole command (`python -m services.reporting.rebuild`)",
            f"{result['command_s']} s with {result['workers']} worker process(es), batches of "
            f"{result['batch_size']:,}",
        ),
        ("phases", ", ".join(f"{k} {v} s" for k, v in result["phases_s"].items())),
        ("**replay events/s**", f"**{result['replay_events_per_s']:,}**"),
        ("**whole command events/s**", f"**{result['command_events_per_s']:,}** (target 20,000)"),
        (
            "CPU µs per event",
            f"command + workers {cpu['rebuild_command']}, PostgreSQL {cpu['postgres']}, "
            f"Tansu {cpu['broker']}; total {cpu['total']} "
            f"(so at most {result['cpu_bound_events_per_s']:,} events/s on {os.cpu_count()} cores)",
        ),
        (
            "load average before / after",
            f"{' '.join(map(str, result['load_average_before']))} / "
            f"{' '.join(map(str, result['load_average_after']))}",
        ),
        (
            "hazard rows / counted in rollup",
            f"{result['hazard_rows']:,} / {result['hazards_counted_in_rollup']:,}",
        ),
    ]
    return "\n".join(["| what | figure |", "| --- | ---: |", *(f"| {a} | {b} |" for a, b in rows)])


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.reporting_rebuild", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="time",
        help="events in the order they happened (default), or each hazard's events together",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_stack("reporting_rebuild") as (postgres, kafka):
        result = asyncio.run(
            run(
                kafka,
                postgres,
                events=args.events,
                batch_size=args.batch_size,
                workers=args.workers,
                order=args.order,
            )
        )
    publish_results(
        "reporting_rebuild" if args.order == "time" else f"reporting_rebuild_{args.order}_order",
        result,
        table(result),
        note="shared machine; figures are noisy",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
