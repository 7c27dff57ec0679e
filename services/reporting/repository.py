"""Queries of the reporting schema: idempotent fact upserts, the daily rollup, and the figures' queries.

Every function takes ``schema`` so the rebuild can fill a fresh copy of the tables
(``reporting_rebuild``) with exactly the code the live projection uses.
"""

from __future__ import annotations

import functools
import operator
import struct
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.reporting import domain
from services.reporting.domain import Counts, FactBatch, Rule

SCHEMA = "reporting"
Executor = AsyncSession | AsyncConnection

_ARRAY_TYPES: Mapping[str, str] = {
    # hazards
    "hazard_id": "uuid",
    "reported_at": "timestamptz",
    "report_day": "date",
    "category": "text",
    "community_id": "text",
    "grid_id": "text",
    "street_id": "text",
    "place_key": "text",
    "campaign_ids": "text",  # sent joined by commas: unnest cannot carry an array per row
    "rectified_on_site": "boolean",
    "address": "text",
    "duplicate_of": "uuid",
    "unlinked": "boolean",
    "department_id": "text",
    "department_at": "timestamptz",
    "ordered_at": "timestamptz",
    "order_round": "integer",
    "rectified_at": "timestamptz",
    "rectification_overdue": "boolean",
    "closed_at": "timestamptz",
    "closed_reason": "text",
    "reporter_type": "text",
    "source": "text",
    "notice_on_site": "boolean",
    # dispatches
    "dispatch_id": "uuid",
    "dispatched_at": "timestamptz",
    "dispatch_day": "date",
    "deadline": "timestamptz",
    "reason": "text",
    "previous_dispatch_id": "uuid",
    "acknowledged_at": "timestamptz",
    "returned_at": "timestamptz",
    "superseded_at": "timestamptz",
    "original_deadline": "timestamptz",
    # actions
    "event_id": "uuid",
    "kind": "text",
    "stage": "text",
    "action_at": "timestamptz",
    "action_day": "date",
    # relapses
    "original_hazard_id": "uuid",
    "relapsed_at": "timestamptz",
    "relapse_day": "date",
    "original_department_id": "text",
    "days_since_closure": "double precision",
    "escalation_level": "integer",
}


def _merge_sql(table: str, column: str, rule: Rule) -> str:
    old, new = f"{table}.{column}", f"EXCLUDED.{column}"
    if rule == "first":
        return f"COALESCE({old}, {new})"
    if rule == "min":
        return f"LEAST({old}, {new})"
    if rule == "max":
        return f"GREATEST({old}, {new})"
    if rule == "or":
        return f"(COALESCE({old}, false) OR COALESCE({new}, false))"
    stamp = domain.LATEST_BY[column]
    return (
        f"CASE WHEN {new} IS NOT NULL AND ({table}.{stamp} IS NULL OR EXCLUDED.{stamp} >= {table}.{stamp})"
        f" THEN {new} ELSE {old} END"
    )


def _upsert_sql(schema: str, table: str, key: str, rules: Mapping[str, Rule]) -> str:
    columns = [key, *rules]
    unnest = ", ".join(f"CAST(:{c} AS {_ARRAY_TYPES[c]}[])" for c in columns)
    select = ", ".join("string_to_array(campaign_ids, ',')" if c == "campaign_ids" else c for c in columns)
    sets = ", ".join(f"{c} = {_merge_sql(table, c, rule)}" for c, rule in rules.items())
    return (
        f"INSERT INTO {schema}.{table} AS {table} ({', '.join(columns)}) "
        f"SELECT {select} FROM unnest({unnest}) AS u({', '.join(columns)}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {sets}"
    )


