"""The rollup's changes recorded with the facts (#20): what a batch changes, as signed contributions.

A hazard row and a dispatch row each add one *contribution* to the rollup: its day and dimensions
(the keys of every grouping), its 0/1 counts and its one histogram value, if any. A batch changes
the contributions of the rows of the hazards it touches (their hazard and dispatch rows, and the
relapsed originals'). In the batch's transaction :func:`merge_counted` reads those contributions
before the merge, merges, reads them again and records the difference in ``rollup_changes``: the
old contributions that are gone with sign -1, the new ones with +1 (identical ones cancel, so an
event that moves no figure records nothing). The refresher (``rollups.refresh_rollup``) folds the
recorded rows into the rollup tables, one upsert per group key, and deletes them: its cost is the
size of the changes, not of the days they touch.

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
from collections.abc import Sequence

import sqlalchemy as sa

from services.reporting import tables
from services.reporting.domain import FactBatch
from services.reporting.store.common import COUNTED_HAZARD, ROLLUP_COUNTS, SCHEMA, Executor, fact_union
from services.reporting.store.facts import upsert_facts

CONTRIBUTION_COLUMNS: tuple[str, ...] = (*tables.CHANGE_DIMENSIONS, *ROLLUP_COUNTS)
"""The columns of a contribution, in the order :func:`contribution_sql` selects them."""

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


_COLUMNS = ", ".join(CONTRIBUTION_COLUMNS)


@functools.cache
def _before_table_sql(schema: str) -> str:
    # Per connection, emptied at every commit: the contributions as they were before the merge.
    return (
        f"CREATE TEMP TABLE IF NOT EXISTS rollup_before ON COMMIT DELETE ROWS AS "
        f"SELECT {_COLUMNS} FROM {schema}.rollup_changes WITH NO DATA"
    )


@functools.cache
def _before_sql(schema: str) -> str:
    # Anything left from an earlier merge in this transaction goes first (the CTE's delete does not
    # see the rows the insert adds).
    return (
        f"WITH earlier AS (DELETE FROM pg_temp.rollup_before) "
        f"INSERT INTO pg_temp.rollup_before ({_COLUMNS}) {contribution_sql(schema)}"
    )


@functools.cache
def _record_sql(schema: str) -> str:
    """The new contributions not among the old (+1) and the old not among the new (-1)."""
    return (
        f"WITH n AS MATERIALIZED ({contribution_sql(schema)}) "
        f"INSERT INTO {schema}.rollup_changes (sign, {_COLUMNS}) "
        f"SELECT 1, * FROM (SELECT * FROM n EXCEPT ALL SELECT {_COLUMNS} FROM pg_temp.rollup_before) AS a "
        f"UNION ALL "
        f"SELECT -1, * FROM (SELECT {_COLUMNS} FROM pg_temp.rollup_before EXCEPT ALL SELECT * FROM n) AS b"
    )


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
    ids = sorted(batch.touched_hazards())
    if not ids:
        await upsert_facts(db, batch, schema=schema)
        return
    await hold_hazards(db, ids)
    # Read after the locks (a new snapshot: READ COMMITTED), so whatever changed these hazards
    # before is committed and in what follows.
    await db.execute(sa.text(_before_table_sql(schema)))
    await db.execute(sa.text(_before_sql(schema)), {"ids": ids})
    await upsert_facts(db, batch, schema=schema)
    await db.execute(sa.text(_record_sql(schema)), {"ids": ids})
