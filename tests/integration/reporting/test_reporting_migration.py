"""Migrations 0004 and 0005 on a database that was at 0003: the per-group rollup, its histograms
and their week and month rows appear and get refilled; 0007 on one at 0006: the histogram tables'
keys put the measure first, rows kept; 0014 on one at 0013: changes recorded the old way are
counted exactly once after it (their days recomputed), and changes are then recorded summed."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from services.reporting import domain, repository
from services.reporting.store.common import ROLLUP_COUNTS
from shared.db import create_engine
from shared.migrate import migrate
from shared.settings import DatabaseSettings
from tests.support.factories import make_event, reported_payload

pytestmark = pytest.mark.integration


async def test_upgrade_from_0003_creates_the_group_rollup_and_refills_it(database_factory: Any) -> None:
    url = await database_factory(template=None, prefix="reporting_mig")
    await migrate(url, services=("reporting",), revision="reporting_0003")
    engine = create_engine(DatabaseSettings(url=url))
    try:
        async with engine.begin() as conn:
            # 0002 creates today's tables; make the database look like one made by the old 0002.
            for name in ("rollup_hist", "rollup_groups"):
                await conn.execute(sa.text(f"DROP TABLE reporting.{name}"))
            for name in ("hazards_community_day", "dispatches_community_day", "rollup_category_day"):
                await conn.execute(sa.text(f"DROP INDEX reporting.{name}"))
            await conn.execute(
                sa.text(
                    "INSERT INTO reporting.hazards (hazard_id, reported_at, report_day, category, "
                    "community_id, grid_id, department_id, rectified_at, rectified_on_site) VALUES "
                    "(gen_random_uuid(), '2026-04-02T02:00:00Z', '2026-04-02', 'locked_rooftop_door', "
                    "'liuyue', 'liuyue-01', 'fire', '2026-04-04T02:00:00Z', false)"
                )
            )
        await migrate(url, services=("reporting",))
        async with engine.begin() as conn:
            indexes = set(
                (
                    await conn.execute(
                        sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = 'reporting'")
                    )
                ).scalars()
            )
            assert {"hazards_community_day", "dispatches_community_day", "rollup_category_day"} <= indexes
            assert await repository.refresh_rollup(conn) == 1
            reported = (
                await conn.execute(
                    sa.text(
                        "SELECT key, reported FROM reporting.rollup_groups "
                        "WHERE grouping = 'community' AND day = '2026-04-02'"
                    )
                )
            ).all()
            assert [tuple(r) for r in reported] == [("liuyue", 1)]
            hist = (
                await conn.execute(
                    sa.text(
                        "SELECT measure, n, total_us FROM reporting.rollup_hist "
                        "WHERE grouping = 'all' AND key = 'all'"
                    )
                )
            ).all()
            assert [tuple(r) for r in hist] == [("rect", 1, 48 * 3600 * 10**6)]  # 48 hours, in µs
            spans = (
                await conn.execute(
                    sa.text(
                        "SELECT span, start, n, total_us FROM reporting.rollup_hist_span "
                        "WHERE grouping = 'all' AND key = 'all' ORDER BY span"
                    )
                )
            ).all()
            # 0005: the week (Monday 30 March) and month rows are refilled from the day's.
            assert [tuple(r) for r in spans] == [
                ("month", date(2026, 4, 1), 1, 48 * 3600 * 10**6),
                ("week", date(2026, 3, 30), 1, 48 * 3600 * 10**6),
            ]
    finally:
        await engine.dispose()


_KEY_COLUMNS = (
    "SELECT array_agg(a.attname ORDER BY k.i) FROM pg_index x "
    "JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, i) ON true "
    "JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum "
    "WHERE x.indexrelid = CAST(:index AS regclass)"
)


async def test_upgrade_from_0006_puts_the_measure_first_in_the_histogram_keys(database_factory: Any) -> None:
    url = await database_factory(template=None, prefix="reporting_mig7")
    await migrate(url, services=("reporting",), revision="reporting_0006")
    engine = create_engine(DatabaseSettings(url=url))
    old = {
        "rollup_hist": "grouping, day, key, measure, bucket",
        "rollup_hist_span": "grouping, span, start, key, measure, bucket",
    }
    try:
        async with engine.begin() as conn:
            # 0002 creates today's tables; give them the keys 0005 made.
            for table, keys in old.items():
                await conn.execute(
                    sa.text(
                        f"ALTER TABLE reporting.{table} DROP CONSTRAINT {table}_pkey, "
                        f"ADD CONSTRAINT {table}_pkey PRIMARY KEY ({keys}) INCLUDE (n, total_us)"
                    )
                )
            await conn.execute(
                sa.text(
                    "INSERT INTO reporting.rollup_hist VALUES ('grid', '2026-04-02', 'liuyue-01', 'rect', 42, 1, 7)"
                )
            )
            key = await conn.execute(sa.text(_KEY_COLUMNS), {"index": "reporting.rollup_hist_pkey"})
            assert key.scalar_one() == ["grouping", "day", "key", "measure", "bucket", "n", "total_us"]
        await migrate(url, services=("reporting",))
        async with engine.begin() as conn:
            found = {
                table: (
                    await conn.execute(sa.text(_KEY_COLUMNS), {"index": f"reporting.{table}_pkey"})
                ).scalar_one()
                for table in old
            }
            assert found == {
                "rollup_hist": ["grouping", "measure", "day", "key", "bucket", "n", "total_us"],
                "rollup_hist_span": [
                    "grouping",
                    "measure",
                    "span",
                    "start",
                    "key",
                    "bucket",
                    "n",
                    "total_us",
                ],
            }
            rows = (await conn.execute(sa.text("SELECT * FROM reporting.rollup_hist"))).all()
            assert [tuple(r) for r in rows] == [("grid", date(2026, 4, 2), "liuyue-01", "rect", 42, 1, 7)]
    finally:
        await engine.dispose()


_ROLLUP_TABLES = ("rollup", "rollup_groups", "rollup_hist", "rollup_groups_span", "rollup_hist_span")


async def _rollup(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: sorted(tuple(r) for r in (await conn.execute(sa.text(f"SELECT * FROM reporting.{t}"))).all())
        for t in _ROLLUP_TABLES
    }


async def test_upgrade_from_0013_recounts_the_days_of_changes_recorded_the_old_way(
    database_factory: Any,
) -> None:
    url = await database_factory(template=None, prefix="reporting_mig14")
    await migrate(url, services=("reporting",), revision="reporting_0013")
    engine = create_engine(DatabaseSettings(url=url))
    tz = ZoneInfo("Asia/Shanghai")
    at = datetime(2026, 4, 2, 2, 0, tzinfo=UTC)
    reported = make_event("hazard.reported", hazard_id=uuid.uuid4()).model_copy(
        update={
            "payload": reported_payload(
                report_id=uuid.uuid4(),
                category="locked_rooftop_door",
                community_id="liuyue",
                grid_id="liuyue-01",
                accepted_at=at,
                observed_at=at,
            ),
            "occurred_at": at,
        }
    )
    try:
        async with engine.begin() as conn:
            # 0002 creates today's tables; give rollup_changes the columns 0013 made, and record
            # the report's change as 0013's consumer did: its contribution with sign +1.
            await conn.execute(
                sa.text(
                    "ALTER TABLE reporting.rollup_changes DROP COLUMN bucket, DROP COLUMN n, "
                    "DROP COLUMN total_us, ADD COLUMN sign smallint NOT NULL, ADD COLUMN us bigint"
                )
            )
            await repository.upsert_facts(conn, domain.project_events([reported], tz=tz))
            counts = ", ".join(ROLLUP_COUNTS)
            ones = ", ".join("1" if c == "reported" else "0" for c in ROLLUP_COUNTS)
            await conn.execute(
                sa.text(
                    "INSERT INTO reporting.rollup_changes (sign, day, department_id, community_id, grid_id, "
                    f"category, {counts}) VALUES (1, '2026-04-02', '', 'liuyue', 'liuyue-01', "
                    f"'locked_rooftop_door', {ones})"
                )
            )
        await migrate(url, services=("reporting",))
        async with engine.begin() as conn:
            assert (
                await conn.execute(sa.text("SELECT count(*) FROM reporting.rollup_changes"))
            ).scalar_one() == 0
            dirty = (await conn.execute(sa.text("SELECT day FROM reporting.rollup_dirty"))).scalars().all()
            assert dirty == [date(2026, 4, 2)], "the day of the pending change is recomputed"
            assert await repository.refresh_rollup(conn) == 1
            community = await conn.execute(
                sa.text(
                    "SELECT key, reported FROM reporting.rollup_groups "
                    "WHERE grouping = 'community' AND day = '2026-04-02'"
                )
            )
            assert [tuple(r) for r in community] == [("liuyue", 1)], "counted once"
        # Changes are recorded the new way on the migrated table and folded exactly.
        async with engine.begin() as conn:
            rectified = make_event("hazard.rectified", hazard_id=reported.hazard_id).model_copy(
                update={"occurred_at": datetime(2026, 4, 3, 2, 0, tzinfo=UTC)}
            )
            await repository.merge_counted(conn, domain.project_events([rectified], tz=tz))
        async with engine.begin() as conn:
            recorded = await conn.execute(
                sa.text(
                    "SELECT department_id, measure, n, reported, rectified FROM reporting.rollup_changes "
                    "ORDER BY department_id"
                )
            )
            # The rectifying department now holds the hazard: its contribution leaves the key without
            # a department and lands, rectified and with its duration, on the department's.
            assert [tuple(r) for r in recorded] == [("", None, 0, -1, 0), ("fire", "rect", 1, 1, 1)]
            assert await repository.refresh_rollup(conn) == 2, "both folded"
        async with engine.connect() as conn:
            live = await _rollup(conn)
            await repository.rebuild_rollup(conn)
            assert live == await _rollup(conn), "the migrated rollup equals a recount of the facts"
            await conn.rollback()
    finally:
        await engine.dispose()
