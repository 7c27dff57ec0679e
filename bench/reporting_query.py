"""Summary query latency of the reporting service over a year of a city's data.

A city of ~70 streets reports ~10,000 hazards a day: a year is 3.65 million hazards. The
projection tables (hazards, dispatches, relapses) are filled directly in PostgreSQL with
``INSERT … SELECT generate_series`` (much faster than replaying 25 million events; the rebuild
benchmark measures replay), the daily rollup is computed from them exactly as a rebuild does,
and then the report functions behind ``GET /api/v1/reports/summary`` and ``/timeseries`` are
timed: the summary with its previous-period and year-earlier comparisons, totals and medians.

It also times the rollup refresh the API runs before every summary, after changing some facts
of the dirty days.

``python -m bench.reporting_query [--days N] [--per-day N] [--repeat N] [--keep-dir DIR]``; figures
are printed and written to ``bench/results/reporting_query.json`` (not with ``--keep-dir``, which
keeps the database between development runs and only recomputes the rollup when it is reused).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import statistics
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._stack import private_postgres, publish_results
from services.reporting import reports, repository
from services.reporting.repository import Filters, Period
from shared.db import create_engine, create_session_factory
from shared.devstack import LocalPostgres, free_port
from shared.migrate import migrate
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings

COMMUNITIES = 700  # ~70 streets x ~10 communities
DEPARTMENTS = ("fire", "safety_supervision", "police", "urban_management", "housing_rental", "gas", "roads")

LOAD_HAZARDS = """
INSERT INTO reporting.hazards
SELECT md5('h' || i)::uuid, ts, (ts AT TIME ZONE 'Asia/Shanghai')::date,
       (CAST(:categories AS text[]))[1 + i % :ncat], 'c' || lpad((c)::text, 3, '0'), 'c' || lpad((c)::text, 3, '0') || '-' || lpad((1 + i % 12)::text, 2, '0'),
       's' || (c / 10), 'c' || c || '/B-' || (i % 400),
       CASE WHEN i % :ncat < 6 THEN ARRAY['spring-fire-2026'] ELSE '{}'::text[] END,
       onsite, CASE WHEN dup THEN md5('h' || (i - 1))::uuid END,
       CASE WHEN NOT onsite AND NOT dup THEN (CAST(:departments AS text[]))[1 + (i % :ncat) % 7] END,
       ts + interval '5 minutes',
       CASE WHEN NOT onsite AND NOT dup AND r < 0.95 THEN ts + interval '3 hours' END,
       CASE WHEN NOT onsite AND NOT dup AND r < 0.95 THEN 1 + (r < 0.1)::int END,
       CASE WHEN onsite THEN ts WHEN NOT dup AND r < 0.85 THEN ts + (r * 100) * interval '1 hour' END,
       NOT onsite AND NOT dup AND r > 0.9,
       CASE WHEN onsite THEN ts WHEN NOT dup AND r < 0.8 THEN ts + (r * 100 + 5) * interval '1 hour' END,
       CASE WHEN onsite THEN 'rectified_on_site' WHEN NOT dup AND r < 0.8 THEN 'verified' END
FROM (
  SELECT i, CAST(:start AS timestamptz) + i * (interval '1 day' / CAST(:per_day AS float8)) AS ts, (i * 7919) % :ncomm AS c,
         random() AS r, (i % 7 = 0) AS onsite, (i % 33 = 1) AS dup
  FROM generate_series(CAST(0 AS bigint), CAST(:n AS bigint) - 1) AS i
) AS s
"""

LOAD_DISPATCHES = """
INSERT INTO reporting.dispatches
SELECT md5('d' || h.hazard_id)::uuid, h.hazard_id, h.department_id, h.reported_at + interval '5 minutes',
       ((h.reported_at + interval '5 minutes') AT TIME ZONE 'Asia/Shanghai')::date,
       h.reported_at + interval '125 minutes', 'routed', NULL,
       CASE WHEN r < 0.99 THEN h.reported_at + (5 + r * 200) * interval '1 minute' END, NULL, NULL,
       h.community_id, h.grid_id, h.category, h.campaign_ids
