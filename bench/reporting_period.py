"""The supervisor's period report (#18) over a city-year: build, HTML and xlsx, p50/p95/p99.

The projection's facts are filled directly in PostgreSQL (``bench.reporting_query``'s
``INSERT … SELECT generate_series`` statements: replaying millions of events is the rebuild
benchmark's subject, not this one's), for two years ending 2026-06-30 so the year-long period has
its previous period and year-earlier comparison. The hazards get reporter types, channels and
on-the-spot notices, the dispatches their street, reporter type and channel, and every late or
never acknowledged dispatch its escalations (one or two levels), in the same statements; then the rollup is computed
exactly as a rebuild does (``repository.rebuild_rollup``). What is timed is what
``GET /api/v1/reports/period`` does for the year 2025-07-01 .. 2026-06-30: ``period_report.build``
(the counts of ten groupings in three periods, the open-overdue list, medians) and
rendering, for each format.

The events the facts stand for are counted from the facts: a report per hazard, and per dispatch,
acknowledgement, return, rectification order, rectification, closure, relapse and escalation one
event each.

``python -m bench.reporting_period [--per-day N] [--repeat N]``; results in
``bench/results/reporting_period.json``. Run under ``flock /tmp/hazard-bench.lock`` on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench._stack import private_postgres, publish_results
from bench.reporting_query import (
    COMMUNITIES,
    DEPARTMENTS,
    LOAD_DISPATCHES,
    LOAD_HAZARDS,
    LOAD_RELAPSES,
    LOAD_REROUTED,
)
from services.reporting import period_report, repository
from shared.db import create_engine, create_session_factory
from shared.devstack import LocalPostgres
from shared.migrate import migrate
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings

END = date(2026, 6, 30)
PERIOD = (date(2025, 7, 1), END)
NOW = datetime(2026, 7, 1, 2, 0, tzinfo=UTC)

_HAZARD_TAIL = "CASE WHEN onsite THEN 'rectified_on_site' WHEN NOT dup AND r < 0.8 THEN 'verified' END"
# The same hazards, with the columns of #18 after the loader's (unlinked and address left empty):
# who reported (half grid members, then building managers, cadres' visits, the hotline), the
# channel (one in five an offline batch) and a notice on the spot for one hazard in ten.
LOAD_HAZARDS_18 = LOAD_HAZARDS.replace(
    _HAZARD_TAIL,
    _HAZARD_TAIL + ", NULL, NULL, "
    "(ARRAY['grid_member','grid_member','grid_member','building_manager','cadre_visit','hotline'])[1 + i % 6], "
    "CASE WHEN i % 5 = 0 THEN 'batch' ELSE 'app' END, i % 10 = 3",
)
_DISPATCH_TAIL = "h.community_id, h.grid_id, h.category, h.campaign_ids"
# The dispatches with their report's street, kind and channel, and their escalations: level 1 when
# acknowledged after the deadline (125 minutes), level 2 when never acknowledged.
LOAD_DISPATCHES_18 = LOAD_DISPATCHES.replace(
    _DISPATCH_TAIL,
    # original_deadline (migration 0011) comes before them: NULL, no extension
    _DISPATCH_TAIL + ", NULL, h.street_id, h.reporter_type, h.source, "
    "CASE WHEN r >= 0.99 THEN 2 WHEN 5 + r * 200 > 125 THEN 1 END",
)
assert LOAD_HAZARDS_18 != LOAD_HAZARDS
assert LOAD_DISPATCHES_18 != LOAD_DISPATCHES

EVENTS = """
SELECT (SELECT count(*) FROM reporting.hazards WHERE report_day BETWEEN :a AND :b)
     + (SELECT count(*) + count(acknowledged_at) + count(returned_at) + COALESCE(sum(escalation_level), 0)
        FROM reporting.dispatches WHERE dispatch_day BETWEEN :a AND :b)
     + (SELECT count(ordered_at) + count(rectified_at) FILTER (WHERE NOT rectified_on_site) + count(closed_at)
        FROM reporting.hazards WHERE report_day BETWEEN :a AND :b)
     + (SELECT count(*) FROM reporting.relapses WHERE relapse_day BETWEEN :a AND :b)
