"""Rebuild speed of the reporting projection: events replayed per second from a Tansu topic.

About a million realistic lifecycle events are produced to a private Tansu first (pre-serialised
JSON built from templates: reported, dispatched, acknowledged on time or late, some returned and
rerouted, rectification orders with rework, rectified, verified, closed, relapses, duplicates,
on-site fixes). Then ``services.reporting.rebuild.rebuild`` — the code behind
``python -m services.reporting.rebuild`` — replays the topic into fresh tables and swaps them in;
we time it end to end (staging tables, replay, rollup, swap).

``python -m bench.reporting_rebuild [--events N] [--batch-size N]``; figures are printed and
written to ``bench/results/reporting_rebuild.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from bench._stack import private_stack, publish_results
from services.reporting.rebuild import rebuild
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


def generate(events: int, *, seed: int = 6) -> tuple[list[tuple[bytes, bytes]], int]:
    """At least ``events`` events for as many hazards as that takes, one day of reports after another."""
    rng = random.Random(seed)
    writer = EventWriter()
    at = datetime(2026, 1, 1, 1, tzinfo=UTC)
    hazards = 0
    while len(writer.out) < events:
        writer.hazard(rng, at)
        hazards += 1
        at += timedelta(seconds=30)
    return writer.out, hazards


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


async def run(
    kafka: LocalKafka, postgres: LocalPostgres, *, events: int, batch_size: int, workers: int
) -> dict[str, Any]:
    """Produce, rebuild, check the counts."""
    topic = "hazard.lifecycle"
    await kafka.create_topics({topic: PARTITIONS})
    await postgres.acreate_database("bench")
    url = postgres.url("bench")
    await migrate(url)
    t0 = time.perf_counter()
    values, hazards = generate(events)
    generated_s = time.perf_counter() - t0
    produced_s = await produce_all(kafka.bootstrap_servers, topic, values)
    result = await rebuild(
        database_url=url,
        bootstrap_servers=kafka.bootstrap_servers,
        topic=topic,
        timezone="Asia/Shanghai",
        batch_size=batch_size,
        workers=workers,
    )
    engine = create_engine(DatabaseSettings(url=url))
    async with engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT count(*) FROM reporting.hazards"))).scalar_one()
        reported = (
            await conn.execute(sa.text("SELECT sum(reported + duplicates) FROM reporting.rollup"))
        ).scalar_one()
    await engine.dispose()
    return {
        "events": len(values),
        "hazards": hazards,
        "generate_s": round(generated_s, 1),
        "produce_s": round(produced_s, 1),
        "produce_events_per_s": round(len(values) / produced_s),
        "rebuild_events": result.events,
        "rebuild_s": round(result.seconds, 1),
        "rebuild_events_per_s": round(result.events_per_second),
        "batch_size": batch_size,
        "workers": workers,
        "phases_s": {
            "replay": round(result.replay_s, 1),
            "of_which_parse_and_fold": round(result.parse_s, 1),
            "rollup": round(result.rollup_s, 1),
            "swap": round(result.swap_s, 1),
        },
        "hazard_rows": int(stored),
        "hazards_counted_in_rollup": int(reported or 0),
        "target_events_per_s": 20_000,
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    rows = [
        ("events produced", f"{result['events']:,} ({result['hazards']:,} hazards)"),
        ("produce to Tansu", f"{result['produce_s']} s ({result['produce_events_per_s']:,}/s)"),
        (
            "rebuild (replay + rollup + swap)",
            f"{result['rebuild_s']} s with {result['workers']} worker process(es)",
        ),
        ("phases", ", ".join(f"{k} {v} s" for k, v in result["phases_s"].items())),
        ("**rebuild events/s**", f"**{result['rebuild_events_per_s']:,}** (target 20,000)"),
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_stack("reporting_rebuild") as (postgres, kafka):
        result = asyncio.run(
            run(kafka, postgres, events=args.events, batch_size=args.batch_size, workers=args.workers)
        )
    publish_results("reporting_rebuild", result, table(result), note="shared machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