FROM (SELECT *, random() AS r FROM reporting.hazards WHERE department_id IS NOT NULL) AS h
"""

LOAD_REROUTED = """
WITH returned AS (
  UPDATE reporting.dispatches SET returned_at = dispatched_at + interval '150 minutes',
         superseded_at = dispatched_at + interval '151 minutes', acknowledged_at = NULL
  WHERE hashtext(dispatch_id::text) % 12 = 0 RETURNING *
)
INSERT INTO reporting.dispatches
SELECT md5('r' || dispatch_id)::uuid, hazard_id, 'urban_management', superseded_at,
       (superseded_at AT TIME ZONE 'Asia/Shanghai')::date, superseded_at + interval '2 hours', 'rerouted',
       dispatch_id, superseded_at + interval '30 minutes', NULL, NULL,
       community_id, grid_id, category, campaign_ids
FROM returned
"""

LOAD_RELAPSES = """
INSERT INTO reporting.relapses
SELECT h.hazard_id, o.hazard_id, h.reported_at, h.report_day, o.place_key, o.department_id,
       extract(epoch FROM h.reported_at - o.closed_at) / 86400
FROM reporting.hazards h
JOIN reporting.hazards o ON o.hazard_id = md5('h' || (hashtext(h.hazard_id::text) & 1048575))::uuid
WHERE hashtext(h.hazard_id::text) % 25 = 0 AND o.closed_at IS NOT NULL AND o.closed_at < h.reported_at
ON CONFLICT DO NOTHING
"""


TOUCH = (
    "UPDATE reporting.dispatches SET acknowledged_at = acknowledged_at + interval '7 minutes' "
    "WHERE dispatch_day = ANY(CAST(:d AS date[])) AND acknowledged_at IS NOT NULL "
    "AND abs(hashtext(dispatch_id::text)) % 50 = :k",
    "UPDATE reporting.hazards SET rectified_at = rectified_at + interval '3 hours' "
    "WHERE report_day = ANY(CAST(:d AS date[])) AND rectified_at IS NOT NULL AND NOT rectified_on_site "
    "AND abs(hashtext(hazard_id::text)) % 50 = :k",
)


async def load(url: str, *, days: int, per_day: int, end: date) -> dict[str, float]:
    """Fill the projection tables with a year of a city's facts and compute the rollup."""
    reference = load_reference_data()
    categories = [c.code for c in reference.categories][:20]
    engine = create_engine(DatabaseSettings(url=url))
    timings: dict[str, float] = {}
    start = datetime.combine(end - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC) - timedelta(
        hours=8
    )
    try:
        for name, sql, params in (
            (
                "hazards",
                LOAD_HAZARDS,
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
            ("dispatches", LOAD_DISPATCHES, {}),
            ("rerouted", LOAD_REROUTED, {}),
            ("relapses", LOAD_RELAPSES, {}),
        ):
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


async def reroll(url: str) -> dict[str, float]:
    """Recompute the whole rollup from the facts already loaded (development runs with --keep-dir)."""
    engine = create_engine(DatabaseSettings(url=url))
    try:
        began = time.perf_counter()
        async with engine.begin() as conn:
            await repository.rebuild_rollup(conn)
        timings = {"rollup": round(time.perf_counter() - began, 1)}
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("VACUUM ANALYZE"))
    finally:
        await engine.dispose()
    return timings


