"""Facts written from events: idempotent, order-independent merges of fact rows, and dirty days."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from services.reporting import domain, tables
from services.reporting.domain import FactBatch, Rule
from services.reporting.store.common import SCHEMA, Executor, in_uuid_order, on_schema


@dataclass(frozen=True, slots=True, eq=False)
class FactTable:
    """A fact table, its natural key and the domain's merge rule of each other column."""

    table: sa.Table
    key: str
    rules: Mapping[str, Rule]

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns a merge writes: the key, then the ruled ones."""
        return (self.key, *self.rules)


FACT_TABLES: tuple[FactTable, ...] = (
    FactTable(tables.hazards, "hazard_id", domain.HAZARD_RULES),
    FactTable(tables.dispatches, "dispatch_id", domain.DISPATCH_RULES),
    FactTable(tables.relapses, "hazard_id", domain.RELAPSE_RULES),
    FactTable(tables.actions, "event_id", domain.ACTION_RULES),
)
"""The fact tables in the order of a FactBatch's rows (hazards, dispatches, relapses, actions)."""

# Array columns are sent joined by commas (unnest cannot carry an array per row) and split again.
JOINED = "campaign_ids"


_POSTGRESQL = postgresql.dialect()  # type: ignore[no-untyped-call]


def array_type(column: sa.Column[Any]) -> str:
    """The PostgreSQL array type a column's values are sent in, from its type in tables.py."""
    kind: sa.types.TypeEngine[Any] = sa.Text() if isinstance(column.type, sa.ARRAY) else column.type
    return kind.compile(dialect=_POSTGRESQL).lower()  # an array is joined by commas, see JOINED


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


@functools.cache
def upsert_sql(fact: FactTable, *, schema: str = SCHEMA) -> sa.TextClause:
    """The merge of column arrays (see :func:`column_arrays`) into ``fact``'s table of ``schema``.

    Dynamic SQL for speed (one ``INSERT … SELECT FROM unnest(arrays)`` per batch and table), built
    from the table object: its name, its columns and their types as tables.py declares them.

    A stored row that the merge leaves as it is is not updated (``WHERE … IS DISTINCT FROM``: an
    update writes a new row version even when no value changes; the row is still locked). A
    dispatch row without its hazard's place takes it from the stored hazard, if that has it, as
    :func:`fill_places_sql` would copy it afterwards (one write instead of an insert and an update;
    the batch holds its hazards' locks, so a report committed by another batch is seen).
    """
    name, columns = fact.table.name, fact.columns
    unnest = ", ".join(f"CAST(:{c} AS {array_type(fact.table.c[c])}[])" for c in columns)
    split = {c: f"string_to_array(u.{c}, ',')" if c == JOINED else f"u.{c}" for c in columns}
    source = f"unnest({unnest}) AS u({', '.join(columns)})"
    if fact.table is tables.dispatches:
        split |= {
            c: f"CASE WHEN h.hazard_id IS NULL THEN {split[c]} ELSE h.{c} END" for c in domain.PLACE_COLUMNS
        }
        source += (
            f" LEFT JOIN {schema}.hazards h ON h.hazard_id = u.hazard_id AND u.community_id IS NULL "
            "AND h.community_id IS NOT NULL"
        )
    sets = {c: _merge_sql(name, c, rule) for c, rule in fact.rules.items()}
    return sa.text(
        f"INSERT INTO {schema}.{name} AS {name} ({', '.join(columns)}) "
        f"SELECT {', '.join(split.values())} FROM {source} "
        f"ON CONFLICT ({fact.key}) DO UPDATE SET {', '.join(f'{c} = {m}' for c, m in sets.items())} "
        f"WHERE ({', '.join(f'{name}.{c}' for c in sets)}) IS DISTINCT FROM ({', '.join(sets.values())})"
    )