def _column_arrays(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    arrays: dict[str, list[Any]] = {c: [] for c in columns}
    for row in rows:
        for c in columns:
            value = row.get(c)
            if c == "campaign_ids" and value is not None:
                value = ",".join(value)
            arrays[c].append(value)
    return arrays


async def upsert_facts(db: Executor, batch: FactBatch, *, schema: str = SCHEMA) -> None:
    """Merge a batch's fact rows into the stored ones (idempotent, order-independent)."""
    for table, key, rules, rows in (
        ("hazards", "hazard_id", domain.HAZARD_RULES, batch.hazards),
        ("dispatches", "dispatch_id", domain.DISPATCH_RULES, batch.dispatches),
        ("relapses", "hazard_id", domain.RELAPSE_RULES, batch.relapses),
        ("actions", "event_id", domain.ACTION_RULES, batch.actions),
    ):
        if not rows:
            continue
        params = _column_arrays(rows.values(), [key, *rules])
        await db.execute(sa.text(_upsert_sql(schema, table, key, rules)), params)
    late = sorted(batch.dispatch_hazards_without_place())
    if late:
        # Dispatches whose hazard's report came in another batch (before or after): copy its place.
        await db.execute(
            sa.text(
                f"UPDATE {schema}.dispatches d SET community_id = h.community_id, grid_id = h.grid_id, "
                f"category = h.category, campaign_ids = h.campaign_ids, {PLACE_COPY} FROM {schema}.hazards h "
                f"WHERE h.hazard_id = d.hazard_id AND d.hazard_id = ANY(CAST(:ids AS uuid[])) "
                f"AND d.community_id IS NULL AND h.community_id IS NOT NULL"
            ),
            {"ids": late},
        )


PLACE_COPY = "street_id = h.street_id, reporter_type = h.reporter_type, source = h.source"
"""The columns of a hazard's report (#18) that dispatch rows copy besides community, grid, category, campaigns."""


async def mark_dirty(db: Executor, hazard_ids: Iterable[uuid.UUID], *, schema: str = SCHEMA) -> None:
    """Mark the days whose rollup these hazards feed as needing a recompute."""
    ids = sorted(set(hazard_ids))
    if not ids:
        return
    # DO UPDATE (not NOTHING) bumps the row's version: a refresh that read the day before this
    # transaction's facts were visible then finds the version changed and leaves the day dirty
    # (see refresh_rollup). The oldest mark stays: a summary's staleness is measured from it.
    await db.execute(
        sa.text(
            f"INSERT INTO {schema}.rollup_dirty (day) "
            f"SELECT day FROM ("
            f" SELECT report_day AS day FROM {schema}.hazards WHERE hazard_id = ANY(CAST(:ids AS uuid[]))"
            f" UNION SELECT dispatch_day FROM {schema}.dispatches WHERE hazard_id = ANY(CAST(:ids AS uuid[]))"
            f") AS days WHERE day IS NOT NULL ORDER BY day "
            f"ON CONFLICT (day) DO UPDATE SET version = {schema}.rollup_dirty.version + 1, "
            f"marked_at = least({schema}.rollup_dirty.marked_at, EXCLUDED.marked_at)"
        ),
        {"ids": ids},
    )


# ---------------------------------------------------------------- aggregation from facts

# A hazard of its own: no duplicate, or a report whose duplicate link intake undid (it was observed
# after the original's closure: hazard.duplicate_unlinked).
_COUNTED_HAZARD = "(h.duplicate_of IS NULL OR COALESCE(h.unlinked, false))"
_H_COUNTS = {
    "reported": "CASE WHEN " + _COUNTED_HAZARD + " THEN 1 ELSE 0 END",
    "duplicates": "CASE WHEN NOT " + _COUNTED_HAZARD + " THEN 1 ELSE 0 END",
    # A notice is either kind (#18): handed out on the spot by the reporter, or a department's order.
    "notices_issued": "CASE WHEN "
    + _COUNTED_HAZARD
    + " AND (h.ordered_at IS NOT NULL OR COALESCE(h.notice_on_site, false)) THEN 1 ELSE 0 END",
    "rectified": "CASE WHEN " + _COUNTED_HAZARD + " AND h.rectified_at IS NOT NULL THEN 1 ELSE 0 END",
    "rectification_overdue": "CASE WHEN "
    + _COUNTED_HAZARD
    + " AND h.rectification_overdue THEN 1 ELSE 0 END",
    "closed": "CASE WHEN " + _COUNTED_HAZARD + " AND h.closed_at IS NOT NULL THEN 1 ELSE 0 END",
    "relapsed": (
        "CASE WHEN " + _COUNTED_HAZARD + " AND h.closed_at IS NOT NULL AND EXISTS "
        "(SELECT 1 FROM {schema}.relapses r WHERE r.original_hazard_id = h.hazard_id) THEN 1 ELSE 0 END"
    ),
    "notices_on_site": "CASE WHEN "
    + _COUNTED_HAZARD
    + " AND COALESCE(h.notice_on_site, false) THEN 1 ELSE 0 END",
    "notices_ordered": "CASE WHEN " + _COUNTED_HAZARD + " AND h.ordered_at IS NOT NULL THEN 1 ELSE 0 END",
}
_OPEN = "d.acknowledged_at IS NULL AND d.returned_at IS NULL AND d.superseded_at IS NULL"
_D_COUNTS = {
    "dispatched": "1",
    "acknowledged": "CASE WHEN d.acknowledged_at IS NOT NULL THEN 1 ELSE 0 END",
    "acknowledged_late": "CASE WHEN d.acknowledged_at > d.deadline THEN 1 ELSE 0 END",
    "overdue_ended": (
        "CASE WHEN d.acknowledged_at IS NULL AND LEAST(d.returned_at, d.superseded_at) > d.deadline "
        "THEN 1 ELSE 0 END"
    ),
    "open_unacknowledged": f"CASE WHEN {_OPEN} THEN 1 ELSE 0 END",
    # #18: 督办 — dispatches escalated, and their escalations (one per level reached)
    "escalated": "CASE WHEN d.escalation_level > 0 THEN 1 ELSE 0 END",
    "escalations": "COALESCE(d.escalation_level, 0)",
}
ROLLUP_COUNTS: tuple[str, ...] = (*_H_COUNTS, *_D_COUNTS)


def _fact_union(
    schema: str, *, h_key: str, d_key: str, h_where: str, d_where: str, h_from: str = "", d_from: str = ""
) -> str:
    """One row per hazard and per dispatch with 0/1 indicator columns, tagged with a key."""
    zero_h = ", ".join(f"0 AS {c}" for c in _D_COUNTS)
    zero_d = ", ".join(f"0 AS {c}" for c in _H_COUNTS)
    h_cols = ", ".join(f"{expr.format(schema=schema)} AS {c}" for c, expr in _H_COUNTS.items())
    d_cols = ", ".join(f"{expr} AS {c}" for c, expr in _D_COUNTS.items())
    return (
        f"SELECT {h_key}, {h_cols}, {zero_h} "
        f"FROM {schema}.hazards h {h_from} WHERE h.report_day IS NOT NULL AND {h_where} "
        f"UNION ALL "
        f"SELECT {d_key}, {zero_d}, {d_cols} "
        f"FROM {schema}.dispatches d {d_from} "
        f"WHERE d.community_id IS NOT NULL AND d.dispatched_at IS NOT NULL AND {d_where}"
    )


def _rollup_select(schema: str, day_filter_h: str, day_filter_d: str) -> str:
    inner = _fact_union(
        schema,
        h_key="h.report_day AS day, COALESCE(h.department_id, '') AS department_id, "
        "COALESCE(h.community_id, '') AS community_id, COALESCE(h.category, '') AS category",
        d_key="d.dispatch_day AS day, COALESCE(d.department_id, '') AS department_id, "
        "COALESCE(d.community_id, '') AS community_id, COALESCE(d.category, '') AS category",
        h_where=day_filter_h,
        d_where=day_filter_d,
    )
    sums = ", ".join(f"sum({c})" for c in ROLLUP_COUNTS)
    cols = ", ".join(ROLLUP_COUNTS)
    return (
        f"INSERT INTO {schema}.rollup (day, department_id, community_id, category, {cols}) "
        f"SELECT day, department_id, community_id, category, {sums} FROM ({inner}) AS x "
        f"GROUP BY day, department_id, community_id, category"
    )


# Each fact row feeds one group per grouping (and one per campaign it is tagged with).
_GROUPINGS_LATERAL = (
    "CROSS JOIN LATERAL (VALUES ('department', x.department_id), ('community', x.community_id), "
    "('grid', x.grid_id), ('category', x.category), ('all', 'all'), "
    # #18: street, reporter type, source, and street x category (keys 'street|category')
    "('street', x.street_id), ('reporter_type', COALESCE(x.reporter_type, 'grid_member')), "
    "('source', COALESCE(x.source, 'app')), ('street_category', x.street_id || '|' || x.category) "
    "UNION ALL SELECT 'campaign', c FROM unnest(x.campaign_ids) AS c "
    # #18: campaign x category (keys 'campaign|category')
    "UNION ALL SELECT 'campaign_category', c || '|' || x.category FROM unnest(x.campaign_ids) AS c"
    ") AS g(grouping, key)"
)
_DIMENSIONS = "{t}.community_id, {t}.grid_id, {t}.category, {t}.campaign_ids, {t}.street_id, {t}.reporter_type, {t}.source"


def bucket_sql(measure: str, *, column: str) -> str:
    """SQL of a duration's histogram bucket, as domain.histogram_bucket."""
    floor = f"CAST({domain.HIST_FLOOR[measure]!r} AS float8)"
    return (
        f"CASE WHEN {column} < {floor} THEN 0 "
        f"ELSE 1 + floor(ln({column} / {floor}) / ln(2.0) * {domain.HIST_PER_OCTAVE})::int END"
    )


def _rollup_groups_select(
    schema: str, day_filter_h: str, day_filter_d: str, *, into: str = "", order: bool = False
) -> str:
    inner = _fact_union(
        schema,
        h_key="h.report_day AS day, COALESCE(h.department_id, '') AS department_id, "
        + _DIMENSIONS.format(t="h"),
        d_key="d.dispatch_day AS day, COALESCE(d.department_id, '') AS department_id, "
        + _DIMENSIONS.format(t="d"),
        h_where=day_filter_h,
        d_where=day_filter_d,
    )
    sums = ", ".join(f"sum({c})" for c in ROLLUP_COUNTS)
    cols = ", ".join(ROLLUP_COUNTS)
    return (
        f"INSERT INTO {into or f'{schema}.rollup_groups'} (grouping, day, key, {cols}) "
        f"SELECT g.grouping, x.day, g.key, {sums} FROM ({inner}) AS x {_GROUPINGS_LATERAL} "
        f"WHERE g.key IS NOT NULL GROUP BY 1, 2, 3{' ORDER BY 1, 2, 3' if order else ''}"
    )


def _rollup_hist_select(schema: str, day_filter_h: str, day_filter_d: str, *, into: str = "") -> str:
    # Durations in exact microseconds (extract(epoch …) is numeric); the bucket from their value.
    ack = (
        f"SELECT d.dispatch_day AS day, COALESCE(d.department_id, '') AS department_id, "
        f"{_DIMENSIONS.format(t='d')}, 'ack' AS measure, "
        f"CAST(extract(epoch FROM d.acknowledged_at - d.dispatched_at) * 1000000 AS bigint) AS us "
        f"FROM {schema}.dispatches d WHERE d.acknowledged_at IS NOT NULL AND d.dispatched_at IS NOT NULL "
        f"AND d.community_id IS NOT NULL AND d.dispatch_day IS NOT NULL AND {day_filter_d}"
    )
    rect = (
        f"SELECT h.report_day AS day, COALESCE(h.department_id, '') AS department_id, "
        f"{_DIMENSIONS.format(t='h')}, 'rect' AS measure, "
        f"CAST(extract(epoch FROM h.rectified_at - h.reported_at) * 1000000 AS bigint) AS us "
        f"FROM {schema}.hazards h WHERE h.rectified_at IS NOT NULL AND h.report_day IS NOT NULL "
        f"AND {_COUNTED_HAZARD} AND NOT COALESCE(h.rectified_on_site, false) AND {day_filter_h}"
    )
    ack_v, rect_v = (f"(CAST(y.us AS float8) / CAST({US_PER_UNIT[m]!r} AS float8))" for m in ("ack", "rect"))
    bucket = (
        f"CASE y.measure WHEN 'ack' THEN {bucket_sql('ack', column=ack_v)} "
        f"ELSE {bucket_sql('rect', column=rect_v)} END"
    )
    return (
        f"INSERT INTO {into or f'{schema}.rollup_hist'} (grouping, day, key, measure, bucket, n, total_us) "
        f"SELECT g.grouping, x.day, g.key, x.measure, x.bucket, count(*), sum(x.us) "
        f"FROM (SELECT y.*, {bucket} AS bucket "
        f"FROM ({ack} UNION ALL {rect}) AS y) AS x {_GROUPINGS_LATERAL} "
        f"WHERE g.key IS NOT NULL GROUP BY 1, 2, 3, 4, 5"
    )


US_PER_UNIT: Mapping[str, float] = {"ack": 60e6, "rect": 3600e6}
"""Microseconds per unit of a measure's median (ack: minutes, rect: hours)."""
GROUPINGS: tuple[str, ...] = (
    "department",
    "community",
    "grid",
    "category",
    "campaign",
    "all",
    # #18
    "street",
    "reporter_type",
    "source",
    "street_category",
    "campaign_category",
)
_IN_GROUPINGS = "grouping IN (" + ", ".join(f"'{g}'" for g in GROUPINGS) + ")"
MEASURES: tuple[str, ...] = ("ack", "rect")
_IN_MEASURES = "measure IN (" + ", ".join(f"'{m}'" for m in MEASURES) + ")"
_SPANS = (
    "CROSS JOIN LATERAL (VALUES ('week', CAST(date_trunc('week', CAST(x.day AS timestamp)) AS date)), "
    "('month', CAST(date_trunc('month', CAST(x.day AS timestamp)) AS date))) AS sp(span, start)"
)
_GROUP_COLS = ", ".join(ROLLUP_COUNTS)
# Each fact row counts once in reported, duplicates or dispatched: a row without any has no facts.
_GROUPS_EMPTY = "{t}.reported = 0 AND {t}.duplicates = 0 AND {t}.dispatched = 0"


def _groups_spans_from_days(
    schema: str, *, days: str, minus: str = "", into: str = "", order: bool = False
) -> str:
    """Sum day rows of rollup_groups (those of ``days``; ``minus``: less those of another table) per span."""
    source = f"SELECT grouping, day, key, {_GROUP_COLS} FROM {days}"
    if minus:
        negated = ", ".join(f"-{c}" for c in ROLLUP_COUNTS)
        source += f" UNION ALL SELECT grouping, day, key, {negated} FROM {minus}"
    sums = ", ".join(f"sum(x.{c})" for c in ROLLUP_COUNTS)
    having = " OR ".join(f"sum(x.{c}) <> 0" for c in ROLLUP_COUNTS)
    return (
        f"INSERT INTO {into or f'{schema}.rollup_groups_span'} (grouping, span, start, key, {_GROUP_COLS}) "
        f"SELECT x.grouping, sp.span, sp.start, x.key, {sums} FROM ({source}) AS x {_SPANS} "
        f"GROUP BY 1, 2, 3, 4 HAVING {having}{' ORDER BY 1, 2, 3, 4' if order else ''}"
    )


def _hist_spans_from_days(schema: str, *, days: str, minus: str = "", into: str = "") -> str:
    """Sum day rows of rollup_hist (``minus``: less those of another table) per span."""
    source = f"SELECT grouping, day, key, measure, bucket, n, total_us FROM {days}"
    if minus:
        source += f" UNION ALL SELECT grouping, day, key, measure, bucket, -n, -total_us FROM {minus}"
    return (
        f"INSERT INTO {into or f'{schema}.rollup_hist_span'} "
        f"(grouping, span, start, key, measure, bucket, n, total_us) "
        f"SELECT x.grouping, sp.span, sp.start, x.key, x.measure, x.bucket, sum(x.n), sum(x.total_us) "
        f"FROM ({source}) AS x {_SPANS} GROUP BY 1, 2, 3, 4, 5, 6 "
        f"HAVING sum(x.n) <> 0 OR sum(x.total_us) <> 0"
    )


_WORK_TABLES = {
    # Per-connection scratch tables of a refresh (emptied at commit): the days' recomputed rows
    # (work), the stored rows they replace (gone), and the differences per week and month (delta).
    "rollup_groups_work": "rollup_groups",
    "rollup_groups_gone": "rollup_groups",
    "rollup_hist_work": "rollup_hist",
    "rollup_hist_gone": "rollup_hist",
    "rollup_groups_delta": "rollup_groups_span",
    "rollup_hist_delta": "rollup_hist_span",
}
_DAY_COLUMNS = {
    "rollup_groups": (("grouping", "day", "key"), ROLLUP_COUNTS),
    "rollup_hist": (("grouping", "day", "key", "measure", "bucket"), ("n", "total_us")),
}


async def unrefreshed_for_s(db: Executor, *, schema: str = SCHEMA) -> float | None:
    """Seconds since the oldest change not yet in the rollup was marked; None when all are in."""
    age = (
        await db.execute(
            sa.text(
                f"SELECT extract(epoch FROM clock_timestamp() - min(marked_at)) FROM {schema}.rollup_dirty"
            )
        )
    ).scalar()
    return None if age is None else float(age)


def _same_row(a: str, b: str, columns: Sequence[str]) -> str:
    return " AND ".join(f"{a}.{c} = {b}.{c}" for c in columns)


async def refresh_rollup(db: Executor, *, schema: str = SCHEMA) -> int:
    """Recompute the rollup of every dirty day; returns how many days were recomputed.

    The dirty days' rows are recomputed from the facts into scratch tables; only the rows that
    differ from the stored ones are written, and the week and month rows covering them change by
    that difference (exact: integer sums). A day refreshed because one hazard changed rewrites a
    handful of rows, not the day.
    """
    await db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"{schema}.rollup"})
    # Read the marks without locking them, so consumers marking days never wait for a refresh;
    # they are cleared at the end only if nobody marked them again meanwhile.
    marks = (await db.execute(sa.text(f"SELECT day, version FROM {schema}.rollup_dirty ORDER BY day"))).all()
    if not marks:
        return 0
    # Every change committed by now is in what follows; one still uncommitted began no earlier
    # than the oldest open transaction: the age of what a day has left after this refresh.
    seen_at = (await db.execute(sa.text(_OLDEST_OPEN_CHANGE))).scalar_one()
    days = [mark.day for mark in marks]
    # Big one-off statements: JIT compilation costs more than it saves; hash rather than spill.
    await db.execute(sa.text("SELECT set_config('jit', 'off', true), set_config('work_mem', '256MB', true)"))
    params = {"days": sorted(days)}
    on_days = f"{_IN_GROUPINGS} AND day = ANY(CAST(:days AS date[]))"
    # rollup_hist's key has the measure before the day: name them, so the days are index ranges.
    on_days_of = {"rollup_groups": on_days, "rollup_hist": f"{_IN_MEASURES} AND {on_days}"}
    for work, like in _WORK_TABLES.items():
        await db.execute(
            sa.text(
                f"CREATE TEMP TABLE IF NOT EXISTS {work} (LIKE {schema}.{like} INCLUDING DEFAULTS) "
                f"ON COMMIT DELETE ROWS"
            )
        )
        await db.execute(sa.text(f"DELETE FROM pg_temp.{work}"))
    h_days = "h.report_day = ANY(CAST(:days AS date[]))"
    d_days = "d.dispatch_day = ANY(CAST(:days AS date[]))"
    await db.execute(sa.text(f"DELETE FROM {schema}.rollup WHERE day = ANY(CAST(:days AS date[]))"), params)
    await db.execute(sa.text(_rollup_select(schema, h_days, d_days)), params)
    await db.execute(
        sa.text(_rollup_groups_select(schema, h_days, d_days, into="pg_temp.rollup_groups_work")), params
    )
    await db.execute(
        sa.text(_rollup_hist_select(schema, h_days, d_days, into="pg_temp.rollup_hist_work")), params
    )
    for table, (key, values) in _DAY_COLUMNS.items():
        every = (*key, *values)
        on_days = on_days_of[table]
        await db.execute(sa.text(f"ANALYZE pg_temp.{table}_work"))
        # Stored rows without an identical recomputed row go; recomputed rows already stored stay.
        await db.execute(
            sa.text(
                f"INSERT INTO pg_temp.{table}_gone SELECT t.* FROM {schema}.{table} t WHERE {on_days} "
                f"AND NOT EXISTS (SELECT 1 FROM pg_temp.{table}_work w WHERE {_same_row('w', 't', every)})"
            ),
            params,
        )
        await db.execute(
            sa.text(
                f"DELETE FROM pg_temp.{table}_work w WHERE EXISTS (SELECT 1 FROM {schema}.{table} t "
                f"WHERE t.{on_days} AND {_same_row('w', 't', every)})"
            ),
            params,
        )
        await db.execute(sa.text(f"ANALYZE pg_temp.{table}_gone"))
        await db.execute(sa.text(f"ANALYZE pg_temp.{table}_work"))
    # The spans' deltas: the new rows less the rows they replace.
    await db.execute(
        sa.text(
            _groups_spans_from_days(
                schema,
                days="pg_temp.rollup_groups_work",
                minus="pg_temp.rollup_groups_gone",
                into="pg_temp.rollup_groups_delta",
            )
        )
    )
    await db.execute(
        sa.text(
            _hist_spans_from_days(
                schema,
                days="pg_temp.rollup_hist_work",
                minus="pg_temp.rollup_hist_gone",
                into="pg_temp.rollup_hist_delta",
            )
        )
    )
    adds = ", ".join(f"{c} = t.{c} + EXCLUDED.{c}" for c in ROLLUP_COUNTS)
    await db.execute(
        sa.text(
            f"INSERT INTO {schema}.rollup_groups_span AS t SELECT * FROM pg_temp.rollup_groups_delta "
            f"ON CONFLICT (grouping, span, start, key) DO UPDATE SET {adds}"
        )
    )
    await db.execute(
        sa.text(
            f"INSERT INTO {schema}.rollup_hist_span AS t SELECT * FROM pg_temp.rollup_hist_delta "
            f"ON CONFLICT (grouping, span, start, key, measure, bucket) "
            f"DO UPDATE SET n = t.n + EXCLUDED.n, total_us = t.total_us + EXCLUDED.total_us"
        )
    )
    # Span rows left without facts go (a rebuild would not have them).
    await db.execute(
        sa.text(
            f"DELETE FROM {schema}.rollup_groups_span t USING pg_temp.rollup_groups_delta d "
            f"WHERE {_same_row('t', 'd', ('grouping', 'span', 'start', 'key'))} "
            f"AND d.reported + d.duplicates + d.dispatched < 0 AND {_GROUPS_EMPTY.format(t='t')}"
        )
    )
    await db.execute(
        sa.text(
            f"DELETE FROM {schema}.rollup_hist_span t USING pg_temp.rollup_hist_delta d "
            f"WHERE {_same_row('t', 'd', ('grouping', 'span', 'start', 'key', 'measure', 'bucket'))} "
            f"AND d.n < 0 AND t.n = 0"
        )
    )
    for table, (key, _) in _DAY_COLUMNS.items():
        await db.execute(
            sa.text(
                f"DELETE FROM {schema}.{table} t USING pg_temp.{table}_gone g WHERE {_same_row('t', 'g', key)}"
            )
        )
        await db.execute(
            sa.text(f"INSERT INTO {schema}.{table} SELECT * FROM pg_temp.{table}_work ORDER BY 1, 2, 3")
        )
    await _clear_marks(db, marks, seen_at, schema=schema)
    return len(days)


