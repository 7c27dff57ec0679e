"""The figures the API, the dashboard and the period report read (from the rollup, or the facts)."""

from __future__ import annotations

import functools
import operator
import struct
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from services.reporting import domain, tables
from services.reporting.domain import Counts
from services.reporting.store.common import (
    COUNTED_HAZARD,
    MEASURES,
    OPEN_DISPATCH,
    ROLLUP_COUNTS,
    SCHEMA,
    US_PER_UNIT,
    Executor,
    Filters,
    Period,
    days_between,
    fact_union,
    monday_of,
    on_schema,
    split_period,
    tune_reads,
    unfiltered,
)

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
    if use_rollup and (unfiltered(filters) or group_by in ROLLUP_GROUPS):
        await _one_snapshot(db)
        if unfiltered(filters):
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
    await tune_reads(db)
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
    if unfiltered(filters):
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
        f"WHERE {OPEN_DISPATCH} AND (d.deadline >= :now OR d.deadline IS NULL) AND d.dispatched_at IS NOT NULL "
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
    inner = fact_union(
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
        f"WHERE {OPEN_DISPATCH} AND d.deadline < :now AND d.dispatched_at IS NOT NULL "
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
    if use_rollup and unfiltered(filters):
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
            f"AND {COUNTED_HAZARD} AND NOT COALESCE(h.rectified_on_site, false) AND {h_filter} "
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
        f"LEAST(d.returned_at, d.superseded_at) > {deadline}) OR ({OPEN_DISPATCH} AND {deadline} < :now))"
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
    await tune_reads(db)
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


def _open_dispatch(d: sa.Table) -> sa.ColumnElement[bool]:
    """An open dispatch: not acknowledged, returned or replaced (as OPEN_DISPATCH)."""
    return sa.and_(d.c.acknowledged_at.is_(None), d.c.returned_at.is_(None), d.c.superseded_at.is_(None))


async def list_open_overdue(
    db: Executor, *, now: datetime, filters: Filters, limit: int, schema: str = SCHEMA
) -> list[dict[str, Any]]:
    """Dispatches past their receipt deadline, not acknowledged, returned or replaced; oldest first."""
    d, h = tables.dispatches, tables.hazards
    narrowed = [
        column == value
        for column, value in (
            (d.c.community_id, filters.community_id),
            (d.c.category, filters.category),
            (d.c.department_id, filters.department_id),
        )
        if value is not None
    ]
    statement = (
        sa.select(
            d.c.dispatch_id,
            d.c.hazard_id,
            d.c.department_id,
            d.c.dispatched_at,
            d.c.deadline,
            h.c.category,
            h.c.community_id,
            h.c.grid_id,
            h.c.reported_at,
            h.c.address,
        )
        # A LEFT JOIN: an overdue dispatch is listed even before its hazard.reported arrived.
        .select_from(d.outerjoin(h, h.c.hazard_id == d.c.hazard_id))
        .where(_open_dispatch(d), d.c.deadline < now, *narrowed)
        .order_by(d.c.deadline, d.c.dispatch_id)
        .limit(limit)
    )
    rows = (await db.execute(statement, execution_options=on_schema(schema))).mappings().all()
    return [dict(r) for r in rows]


async def count_open_overdue_by_department(
    db: Executor, *, now: datetime, schema: str = SCHEMA
) -> dict[str, int]:
    """Open overdue dispatches per department, whatever their day."""
    d = tables.dispatches
    key = sa.func.coalesce(d.c.department_id, sa.literal_column("''"))
    statement = (
        sa.select(key.label("key"), sa.func.count().label("n"))
        .where(_open_dispatch(d), d.c.deadline < now)
        .group_by(key)
    )
    rows = (await db.execute(statement, execution_options=on_schema(schema))).all()
    return {r.key: int(r.n) for r in rows}


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
        f"WHERE h.report_day >= :since AND {COUNTED_HAZARD} AND {h_filter} GROUP BY 1, 2"
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
            days = [d for d in days_between(period.start, period.end) if d.replace(day=1) not in month_set]
            params.update({"days": days, "months": months})
            inner = (
                f"SELECT key, {trunc.format(b='month', c='day')} AS bucket, {cols} "
                f"FROM {schema}.rollup_groups WHERE grouping = :grouping AND day = ANY(CAST(:days AS date[])) "
                f"UNION ALL SELECT key, start AS bucket, {cols} FROM {schema}.rollup_groups_span "
                f"WHERE grouping = :grouping AND span = 'month' AND start = ANY(CAST(:months AS date[]))"
            )
        else:
            whole = {monday_of(d) for d in days_between(period.start, period.end)}
            weeks = sorted(w for w in whole if period.start <= w and w + timedelta(days=6) <= period.end)
            days = [d for d in days_between(period.start, period.end) if monday_of(d) not in set(weeks)]
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
    await tune_reads(db)
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
        return monday_of(day)
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
    await tune_reads(db)
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