def column_arrays(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, list[Any]]:
    """The rows as one list per column, the parameters of :func:`upsert_sql` (campaign ids joined)."""
    rows = rows if isinstance(rows, Sequence) else list(rows)
    arrays = {c: [row.get(c) for row in rows] for c in columns}
    if JOINED in arrays:
        arrays[JOINED] = [None if v is None else ",".join(v) for v in arrays[JOINED]]
    return arrays


async def merge_rows(db: Executor, batch: FactBatch, *, schema: str = SCHEMA) -> None:
    """Merge a batch's fact rows into the stored ones (idempotent, order-independent), places aside."""
    for fact, rows in zip(
        FACT_TABLES, (batch.hazards, batch.dispatches, batch.relapses, batch.actions), strict=True
    ):
        if rows:
            await db.execute(
                upsert_sql(fact, schema=schema), column_arrays(list(rows.values()), fact.columns)
            )


PLACE_COPY = "street_id = h.street_id, reporter_type = h.reporter_type, source = h.source"
"""The columns of a hazard's report (#18) that dispatch rows copy besides community, grid, category, campaigns."""


@functools.cache
def fill_places_sql(*, schema: str = SCHEMA, of_hazards: bool = True) -> sa.TextClause:
    """Copy their hazard's place onto dispatches that lack it (the report came in another batch).

    ``of_hazards``: only the dispatches of the hazards in the ``ids`` parameter (a live batch);
    else every dispatch lacking its place (a rebuild, once after the replay).
    """
    only = " AND d.hazard_id = ANY(CAST(:ids AS uuid[]))" if of_hazards else ""
    return sa.text(
        f"UPDATE {schema}.dispatches d SET community_id = h.community_id, grid_id = h.grid_id, "
        f"category = h.category, campaign_ids = h.campaign_ids, {PLACE_COPY} FROM {schema}.hazards h "
        f"WHERE h.hazard_id = d.hazard_id{only} "
        f"AND d.community_id IS NULL AND h.community_id IS NOT NULL"
    )


async def upsert_facts(db: Executor, batch: FactBatch, *, schema: str = SCHEMA) -> None:
    """Merge a batch's fact rows into the stored ones (idempotent, order-independent)."""
    await merge_rows(db, batch, schema=schema)
    late = in_uuid_order(batch.hazards_placing_stored_dispatches())
    if late:
        # Dispatches stored before their hazard's report came (in an earlier batch): copy its place.
        # (A dispatch of this batch whose hazard is stored took its place as it was merged.)
        await db.execute(fill_places_sql(schema=schema), {"ids": late})


async def mark_dirty(db: Executor, hazard_ids: Iterable[uuid.UUID], *, schema: str = SCHEMA) -> None:
    """Mark the days whose rollup these hazards feed as needing a recompute."""
    ids = in_uuid_order(set(hazard_ids))
    if not ids:
        return
    # DO UPDATE (not NOTHING) bumps the row's version: a refresh that read the day before this
    # transaction's facts were visible then finds the version changed and leaves the day dirty
    # (see refresh_rollup). The oldest mark stays: a summary's staleness is measured from it.
    await db.execute(_MARK_DIRTY, {"ids": ids}, execution_options=on_schema(schema))


def _mark_dirty_statement() -> sa.Insert:
    h, d, dirty = tables.hazards, tables.dispatches, tables.rollup_dirty
    ids = sa.bindparam("ids", type_=postgresql.ARRAY(sa.Uuid))
    days = sa.union(
        sa.select(h.c.report_day.label("day")).where(h.c.hazard_id == sa.any_(ids)),
        sa.select(d.c.dispatch_day).where(d.c.hazard_id == sa.any_(ids)),
    ).subquery("days")
    insert = postgresql.insert(dirty).from_select(
        ["day"], sa.select(days.c.day).where(days.c.day.is_not(None)).order_by(days.c.day)
    )
    return insert.on_conflict_do_update(
        index_elements=[dirty.c.day],
        set_={
            "version": dirty.c.version + 1,
            "marked_at": sa.func.least(dirty.c.marked_at, insert.excluded.marked_at),
        },
    )


_MARK_DIRTY = _mark_dirty_statement()