# The time before which every change is committed: now, or the start of the oldest transaction
# still open in this database under this role (the consumers mark days with their start time).
_OLDEST_OPEN_CHANGE = (
    "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()"
)


async def _clear_marks(db: Executor, marks: Sequence[Any], seen_at: Any, *, schema: str) -> None:
    """Delete the dirty marks this refresh covered, unless a consumer marked the day again since.

    A consumer whose facts the refresh could not see has bumped the version (and holds that row
    until it commits: the lock, taken in day order as consumers do, waits for it), so its day
    stays dirty for the next refresh. What such a day has left unrefreshed began no earlier than
    ``seen_at``: its staleness is measured from there, not from its first mark, or a day that
    never stops changing would look ever staler and every summary would refresh it itself.
    """
    params = {"days": [m.day for m in marks], "versions": [m.version for m in marks]}
    await db.execute(
        sa.text(
            f"SELECT 1 FROM {schema}.rollup_dirty WHERE day = ANY(CAST(:days AS date[])) ORDER BY day FOR UPDATE"
        ),
        {"days": params["days"]},
    )
    await db.execute(
        sa.text(
            f"DELETE FROM {schema}.rollup_dirty d USING unnest(CAST(:days AS date[]), CAST(:versions AS bigint[])) "
            "AS m(day, version) WHERE d.day = m.day AND d.version = m.version"
        ),
        params,
    )
    await db.execute(
        sa.text(
            f"UPDATE {schema}.rollup_dirty SET marked_at = greatest(marked_at, :seen_at) "
            "WHERE day = ANY(CAST(:days AS date[]))"
        ),
        {"days": params["days"], "seen_at": seen_at},
    )