"""


async def load(url: str, *, per_day: int, days: int) -> dict[str, float]:
    """Two years of a city's facts, the new dimensions and escalations, and the rollup."""
    reference = load_reference_data()
    categories = [c.code for c in reference.categories][:20]
    # Local midnight (UTC+8) of the first day, as bench.reporting_query.load.
    start = datetime.combine(END - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC) - timedelta(
        hours=8
    )
    engine = create_engine(DatabaseSettings(url=url))
    timings: dict[str, float] = {}
    statements: list[tuple[str, str, dict[str, Any]]] = [
        (
            "hazards",
            LOAD_HAZARDS_18,
            {
                "categories": categories,
                "ncat": len(categories),
                "departments": list(DEPARTMENTS),
                "ncomm": COMMUNITIES,
                "start": start,
                "per_day": float(per_day),
                "n": days * per_day,
            },
        ),
        ("dispatches", LOAD_DISPATCHES_18, {}),
        ("rerouted", LOAD_REROUTED, {}),
        ("relapses", LOAD_RELAPSES, {}),
    ]
    try:
        for name, sql, params in statements:
            began = time.perf_counter()
            async with engine.begin() as conn:
                await conn.execute(sa.text("SET LOCAL synchronous_commit = off"))
                await conn.execute(sa.text(sql), params)
            timings[name] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        async with engine.begin() as conn:
            await repository.rebuild_rollup(conn)
        timings["rollup"] = round(time.perf_counter() - began, 1)
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return timings


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def q(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 1)

    return {
        "p50_ms": round(statistics.median(ordered), 1),
        "p95_ms": q(0.95),
        "p99_ms": q(0.99),
        "n": len(ordered),
    }


async def time_report(url: str, *, repeat: int) -> dict[str, Any]:
    """Milliseconds per period report: JSON (build), HTML (build + render), xlsx (build + render)."""
    reference = load_reference_data()
    engine = create_engine(DatabaseSettings(url=url))
    sessions = create_session_factory(engine)
    samples: dict[str, list[float]] = {"json": [], "html": [], "xlsx": []}
    first: dict[str, float] = {}
    report: dict[str, Any] = {}
    try:
        for i in range(repeat + 1):
            for fmt in samples:
                began = time.perf_counter()
                report = await period_report.build(
                    sessions,
                    reference=reference,
                    start=PERIOD[0],
                    end=PERIOD[1],
                    now=NOW,
                    case_url="http://127.0.0.1:8103/api/v1/hazards/{hazard_id}",
                )
                if fmt == "html":
                    period_report.render_html(report, "zh")
                elif fmt == "xlsx":
                    period_report.render_xlsx(report, "zh")
                elapsed = (time.perf_counter() - began) * 1000
                if i == 0:
                    first[fmt] = round(elapsed, 1)  # cold: caches empty
                else:
                    samples[fmt].append(elapsed)
        async with engine.connect() as conn:
            events = int((await conn.execute(sa.text(EVENTS), {"a": PERIOD[0], "b": PERIOD[1]})).scalar_one())
            rows = {
                t: int((await conn.execute(sa.text(f"SELECT count(*) FROM reporting.{t}"))).scalar_one())
                for t in (
                    "hazards",
                    "dispatches",
                    "relapses",
                    "rollup_groups",
                    "rollup_groups_span",
                )
            }
    finally:
        await engine.dispose()
    overview = {r["figure"]: r["current"] for r in report["tables"]["overview"]}
    return {
        "queries": {fmt: {**_stats(s), "first_ms": first[fmt]} for fmt, s in samples.items()},
        "events_in_period": events,
        "rows": rows,
        "reported_in_period": overview["reported"],
        "sentence": report["sentences"]["zh"][0],
    }


async def run(postgres: LocalPostgres, *, per_day: int, days: int, repeat: int) -> dict[str, Any]:
    """Load, then time the period report."""
    url = postgres.url("bench")
    await postgres.acreate_database("bench")
    await migrate(url)
    load_s = await load(url, per_day=per_day, days=days)
    before = os.getloadavg()
    timed = await time_report(url, repeat=repeat)
    after = os.getloadavg()
    return {
        "period": {"from": PERIOD[0].isoformat(), "to": PERIOD[1].isoformat()},
        "per_day": per_day,
        "days_loaded": days,
        "load_s": load_s,
        **timed,
        "target_p99_ms": 2000,
        "load_average_1_5_15": {
            "before_timing": [round(x, 2) for x in before],
            "after_timing": [round(x, 2) for x in after],
        },
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    rows = [
        f"| {fmt} | {q['p50_ms']} | {q['p95_ms']} | **{q['p99_ms']}** | {q['n']} | {q['first_ms']} |"
        for fmt, q in result["queries"].items()
    ]
    r = result["rows"]
    return "\n".join(
        [
            f"Period {result['period']['from']} .. {result['period']['to']} (a year, with the year before as both "
            f"comparisons): {result['reported_in_period']:,} hazards reported, {result['events_in_period']:,} events; "
            f"facts of {result['days_loaded']} days: {r['hazards']:,} hazards, {r['dispatches']:,} dispatches, "
            f"{r['relapses']:,} relapses; {r['rollup_groups']:,} day and {r['rollup_groups_span']:,} week/month "
            f"per-group rollup rows",
            "",
            "| format | p50 ms | p95 ms | p99 ms | runs | first (cold) ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.reporting_period", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--per-day", type=int, default=2_000, help="hazards a day (2,000: ~3.65 M events a year)"
    )
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with private_postgres("reporting_period") as postgres:
        result = asyncio.run(run(postgres, per_day=args.per_day, days=args.days, repeat=args.repeat))
    publish_results("reporting_period", result, table(result), note="shared machine; figures are noisy")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
