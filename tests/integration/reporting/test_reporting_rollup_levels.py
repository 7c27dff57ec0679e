"""The week and month rollup rows, kept by deltas as days are refreshed, stay exactly the sum of
their days: equal to a rollup rebuilt from scratch, and summaries read through them equal the
figures counted from the facts."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from services.reporting import domain, repository
from services.reporting.repository import Filters, Period
from shared.db import create_engine
from shared.migrate import migrate
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

ROLLUP_TABLES = ("rollup", "rollup_groups", "rollup_hist", "rollup_groups_span", "rollup_hist_span")

# 60 hazards over 2026-03-27 .. 2026-04-05 (a month edge and an ISO week edge), in 3 communities,
# 2 grids each, 3 categories, 2 departments; every third in a campaign; dispatched 5 minutes after
# the report with a 2-hour receipt deadline.
HAZARDS = """
INSERT INTO reporting.hazards (hazard_id, reported_at, report_day, category, community_id, grid_id,
    campaign_ids, rectified_on_site, department_id, department_at, rectified_at, closed_at)
SELECT md5('lv' || i)::uuid, ts, (ts AT TIME ZONE 'Asia/Shanghai')::date,
       (ARRAY['blocked_fire_exit', 'ebike_indoor_charging', 'locked_rooftop_door'])[1 + i % 3],
       'c' || (i % 3), 'c' || (i % 3) || '-' || (i % 2),
       CASE WHEN i % 3 = 0 THEN ARRAY['spring'] ELSE '{}'::text[] END, false,
       (ARRAY['fire', 'police'])[1 + i % 2], ts,
       CASE WHEN i % 4 <> 0 THEN ts + (i % 17 + 1) * interval '1 hour' END,
       CASE WHEN i % 5 = 0 THEN ts + interval '30 hours' END
FROM (SELECT i, timestamptz '2026-03-26 17:00:00+00' + i * interval '4 hours' AS ts
      FROM generate_series(0, 59) AS i) AS s
"""
DISPATCHES = """
INSERT INTO reporting.dispatches (dispatch_id, hazard_id, department_id, dispatched_at, dispatch_day,
    deadline, reason, acknowledged_at, community_id, grid_id, category, campaign_ids)
SELECT md5('d' || h.hazard_id)::uuid, h.hazard_id, h.department_id, h.reported_at + interval '5 minutes',
       ((h.reported_at + interval '5 minutes') AT TIME ZONE 'Asia/Shanghai')::date,
       h.reported_at + interval '125 minutes', 'routed',
       CASE WHEN extract(hour FROM h.reported_at) <> 1 THEN h.reported_at + interval '47 minutes' END,
       h.community_id, h.grid_id, h.category, h.campaign_ids