def _rollup_statements(schema: str, day_filter_h: str, day_filter_d: str) -> tuple[str, ...]:
    return (
        _rollup_select(schema, day_filter_h, day_filter_d),
        # In key order: a period's day rows of a grouping lie together (the summary reads them
        # from the heap; ~2.5x faster for 2,100 grids than rows scattered in GROUP BY order).
        _rollup_groups_select(schema, day_filter_h, day_filter_d, order=True),
        _rollup_hist_select(schema, day_filter_h, day_filter_d),
    )


async def rebuild_rollup(db: Executor, *, schema: str = SCHEMA) -> None:
    """Recompute the whole rollup from the facts (after a bulk load): days, then weeks and months."""
    await db.execute(sa.text(f"DELETE FROM {schema}.rollup_dirty"))
    for table in ("rollup", "rollup_groups", "rollup_hist", "rollup_groups_span", "rollup_hist_span"):
        await db.execute(sa.text(f"DELETE FROM {schema}.{table}"))
    for sql in _rollup_statements(schema, "true", "true"):
        await db.execute(sa.text(sql))
    # In key order, so that a period's rows of a grouping lie together.
    await db.execute(sa.text(_groups_spans_from_days(schema, days=f"{schema}.rollup_groups", order=True)))
    await db.execute(sa.text(_hist_spans_from_days(schema, days=f"{schema}.rollup_hist")))


# ---------------------------------------------------------------- summary queries


@dataclass(frozen=True, slots=True)
class Period:
    """A range of local days, both ends included."""

    start: date
    end: date


@dataclass(frozen=True, slots=True)
class Filters:
    """Narrowing of every figure to one community and/or category (None: all)."""

    community_id: str | None = None
    category: str | None = None
    department_id: str | None = None


GROUP_KEYS: Mapping[str, tuple[str, str]] = {
    # group_by: (key of a hazard row, key of a dispatch row)
    "department": ("COALESCE(h.department_id, '')", "COALESCE(d.department_id, '')"),
    "community": ("h.community_id", "d.community_id"),
    "grid": ("h.grid_id", "d.grid_id"),
    "category": ("h.category", "d.category"),
    "campaign": ("c.campaign_id", "c.campaign_id"),
    "all": ("'all'", "'all'"),
    # #18
    "street": ("h.street_id", "d.street_id"),
    "reporter_type": ("COALESCE(h.reporter_type, 'grid_member')", "COALESCE(d.reporter_type, 'grid_member')"),
    "source": ("COALESCE(h.source, 'app')", "COALESCE(d.source, 'app')"),
    "street_category": ("h.street_id || '|' || h.category", "d.street_id || '|' || d.category"),
    "campaign_category": ("c.campaign_id || '|' || h.category", "c.campaign_id || '|' || d.category"),
}
CAMPAIGN_GROUPINGS = frozenset({"campaign", "campaign_category"})
"""Groupings whose rows come from a hazard's campaigns (one row per campaign it is tagged with)."""
ROLLUP_GROUPS = frozenset({"department", "community", "category", "all"})
_CAMPAIGN_FROM = "CROSS JOIN LATERAL unnest(h.campaign_ids) AS c(campaign_id)"
_D_CAMPAIGN_FROM = "CROSS JOIN LATERAL unnest(d.campaign_ids) AS c(campaign_id)"


def _periods_join(column: str, periods: Sequence[Period]) -> tuple[str, dict[str, Any]]:
    """A join tagging each row with every period its ``column`` day falls in (periods may overlap:
    a year-long period's previous period is its year-earlier one)."""
    params: dict[str, Any] = {}
    values = []
    for i, p in enumerate(periods):
        params[f"p{i}s"], params[f"p{i}e"] = p.start, p.end
        values.append(f"({i}, CAST(:p{i}s AS date), CAST(:p{i}e AS date))")
    join = f"JOIN (VALUES {', '.join(values)}) AS p(period, ps, pe) ON {column} BETWEEN p.ps AND p.pe"
    return join, params


def _filters_sql(filters: Filters, *, dispatch: bool) -> tuple[str, dict[str, Any]]:
    parts, params = ["true"], {}
    t = "d" if dispatch else "h"
    if filters.community_id is not None:
        parts.append(f"{t}.community_id = :f_community")
        params["f_community"] = filters.community_id
    if filters.category is not None:
        parts.append(f"{t}.category = :f_category")
        params["f_category"] = filters.category
    if filters.department_id is not None:
        parts.append("d.department_id = :f_department" if dispatch else "h.department_id = :f_department")
        params["f_department"] = filters.department_id
    return " AND ".join(parts), params


async def period_counts(
    db: Executor,
    *,
    group_by: str,
    periods: Sequence[Period],
    filters: Filters,
    now: datetime,
    schema: str = SCHEMA,
    use_rollup: bool = True,
) -> dict[tuple[str, int], Counts]:
    """Counts per (group key, period index) for several periods in one pass.

    From the rollup, ``receipt_overdue_open`` is the rollup's open (unacknowledged, not returned or
    replaced) dispatches less those whose deadline has not passed yet — a short index range of
    the open dispatches by deadline — rather than a scan of every open dispatch of the periods.
    The rollup may lag the facts (up to ``max_staleness_s``, and always by what was applied since
    its last refresh): a dispatch applied since is among the facts' not-yet-due ones but not among
    the rollup's open ones. So each group's not-yet-due dispatches are subtracted day by day, at
    most the rollup's open ones of that day (see :func:`_not_yet_due_counts`), and both reads see
    one snapshot: the figure stays between 0 and the rollup's open dispatches.
    """
    if use_rollup and (_unfiltered(filters) or group_by in ROLLUP_GROUPS):
        await _one_snapshot(db)
        if _unfiltered(filters):
            result = await _group_rollup_counts(db, group_by=group_by, periods=periods, schema=schema)
        else:
            result = await _rollup_counts(
                db, group_by=group_by, periods=periods, filters=filters, schema=schema
            )
        for key, n in (
            await _not_yet_due_counts(
                db, group_by=group_by, periods=periods, filters=filters, now=now, schema=schema
            )
        ).items():
            result[key] = result.get(key, Counts()) + Counts(receipt_overdue_open=-n)
        return result
    result = await _fact_counts(db, group_by=group_by, periods=periods, filters=filters, schema=schema)
    for key, n in (
        await _open_overdue_counts(
            db, group_by=group_by, periods=periods, filters=filters, now=now, schema=schema
        )
    ).items():
        result[key] = result.get(key, Counts()) + Counts(receipt_overdue_open=n)
    return result


_COUNTED = tuple(c for c in ROLLUP_COUNTS if c != "open_unacknowledged")


def _to_counts(row: Any) -> Counts:
    return Counts(**{c: int(getattr(row, c) or 0) for c in _COUNTED})


def _to_counts_with_open(row: Any) -> Counts:
    """Counts of a rollup row; receipt_overdue_open holds the open dispatches (overdue or not yet)."""
    return Counts(
        **{c: int(getattr(row, c) or 0) for c in _COUNTED},
        receipt_overdue_open=int(row.open_unacknowledged or 0),
    )


_WITH_OPEN = (*_COUNTED, "open_unacknowledged")
# Where each of Counts' fields is among the _WITH_OPEN columns (receipt_overdue_open: the open ones).
_WITH_OPEN_AT = tuple(
    _WITH_OPEN.index("open_unacknowledged" if f == "receipt_overdue_open" else f) for f in domain.COUNT_FIELDS
)


