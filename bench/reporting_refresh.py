"""The rollup refresh under a live stream of events on one busy day (#20): cost and freshness.

A private PostgreSQL holds a day of ``--base`` hazards already projected (reports, dispatches,
acknowledgements; the rollup computed). Then for ``--duration`` seconds a stream of realistic
history for that same day is applied as the live consumer applies it, in a batch every 0.1 s: new
reports at ``--rate`` a second, each dispatched a second later (six in seven; the seventh fixed on
the spot), half of those acknowledged three seconds after, one in five ordered to rectify, and the
base day's hazards rectified and closed at a fifth of the rate each (so ~1,100 events/s at 500
reports/s). Beside it, the background refresher runs as the service runs it (every
``--interval`` s, paced by its cost with the service's default share).

Two modes, each on a fresh copy of the loaded day, ``--repeat`` times:

* ``days`` (before #20): the consumer merges the facts and marks the days its hazards feed
  (``facts.upsert_facts`` + ``facts.mark_dirty``); a refresh recomputes every dirty day from the
  facts (``rollups.recompute_dirty_days``, the code that still serves days marked by migrations);
* ``changes``: the consumer merges the facts and records their rollup changes
  (``changes.merge_counted``); a refresh folds the recorded changes in (``rollups.fold_changes``).

Figures per mode (medians over the repeats of each run's figure): a refresh's duration (p50,
p99), a batch's apply time (p50, p99), and the freshness: from a batch's commit to the end of the
first refresh that began after it (p50, p99); in mode ``changes`` the rows written to
``rollup_changes`` per stream event (load-independent but for batch sizes). After each run the rollup is compared with one
recomputed from the facts (it must be equal).

``python -m bench.reporting_refresh [--base 30000] [--rate 500] [--duration 20] [--repeat 3]
[--interval 0.25] [--max-busy 0.25] [--modes days,changes]``; writes ``bench/results/reporting_refresh.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from bench._stack import private_postgres, publish_results
from services.reporting import domain, repository
from services.reporting.settings import ProjectionSettings, refresh_pause_s
from services.reporting.store import changes, facts, rollups
from shared import events as ev
from shared.db import create_engine
from shared.devstack import LocalPostgres
from shared.migrate import migrate
from shared.settings import DatabaseSettings
from tests.support.factories import make_event, reported_payload

TZ = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 11, 20, 16, 0, tzinfo=UTC)  # 00:00 on 21 November in the city
CATEGORIES = (
    "blocked_fire_exit",
    "ebike_indoor_charging",
    "locked_rooftop_door",
    "gas_leak",
    "exposed_wiring",
)
DEPARTMENTS = ("fire", "safety_supervision", "police", "urban_management", "housing_rental", "gas", "roads")
COMMUNITIES = 200
ROLLUP_TABLES = ("rollup", "rollup_groups", "rollup_hist", "rollup_groups_span", "rollup_hist_span")


def _report(i: int, at: datetime) -> ev.AnyEvent:
    community = f"c{i * 7919 % COMMUNITIES:03d}"
    payload = reported_payload(
        report_id=uuid.UUID(int=(1 << 64) + i),
        category=CATEGORIES[i % len(CATEGORIES)],
        community_id=community,
        grid_id=f"{community}-{i % 12:02d}",
        street_id=f"s{i * 7919 % COMMUNITIES // 10:02d}",
        accepted_at=at,
        observed_at=at - timedelta(minutes=5),
        rectified_on_site=i % 7 == 0,
        campaign_ids=("winter-fire-2026",) if i % 5 < 2 else (),
    )
    return make_event("hazard.reported", hazard_id=uuid.UUID(int=i + 1)).model_copy(
        update={"payload": payload, "occurred_at": at}
    )


def hazard_history(i: int, at: datetime) -> list[tuple[float, ev.AnyEvent]]:
    """(seconds after the report, event) of hazard ``i`` reported at ``at``."""
    h, dispatch = uuid.UUID(int=i + 1), uuid.UUID(int=(1 << 96) + i)
    department = DEPARTMENTS[i % len(DEPARTMENTS)]
    out: list[tuple[float, ev.AnyEvent]] = [(0.0, _report(i, at))]
    if i % 7 == 0:
        return out
    sent = at + timedelta(seconds=1)
    deadline = sent + timedelta(hours=2)
    out.append(
        (
            1.0,
            make_event(
                "hazard.dispatched",
                hazard_id=h,
                dispatch_id=dispatch,
                department_id=department,
                receipt_deadline=deadline,
            ).model_copy(update={"occurred_at": sent}),
        )
    )
    if i % 2 == 0:
        acked = sent + timedelta(minutes=3 + i % 90)
        out.append(
            (
                4.0,
                make_event(
                    "hazard.acknowledged",
                    hazard_id=h,
                    dispatch_id=dispatch,
                    department_id=department,
                    acknowledged_at=acked,
                    receipt_deadline=deadline,
                    on_time=acked <= deadline,
                ).model_copy(update={"occurred_at": acked}),
            )
        )
    if i % 5 == 0:
        out.append(
            (
                6.0,
                make_event("hazard.rectification_ordered", hazard_id=h, department_id=department).model_copy(
                    update={"occurred_at": sent + timedelta(hours=1)}
                ),
            )
        )
    return out


def base_events(base: int) -> list[ev.AnyEvent]:
    """The day so far: ``base`` hazards over its first 18 hours, with their dispatches and acknowledgements."""
    step = timedelta(hours=18) / max(1, base)
    return [e for i in range(base) for _, e in hazard_history(i, DAY + i * step)]


def stream(base: int, rate: float, duration_s: float) -> list[tuple[float, ev.AnyEvent]]:
    """(seconds into the run, event) of the measured stream, in order."""
    out: list[tuple[float, ev.AnyEvent]] = []
    start = DAY + timedelta(hours=18)
    n = int(rate * duration_s)
    for k in range(n):
        t = k / rate
        out += [(t + dt, e) for dt, e in hazard_history(base + k, start + timedelta(seconds=t))]
    # The day's earlier hazards progress too: rectified, then closed (a fifth of the rate each).
    for k in range(n // 5):
        i = (k * 7 + 1) % base
        if i % 7 == 0:
            continue
        t = k * 5 / rate
        h = uuid.UUID(int=i + 1)
        at = start + timedelta(seconds=t)
        department = DEPARTMENTS[i % len(DEPARTMENTS)]
        out.append(
            (
                t,
                make_event("hazard.rectified", hazard_id=h, department_id=department).model_copy(
                    update={"occurred_at": at}
                ),
            )
        )
        out.append(
            (
                t + 2,
                make_event("hazard.closed", hazard_id=h, department_id=department).model_copy(
                    update={"occurred_at": at}
                ),
            )
        )
    return sorted((x for x in out if x[0] < duration_s), key=lambda x: x[0])


async def load_base(url: str, base: int) -> int:
    events = base_events(base)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        for a in range(0, len(events), 5000):
            async with engine.begin() as conn:
                await facts.upsert_facts(conn, domain.project_events(events[a : a + 5000], tz=TZ))
        async with engine.begin() as conn:
            await rollups.rebuild_rollup(conn)
        async with engine.begin() as conn:
            for table in ("hazards", "dispatches", *ROLLUP_TABLES):
                await conn.execute(sa.text(f"ANALYZE reporting.{table}"))
    finally:
        await engine.dispose()
    return len(events)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


async def one_run(
    url: str,
    mode: str,
    events: list[tuple[float, ev.AnyEvent]],
    duration_s: float,
    projection: ProjectionSettings,
) -> dict[str, Any]:
    engine = create_engine(DatabaseSettings(url=url))
    commits: list[float] = []
    applies: list[float] = []
    refreshes: list[tuple[float, float]] = []  # (start, end)
    brought_in: list[int] = []  # what each refresh brought in (changes mode: rollup_changes rows)
    done = asyncio.Event()

    async def consumer() -> None:
        begun = time.monotonic()
        k = 0
        while k < len(events):
            now = time.monotonic() - begun
            j = k
            while j < len(events) and events[j][0] <= now:
                j += 1
            if j > k:
                batch = domain.project_events([e for _, e in events[k:j]], tz=TZ)
                t0 = time.monotonic()
                async with engine.begin() as conn:
                    if mode == "changes":
                        await changes.merge_counted(conn, batch)
                    else:
                        await facts.upsert_facts(conn, batch)
                        await facts.mark_dirty(conn, batch.touched_hazards())
                t1 = time.monotonic()
                applies.append(t1 - t0)
                commits.append(t1)
                k = j
            await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - begun - now)))
        done.set()

    async def refresher() -> None:
        while True:
            t0 = time.monotonic()
            async with engine.begin() as conn:
                # As the service refreshes (changes: without waiting for the WAL flush; days: as before #20).
                brought_in.append(await rollups.refresh_rollup(conn, durable=mode == "days"))
            t1 = time.monotonic()
            refreshes.append((t0, t1))
            if done.is_set() and t0 > commits[-1]:
                return
            await asyncio.sleep(refresh_pause_s(projection, t1 - t0))

    try:
        await asyncio.gather(consumer(), refresher())
        lags = []
        for c in commits:
            ends = [end for start, end in refreshes if start >= c]
            lags.append(min(ends) - c)
        durations = [end - start for start, end in refreshes]
        async with engine.connect() as conn:
            live = {
                t: sorted(
                    tuple(r) for r in (await conn.execute(sa.text(f"SELECT * FROM reporting.{t}"))).all()
                )
                for t in ROLLUP_TABLES
            }
            await repository.rebuild_rollup(conn)
            rebuilt = {
                t: sorted(
                    tuple(r) for r in (await conn.execute(sa.text(f"SELECT * FROM reporting.{t}"))).all()
                )
                for t in ROLLUP_TABLES
            }
            await conn.rollback()
    finally:
        await engine.dispose()
    return {
        "events": len(events),
        "batches": len(commits),
        "refreshes": len(refreshes),
        "refresh_p50_ms": round(statistics.median(durations) * 1000, 1),
        "refresh_p99_ms": round(_pct(durations, 0.99) * 1000, 1),
        "apply_p50_ms": round(statistics.median(applies) * 1000, 1),
        "apply_p99_ms": round(_pct(applies, 0.99) * 1000, 1),
        "fresh_p50_ms": round(statistics.median(lags) * 1000, 1),
        "fresh_p99_ms": round(_pct(lags, 0.99) * 1000, 1),
        # Load-independent: rows written to rollup_changes (and deleted by the fold) per stream event.
        "change_rows_per_event": round(sum(brought_in) / len(events), 3) if mode == "changes" else None,
        "rollup_equals_recount": live == rebuilt,
    }


async def run(postgres: LocalPostgres, args: argparse.Namespace) -> dict[str, Any]:
    await postgres.acreate_database("day")
    await migrate(postgres.url("day"), services=("reporting",))
    t0 = time.monotonic()
    loaded = await load_base(postgres.url("day"), args.base)
    load_s = time.monotonic() - t0
    events = stream(args.base, args.rate, args.duration)
    result: dict[str, Any] = {
        "command": "python -m bench.reporting_refresh "
        f"--base {args.base} --rate {args.rate:g} --duration {args.duration:g} --repeat {args.repeat} "
        f"--interval {args.interval:g} --max-busy {args.max_busy:g} --modes {','.join(args.modes)}",
        "base_events": loaded,
        "base_load_s": round(load_s, 1),
        "stream_events_per_s": round(len(events) / args.duration),
        "runs": {},
        "median": {},
    }
    for rep in range(args.repeat):
        for mode in args.modes:
            name = f"{mode}_{rep}"
            await postgres.acreate_database(name, template="day")
            load = os.getloadavg()[0]
            projection = ProjectionSettings(rollup_refresh_s=args.interval, rollup_max_busy=args.max_busy)
            figures = await one_run(postgres.url(name), mode, events, args.duration, projection)
            figures["load_avg_1m_before"] = round(load, 2)
            await postgres.adrop_database(name)
            result["runs"].setdefault(mode, []).append(figures)
            print(mode, rep, figures, flush=True)
    for mode, runs in result["runs"].items():
        result["median"][mode] = (
            {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0] if k.endswith("_ms")}
            | {"change_rows_per_event": runs[0]["change_rows_per_event"]}
            | {"rollup_equals_recount": all(r["rollup_equals_recount"] for r in runs)}
        )
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['command']}: {result['base_events']} events already in the day, "
        f"stream {result['stream_events_per_s']} events/s",
        "| mode | refresh p50 / p99 ms | apply a batch p50 / p99 ms | commit → in the rollup p50 / p99 ms | equals a recount |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for mode, m in result["median"].items():
        lines.append(
            f"| {mode} | {m['refresh_p50_ms']} / {m['refresh_p99_ms']} | {m['apply_p50_ms']} / {m['apply_p99_ms']} "
            f"| {m['fresh_p50_ms']} / {m['fresh_p99_ms']} | {m['rollup_equals_recount']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, default=30_000, help="hazards already in the busy day")
    parser.add_argument("--rate", type=float, default=500.0, help="new reports a second in the stream")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of stream per run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--interval", type=float, default=0.25, help="the refresher's interval while busy")
    parser.add_argument(
        "--max-busy", type=float, default=ProjectionSettings().rollup_max_busy, help="the refresher's share"
    )
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["days", "changes"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_postgres("reporting_refresh") as postgres:
        result = asyncio.run(run(postgres, args))
    publish_results(
        "reporting_refresh", result, table(result), note="shared 2-core machine; figures are noisy"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
