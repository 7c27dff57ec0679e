"""The rollup: recorded changes folded in and dirty days recomputed (refresh), or all of it (rebuild), with its week and month rows."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from services.reporting import domain, tables
from services.reporting.store.common import (
    COUNTED_HAZARD,
    IN_GROUPINGS,
    IN_MEASURES,
    ROLLUP_COUNTS,
    SCHEMA,
    US_PER_UNIT,
    Executor,
    fact_union,
    on_schema,
)


def _rollup_select(schema: str, day_filter_h: str, day_filter_d: str) -> str:
    inner = fact_union(
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
    inner = fact_union(
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


def bucket_of(t: str) -> str:
    """SQL of the histogram bucket of a row ``t`` with ``measure`` and ``us`` (exact microseconds)."""
    ack_v, rect_v = (
        f"(CAST({t}.us AS float8) / CAST({US_PER_UNIT[m]!r} AS float8))" for m in ("ack", "rect")
    )
    return (
        f"CASE {t}.measure WHEN 'ack' THEN {bucket_sql('ack', column=ack_v)} "
        f"ELSE {bucket_sql('rect', column=rect_v)} END"
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
        f"AND {COUNTED_HAZARD} AND NOT COALESCE(h.rectified_on_site, false) AND {day_filter_h}"
    )
    bucket = bucket_of("y")
    return (
        f"INSERT INTO {into or f'{schema}.rollup_hist'} (grouping, day, key, measure, bucket, n, total_us) "
        f"SELECT g.grouping, x.day, g.key, x.measure, x.bucket, count(*), sum(x.us) "
        f"FROM (SELECT y.*, {bucket} AS bucket "
        f"FROM ({ack} UNION ALL {rect}) AS y) AS x {_GROUPINGS_LATERAL} "
        f"WHERE g.key IS NOT NULL GROUP BY 1, 2, 3, 4, 5"
    )


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
    """Seconds since the oldest change not yet in the rollup was made; None when all are in."""
    changes, dirty = tables.rollup_changes, tables.rollup_dirty
    oldest = sa.func.least(
        sa.select(sa.func.min(changes.c.changed_at)).scalar_subquery(),
        sa.select(sa.func.min(dirty.c.marked_at)).scalar_subquery(),
    )
    age = (
        await db.execute(
            sa.select(sa.extract("epoch", sa.func.clock_timestamp() - oldest)),
            execution_options=on_schema(schema),
        )
    ).scalar()
    return None if age is None else float(age)


def _same_row(a: str, b: str, columns: Sequence[str]) -> str:
    return " AND ".join(f"{a}.{c} = {b}.{c}" for c in columns)


async def refresh_rollup(db: Executor, *, schema: str = SCHEMA, durable: bool = True) -> int:
    """Bring the rollup up to date; returns how many recorded changes and dirty days it brought in.

    The changes the consumers recorded with the facts are folded in (:func:`fold_changes`: the
    cost of the changes, not of the days they touch). Days marked dirty (by a migration or a tool:
    ``facts.mark_dirty``) are then recomputed from the facts, with the recorded changes held back
    meanwhile so that none is counted twice (:func:`recompute_dirty_days`).

    ``durable=False`` commits without waiting for the WAL flush: a crash may lose the refresh, but
    only whole (the changes it took stay recorded and the next refresh folds them), and any later
    durable commit flushes it anyway. The background refresher and requests use it; the rebuild's
    swap, which must be durable, does not.
    """
    pending = (await db.execute(sa.text(_PENDING.format(schema=schema)))).one()
    if not pending.changes and not pending.dirty:
        return 0  # idle: one look, no lock
    await db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"{schema}.rollup"})
    if not durable:
        await db.execute(sa.text("SELECT set_config('synchronous_commit', 'off', true)"))
    # Read the marks without locking them, so consumers marking days never wait for a refresh;
    # they are cleared at the end only if nobody marked them again meanwhile.
    marks = (await db.execute(sa.text(f"SELECT day, version FROM {schema}.rollup_dirty ORDER BY day"))).all()
    if marks:
        # Days recomputed from the facts must not count again a change recorded after the fold
        # below: no consumer commits a change until this transaction ends (a consumer records its
        # changes, and so takes this table's row lock, before it commits any fact).
        await db.execute(sa.text(f"LOCK TABLE {schema}.rollup_changes IN EXCLUSIVE MODE"))
    folded = await fold_changes(db, schema=schema)
    if not marks:
        return folded
    return folded + await recompute_dirty_days(db, marks, schema=schema)


_PENDING = (
    "SELECT EXISTS (SELECT 1 FROM {schema}.rollup_changes) AS changes, "
    "EXISTS (SELECT 1 FROM {schema}.rollup_dirty) AS dirty"
)
_ADD = ", ".join(f"{c} = t.{c} + EXCLUDED.{c}" for c in ROLLUP_COUNTS)
_ADD_HIST = "n = t.n + EXCLUDED.n, total_us = t.total_us + EXCLUDED.total_us"
_COUNTS_EMPTY = "t.reported + t.duplicates + t.dispatched = 0"  # a row without facts
_HIST_EMPTY = "t.n = 0"
_COUNT_COLUMNS = ", ".join(ROLLUP_COUNTS)


_SUMMED = ", ".join(f"sum(x.{c}) AS {c}" for c in ROLLUP_COUNTS)
_ANY_SUMMED = " OR ".join(f"sum(x.{c}) <> 0" for c in ROLLUP_COUNTS)
_FOLD_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "rollup": (("day", "date"), ("department_id", "text"), ("community_id", "text"), ("category", "text")),
    "rollup_groups": (("grouping", "text"), ("day", "date"), ("key", "text")),
    "rollup_groups_span": (("grouping", "text"), ("span", "text"), ("start", "date"), ("key", "text")),
    "rollup_hist": (
        ("grouping", "text"),
        ("day", "date"),
        ("key", "text"),
        ("measure", "text"),
        ("bucket", "smallint"),
    ),
    "rollup_hist_span": (
        ("grouping", "text"),
        ("span", "text"),
        ("start", "date"),
        ("key", "text"),
        ("measure", "text"),
        ("bucket", "smallint"),
    ),
}


def _add_ctes(schema: str, table: str, name: str, rows: str) -> dict[str, str]:
    """CTEs adding ``rows`` to ``table``'s stored rows; ``name`` and ``{name}_new`` return each key
    they wrote (as text) and whether its row is left empty.

    Stored keys are updated (``{name}``) and only the others inserted (``{name}_new``), rather than
    one ``INSERT … ON CONFLICT DO UPDATE``: that first locks the conflicting row (a WAL record of
    its own) and then updates it, and nearly every key of a fold is stored already. Both see the
    statement's snapshot, so a key is in exactly one of them; no one else writes the rollup
    meanwhile (the refresh's lock), and the insert's ``ON CONFLICT`` is only a guard.
    """
    key = _FOLD_KEYS[table]
    names = ", ".join(k for k, _ in key)
    hist = table.startswith("rollup_hist")
    values, add, empty = (
        ("n, total_us", _ADD_HIST, _HIST_EMPTY) if hist else (_COUNT_COLUMNS, _ADD, _COUNTS_EMPTY)
    )
    plus = add.replace("EXCLUDED.", "d.")
    as_text = ", ".join(f"CAST(t.{k} AS text)" for k, _ in key)
    returning = f"RETURNING ARRAY[{as_text}] AS k, {empty} AS empty"
    same = " AND ".join(f"{{t}}.{k} = d.{k}" for k, _ in key)
    return {
        f"{name}_d": f"SELECT * FROM ({rows}) AS d({names}, {values})",
        name: f"UPDATE {schema}.{table} AS t SET {plus} FROM {name}_d d WHERE {same.format(t='t')} {returning}",
        f"{name}_new": f"INSERT INTO {schema}.{table} AS t ({names}, {values}) SELECT * FROM {name}_d d "
        f"WHERE NOT EXISTS (SELECT 1 FROM {schema}.{table} e WHERE {same.format(t='e')}) "
        f"ON CONFLICT ({names}) DO UPDATE SET {add} {returning}",
    }


@functools.cache
def _fold_sql(schema: str) -> str:
    """One statement: take the recorded changes, sum them per key of every rollup table, add the sums.

    Returns a row ``('', [count])`` with how many change rows it took, and one ``(table, key)`` per
    row left without facts. The day sums of the groups and histograms are computed once (``gd``,
    ``hd``) and feed both the day rows and their week and month rows. A change row's counts feed
    the count tables and its histogram sums (``n``, ``total_us``; with a measure only) the
    histograms: one row may carry both.
    """
    ctes = {
        "gone": f"DELETE FROM {schema}.rollup_changes RETURNING *",
        **_add_ctes(
            schema,
            "rollup",
            "r",
            f"SELECT x.day, x.department_id, COALESCE(x.community_id, ''), COALESCE(x.category, ''), "
            f"{_SUMMED} FROM gone x GROUP BY 1, 2, 3, 4 HAVING {_ANY_SUMMED}",
        ),
        "gd": f"SELECT g.grouping, x.day, g.key, {_SUMMED} FROM gone x {_GROUPINGS_LATERAL} "
        f"WHERE g.key IS NOT NULL GROUP BY 1, 2, 3 HAVING {_ANY_SUMMED}",
        **_add_ctes(schema, "rollup_groups", "g", f"SELECT grouping, day, key, {_COUNT_COLUMNS} FROM gd"),
        **_add_ctes(
            schema,
            "rollup_groups_span",
            "gs",
            f"SELECT x.grouping, sp.span, sp.start, x.key, {_SUMMED} FROM gd x {_SPANS} "
            f"GROUP BY 1, 2, 3, 4 HAVING {_ANY_SUMMED}",
        ),
        "hd": f"SELECT g.grouping, x.day, g.key, x.measure, x.bucket, sum(x.n) AS n, "
        f"sum(x.total_us) AS total_us FROM gone x {_GROUPINGS_LATERAL} "
        f"WHERE x.measure IS NOT NULL AND g.key IS NOT NULL "
        f"GROUP BY 1, 2, 3, 4, 5 HAVING sum(x.n) <> 0 OR sum(x.total_us) <> 0",
        **_add_ctes(
            schema, "rollup_hist", "h", "SELECT grouping, day, key, measure, bucket, n, total_us FROM hd"
        ),
        **_add_ctes(
            schema,
            "rollup_hist_span",
            "hs",
            f"SELECT x.grouping, sp.span, sp.start, x.key, x.measure, x.bucket, sum(x.n), sum(x.total_us) "
            f"FROM hd x {_SPANS} GROUP BY 1, 2, 3, 4, 5, 6 HAVING sum(x.n) <> 0 OR sum(x.total_us) <> 0",
        ),
    }
    emptied = " ".join(
        f"UNION ALL SELECT '{table}', k FROM {cte}{new} WHERE empty"
        for new in ("", "_new")
        for cte, table in (
            ("r", "rollup"),
            ("g", "rollup_groups"),
            ("gs", "rollup_groups_span"),
            ("h", "rollup_hist"),
            ("hs", "rollup_hist_span"),
        )
    )
    return (
        "WITH " + ", ".join(f"{name} AS ({sql})" for name, sql in ctes.items()) + " "
        f"SELECT '' AS t, ARRAY[CAST(count(*) AS text)] AS k FROM gone {emptied}"
    )


_NESTED_LOOPS_ONLY = (
    "WITH was AS MATERIALIZED (SELECT current_setting('enable_hashjoin') AS hash, "
    "current_setting('enable_mergejoin') AS merge) SELECT was.hash, was.merge, set_config('jit', 'off', true), "
    "set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true) FROM was"
)
_JOINS_AS_WERE = (
    "SELECT set_config('enable_hashjoin', :hash, true), set_config('enable_mergejoin', :merge, true)"
)


async def fold_changes(db: Executor, *, schema: str = SCHEMA) -> int:
    """Fold every committed recorded change into the rollup tables and delete it; returns how many.

    One statement (:func:`_fold_sql`): the changes are taken by a ``DELETE … RETURNING`` (exactly
    the rows it removes are folded, whoever else deletes concurrently), summed per key of each
    table and added to the stored rows (one upsert per table, integer sums: no drift); rows left
    without facts are then deleted, as a rebuild would not have them. The caller holds the
    refresh's advisory lock.
    """
    # A statement over a few hundred rows: JIT compilation would cost more than it does. Its sums
    # meet the stored rows key by key through their primary keys: a hash or merge join would read
    # whole rollup tables (a year of rows) for a few hundred keys, and the planner cannot know how
    # few the CTEs hold. Put back afterwards for what the transaction does next (dirty days).
    was = (await db.execute(sa.text(_NESTED_LOOPS_ONLY))).one()
    rows = (await db.execute(sa.text(_fold_sql(schema)))).all()
    await db.execute(sa.text(_JOINS_AS_WERE), {"hash": was.hash, "merge": was.merge})
    folded = 0
    emptied: dict[str, list[list[str]]] = {}
    for table, key in rows:
        if table:
            emptied.setdefault(table, []).append(key)
        else:
            folded = int(key[0])
    for table, keys in emptied.items():
        await _delete_empty(db, schema, table, keys)
    return folded


async def _delete_empty(db: Executor, schema: str, table: str, keys: Sequence[Sequence[str]]) -> None:
    """Delete the rows of these keys (as text) that the fold left without facts."""
    key = _FOLD_KEYS[table]
    arrays = ", ".join(f"CAST(:k{i} AS text[])" for i in range(len(key)))
    names = [f"c{i}" for i in range(len(key))]
    same = " AND ".join(f"t.{k} = CAST(e.c{i} AS {kind})" for i, (k, kind) in enumerate(key))
    empty = _HIST_EMPTY if table.startswith("rollup_hist") else _COUNTS_EMPTY
    await db.execute(
        sa.text(
            f"DELETE FROM {schema}.{table} t USING unnest({arrays}) AS e({', '.join(names)}) WHERE {same} AND {empty}"
        ),
        {f"k{i}": [k[i] for k in keys] for i in range(len(key))},
    )


async def recompute_dirty_days(db: Executor, marks: Sequence[Any], *, schema: str = SCHEMA) -> int:
    """Recompute the rollup of the marked days from the facts; returns how many days.

    The dirty days' rows are recomputed from the facts into scratch tables; only the rows that
    differ from the stored ones are written, and the week and month rows covering them change by
    that difference (exact: integer sums). A day refreshed because one hazard changed rewrites a
    handful of rows, not the day. The caller holds the refresh's lock and has folded the recorded
    changes with ``rollup_changes`` locked against new ones.
    """
    # Every change committed by now is in what follows; one still uncommitted began no earlier
    # than the oldest open transaction: the age of what a day has left after this refresh.
    seen_at = (await db.execute(sa.text(_OLDEST_OPEN_CHANGE))).scalar_one()
    days = [mark.day for mark in marks]
    # Big one-off statements: JIT compilation costs more than it saves; hash rather than spill.
    await db.execute(sa.text("SELECT set_config('jit', 'off', true), set_config('work_mem', '256MB', true)"))
    params = {"days": sorted(days)}
    on_days = f"{IN_GROUPINGS} AND day = ANY(CAST(:days AS date[]))"
    # rollup_hist's key has the measure before the day: name them, so the days are index ranges.
    on_days_of = {"rollup_groups": on_days, "rollup_hist": f"{IN_MEASURES} AND {on_days}"}
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
    await clear_marks(db, marks, seen_at, schema=schema)
    return len(days)


# The time before which every change is committed: now, or the start of the oldest transaction
# still open in this database under this role (the consumers mark days with their start time).
_OLDEST_OPEN_CHANGE = (
    "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND usename = current_user AND pid <> pg_backend_pid()"
)


async def clear_marks(db: Executor, marks: Sequence[Any], seen_at: Any, *, schema: str) -> None:
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
    dirty = tables.rollup_dirty
    await db.execute(
        sa.update(dirty)
        .where(dirty.c.day == sa.any_(sa.bindparam("days", type_=postgresql.ARRAY(sa.Date))))
        .values(marked_at=sa.func.greatest(dirty.c.marked_at, sa.bindparam("seen_at"))),
        {"days": params["days"], "seen_at": seen_at},
        execution_options=on_schema(schema),
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
    """Recompute the whole rollup from the facts (after a bulk load): days, then weeks and months.

    The recorded changes not yet folded are in the facts, so they go; none may be recorded until
    this transaction ends (see :func:`refresh_rollup`).
    """
    await db.execute(sa.text(f"LOCK TABLE {schema}.rollup_changes IN EXCLUSIVE MODE"))
    for table in (
        tables.rollup_changes,
        tables.rollup_dirty,
        tables.rollup,
        tables.rollup_groups,
        tables.rollup_hist,
        tables.rollup_groups_span,
        tables.rollup_hist_span,
    ):
        await db.execute(sa.delete(table), execution_options=on_schema(schema))
    for sql in _rollup_statements(schema, "true", "true"):
        await db.execute(sa.text(sql))
    # In key order, so that a period's rows of a grouping lie together.
    await db.execute(sa.text(_groups_spans_from_days(schema, days=f"{schema}.rollup_groups", order=True)))
    await db.execute(sa.text(_hist_spans_from_days(schema, days=f"{schema}.rollup_hist")))