FROM reporting.hazards h
"""
# Later events: acknowledgements and rectifications arrive, a hazard moves to another department,
# one hazard's place is corrected to a new community and back, so that community's week and month
# rows appear and must then go again.
CHANGES = (
    "UPDATE reporting.dispatches SET acknowledged_at = dispatched_at + interval '200 minutes' "
    "WHERE acknowledged_at IS NULL AND dispatch_day <= '2026-03-31'",
    "UPDATE reporting.hazards SET rectified_at = reported_at + interval '90 hours' "
    "WHERE rectified_at IS NULL AND report_day BETWEEN '2026-03-30' AND '2026-04-02'",
    "UPDATE reporting.hazards SET department_id = 'urban_management' WHERE hazard_id = md5('lv7')::uuid",
    "UPDATE reporting.hazards SET community_id = 'c9', grid_id = 'c9-0' WHERE hazard_id = md5('lv58')::uuid",
    "UPDATE reporting.dispatches SET community_id = 'c9', grid_id = 'c9-0' "
    "WHERE hazard_id = md5('lv58')::uuid",
    "UPDATE reporting.hazards SET community_id = 'c1', grid_id = 'c1-0' WHERE hazard_id = md5('lv58')::uuid",
    "UPDATE reporting.dispatches SET community_id = 'c1', grid_id = 'c1-0' "
    "WHERE hazard_id = md5('lv58')::uuid",
)


async def _snapshot(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in ROLLUP_TABLES:
        rows = (await conn.execute(sa.text(f"SELECT * FROM reporting.{table}"))).all()
        out[table] = sorted(tuple(r) for r in rows)
    return out


async def _all_hazards(conn: Any) -> list[uuid.UUID]:
    return list((await conn.execute(sa.text("SELECT hazard_id FROM reporting.hazards"))).scalars())


async def test_week_and_month_rows_stay_the_sum_of_their_days(database_factory: Any) -> None:
    url = await database_factory(template=None, prefix="reporting_levels")
    await migrate(url, services=("reporting",))
    engine = create_engine(DatabaseSettings(url=url))
    now = datetime(2026, 4, 5, 2, tzinfo=UTC)  # the dispatch of 01:05 is open, its deadline not passed
    periods = [
        Period(date(2026, 3, 27), date(2026, 4, 5)),  # edge days and one whole ISO week
        Period(date(2026, 3, 1), date(2026, 4, 30)),  # whole months
        Period(date(2026, 3, 30), date(2026, 4, 5)),  # one ISO week, overlapping the first
        Period(date(2026, 4, 2), date(2026, 4, 2)),
    ]
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(HAZARDS))
            await conn.execute(sa.text(DISPATCHES))
            await repository.mark_dirty(conn, await _all_hazards(conn))
            assert await repository.refresh_rollup(conn) == 10
        for i, statement in enumerate(CHANGES):  # each change refreshed on its own, as live
            async with engine.begin() as conn:
                changed = await conn.execute(sa.text(statement + " RETURNING hazard_id"))
                await repository.mark_dirty(conn, list(changed.scalars()))
                assert await repository.refresh_rollup(conn) >= 1
                if i == 4:
                    moved = await conn.execute(
                        sa.text("SELECT count(*) FROM reporting.rollup_groups_span WHERE key = 'c9'")
                    )
                    assert moved.scalar_one() == 2  # its week and its month
        async with engine.begin() as conn:
            live = await _snapshot(conn)
            assert live["rollup_groups_span"]
            assert live["rollup_hist_span"]
            spans = {(r[1], r[2]) for r in live["rollup_groups_span"]}
            assert ("week", date(2026, 3, 30)) in spans
            assert ("month", date(2026, 3, 1)) in spans
            assert not any(r[3] in {"c9", "c9-0"} for r in live["rollup_groups_span"])
            assert not any(r[3] in {"c9", "c9-0"} for r in live["rollup_hist_span"])

            # Read through days, weeks and months: the same counts as from the facts.
            for by in ("department", "community", "grid", "category", "campaign"):
                from_rollup = await repository.period_counts(
                    conn, group_by=by, periods=periods, filters=Filters(), now=now
                )
                from_facts = await repository.period_counts(
                    conn, group_by=by, periods=periods, filters=Filters(), now=now, use_rollup=False
                )
                assert from_rollup == from_facts, by
                assert {period for _, period in from_rollup} == {0, 1, 2, 3}
            # Filtered by a community: the totals of a grid or campaign summary ("all") from the
            # daily rollup, as from the facts.
            for by in ("all", "department", "community", "category"):
                filtered = Filters(community_id="c1")
                from_rollup = await repository.period_counts(
                    conn, group_by=by, periods=periods, filters=filtered, now=now
                )
                from_facts = await repository.period_counts(
                    conn, group_by=by, periods=periods, filters=filtered, now=now, use_rollup=False
                )
                assert from_rollup == from_facts, by
                assert from_rollup

            # The medians merged in the database match domain.histogram_median over the day rows.
            for period in periods:
                for measure in repository.MEASURES:
                    groups, total = await repository.measure_medians(
                        conn, group_by="community", period=period, filters=Filters(), measure=measure
                    )
                    rows = (
                        await conn.execute(
                            sa.text(
                                "SELECT key, bucket, n, total_us FROM reporting.rollup_hist "
                                "WHERE grouping IN ('community', 'all') AND measure = :m "
                                "AND day BETWEEN :s AND :e"
                            ),
                            {"m": measure, "s": period.start, "e": period.end},
                        )
                    ).all()
                    scale = repository.US_PER_UNIT[measure]
                    buckets: dict[str, list[tuple[int, int, float]]] = {}
                    for key, bucket, n, total_us in rows:
                        buckets.setdefault(key, []).append((bucket, n, total_us / scale))
                    expected = {k: domain.histogram_median(v) for k, v in buckets.items()}
                    assert total == pytest.approx(expected.pop("all", None))
                    assert groups == pytest.approx(expected)
                    assert groups, (period, measure)

            # A rollup rebuilt from scratch has exactly the rows the deltas left.
            await repository.rebuild_rollup(conn)
            assert await _snapshot(conn) == live
    finally:
        await engine.dispose()
