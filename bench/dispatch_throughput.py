"""Dispatch throughput: hazards per second from ``hazard.reported`` on the topic to ``hazard.dispatched`` committed.

N reported hazards (a street's category mix over every grid; a few fixed on site or
duplicates, which dispatch skips, and some of category ``other``, which go to the
operators' queue) are produced to the topic first. Then the dispatch service starts
in-process (consumer, outbox relay, timer loop: the real wiring) and we time until
every hazard has its dispatch (or referral) committed, and until the outbox has
published every ``hazard.dispatched``.

``python -m bench.dispatch_throughput [--hazards N] [--max-batch B]``; figures are printed and
written to ``bench/results/dispatch_throughput.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from bench._stack import private_stack, produce_events, publish_results
from services.dispatch.app import create_app
from services.dispatch.settings import DispatchSettings
from shared import events as ev
from shared.devstack import LocalKafka, LocalPostgres
from shared.migrate import migrate
from shared.outbox import unpublished_count_query
from shared.reference import load_reference_data

PARTITIONS = 6


def workload(hazards: int, *, seed: int = 11) -> tuple[list[ev.HazardReported], int]:
    """`hazards` reported events over the street; returns them and how many need a dispatch decision."""
    rng = random.Random(seed)
    reference = load_reference_data()
    categories = [c.code for c in reference.categories]
    grids = [(g.id, g.community_id) for g in reference.grids]
    now = datetime.now(UTC)
    out: list[ev.HazardReported] = []
    routed = 0
    for _ in range(hazards):
        grid_id, community_id = rng.choice(grids)
        roll = rng.random()
        on_site = roll < 0.05
        duplicate = uuid.uuid4() if 0.05 <= roll < 0.08 else None
        routed += not on_site and duplicate is None
        out.append(
            ev.HazardReported(
                event_id=uuid.uuid4(),
                occurred_at=now,
                hazard_id=uuid.uuid4(),
                producer="intake",
                payload=ev.HazardReportedPayload(
                    report_id=uuid.uuid4(),
                    category=rng.choice(categories),
                    description="benchmark hazard",
                    location=ev.Location(lat=22.65, lon=114.2, address="bench"),
                    grid_id=grid_id,
                    community_id=community_id,
                    street_id="henggang",
                    reporter_id=f"gm-{grid_id}",
                    observed_at=now,
                    accepted_at=now,
                    rectified_on_site=on_site,
                    duplicate_of=duplicate,
                    urgency="urgent" if rng.random() < 0.1 else None,
                ),
            )
        )
    return out, routed


_PROGRESS = sa.text(
    "select (select count(*) from dispatch.hazards) as decided, "
    "(select count(*) from dispatch.dispatches) as dispatched, "
    f"({unpublished_count_query('dispatch')}) as unpublished"
)


async def run(kafka: LocalKafka, postgres: LocalPostgres, *, hazards: int, max_batch: int) -> dict[str, Any]:
    """Produce the reported hazards, start dispatch, time until every one is decided and published."""
    url = postgres.url()
    await migrate(url)
    lifecycle, dead = f"bench-lifecycle-{uuid.uuid4().hex[:6]}", f"bench-dlt-{uuid.uuid4().hex[:6]}"
    await kafka.create_topics({lifecycle: PARTITIONS, dead: 1})
    load, routed = workload(hazards)
    produce_s = await produce_events(kafka.bootstrap_servers, lifecycle, load)
    settings = DispatchSettings(
        database={"url": url, "pool_size": 10},
        kafka={
            "bootstrap_servers": kafka.bootstrap_servers,
            "lifecycle_topic": lifecycle,
            "dead_letter_topic": dead,
            "idempotent_producer": False,
            "group_id": f"bench-dispatch-{uuid.uuid4().hex[:6]}",
            "max_batch": max_batch,
        },
        http={"port": 0},
        log_json=False,
    )
    app = create_app(settings)
    started = time.perf_counter()
    first_at: float | None = None
    committed_at: float | None = None
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60):
        sessions = app.state.runtime.sessions
        deadline = started + 1800
        decided = dispatched = unpublished = 0
        while time.perf_counter() < deadline:
            async with sessions() as session:
                row = (await session.execute(_PROGRESS)).one()
            decided, dispatched, unpublished = int(row.decided), int(row.dispatched), int(row.unpublished)
            if decided and first_at is None:
                first_at = time.perf_counter()
            if decided >= routed and committed_at is None:
                committed_at = time.perf_counter()
            if committed_at is not None and unpublished == 0:
                break
            await asyncio.sleep(0.05)
        published_at = time.perf_counter()
        async with sessions() as session:
            referred = (
                await session.execute(
                    sa.text("select count(*) from dispatch.hazards where queue = 'operators'")
                )
            ).scalar_one()
    if committed_at is None or first_at is None:
        raise RuntimeError(f"only {decided} of {routed} hazards decided in time")
    span = committed_at - first_at
    return {
        "hazards_produced": hazards,
        "hazards_needing_dispatch": routed,
        "dispatched": dispatched,
        "referred_to_operators": int(referred),
        "max_batch": max_batch,
        "partitions": PARTITIONS,
        "produce_s": round(produce_s, 2),
        "start_to_first_committed_s": round(first_at - started, 2),
        "first_to_last_committed_s": round(span, 2),
        "hazards_per_s": round(routed / span) if span > 0 else None,
        "hazards_per_s_including_start": round(routed / (committed_at - started)),
        "all_published_s_after_start": round(published_at - started, 2),
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    return "\n".join(
        [
            "| what | figure |",
            "| --- | ---: |",
            f"| hazard.reported produced beforehand | {result['hazards_produced']:,} |",
            f"| needing a dispatch decision (not on-site fixes or duplicates) | {result['hazards_needing_dispatch']:,} |",
            f"| dispatched / referred to operators | {result['dispatched']:,} / {result['referred_to_operators']:,} |",
            f"| consumer start to first dispatch committed | {result['start_to_first_committed_s']} s |",
            f"| first to last dispatch committed | {result['first_to_last_committed_s']} s |",
            f"| **hazards dispatched per second** (batches of up to {result['max_batch']}) | **{result['hazards_per_s']:,}** |",
            f"| per second including start-up and group join | {result['hazards_per_s_including_start']:,} |",
            f"| every hazard.dispatched published, after start | {result['all_published_s_after_start']} s |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.dispatch_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--hazards", type=int, default=30_000)
    parser.add_argument("--max-batch", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_stack("dispatch_throughput") as (postgres, kafka):
        result = asyncio.run(run(kafka, postgres, hazards=args.hazards, max_batch=args.max_batch))
    publish_results("dispatch_throughput", result, table(result), note="shared machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