# A row (key, period, *_WITH_OPEN sums) to Counts' fields in order: a grid summary converts a few
# thousand rows, and lookups by name on each cost more than the query's merge. The sums are never
# NULL (the rollup's count columns are NOT NULL and a group has at least one row).
_COUNTS_OF_ROW = operator.itemgetter(*(2 + i for i in _WITH_OPEN_AT))


def _unfiltered(filters: Filters) -> bool:
    return filters.community_id is None and filters.category is None and filters.department_id is None


async def _tune_reads(db: Executor) -> None:
    """For this transaction: no JIT (its compile time exceeds these queries' run time) and enough
    memory to merge a period's rows without spilling to disk."""
    await db.execute(sa.text("SELECT set_config('jit', 'off', true), set_config('work_mem', '64MB', true)"))


def split_period(period: Period) -> tuple[list[date], list[date], list[date]]:
    """A period as (edge days, ISO weeks by Monday, months by first day), together exactly its days.

    Whole months are read from the month rows, whole ISO weeks of what is left from the week rows,
    and only the remaining days (at most 6 at each end of each remainder) from the day rows.
    """
    months: list[date] = []
    first = period.start if period.start.day == 1 else _next_month(period.start)
    while first <= period.end and _next_month(first) - timedelta(days=1) <= period.end:
        months.append(first)
        first = _next_month(first)
    if months:
        rests = [(period.start, months[0] - timedelta(days=1)), (_next_month(months[-1]), period.end)]
    else:
        rests = [(period.start, period.end)]
    days: list[date] = []
    weeks: list[date] = []
    for a, b in rests:
        monday = a + timedelta(days=(7 - a.weekday()) % 7)
        if monday + timedelta(days=6) > b:
            days.extend(_days(a, b))
            continue
        days.extend(_days(a, monday - timedelta(days=1)))
        while monday + timedelta(days=6) <= b:
            weeks.append(monday)
            monday += timedelta(days=7)
        days.extend(_days(monday, b))
    return days, weeks, months


def _next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _days(a: date, b: date) -> list[date]:
    return [a + timedelta(days=i) for i in range((b - a).days + 1)]


def _levels_sql(
    schema: str, table: str, columns: str, where: str, period: Period, tag: str
) -> tuple[list[str], dict[str, Any]]:
    """SELECTs reading a period from a day table and its span table (only the non-empty levels)."""
    days, weeks, months = split_period(period)
    parts, params = [], {}
    if days:
        parts.append(
            f"SELECT {columns} FROM {schema}.{table} WHERE {where} AND day = ANY(CAST(:{tag}d AS date[]))"
        )
        params[f"{tag}d"] = days
    for span, starts in (("week", weeks), ("month", months)):
        if starts:
            parts.append(
                f"SELECT {columns} FROM {schema}.{table}_span WHERE {where} AND span = '{span}' "
                f"AND start = ANY(CAST(:{tag}{span[0]} AS date[]))"
            )
            params[f"{tag}{span[0]}"] = starts
    return parts, params


async def _group_rollup_counts(
    db: Executor, *, group_by: str, periods: Sequence[Period], schema: str
) -> dict[tuple[str, int], Counts]:
    """Counts from the per-group rollup: a period's months, weeks and edge days, no facts read.

    Each period is read on its own (they may overlap: a year-long period's previous period is
    its year-earlier one).
    """
    parts: list[str] = []
    params: dict[str, Any] = {"grouping": group_by}
    for i, period in enumerate(periods):
        selects, more = _levels_sql(
            schema,
            "rollup_groups",
            f"key, {i} AS period, {', '.join(_WITH_OPEN)}",
            "grouping = :grouping",
            period,
            f"p{i}",
        )
        parts.extend(selects)
        params.update(more)
    sums = ", ".join(f"sum({c}) AS {c}" for c in _WITH_OPEN)
    sql = f"SELECT key, period, {sums} FROM ({' UNION ALL '.join(parts)}) AS x GROUP BY 1, 2"
    await _tune_reads(db)
    rows = (await db.execute(sa.text(sql), params)).all()
    return {(row[0], row[1]): Counts(*_COUNTS_OF_ROW(row)) for row in rows}


_ROLLUP_KEYS = {"department": "r.department_id", "community": "r.community_id", "category": "r.category"}
"""The group key of a ``rollup`` row (``r``) per grouping; any other grouping is ``_ALL``."""
_ALL = "'all'"


def _rollup_filters_sql(filters: Filters) -> tuple[str, dict[str, Any]]:
    """The conditions of a filter on ``rollup`` rows (``r``)."""
    where, params = ["true"], {}
    if filters.community_id is not None:
        where.append("r.community_id = :f_community")
        params["f_community"] = filters.community_id
    if filters.category is not None:
        where.append("r.category = :f_category")
        params["f_category"] = filters.category
    if filters.department_id is not None:
        where.append("r.department_id = :f_department")
        params["f_department"] = filters.department_id
    return " AND ".join(where), params


async def _one_snapshot(db: Executor) -> None:
    """Make the statements that follow see one snapshot, if no transaction has begun yet.

    The rollup and the facts are then read as of the same moment: a refresh committing between
    two reads cannot make them disagree. A caller already in a transaction keeps its own.
    """
    if not db.in_transaction():
        await db.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def _rollup_open_sql(schema: str, group_by: str, filters: Filters) -> tuple[str, dict[str, Any]]:
    """A lateral subquery: the rollup's open dispatches of group ``x.key`` on day ``x.day``.

    Unfiltered from ``rollup_groups`` (one primary-key row), filtered from ``rollup``.
    """
    if _unfiltered(filters):
        return (
            f"SELECT COALESCE(sum(r.open_unacknowledged), 0) AS open FROM {schema}.rollup_groups r "
            f"WHERE r.grouping = :o_grouping AND r.day = x.day AND r.key = x.key",
            {"o_grouping": group_by},
        )
    where, params = _rollup_filters_sql(filters)
    return (
        f"SELECT COALESCE(sum(r.open_unacknowledged), 0) AS open FROM {schema}.rollup r "
        f"WHERE r.day = x.day AND {_ROLLUP_KEYS.get(group_by, _ALL)} = x.key AND {where}",
        params,
    )


def _not_yet_due_sql(
    schema: str, *, group_by: str, filters: Filters, days: str, tag: str, bucket: str
) -> tuple[str, dict[str, Any]]:
    """Open dispatches whose deadline has not passed, per (key, bucket): each day's at most the
    rollup's open ones of that day and group (the facts may hold dispatches the rollup does not yet).

    ``days`` joins the dispatches (``d``) to the periods or buckets; ``tag`` is what each row
    carries from it (``p.period``, or a constant) and ``bucket`` the answer's bucket, an expression
    of ``x.tag`` or of the day ``x.day``.
    """
    _, d_key = GROUP_KEYS[group_by]
    d_filter, params = _filters_sql(filters, dispatch=True)
    d_from = _D_CAMPAIGN_FROM if group_by in CAMPAIGN_GROUPINGS else ""
    open_sql, open_params = _rollup_open_sql(schema, group_by, filters)
    sql = (
        f"SELECT x.key, {bucket} AS bucket, sum(least(x.n, o.open)) AS n FROM ("
        f"SELECT {d_key} AS key, d.dispatch_day AS day, {tag} AS tag, "
        f"count(*) AS n FROM {schema}.dispatches d {d_from} {days} "
        f"WHERE {_OPEN} AND (d.deadline >= :now OR d.deadline IS NULL) AND d.dispatched_at IS NOT NULL "
        f"AND d.community_id IS NOT NULL AND {d_filter} GROUP BY 1, 2, 3) AS x "
        f"CROSS JOIN LATERAL ({open_sql}) AS o WHERE x.key IS NOT NULL GROUP BY 1, 2"
    )
    return sql, {**params, **open_params}


async def _not_yet_due_counts(
    db: Executor,
    *,
    group_by: str,
    periods: Sequence[Period],
    filters: Filters,
    now: datetime,
    schema: str,
) -> dict[tuple[str, int], int]:
    """Per (key, period): the open dispatches not yet due that the rollup's open count holds."""
    join, params = _periods_join("d.dispatch_day", periods)
    sql, more = _not_yet_due_sql(
        schema, group_by=group_by, filters=filters, days=join, tag="p.period", bucket="x.tag"
    )
    rows = (await db.execute(sa.text(sql), {**params, **more, "now": now})).all()
    return {(row.key, row.bucket): int(row.n) for row in rows}


async def _rollup_counts(
    db: Executor, *, group_by: str, periods: Sequence[Period], filters: Filters, schema: str
) -> dict[tuple[str, int], Counts]:
    key = _ROLLUP_KEYS.get(group_by, _ALL)
    join, params = _periods_join("r.day", periods)
    where, fparams = _rollup_filters_sql(filters)
    sums = ", ".join(f"sum(r.{c}) AS {c}" for c in _WITH_OPEN)
    sql = f"SELECT {key} AS key, p.period, {sums} FROM {schema}.rollup r {join} WHERE {where} GROUP BY 1, 2"
    params.update(fparams)
    rows = (await db.execute(sa.text(sql), params)).all()
    return {(row.key, row.period): _to_counts_with_open(row) for row in rows}


