"""Events applied per second by the tracking consumer, on a real PostgreSQL and Tansu.

A realistic mix of lifecycle events for many hazards is produced to the topic first
(reported, dispatched, acknowledged; some returned and re-dispatched, some overdue
and escalated, some rectified on site, some duplicates, some relapses of closed
cases). Then the tracking service starts in-process (consumer, outbox relay, timer
loop: the real wiring) and we time until every produced event is applied. Tracking's
own replies (rectification orders, closures, relapses) are published through its
outbox and come back on the topic, where the inbox skips them: that load is included.

``python -m bench.tracking_apply [--events N]``; figures are printed and written to
``bench/results/tracking_apply.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from asgi_lifespan import LifespanManager

from bench._stack import private_stack, produce_events, publish_results
from services.tracking.app import create_app
from services.tracking.settings import TrackingSettings
from shared import events as ev
from shared.devstack import LocalKafka, LocalPostgres
from shared.migrate import migrate

PARTITIONS = 6
CATEGORIES = (
    "locked_rooftop_door",
    "ebike_indoor_charging",
    "blocked_fire_passage",
    "direct_vent_water_heater",
)
DEPARTMENT = {
    "locked_rooftop_door": "fire",
    "ebike_indoor_charging": "fire",
    "blocked_fire_passage": "fire",
    "direct_vent_water_heater": "gas",
}


class _Clock:
    def __init__(self, start: datetime) -> None:
        self.at = start

    def tick(self) -> datetime:
        self.at += timedelta(seconds=1)
        return self.at


def _envelope(cls: type[Any], hazard_id: uuid.UUID, at: datetime, producer: str, payload: Any) -> Any:
    return cls(event_id=uuid.uuid4(), occurred_at=at, hazard_id=hazard_id, producer=producer, payload=payload)


def _reported(
    hazard_id: uuid.UUID, at: datetime, *, category: str, building: str, on_site: bool, dup: uuid.UUID | None
) -> ev.HazardReported:
    grid = f"liuyue-{random.randint(1, 12):02d}"
    event: ev.HazardReported = _envelope(
        ev.HazardReported,
        hazard_id,
        at,
        "intake",
        ev.HazardReportedPayload(
            report_id=uuid.uuid4(),
            category=category,
            description="benchmark hazard",
            location=ev.Location(
                lat=22.60 + random.random() * 0.04,
                lon=114.15 + random.random() * 0.04,
                address="bench",
                building_id=building,
            ),
            grid_id=grid,
            community_id="liuyue",
            street_id="henggang",
            reporter_id=f"gm-{grid}",
            observed_at=at,
            accepted_at=at,
            rectified_on_site=on_site,
            duplicate_of=dup,
        ),
    )
    return event


def workload(events: int, *, seed: int = 7) -> list[ev.AnyEvent]:
    """About ``events`` lifecycle events of many hazards, in per-hazard order."""
    random.seed(seed)
    clock = _Clock(datetime.now(UTC) - timedelta(days=2))
    out: list[ev.AnyEvent] = []
    buildings = [f"B-{i}" for i in range(max(10, events // 8))]
    closed_on_site: list[tuple[str, str]] = []  # (category, building) of on-site closures: relapse bait
    open_ids: list[uuid.UUID] = []
    while len(out) < events:
        hazard_id = uuid.uuid4()
        category = random.choice(CATEGORIES)
        building = random.choice(buildings)
        roll = random.random()
        if roll < 0.03 and closed_on_site:
            category, building = random.choice(closed_on_site)  # the same hazard comes back
        if roll < 0.08:
            on_site = True
            out.append(
                _reported(
                    hazard_id, clock.tick(), category=category, building=building, on_site=True, dup=None
                )
            )
            closed_on_site.append((category, building))
            continue
        if roll < 0.11 and open_ids:
            dup = random.choice(open_ids)
            out.append(
                _reported(
                    hazard_id, clock.tick(), category=category, building=building, on_site=False, dup=dup
                )
            )
            out.append(
                _envelope(
                    ev.HazardDuplicateLinked,
                    hazard_id,
                    clock.tick(),
                    "intake",
                    ev.HazardDuplicateLinkedPayload(
                        original_hazard_id=dup, distance_m=5.0, same_building=True
                    ),
                )
            )
            continue
        on_site = False
        out.append(
            _reported(
                hazard_id, clock.tick(), category=category, building=building, on_site=on_site, dup=None
            )
        )
        open_ids.append(hazard_id)
        department = DEPARTMENT[category]
        dispatch_id = uuid.uuid4()

        def dispatched(
            dispatch: uuid.UUID, dept: str, reason: str = "routed", hazard_id: uuid.UUID = hazard_id
        ) -> ev.HazardDispatched:
            at = clock.tick()
            event: ev.HazardDispatched = _envelope(
                ev.HazardDispatched,
                hazard_id,
                at,
                "dispatch",
                ev.HazardDispatchedPayload(
                    dispatch_id=dispatch,
                    department_id=dept,
                    rule_id="bench",
                    receipt_deadline=at + timedelta(hours=2),
                    deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
                    reason=reason,
                ),
            )
            return event

        out.append(dispatched(dispatch_id, department))
        if random.random() < 0.1:
            out.append(
                _envelope(
                    ev.HazardReturned,
                    hazard_id,
                    clock.tick(),
                    "dispatch",
                    ev.HazardReturnedPayload(
                        dispatch_id=dispatch_id, department_id=department, reason="not ours", returned_by="x"
                    ),
                )
            )
            dispatch_id = uuid.uuid4()
            department = "urban_management"
            out.append(dispatched(dispatch_id, department, "rerouted"))
        late = random.random() < 0.15
        if late:
            at = clock.tick()
            out.append(
                _envelope(
                    ev.HazardReceiptOverdue,
                    hazard_id,
                    at,
                    "dispatch",
                    ev.HazardReceiptOverduePayload(
                        dispatch_id=dispatch_id, department_id=department, receipt_deadline=at
                    ),
                )
            )
            out.append(
                _envelope(
                    ev.HazardEscalated,
                    hazard_id,
                    clock.tick(),
                    "dispatch",
                    ev.HazardEscalatedPayload(
                        dispatch_id=dispatch_id,
                        department_id=department,
                        level=1,
                        target="department",
                        receipt_deadline=at,
                    ),
                )
            )
        if random.random() < 0.9:
            at = clock.tick()
            out.append(
                _envelope(
                    ev.HazardAcknowledged,
                    hazard_id,
                    at,
                    "dispatch",
                    ev.HazardAcknowledgedPayload(
                        dispatch_id=dispatch_id,
                        department_id=department,
                        acknowledged_at=at,
                        receipt_deadline=at,
                        on_time=not late,
                        acknowledged_by=f"officer-{department}",
                    ),
                )
            )
    return out


_PROGRESS = sa.text(
    "select (select coalesce(sum(cardinality(event_ids)), 0) from tracking.inbox_batches) - (select count(*) from tracking.timeline "
    "where producer = 'tracking') as foreign_applied, "
    "(select count(*) from tracking.timeline where producer = 'tracking') as own"
)


async def run(kafka: LocalKafka, postgres: LocalPostgres, *, events: int, max_batch: int) -> dict[str, Any]:
    """Produce the workload, start tracking, and time until every event is applied."""
    url = postgres.url()
    await migrate(url)
    lifecycle, dead = f"bench-lifecycle-{uuid.uuid4().hex[:6]}", f"bench-dlt-{uuid.uuid4().hex[:6]}"
    await kafka.create_topics({lifecycle: PARTITIONS, dead: 1})
    load = workload(events)
    produce_s = await produce_events(kafka.bootstrap_servers, lifecycle, load)
    settings = TrackingSettings(
        database={"url": url, "pool_size": 10},
        kafka={
            "bootstrap_servers": kafka.bootstrap_servers,
            "lifecycle_topic": lifecycle,
            "dead_letter_topic": dead,
            "idempotent_producer": False,
            "group_id": f"bench-tracking-{uuid.uuid4().hex[:6]}",
            "max_batch": max_batch,
        },
        http={"port": 0},
        log_json=False,
    )
    app = create_app(settings)
    total = len(load)
    started = time.perf_counter()
    first_at: float | None = None
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=60):
        sessions = app.state.runtime.sessions
        deadline = started + 1800
        applied = own = 0
        while time.perf_counter() < deadline:
            async with sessions() as session:
                row = (await session.execute(_PROGRESS)).one()
            applied, own = int(row.foreign_applied), int(row.own)
            if applied and first_at is None:
                first_at = time.perf_counter()
            if applied >= total:
                break
            await asyncio.sleep(0.05)
        done_at = time.perf_counter()
        async with sessions() as session:
            states = dict(
                (
                    await session.execute(
                        sa.text("select state, count(*) from tracking.cases group by state")
                    )
                ).all()
            )
    batches = _histogram("hazard_consumer_batch_size")
    seconds = _histogram("hazard_consumer_batch_seconds")
    if applied < total:
        raise RuntimeError(f"only {applied} of {total} events applied in time")
    assert first_at is not None
    return {
        "events": total,
        "hazards": sum(1 for e in load if isinstance(e, ev.HazardReported)),
        "own_events_published": own,
        "max_batch": max_batch,
        "partitions": PARTITIONS,
        "produce_s": round(produce_s, 2),
        "start_to_first_applied_s": round(first_at - started, 2),
        "first_to_last_applied_s": round(done_at - first_at, 2),
        "events_applied_per_s": round(total / (done_at - first_at)),
        "events_applied_per_s_including_start": round(total / (done_at - started)),
        "batches": int(batches[1]),
        "mean_batch_size": round(batches[0] / batches[1], 1) if batches[1] else 0,
        "mean_batch_seconds": round(seconds[0] / seconds[1], 4) if seconds[1] else 0,
        "cases_by_state": {str(k): int(v) for k, v in states.items()},
    }


def _histogram(name: str) -> tuple[float, float]:
    """Sum and count of a tracking histogram in this process's registry."""
    from prometheus_client import REGISTRY

    total = REGISTRY.get_sample_value(f"{name}_sum", {"service": "tracking"}) or 0.0
    count = REGISTRY.get_sample_value(f"{name}_count", {"service": "tracking"}) or 0.0
    return total, count


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    return "\n".join(
        [
            "| what | figure |",
            "| --- | ---: |",
            f"| events produced beforehand ({result['hazards']:,} hazards) | {result['events']:,} |",
            f"| tracking replies published (orders, closures, relapses) | {result['own_events_published']:,} |",
            f"| consumer start to first event applied | {result['start_to_first_applied_s']} s |",
            f"| first to last event applied | {result['first_to_last_applied_s']} s |",
            f"| **events applied per second** (batches of up to {result['max_batch']}) | **{result['events_applied_per_s']:,}** |",
            f"| batches applied (mean size, mean seconds per batch) | {result['batches']:,} ({result['mean_batch_size']}, {result['mean_batch_seconds']} s) |",
            f"| events per second including start-up and group join | {result['events_applied_per_s_including_start']:,} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL and Tansu, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.tracking_apply", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--max-batch", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_stack("tracking_apply") as (postgres, kafka):
        result = asyncio.run(run(kafka, postgres, events=args.events, max_batch=args.max_batch))
    publish_results("tracking_apply", result, table(result), note="shared machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
