"""The rollup's changes recorded with the facts (#20): what a batch changes, summed per contribution key.

A hazard row and a dispatch row each add one *contribution* to the rollup: its day and dimensions
(the keys of every grouping), its 0/1 counts and its one histogram value, if any. A batch changes
the contributions of the rows of the hazards it touches (their hazard and dispatch rows, and the
relapsed originals'). In the batch's transaction :func:`merge_counted` reads those contributions
before the merge (into memory, summed per key), merges, reads them again and records the
difference in ``rollup_changes`` (:func:`differences`): per day and dimensions the signed sums (new
less old) of the counts, and per histogram measure and bucket of those the signed count and sum of
the microseconds, one row per bucket that moved with the counts on the first. A hazard's -old and
+new contributions become one row carrying only what moved, the hazards of a batch sharing a day
and dimensions share their rows, and a batch that moves no figure records nothing. The refresher
(``rollups.refresh_rollup``) folds the recorded rows into the rollup tables, one upsert per group
key, and deletes them: its cost is the size of the changes, not of the days they touch.

Exactness needs every recorded difference to start where the previous one of the same row ended:
two transactions must never read a hazard's contributions concurrently (one would subtract a
state the other already left). Every transaction first takes a transaction-scoped advisory lock
per hazard it touches, in key order (no deadlocks); a relapse's transaction locks its original
too, so it never misses the original's closure committed meanwhile, nor the other way round. A
batch touching more than :data:`HOLD_EACH_MAX` hazards takes one lock over all of them instead
(exclusive; the others hold it shared), so a transaction never fills the server's lock table.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from services.reporting import tables
from services.reporting.domain import FactBatch
from services.reporting.store.common import (
    COUNTED_HAZARD,
    ROLLUP_COUNTS,
    SCHEMA,
    Executor,
    fact_union,
    in_uuid_order,
)
from services.reporting.store.facts import JOINED, array_type, column_arrays, upsert_facts
from services.reporting.store.rollups import bucket_of

KEY_COLUMNS: tuple[str, ...] = tables.CHANGE_DIMENSIONS
"""A change row's key: day, dimensions, histogram measure and bucket (NULL without a measure)."""
SUM_COLUMNS: tuple[str, ...] = ("n", "total_us", *ROLLUP_COUNTS)
"""A change row's signed sums: histogram count and microseconds (0 without a measure), the counts."""

# Advisory lock spaces (the two-key form, apart from the one-key locks other code takes).
HAZARD_LOCKS = 0x52485A01  # (space, hashtext(hazard_id)): one hazard
ALL_HAZARD_LOCKS = 0x52485A02  # (space, 0): shared by every batch, exclusive for a big one
HOLD_EACH_MAX = 1000
"""Above this many hazards a batch locks them all at once rather than one by one."""

_DIMENSIONS = "{t}.community_id, {t}.grid_id, {t}.category, {t}.campaign_ids, {t}.street_id, {t}.reporter_type, {t}.source"
# The histogram value of a row, as rollups' aggregation passes select it (exact microseconds).
_RECT = f"h.rectified_at IS NOT NULL AND {COUNTED_HAZARD} AND NOT COALESCE(h.rectified_on_site, false)"
_ACK = "d.acknowledged_at IS NOT NULL AND d.dispatch_day IS NOT NULL"


@functools.cache
def contribution_sql(schema: str = SCHEMA, *, where_h: str = "", where_d: str = "") -> str:
    """One contribution per hazard and per dispatch row of the hazards in ``:ids`` (or matching the conditions)."""
    rect_us = "CAST(extract(epoch FROM h.rectified_at - h.reported_at) * 1000000 AS bigint)"
    ack_us = "CAST(extract(epoch FROM d.acknowledged_at - d.dispatched_at) * 1000000 AS bigint)"
    return fact_union(
        schema,
        h_key="h.report_day AS day, COALESCE(h.department_id, '') AS department_id, "
        f"{_DIMENSIONS.format(t='h')}, CASE WHEN {_RECT} THEN 'rect' END AS measure, "
        f"CASE WHEN {_RECT} THEN {rect_us} END AS us",
        d_key="d.dispatch_day AS day, COALESCE(d.department_id, '') AS department_id, "
        f"{_DIMENSIONS.format(t='d')}, CASE WHEN {_ACK} THEN 'ack' END AS measure, "
        f"CASE WHEN {_ACK} THEN {ack_us} END AS us",
        h_where=where_h or "h.hazard_id = ANY(CAST(:ids AS uuid[]))",
        d_where=where_d or "d.hazard_id = ANY(CAST(:ids AS uuid[]))",
    )


@functools.cache
def _summed_sql(schema: str) -> str:
    """The contributions of the hazards in ``:ids`` summed per key: the columns of a change row.

    The bucket is computed here, by the SQL the rollup's passes use, so a duration lands in the
    same bucket whichever path counts it.
    """
    keys = ", ".join(KEY_COLUMNS)
    counts = ", ".join(f"sum(c.{name}) AS {name}" for name in ROLLUP_COUNTS)
    return (
        f"SELECT {keys}, count(c.us) AS n, CAST(COALESCE(sum(c.us), 0) AS bigint) AS total_us, {counts} "
        f"FROM (SELECT c.*, CASE WHEN c.us IS NOT NULL THEN {bucket_of('c')} END AS bucket "
        f"FROM ({contribution_sql(schema)}) AS c) AS c GROUP BY {keys}"
    )