async def _fact_counts(
    db: Executor, *, group_by: str, periods: Sequence[Period], filters: Filters, schema: str
) -> dict[tuple[str, int], Counts]:
    h_key, d_key = GROUP_KEYS[group_by]
    h_join, params = _periods_join("h.report_day", periods)
    d_join, _ = _periods_join("d.dispatch_day", periods)
    h_filter, fparams = _filters_sql(filters, dispatch=False)
    d_filter, _ = _filters_sql(filters, dispatch=True)
    inner = _fact_union(
        schema,
        h_key=f"{h_key} AS key, p.period",
        d_key=f"{d_key} AS key, p.period",
        h_where=h_filter,
        d_where=d_filter,
        h_from=f"{_CAMPAIGN_FROM if group_by in CAMPAIGN_GROUPINGS else ''} {h_join}",
        d_from=f"{_D_CAMPAIGN_FROM if group_by in CAMPAIGN_GROUPINGS else ''} {d_join}",
    )
    sums = ", ".join(f"sum({c}) AS {c}" for c in _COUNTED)
    sql = f"SELECT key, period, {sums} FROM ({inner}) AS x WHERE key IS NOT NULL GROUP BY key, period"
    rows = (await db.execute(sa.text(sql), {**params, **fparams})).all()
    return {(row.key, row.period): _to_counts(row) for row in rows}


async def _open_overdue_counts(
    db: Executor, *, group_by: str, periods: Sequence[Period], filters: Filters, now: datetime, schema: str
) -> dict[tuple[str, int], int]:
    """Open dispatches of the periods whose deadline has passed, from the facts."""
    _, d_key = GROUP_KEYS[group_by]
    join, params = _periods_join("d.dispatch_day", periods)
    d_filter, fparams = _filters_sql(filters, dispatch=True)
    d_from = _D_CAMPAIGN_FROM if group_by in CAMPAIGN_GROUPINGS else ""
    sql = (
        f"SELECT {d_key} AS key, p.period, count(*) AS n "
        f"FROM {schema}.dispatches d {d_from} {join} "
        f"WHERE {_OPEN} AND d.deadline < :now AND d.dispatched_at IS NOT NULL "
        f"AND d.community_id IS NOT NULL AND {d_filter} GROUP BY 1, 2"
    )
    rows = (await db.execute(sa.text(sql), {**params, **fparams, "now": now})).all()
    return {(row.key, row.period): int(row.n) for row in rows if row.key is not None}


async def medians(
    db: Executor,
    *,
    group_by: str,
    period: Period,
    filters: Filters,
    schema: str = SCHEMA,
    use_rollup: bool = True,
) -> dict[str, tuple[float | None, float | None]]:
    """Per group: (median minutes to acknowledge, median hours to rectify) over one period.

    Unfiltered: from the rollup's merged histograms (see domain.histogram_median for the
    precision); filtered by community/category/department, or ``use_rollup=False``: exact, from the
    facts (a filtered period's facts are a small index range).
    """
    found = [
        (
            await measure_medians(
                db,
                group_by=group_by,
                period=period,
                filters=filters,
                measure=measure,
                schema=schema,
                use_rollup=use_rollup,
                with_total=False,
            )
        )[0]
        for measure in MEASURES
    ]
    ack, rect = found
    return {k: (ack.get(k), rect.get(k)) for k in set(ack) | set(rect)}


async def measure_medians(
    db: Executor,
    *,
    group_by: str,
    period: Period,
    filters: Filters,
    measure: str,
    schema: str = SCHEMA,
    use_rollup: bool = True,
    with_total: bool = True,
    key_map: Mapping[str, str] | None = None,
) -> tuple[dict[str, float], float | None]:
    """One measure's median per group (ack: minutes to acknowledge, rect: hours to rectify) and,
    with ``with_total``, over all groups together.

    The measures are independent queries, so a summary runs them on two connections at once.
    Unfiltered: from the merged histograms, groups and total in one statement; filtered or
    ``use_rollup=False``: exact, from the facts.
    """
    if use_rollup and _unfiltered(filters):
        groupings = (group_by, "all") if with_total else (group_by,)
        found = await _histogram_medians(
            db, groupings=groupings, period=period, measure=measure, schema=schema, key_map=key_map
        )
        total = found.get("all", {}).get("all") if with_total else None
        return found.get(group_by, {}), total
    groups = await _exact_medians(
        db, group_by=group_by, period=period, filters=filters, measure=measure, schema=schema, key_map=key_map
    )
    if not with_total:
        return groups, None
    totals = await _exact_medians(
        db, group_by="all", period=period, filters=filters, measure=measure, schema=schema
    )
    return groups, totals.get("all")


def mapped_key(expression: str, key_map: Mapping[str, str] | None) -> str:
    """SQL of a group key translated by ``key_map`` (a derived grouping: category -> its group)."""
    if not key_map:
        return expression
    whens = " ".join(f"WHEN {_literal(k)} THEN {_literal(v)}" for k, v in sorted(key_map.items()))
    return f"(CASE {expression} {whens} ELSE {expression} END)"


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _exact_medians(
    db: Executor,
    *,
    group_by: str,
    period: Period,
    filters: Filters,
    measure: str,
    schema: str,
    key_map: Mapping[str, str] | None = None,
) -> dict[str, float]:
    h_key, d_key = (mapped_key(k, key_map) for k in GROUP_KEYS[group_by])
    params: dict[str, Any] = {"ps": period.start, "pe": period.end}
    if measure == "ack":
        d_filter, fparams = _filters_sql(filters, dispatch=True)
        d_from = _D_CAMPAIGN_FROM if group_by in CAMPAIGN_GROUPINGS else ""
        sql = (
            f"SELECT {d_key} AS key, percentile_cont(0.5) WITHIN GROUP "
            f"(ORDER BY extract(epoch FROM d.acknowledged_at - d.dispatched_at) / 60.0) AS m "
            f"FROM {schema}.dispatches d {d_from} "
            f"WHERE d.dispatch_day BETWEEN :ps AND :pe AND d.acknowledged_at IS NOT NULL "
            f"AND d.dispatched_at IS NOT NULL AND d.community_id IS NOT NULL AND {d_filter} GROUP BY 1"
        )
    else:
        h_filter, fparams = _filters_sql(filters, dispatch=False)
        h_from = _CAMPAIGN_FROM if group_by in CAMPAIGN_GROUPINGS else ""
        sql = (
            f"SELECT {h_key} AS key, percentile_cont(0.5) WITHIN GROUP "
            f"(ORDER BY extract(epoch FROM h.rectified_at - h.reported_at) / 3600.0) AS m "
            f"FROM {schema}.hazards h {h_from} "
            f"WHERE h.report_day BETWEEN :ps AND :pe AND h.rectified_at IS NOT NULL "
            f"AND {_COUNTED_HAZARD} AND NOT COALESCE(h.rectified_on_site, false) AND {h_filter} "
            f"GROUP BY 1"
        )
    rows = (await db.execute(sa.text(sql), {**params, **fparams})).all()
    return {r.key: float(r.m) for r in rows if r.key is not None}


async def returns_after_receipt(
    db: Executor, *, group_by: str, period: Period, filters: Filters, schema: str = SCHEMA
) -> tuple[dict[str, int], int]:
    """Dispatches of the period returned after their receipt (退单 after 签收), per group and in total.

    From the facts (rare rows, a partial index of their own): a dispatch acknowledged and returned.
    """
    d_filter, fparams = _filters_sql(filters, dispatch=True)
    found: list[dict[str, int]] = []
    for by in (group_by, "all"):
        d_key = GROUP_KEYS[by][1]
        d_from = _D_CAMPAIGN_FROM if by in CAMPAIGN_GROUPINGS else ""
        sql = (
            f"SELECT {d_key} AS key, count(*) AS n FROM {schema}.dispatches d {d_from} "
            f"WHERE d.dispatch_day BETWEEN :ps AND :pe AND d.acknowledged_at IS NOT NULL "
            f"AND d.returned_at IS NOT NULL AND d.community_id IS NOT NULL AND {d_filter} GROUP BY 1"
        )
        rows = (await db.execute(sa.text(sql), {"ps": period.start, "pe": period.end, **fparams})).all()
        found.append({r.key: int(r.n) for r in rows if r.key is not None})
    return found[0], found[1].get("all", 0)


ACTION_FIGURES: tuple[str, ...] = (
    "urgings",
    "extension_requests",
    "extensions_approved",
    "overdue_receipts_original",
)
"""Figures of urgings and extensions, and the extra lateness against original receipt deadlines."""

_ACTION_KINDS = {
    "urgings": "urged",
    "extension_requests": "extension_requested",
    "extensions_approved": "extension_approved",
}


def _late(deadline: str) -> str:
    """Whether a dispatch was (or is) late against ``deadline``: as the rollup's three overdue figures."""
    return (
        f"(d.acknowledged_at > {deadline} OR (d.acknowledged_at IS NULL AND "
        f"LEAST(d.returned_at, d.superseded_at) > {deadline}) OR ({_OPEN} AND {deadline} < :now))"
    )