async def time_queries(url: str, *, end: date, repeat: int) -> dict[str, Any]:
    """Latency of each report query, repeated; p50/p95/p99 in milliseconds."""
    reference = load_reference_data()
    engine = create_engine(DatabaseSettings(url=url, pool_size=8))
    sessions = create_session_factory(engine)
    now = datetime.combine(end, datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)
    month = (end - timedelta(days=29), end)
    cases: dict[str, Any] = {
        "summary department, 30 days": {"group_by": "department", "period": month, "filters": Filters()},
        "summary community, 30 days": {"group_by": "community", "period": month, "filters": Filters()},
        "summary category, 30 days, one community": {
            "group_by": "category",
            "period": month,
            "filters": Filters(community_id="c042"),
        },
        "summary department, 365 days": {
            "group_by": "department",
            "period": (end - timedelta(days=364), end),
            "filters": Filters(),
        },
        "summary grid, 30 days": {"group_by": "grid", "period": month, "filters": Filters()},
        "summary campaign, 30 days": {
            "group_by": "campaign",
            "period": month,
            "filters": Filters(),
        },
    }
    out: dict[str, Any] = {}
    try:
        for name, case in cases.items():
            samples = []
            rows = 0
            # One run more than counted: the first (cold plans and buffers) is reported as first_ms.
            for _ in range(case.get("repeat", repeat) + 1):
                began = time.perf_counter()
                report = await reports.summary(
                    sessions,
                    reference=reference,
                    start=case["period"][0],
                    end=case["period"][1],
                    group_by=case["group_by"],
                    filters=case["filters"],
                    now=now,
                )
                samples.append((time.perf_counter() - began) * 1000)
                rows = len(report["groups"])
            out[name] = _stats(samples[1:]) | {
                "first_ms": round(samples[0], 1),
                "groups": rows,
                "reported": report["totals"]["reported"],
            }
        samples = []
        for _ in range(repeat + 1):
            began = time.perf_counter()
            async with sessions() as session:
                await repository.daily_series(
                    session,
                    group_by="department",
                    period=Period(end - timedelta(days=89), end),
                    filters=Filters(),
                    bucket="week",
                    now=now,
                )
            samples.append((time.perf_counter() - began) * 1000)
        out["timeseries department by week, 90 days"] = _stats(samples[1:]) | {
            "first_ms": round(samples[0], 1)
        }
        out["median_precision"] = await _median_precision(sessions, period=Period(*month))
        # What the API runs before every summary: the refresh of the days events touched since the
        # last one (recomputed from the facts; their weeks and months by difference), committed.
        for name, dirty in (
            ("refresh, 1 dirty day (today)", [end]),
            (
                "refresh, 5 dirty days",
                [
                    end,
                    end - timedelta(days=1),
                    end - timedelta(days=7),
                    end - timedelta(days=30),
                    end - timedelta(days=61),
                ],
            ),
        ):
            samples = []
            for run in range(max(3, repeat // 4) + 1):
                async with sessions() as session, session.begin():
                    # Events changed ~2 % of these days' acknowledgements and rectifications.
                    for sql in TOUCH:
                        await session.execute(sa.text(sql), {"d": dirty, "k": run})
                    await session.execute(
                        sa.text("INSERT INTO reporting.rollup_dirty (day) SELECT unnest(CAST(:d AS date[]))"),
                        {"d": dirty},
                    )
                began = time.perf_counter()
                async with sessions() as session, session.begin():
                    assert await repository.refresh_rollup(session) == len(dirty)
                samples.append((time.perf_counter() - began) * 1000)
            out[name] = _stats(samples[1:]) | {"first_ms": round(samples[0], 1)}
    finally:
        await engine.dispose()
    return out


async def _median_precision(sessions: Any, *, period: Period) -> dict[str, Any]:
    """Histogram medians (what the summary serves) against exact ones from the facts, per community."""
    async with sessions() as session:
        approx = await repository.medians(session, group_by="community", period=period, filters=Filters())
        exact = await repository.medians(
            session, group_by="community", period=period, filters=Filters(), use_rollup=False
        )
    errors: dict[str, list[float]] = {"ack": [], "rect": []}
    for key, values in exact.items():
        for i, measure in enumerate(("ack", "rect")):
            want, got = values[i], approx.get(key, (None, None))[i]
            if want is not None and got is not None and want != 0:
                errors[measure].append(abs(got - want) / abs(want) * 100)
    return {
        f"{measure}_{stat}": round(fn(errs), 3) if errs else None
        for measure, errs in errors.items()
        for stat, fn in (("max_rel_error_pct", max), ("mean_rel_error_pct", statistics.fmean))
    } | {"groups_compared": len(exact)}


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


async def run(
    postgres: LocalPostgres,
    *,
    days: int,
    per_day: int,
    repeat: int,
    reuse: bool = False,
    loaded: Path | None = None,
) -> dict[str, Any]:
    """Load (or, with ``reuse``, keep the facts already loaded and recompute only the rollup), then time."""
    url = postgres.url("bench")
    end = date(2026, 11, 21)
    if reuse:
        await migrate(url)
        load_s = await reroll(url)
    else:
        await postgres.acreate_database("bench")
        await migrate(url)
        load_s = await load(url, days=days, per_day=per_day, end=end)
        if loaded is not None:
            await asyncio.to_thread(loaded.write_text, json.dumps({"days": days, "per_day": per_day}))
    engine = create_engine(DatabaseSettings(url=url))
    async with engine.connect() as conn:
        counts = {
            t: int((await conn.execute(sa.text(f"SELECT count(*) FROM reporting.{t}"))).scalar_one())
            for t in ("hazards", "dispatches", "relapses", "rollup", "rollup_groups", "rollup_hist")
        }
    await engine.dispose()
    load_before = os.getloadavg()
    queries = await time_queries(url, end=end, repeat=repeat)
    load_after = os.getloadavg()
    precision = queries.pop("median_precision")
    return {
        "days": days,
        "per_day": float(per_day),
        "rows": counts,
        "load_s": load_s,
        "queries": queries,
        "median_precision_30_days_by_community": precision,
        "target_p99_ms": 300,
        "load_average_1_5_15": {
            "before_timing": [round(x, 2) for x in load_before],
            "after_timing": [round(x, 2) for x in load_after],
        },
    }


def table(result: dict[str, Any]) -> str:
    """The figures as a small Markdown table."""
    rows = [
        f"| {name} | {q['p50_ms']} | {q['p95_ms']} | **{q['p99_ms']}** | {q['n']} | {q.get('first_ms', '')} |"
        for name, q in result["queries"].items()
    ]
    r = result["rows"]
    return "\n".join(
        [
            f"Data: {r['hazards']:,} hazards, {r['dispatches']:,} dispatches, {r['relapses']:,} relapses, "
            f"{r['rollup']:,} rollup rows, {r['rollup_groups']:,} per-group rollup rows, "
            f"{r['rollup_hist']:,} histogram rows "
            f"({result['days']} days x {result['per_day']:,}/day, {COMMUNITIES} communities)",
            "",
            f"Histogram medians vs exact (30 days, per community): {result['median_precision_30_days_by_community']}",
            "",
            "| query | p50 ms | p95 ms | p99 ms | runs | first (cold) run ms |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
            *rows,
        ]
    )


def _run_kept(keep_dir: Path, *, days: int, per_day: int, repeat: int) -> dict[str, Any]:
    """Run on a database kept in ``keep_dir`` between runs (its facts reused when the size matches)."""
    keep_dir = keep_dir.absolute()
    keep_dir.mkdir(parents=True, exist_ok=True)
    keep_dir.chmod(0o755)  # the server runs as another OS user when we are root
    marker = keep_dir / "loaded.json"
    wanted = {"days": days, "per_day": per_day}
    reuse = marker.is_file() and json.loads(marker.read_text()) == wanted
    if not reuse:
        marker.unlink(missing_ok=True)
        shutil.rmtree(keep_dir / "pg", ignore_errors=True)
    postgres = LocalPostgres(data_dir=keep_dir / "pg", port=free_port(), log_path=keep_dir / "pg.log")
    postgres.start()
    try:
        result = asyncio.run(
            run(postgres, days=days, per_day=per_day, repeat=repeat, reuse=reuse, loaded=marker)
        )
    finally:
        postgres.stop(mode="fast")
    result["reused_facts"] = reuse
    return result


def main(argv: list[str] | None = None) -> int:
    """Start a private PostgreSQL, run the benchmark, print and write the results."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.reporting_query", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument(
        "--keep-dir",
        type=Path,
        default=None,
        help="development: keep the database in this directory and, when it already holds a load of "
        "the same --days/--per-day, reuse its facts (only the rollup is recomputed); final figures "
        "come from a run without it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.keep_dir is None:
        with private_postgres("reporting_query") as postgres:
            result = asyncio.run(run(postgres, days=args.days, per_day=args.per_day, repeat=args.repeat))
    else:
        result = _run_kept(args.keep_dir, days=args.days, per_day=args.per_day, repeat=args.repeat)
    if args.keep_dir is None:
        publish_results("reporting_query", result, table(result), note="shared machine; figures are noisy")
    else:  # development runs print their figures but leave bench/results alone
        print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