@functools.cache
def _record_sql(schema: str) -> str:
    """The change rows, sent as one array per column (campaign ids joined by commas)."""
    columns = (*KEY_COLUMNS, *SUM_COLUMNS)
    table = tables.rollup_changes
    arrays = ", ".join(f"CAST(:{c} AS {array_type(table.c[c])}[])" for c in columns)
    select = ", ".join(f"string_to_array({c}, ',')" if c == JOINED else c for c in columns)
    names = ", ".join(columns)
    return (
        f"INSERT INTO {schema}.rollup_changes ({names}) SELECT {select} FROM unnest({arrays}) AS u({names})"
    )


_DIMS = len(KEY_COLUMNS) - 2  # the key less measure and bucket


def differences(before: Iterable[Sequence[Any]], after: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """The change rows (key, then signed sums) taking the summed contributions ``before`` to ``after``.

    Rows are as :func:`_summed_sql` returns them. The counts' differences are summed per day and
    dimensions, the histograms' per day, dimensions, measure and bucket; a row carries one
    histogram difference and, on the first row of its dimensions, their counts' (a row of its own,
    without a measure, when no histogram moved). So a hazard rectified or a dispatch acknowledged
    records one row, not an old and a new one. Differences all 0 are left out: the fold would add
    nothing. Integer sums, so the fold stays exact.
    """
    counts: dict[tuple[Any, ...], list[int]] = {}
    hist: dict[tuple[Any, ...], dict[tuple[Any, Any], list[int]]] = {}
    for sign, rows in ((-1, before), (1, after)):
        for row in rows:
            dims = tuple(tuple(v) if isinstance(v, list) else v for v in row[:_DIMS])
            measure, bucket, n, total_us = row[_DIMS : _DIMS + 4]
            acc = counts.get(dims)
            if acc is None:
                acc = counts[dims] = [0] * len(ROLLUP_COUNTS)
            for i, value in enumerate(row[_DIMS + 4 :]):
                acc[i] += sign * value
            if measure is not None:
                h = hist.setdefault(dims, {}).setdefault((measure, bucket), [0, 0])
                h[0] += sign * n
                h[1] += sign * total_us
    out: list[tuple[Any, ...]] = []
    zero = [0] * len(ROLLUP_COUNTS)
    for dims, acc in counts.items():
        moved = [(key, h) for key, h in hist.get(dims, {}).items() if any(h)]
        if not moved:
            if any(acc):
                out.append((*dims, None, None, 0, 0, *acc))
            continue
        for i, ((measure, bucket), (n, total_us)) in enumerate(moved):
            out.append((*dims, measure, bucket, n, total_us, *(acc if i == 0 else zero)))
    return out


# The shared lock over all and each hazard's, in key order (in one statement: the shared lock
# conflicts only with a big batch's exclusive one, which takes no other, so their order is free).
_HOLD_EACH = sa.text(
    "SELECT pg_advisory_xact_lock_shared(:all, 0), count(pg_advisory_xact_lock(:space, k)) "
    "FROM (SELECT DISTINCT hashtext(CAST(u.id AS text)) AS k FROM unnest(CAST(:ids AS uuid[])) AS u(id) "
    "ORDER BY 1) AS s"
)


async def hold_hazards(db: Executor, ids: Sequence[object]) -> None:
    """Lock these hazards' contributions until the transaction ends (see the module's note)."""
    if len(ids) > HOLD_EACH_MAX:
        await db.execute(sa.text("SELECT pg_advisory_xact_lock(:space, 0)"), {"space": ALL_HAZARD_LOCKS})
        return
    await db.execute(_HOLD_EACH, {"all": ALL_HAZARD_LOCKS, "space": HAZARD_LOCKS, "ids": list(ids)})


async def merge_counted(db: Executor, batch: FactBatch, *, schema: str = SCHEMA) -> None:
    """Merge a batch's fact rows and record what they change in the rollup, in the caller's transaction."""
    ids = in_uuid_order(batch.touched_hazards())
    if not ids:
        await upsert_facts(db, batch, schema=schema)
        return
    await hold_hazards(db, ids)
    # Read after the locks (a new snapshot: READ COMMITTED), so whatever changed these hazards
    # before is committed and in what follows. Held in memory, not in a table: rows of a temp
    # table are rows written too.
    summed = sa.text(_summed_sql(schema))
    before = (await db.execute(summed, {"ids": ids})).all()
    await upsert_facts(db, batch, schema=schema)
    after = (await db.execute(summed, {"ids": ids})).all()
    rows = differences(before, after)
    if rows:
        columns = (*KEY_COLUMNS, *SUM_COLUMNS)
        await db.execute(
            sa.text(_record_sql(schema)),
            column_arrays([dict(zip(columns, r, strict=True)) for r in rows], columns),
        )