async def action_figures(
    db: Executor, *, group_by: str, period: Period, filters: Filters, now: datetime, schema: str = SCHEMA
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """Urgings, extension requests and approved extensions made in the period (by the day of the
    action), per group and in total; and ``extra_overdue_original``: the period's dispatches late
    against their original receipt deadline but not against the extended one (add it to
    ``overdue_receipts`` for lateness against the original deadlines).

    From the facts: these rows are few (a partial index on the extended dispatches).
    """
    h_filter, hparams = _filters_sql(filters, dispatch=False)
    a_filter = h_filter.replace("h.department_id", "a.department_id")
    d_filter, dparams = _filters_sql(filters, dispatch=True)
    found: list[dict[str, dict[str, int]]] = []
    for by in (group_by, "all"):
        h_key = GROUP_KEYS[by][0]
        a_key = "a.department_id" if by == "department" else h_key
        h_from = _CAMPAIGN_FROM if by in CAMPAIGN_GROUPINGS else ""
        counts = ", ".join(
            f"count(*) FILTER (WHERE a.kind = '{kind}') AS {name}" for name, kind in _ACTION_KINDS.items()
        )
        actions_sql = (
            f"SELECT {a_key} AS key, {counts} FROM {schema}.actions a "
            f"LEFT JOIN {schema}.hazards h ON h.hazard_id = a.hazard_id {h_from} "
            f"WHERE a.action_day BETWEEN :ps AND :pe AND {a_filter} GROUP BY 1"
        )
        d_key = GROUP_KEYS[by][1]
        d_from = _D_CAMPAIGN_FROM if by in CAMPAIGN_GROUPINGS else ""
        extra_sql = (
            f"SELECT {d_key} AS key, count(*) AS n FROM {schema}.dispatches d {d_from} "
            f"WHERE d.dispatch_day BETWEEN :ps AND :pe AND d.original_deadline < d.deadline "
            f"AND d.community_id IS NOT NULL AND d.dispatched_at IS NOT NULL AND {d_filter} "
            f"AND {_late('d.original_deadline')} AND NOT {_late('d.deadline')} GROUP BY 1"
        )
        window = {"ps": period.start, "pe": period.end}
        by_key: dict[str, dict[str, int]] = {}
        for r in (await db.execute(sa.text(actions_sql), {**window, **hparams})).all():
            if r.key is not None:
                by_key[r.key] = {name: int(getattr(r, name)) for name in _ACTION_KINDS}
        rows = (await db.execute(sa.text(extra_sql), {**window, **dparams, "now": now})).all()
        for r in rows:
            if r.key is not None:
                by_key.setdefault(r.key, {})["extra_overdue_original"] = int(r.n)
        found.append(by_key)
    return found[0], found[1].get("all", {})


# A period's histogram rows of one grouping merged per (key, bucket); each group's buckets leave
# the database as one row, packed in one bytea (bucket, n, total: the types' binary send forms),
# and its median is located here (domain.merged_median): sorting the merged rows by group and bucket and
# two running sums over them cost the database more than the merge, and one bytes value per group
# costs the client less to decode than three arrays. One such SELECT per grouping (a summary's
# groups and its total), joined by UNION ALL.
_MERGED_SQL = """
SELECT CAST(:{tag}g AS text) AS grouping, key,
       string_agg(int2send(bucket) || int8send(n) || float8send(total), ''::bytea) AS buckets
FROM (SELECT key, bucket, sum(n) AS n, CAST(sum(total_us) AS float8) AS total
      FROM ({rows}) AS x GROUP BY 1, 2) AS merged
GROUP BY key
"""


# One merged bucket as the database packs it (int2send, int8send, float8send: big-endian).
_BUCKET = struct.Struct(">hqd")


@functools.cache
def _unpacker(buckets: int) -> struct.Struct:
    """The layout of ``buckets`` packed buckets (a histogram has at most a few hundred)."""
    return struct.Struct(">" + "hqd" * buckets)


async def _histogram_medians(
    db: Executor,
    *,
    groupings: Sequence[str],
    period: Period,
    measure: str,
    schema: str,
    key_map: Mapping[str, str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per grouping and group: one measure's median of the period's merged histograms.

    As domain.histogram_median: the middle value(s) located by cumulative count, each read as the
    mean of its bucket. Merged in the database (one row per group leaves it, its buckets packed),
    located by domain.merged_median.
    """
    merges: list[str] = []
    params: dict[str, Any] = {"measure": measure}
    for i, grouping in enumerate(groupings):
        tag = f"p{i}"
        selects, more = _levels_sql(
            schema,
            "rollup_hist",
            f"{mapped_key('key', key_map if i == 0 else None)} AS key, bucket, n, total_us",
            f"grouping = :{tag}g AND measure = :measure",
            period,
            tag,
        )
        merges.append(_MERGED_SQL.format(tag=tag, rows=" UNION ALL ".join(selects)))
        params.update(more)
        params[f"{tag}g"] = grouping
    await _tune_reads(db)
    rows = (await db.execute(sa.text(" UNION ALL ".join(merges)), params)).all()
    found: dict[str, dict[str, float]] = {}
    unit = US_PER_UNIT[measure]
    for grouping, key, packed in rows:
        flat = _unpacker(len(packed) // _BUCKET.size).unpack(packed)
        median = domain.merged_median(flat[0::3], flat[1::3], flat[2::3])
        if median is not None:
            found.setdefault(grouping, {})[key] = median / unit
    return found


# ---------------------------------------------------------------- lists


async def list_open_overdue(
    db: Executor, *, now: datetime, filters: Filters, limit: int, schema: str = SCHEMA
) -> list[dict[str, Any]]:
    """Dispatches past their receipt deadline, not acknowledged, returned or replaced; oldest first."""
    d_filter, params = _filters_sql(filters, dispatch=True)
    # A LEFT JOIN: an overdue dispatch is listed even before its hazard.reported arrived.
    sql = (
        f"SELECT d.dispatch_id, d.hazard_id, d.department_id, d.dispatched_at, d.deadline, "
        f"h.category, h.community_id, h.grid_id, h.reported_at, h.address "
        f"FROM {schema}.dispatches d LEFT JOIN {schema}.hazards h ON h.hazard_id = d.hazard_id "
        f"WHERE {_OPEN} AND d.deadline < :now AND {d_filter} ORDER BY d.deadline, d.dispatch_id LIMIT :limit"
    )
    rows = (await db.execute(sa.text(sql), {**params, "now": now, "limit": limit})).mappings().all()
    return [dict(r) for r in rows]


async def count_open_overdue_by_department(
    db: Executor, *, now: datetime, schema: str = SCHEMA
) -> dict[str, int]:
    """Open overdue dispatches per department, whatever their day."""
    sql = (
        f"SELECT COALESCE(d.department_id, '') AS key, count(*) AS n FROM {schema}.dispatches d "
        f"WHERE {_OPEN} AND d.deadline < :now GROUP BY 1"
    )
    return {r.key: int(r.n) for r in (await db.execute(sa.text(sql), {"now": now})).all()}


async def list_relapse_hotspots(
    db: Executor, *, period: Period, filters: Filters, min_relapses: int, limit: int, schema: str = SCHEMA
) -> list[dict[str, Any]]:
    """Places ranked by relapses (回潮) that happened within the period."""
    h_filter, params = _filters_sql(filters, dispatch=False)
    sql = (
        f"SELECT r.place_key, max(h.community_id) AS community_id, max(h.grid_id) AS grid_id, "
        f"count(*) AS relapses, max(r.relapsed_at) AS last_relapsed_at, "
        f"COALESCE(max(h.address), max(o.address)) AS address, "
        f"array_agg(DISTINCT h.category) FILTER (WHERE h.category IS NOT NULL) AS categories "
        f"FROM {schema}.relapses r LEFT JOIN {schema}.hazards h ON h.hazard_id = r.hazard_id "
        f"LEFT JOIN {schema}.hazards o ON o.hazard_id = r.original_hazard_id "
        f"WHERE r.relapse_day BETWEEN :ps AND :pe AND {h_filter} "
        f"GROUP BY r.place_key HAVING count(*) >= :min "
        f"ORDER BY relapses DESC, last_relapsed_at DESC, r.place_key LIMIT :limit"
    )
    rows = (
        await db.execute(
            sa.text(sql),
            {**params, "ps": period.start, "pe": period.end, "min": min_relapses, "limit": limit},
        )
    ).mappings()
    return [dict(r) for r in rows]


async def campaign_counts(
    db: Executor,
    *,
    since: date,
    filters: Filters,
    ends_on: dict[str, date] | None = None,
    schema: str = SCHEMA,
) -> dict[str, dict[str, int]]:
    """Per campaign id: hazards found, notices issued (on the spot or ordered; each kind too), rectified
    and closed (duplicates excluded).

    With ``ends_on`` (campaign id -> last day), reports of a day after a campaign's last day are
    counted apart, as ``late`` (found late; an ended campaign's own figures stay as they were, #18).
    """
    h_filter, params = _filters_sql(filters, dispatch=False)
    ends = ends_on or {}
    sql = (
        f"SELECT c.campaign_id, coalesce(h.report_day > e.ends_on, false) AS late, count(*) AS found, "
        f"count(*) FILTER (WHERE h.ordered_at IS NOT NULL OR h.notice_on_site) AS notices_issued, "
        f"count(*) FILTER (WHERE h.notice_on_site) AS notices_on_site, "
        f"count(h.ordered_at) AS notices_ordered, "
        f"count(h.rectified_at) AS rectified, count(h.closed_at) AS closed "
        f"FROM {schema}.hazards h {_CAMPAIGN_FROM} "
        f"LEFT JOIN unnest(CAST(:end_ids AS text[]), CAST(:end_days AS date[])) AS e(campaign_id, ends_on) "
        f"ON e.campaign_id = c.campaign_id "
        f"WHERE h.report_day >= :since AND {_COUNTED_HAZARD} AND {h_filter} GROUP BY 1, 2"
    )
    bound = {**params, "since": since, "end_ids": list(ends), "end_days": list(ends.values())}
    rows = (await db.execute(sa.text(sql), bound)).all()
    figures = ("found", "notices_issued", "notices_on_site", "notices_ordered", "rectified", "closed")
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        counts = out.setdefault(r.campaign_id, {**dict.fromkeys(figures, 0), "late": 0})
        if r.late:
            counts["late"] += int(r.found)
            continue
        for name in figures:
            counts[name] += int(getattr(r, name))
    return out


async def daily_series(
    db: Executor,
    *,
    group_by: str,
    period: Period,
    filters: Filters,
    bucket: str,
    now: datetime,
    schema: str = SCHEMA,
) -> dict[tuple[str, date], Counts]:
    """Counts per (group key, bucket start day) from the rollup, open overdue included.

    Unfiltered: from the per-group rollup (whole weeks or months from their rows; quarters, half-years
    and years are sums of months, in the city's calendar: local days); filtered by community
    or category: from ``rollup``. Open overdue: the rollup's open dispatches less those whose
    deadline has not passed yet, each day at most the rollup's open ones (as period_counts).
    """
    await _one_snapshot(db)
    asked, bucket = bucket, ("month" if bucket in COARSE_BUCKETS else bucket)
    trunc = "CAST(date_trunc('{b}', CAST({c} AS timestamp)) AS date)"
    params: dict[str, Any] = {"ps": period.start, "pe": period.end}
    sums = ", ".join(f"sum({c}) AS {c}" for c in _WITH_OPEN)
    if filters.community_id is None and filters.category is None:
        params["grouping"] = group_by
        cols = ", ".join(_WITH_OPEN)
        if bucket == "day":
            inner = (
                f"SELECT key, day AS bucket, {cols} FROM {schema}.rollup_groups "
                f"WHERE grouping = :grouping AND day BETWEEN :ps AND :pe"
            )
        elif bucket == "month":
            # Whole months from the month rows, the days of the partial months at the ends from the days.
            _, _, months = split_period(period)
            month_set = set(months)
            days = [d for d in _days(period.start, period.end) if d.replace(day=1) not in month_set]
            params.update({"days": days, "months": months})
            inner = (
                f"SELECT key, {trunc.format(b='month', c='day')} AS bucket, {cols} "
                f"FROM {schema}.rollup_groups WHERE grouping = :grouping AND day = ANY(CAST(:days AS date[])) "
                f"UNION ALL SELECT key, start AS bucket, {cols} FROM {schema}.rollup_groups_span "
                f"WHERE grouping = :grouping AND span = 'month' AND start = ANY(CAST(:months AS date[]))"
            )
        else:
            whole = {_monday(d) for d in _days(period.start, period.end)}
            weeks = sorted(w for w in whole if period.start <= w and w + timedelta(days=6) <= period.end)
            days = [d for d in _days(period.start, period.end) if _monday(d) not in set(weeks)]
            params.update({"days": days, "weeks": weeks})
            inner = (
                f"SELECT key, CAST(date_trunc('week', CAST(day AS timestamp)) AS date) AS bucket, {cols} "
                f"FROM {schema}.rollup_groups WHERE grouping = :grouping AND day = ANY(CAST(:days AS date[])) "
                f"UNION ALL SELECT key, start AS bucket, {cols} FROM {schema}.rollup_groups_span "
                f"WHERE grouping = :grouping AND span = 'week' AND start = ANY(CAST(:weeks AS date[]))"
            )
        sql = f"SELECT key, bucket, {sums} FROM ({inner}) AS x GROUP BY 1, 2"
    else:
        key = {"department": "department_id", "community": "community_id", "category": "category"}[group_by]
        day = "day" if bucket == "day" else trunc.format(b=bucket, c="day")
        where = ["day BETWEEN :ps AND :pe"]
        if filters.community_id is not None:
            where.append("community_id = :f_community")
            params["f_community"] = filters.community_id
        if filters.category is not None:
            where.append("category = :f_category")
            params["f_category"] = filters.category
        sql = (
            f"SELECT {key} AS key, {day} AS bucket, {sums} FROM {schema}.rollup "
            f"WHERE {' AND '.join(where)} GROUP BY 1, 2"
        )
    await _tune_reads(db)
    rows = (await db.execute(sa.text(sql), params)).all()
    result = {(r.key, r.bucket): _to_counts_with_open(r) for r in rows}
    # Not yet due: at most the rollup's open dispatches of each day (see period_counts).
    open_sql, open_params = _not_yet_due_sql(
        schema,
        group_by=group_by,
        filters=filters,
        days="JOIN (SELECT CAST(:ps AS date) AS ps, CAST(:pe AS date) AS pe) AS p "
        "ON d.dispatch_day BETWEEN p.ps AND p.pe",
        tag="0",
        bucket="x.day" if bucket == "day" else trunc.format(b=bucket, c="x.day"),
    )
    open_params.update({"ps": period.start, "pe": period.end, "now": now})
    for r in (await db.execute(sa.text(open_sql), open_params)).all():
        k = (r.key, r.bucket)
        result[k] = result.get(k, Counts()) + Counts(receipt_overdue_open=-int(r.n))
    if asked in COARSE_BUCKETS and asked != "month":
        coarse: dict[tuple[str, date], Counts] = {}
        for (key, month), counts in result.items():
            k = (key, bucket_start(month, asked))
            coarse[k] = coarse.get(k, Counts()) + counts
        return coarse
    return result


COARSE_BUCKETS = frozenset({"month", "quarter", "half_year", "year"})
"""Buckets read from the month rows (a quarter, half-year or year is the sum of its months)."""


def bucket_start(day: date, bucket: str) -> date:
    """The first day of the bucket (day, ISO week, month, quarter, half-year, year) holding ``day``."""
    if bucket == "day":
        return day
    if bucket == "week":
        return _monday(day)
    months_per = {"month": 1, "quarter": 3, "half_year": 6, "year": 12}[bucket]
    return date(day.year, (day.month - 1) // months_per * months_per + 1, 1)


# ---------------------------------------------------------------- the period report (#18)


async def groupings_counts(
    db: Executor,
    *,
    groupings: Sequence[str],
    periods: Sequence[Period],
    now: datetime,
    schema: str = SCHEMA,
) -> dict[tuple[str, str, int], Counts]:
    """Counts per (grouping, key, period index) of several stored groupings, unfiltered, in one read.

    As period_counts from the per-group rollup (a period's months, weeks and edge days), with the
    open dispatches not yet due subtracted per grouping, all in one snapshot.
    """
    # A year-long period's previous period is its year-earlier one: read each distinct period once.
    distinct = list(dict.fromkeys(periods))
    if len(distinct) < len(periods):
        once = await groupings_counts(db, groupings=groupings, periods=distinct, now=now, schema=schema)
        return {
            (g, key, i): counts
            for (g, key, d), counts in once.items()
            for i, period in enumerate(periods)
            if period == distinct[d]
        }
    await _one_snapshot(db)
    parts: list[str] = []
    params: dict[str, Any] = {"groupings": list(groupings)}
    for i, period in enumerate(periods):
        selects, more = _levels_sql(
            schema,
            "rollup_groups",
            f"grouping, key, {i} AS period, {', '.join(_WITH_OPEN)}",
            "grouping = ANY(CAST(:groupings AS text[]))",
            period,
            f"p{i}",
        )
        parts.extend(selects)
        params.update(more)
    sums = ", ".join(f"sum({c}) AS {c}" for c in _WITH_OPEN)
    sql = f"SELECT grouping, key, period, {sums} FROM ({' UNION ALL '.join(parts)}) AS x GROUP BY 1, 2, 3"
    await _tune_reads(db)
    rows = (await db.execute(sa.text(sql), params)).all()
    at = operator.itemgetter(*(3 + i for i in _WITH_OPEN_AT))
    result = {(row[0], row[1], row[2]): Counts(*at(row)) for row in rows}
    for grouping in groupings:
        for (key, period_index), n in (
            await _not_yet_due_counts(
                db, group_by=grouping, periods=periods, filters=Filters(), now=now, schema=schema
            )
        ).items():
            k = (grouping, key, period_index)
            result[k] = result.get(k, Counts()) + Counts(receipt_overdue_open=-n)
    return result
