"""Queries of the intake schema; callers own the transaction.

The hot write path (look up known report ids, probe for open duplicates, insert reports with
their outbox rows) runs on a plain asyncpg connection from :class:`WritePool`: no ORM
compilation, no per-row parameter dicts, one statement over arrays whatever the number of
reports. The Open311 view's updates and reads use SQLAlchemy sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.domain import OpenHazard, StatusChange, Unlinked
from services.intake.tables import photos, reports

# Open originals of each probe's category at the same building or inside its box, in one round trip.
# LATERAL makes it one small index lookup per probe (the partial indexes of migration 0003, each
# usable only by its own half), instead of a join whose cost grows with probes times open hazards.
_OPEN = "o.category = q.category and o.status = 'open' and o.duplicate_of is null"
_OPEN_CANDIDATES = f"""
    with q as materialized (
        select * from unnest(
            $1::int[], $2::text[], $3::text[], $4::float8[], $5::float8[], $6::float8[], $7::float8[]
        ) as q(idx, category, building_id, south, north, west, east)
    )
    select q.idx, r.* from q cross join lateral (
        select o.hazard_id, o.category, o.building_id, o.lat, o.lon, o.requested_datetime
          from intake.reports o
         where {_OPEN} and o.building_id = q.building_id
        offset 0  -- one index lookup per probe, never flattened into a join over every open hazard
    ) as r
    union all
    select q.idx, r.* from q cross join lateral (
        select o.hazard_id, o.category, o.building_id, o.lat, o.lon, o.requested_datetime
          from intake.reports o
         where {_OPEN} and o.lat between q.south and q.north and o.lon between q.west and q.east
        offset 0
    ) as r
    """


@dataclass(frozen=True, slots=True)
class Probe:
    """Where to look for open duplicates of one report."""

    index: int
    category: str
    building_id: str | None
    south: float
    north: float
    west: float
    east: float


# One statement for many hazards' non-closing changes (only an open hazard's newest event changes
# notes, agency and expected time), over arrays.
# Every SET expression reads the row as it was, so ``current`` means the same in each. The
# ``= any(ids)`` lets the rows be found by primary key: joined to the array alone, the planner
# scanned the whole table (~7 ms a batch at 30 k reports, growing with the table).
# At one instant the later arrival wins, unless it yields ties (a return to the event it caused).
_CURRENT = (
    "r.status = 'open' and (r.last_event_at is null or r.last_event_at < u.at"
    " or (r.last_event_at = u.at and not u.yields_tie))"
)
_APPLY_CHANGES = f"""
    update intake.reports r set
        status_notes = case when {_CURRENT} then u.notes else r.status_notes end,
        agency_responsible = case when {_CURRENT} and u.agency is not null then u.agency
                                  else r.agency_responsible end,
        expected_datetime = case when {_CURRENT} and u.set_expected then u.expected
                                 else r.expected_datetime end,
        last_event_at = greatest(r.last_event_at, u.at),
        updated_datetime = greatest(r.updated_datetime, u.at)
    from unnest(
             cast(:ids as uuid[]), cast(:ats as timestamptz[]), cast(:notes as text[]),
             cast(:agencies as text[]), cast(:set_expected as boolean[]), cast(:expected as timestamptz[]),
             cast(:yields_tie as boolean[])
         ) as u(hazard_id, at, notes, agency, set_expected, expected, yields_tie)
    where r.hazard_id = u.hazard_id and r.hazard_id = any(cast(:ids as uuid[]))
"""


# Closing, over arrays: the hazards themselves (final: the first closing time stays), then the open
# reports linked to them as duplicates (each names one hazard, so at most one row of u matches).
_APPLY_CLOSES = """
    update intake.reports r set
        status = 'closed',
        closed_at = coalesce(r.closed_at, u.at),
        status_notes = u.notes,
        expected_datetime = null,
        agency_responsible = coalesce(u.agency, r.agency_responsible),
        last_event_at = greatest(r.last_event_at, u.at),
        updated_datetime = greatest(r.updated_datetime, u.at)
    from unnest(
             cast(:ids as uuid[]), cast(:ats as timestamptz[]), cast(:notes as text[]),
             cast(:agencies as text[])
         ) as u(hazard_id, at, notes, agency)
    where r.hazard_id = u.hazard_id and r.hazard_id = any(cast(:ids as uuid[]))
"""
# The open reports linked to each closing hazard (u: ids, ats), with a further condition on them
# (o). One index lookup per closing hazard (LATERAL, never flattened: joined to the array
# directly, the planner scanned the whole table, ~20 ms a statement at 30 k reports).
_LINKED_OPEN = """
    (
        select u.hazard_id as original, u.at, d.hazard_id
          from unnest(cast(:ids as uuid[]), cast(:ats as timestamptz[])) as u(hazard_id, at)
         cross join lateral (
             select o.hazard_id from intake.reports o
              where o.duplicate_of = u.hazard_id and o.status = 'open' and {condition}
             offset 0
         ) as d
    ) as x
"""
_CLOSE_DUPLICATES = f"""
    update intake.reports r set
        status = 'closed',
        closed_at = x.at,
        status_notes = 'Closed with request ' || x.original::text || ', which this report duplicated.',
        expected_datetime = null,
        last_event_at = greatest(r.last_event_at, x.at),
        updated_datetime = greatest(r.updated_datetime, x.at)
    from {_LINKED_OPEN.format(condition="true")}
    where r.hazard_id = x.hazard_id
"""
# Before the linked reports are closed with their original: those observed AFTER the original's
# closure are no duplicates of it (intake linked them while its view still showed the original
# open). Their link is undone, once (the row no longer names the original afterwards), and the
# caller publishes hazard.duplicate_unlinked for each in the same transaction.
_UNLINK_LATER_SIGHTINGS = f"""
    update intake.reports r set
        duplicate_of = null,
        status_notes = 'Reported after request ' || x.original::text || ' was closed; '
                       || 'sent on for dispatch as a possible relapse, not as a duplicate.',
        updated_datetime = greatest(r.updated_datetime, x.at)
    from {_LINKED_OPEN.format(condition="o.observed_at > u.at")}
    where r.hazard_id = x.hazard_id
    returning r.hazard_id, r.report_id, x.original, x.at, r.observed_at, r.category, r.community_id,
              r.grid_id, r.urgency
"""
_LINKED_WITHIN = """
    select exists (
        select 1 from intake.reports
         where duplicate_of = any(cast(:closing as uuid[])) and hazard_id = any(cast(:changed as uuid[]))
    )
"""

Change = tuple[uuid.UUID, StatusChange, datetime]


async def apply_status_changes(session: AsyncSession, changes: Sequence[Change]) -> list[Unlinked]:
    """Apply a batch's changes to the Open311 view, in order, tolerating events out of order.

    Returns the reports whose duplicate link a closure undid (observed after the original closed).

    Closing is final: a late event of the hazard's earlier life never reopens it or overwrites its
    closing notes; among the others only an event newer than the last one applied changes the
    notes, the agency and the expected time.

    Round k holds each hazard's k-th change, so no hazard appears twice in one statement and each
    hazard's changes still apply in the order given; a round is a statement over arrays for its
    closing changes and one for the others. A closing change also settles the reports linked to
    its hazard as duplicates: when one of those has a change of its own in the batch (rare: linked
    reports are not dispatched), each close is a barrier instead, the changes before it applied
    first, then it, then the rest.
    """
    closing = [h for h, change, _ in changes if change.closes]
    unlinked: list[Unlinked] = []
    if (
        closing
        and (
            await session.execute(
                sa.text(_LINKED_WITHIN), {"closing": closing, "changed": list({h for h, _, _ in changes})}
            )
        ).scalar_one()
    ):
        pending: list[Change] = []
        for item in changes:
            if item[1].closes:
                await _apply_rounds(session, pending, unlinked)
                pending = []
                await _apply_rounds(session, [item], unlinked)
            else:
                pending.append(item)
        await _apply_rounds(session, pending, unlinked)
        return unlinked
    await _apply_rounds(session, changes, unlinked)
    return unlinked


async def _apply_rounds(session: AsyncSession, changes: Sequence[Change], unlinked: list[Unlinked]) -> None:
    rounds: list[list[Change]] = []
    seen: dict[uuid.UUID, int] = {}
    for item in changes:
        k = seen.get(item[0], 0)
        seen[item[0]] = k + 1
        if k == len(rounds):
            rounds.append([])
        rounds[k].append(item)
    for round_ in rounds:
        closes = [item for item in round_ if item[1].closes]
        plain = [item for item in round_ if not item[1].closes]
        if closes:
            unlinked.extend(await _apply_closes(session, closes))
        if plain:
            await _apply_plain(session, plain)


async def _apply_closes(session: AsyncSession, changes: Sequence[Change]) -> list[Unlinked]:
    ids, ats = [h for h, _, _ in changes], [at for _, _, at in changes]
    await session.execute(
        sa.text(_APPLY_CLOSES),
        {
            "ids": ids,
            "ats": ats,
            "notes": [c.notes for _, c, _ in changes],
            "agencies": [c.agency for _, c, _ in changes],
        },
    )
    rows = await session.execute(sa.text(_UNLINK_LATER_SIGHTINGS), {"ids": ids, "ats": ats})
    unlinked = [
        Unlinked(
            hazard_id=row.hazard_id,
            report_id=row.report_id,
            original_hazard_id=row.original,
            original_closed_at=row.at,
            observed_at=row.observed_at,
            category=row.category,
            community_id=row.community_id,
            grid_id=row.grid_id,
            urgency=row.urgency,
        )
        for row in rows
    ]
    await session.execute(sa.text(_CLOSE_DUPLICATES), {"ids": ids, "ats": ats})
    return unlinked


async def _apply_plain(session: AsyncSession, changes: Sequence[Change]) -> None:
    await session.execute(
        sa.text(_APPLY_CHANGES),
        {
            "ids": [h for h, _, _ in changes],
            "ats": [at for _, _, at in changes],
            "notes": [c.notes for _, c, _ in changes],
            "agencies": [c.agency for _, c, _ in changes],
            "set_expected": [c.expected is not None or c.clear_expected for _, c, _ in changes],
            "expected": [c.expected for _, c, _ in changes],
            "yields_tie": [c.yields_tie for _, c, _ in changes],
        },
    )


_REQUEST_COLUMNS = (
    reports.c.hazard_id,
    reports.c.category,
    reports.c.description,
    reports.c.status,
    reports.c.status_notes,
    reports.c.agency_responsible,
    reports.c.expected_datetime,
    reports.c.requested_datetime,
    reports.c.updated_datetime,
    reports.c.address,
    reports.c.building_id,
    reports.c.lat,
    reports.c.lon,
    reports.c.photos,
    reports.c.duplicate_of,
    reports.c.rectified_on_site,
)


# ---------------------------------------------------------------- photos

_PHOTO_WITH_SCOPE = sa.select(
    photos.c.photo_id,
    photos.c.owner_id,
    photos.c.owner_role,
    photos.c.hazard_id,
    photos.c.content_type,
    reports.c.grid_id,
    reports.c.agency_responsible,
).select_from(photos.outerjoin(reports, reports.c.hazard_id == photos.c.hazard_id))
_HAZARD_SCOPE = sa.select(reports.c.grid_id, reports.c.agency_responsible)


async def get_photo(session: AsyncSession, photo_id: uuid.UUID) -> Any | None:
    """A photo's row with its hazard's grid and agency (None when the photo is not attached)."""
    return (await session.execute(_PHOTO_WITH_SCOPE.where(photos.c.photo_id == photo_id))).first()


async def get_hazard_scope(session: AsyncSession, hazard_id: uuid.UUID) -> Any | None:
    """The grid and agency of a reported hazard, or None."""
    return (await session.execute(_HAZARD_SCOPE.where(reports.c.hazard_id == hazard_id))).first()


async def add_photo(session: AsyncSession, row: dict[str, Any]) -> None:
    """Record a photo; the same photo again (same uploader, same bytes) may only gain a hazard."""
    statement = pg_insert(photos).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=[photos.c.photo_id],
        set_={"hazard_id": sa.func.coalesce(photos.c.hazard_id, statement.excluded.hazard_id)},
    )
    await session.execute(statement)


async def attach_photos(
    session: AsyncSession, *, hazard_id: uuid.UUID, owner_id: str, photo_ids: Sequence[uuid.UUID]
) -> None:
    """Attach the owner's not yet attached photos to a hazard (another's photo is never taken)."""
    await session.execute(
        sa.update(photos)
        .where(
            photos.c.photo_id.in_(list(photo_ids)),
            photos.c.owner_id == owner_id,
            photos.c.hazard_id.is_(None),
        )
        .values(hazard_id=hazard_id)
    )


async def list_requests(
    session: AsyncSession,
    *,
    hazard_ids: Sequence[uuid.UUID] | None = None,
    service_codes: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    statuses: Sequence[str] | None = None,
    limit: int = 1000,
) -> list[Any]:
    """Reports for the Open311 GET requests, newest first."""
    query = sa.select(*_REQUEST_COLUMNS)
    if hazard_ids is not None:
        query = query.where(reports.c.hazard_id.in_(list(hazard_ids)))
    if service_codes:
        query = query.where(reports.c.category.in_(list(service_codes)))
    if start is not None:
        query = query.where(reports.c.requested_datetime >= start)
    if end is not None:
        query = query.where(reports.c.requested_datetime <= end)
    if statuses:
        query = query.where(reports.c.status.in_(list(statuses)))
    query = query.order_by(reports.c.requested_datetime.desc(), reports.c.hazard_id).limit(limit)
    return list((await session.execute(query)).all())


# ---------------------------------------------------------------- the hot write path, on asyncpg directly
#
# Single reports and batches are written by these three statements on a plain asyncpg connection
# (no ORM compilation, no per-row parameter dicts): a batch of N reports costs the same few round
# trips as one report. Their meaning is the SQLAlchemy queries' above.

_RAW_EXISTING = (
    "select hazard_id, report_id, body_hash, status, duplicate_of from intake.reports "
    "where report_id = any($1::uuid[])"
)
# Columns of intake.reports written at intake, with the array type each is sent as. Array
# columns (photos, campaign ids) travel as JSON text, since unnest would flatten a text[][].
_RAW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hazard_id", "uuid"),
    ("report_id", "uuid"),
    ("body_hash", "text"),
    ("reporter_id", "text"),
    ("source", "text"),
    ("category", "text"),
    ("grid_id", "text"),
    ("community_id", "text"),
    ("description", "text"),
    ("lat", "float8"),
    ("lon", "float8"),
    ("address", "text"),
    ("building_id", "text"),
    ("photos", "text"),
    ("observed_at", "timestamptz"),
    ("rectified_on_site", "bool"),
    ("campaign_ids", "text"),
    ("urgency", "text"),
    ("duplicate_of", "uuid"),
    ("status", "text"),
    ("status_notes", "text"),
    ("requested_datetime", "timestamptz"),
    ("updated_datetime", "timestamptz"),
    ("closed_at", "timestamptz"),
)
_JSON_ARRAYS = frozenset({"photos", "campaign_ids"})
_OUTBOX_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "uuid"),
    ("topic", "text"),
    ("key", "text"),
    ("value", "bytea"),
    ("headers", "text"),
)


def _select_list(columns: Sequence[tuple[str, str]], first: int) -> tuple[str, str]:
    names = [name for name, _ in columns]
    unnest = ", ".join(f"${first + n}::{kind}[]" for n, (_, kind) in enumerate(columns))
    picked = ", ".join(
        f"array(select jsonb_array_elements_text(u.{name}::jsonb))"
        if name in _JSON_ARRAYS
        else "u.headers::jsonb"
        if name == "headers"
        else f"u.{name}"
        for name in names
    )
    return f"unnest({unnest}) with ordinality as u({', '.join(names)}, n)", picked


_REPORTS_FROM, _REPORTS_PICK = _select_list(_RAW_COLUMNS, 1)
_OUTBOX_FROM, _OUTBOX_PICK = _select_list(_OUTBOX_COLUMNS, len(_RAW_COLUMNS) + 1)
# Reports whose id is new, and the outbox rows of the request, in one statement; rows keep the
# order given (the callers sort reports by report id so that concurrent writers take the unique
# index's locks in one order). A report id already stored (or committed by another transaction
# meanwhile) fails the statement with a unique violation, as the outbox row of its event (whose id
# is derived from the report id) would: the caller rolls back and looks the ids up first. A plain
# insert, not ``on conflict do nothing``: a speculative insertion costs each row one more lookup
# in the unique index and one more WAL record (#20), and a conflict had to roll back anyway.
_RAW_INSERT = f"""
with inserted as (
    insert into intake.reports ({", ".join(name for name, _ in _RAW_COLUMNS)})
    select {_REPORTS_PICK} from {_REPORTS_FROM} order by u.n
    returning report_id
), staged as (
    insert into intake.outbox (event_id, topic, key, value, headers)
    select {_OUTBOX_PICK} from {_OUTBOX_FROM} order by u.n
)
select count(*) from inserted
"""


async def raw_existing_reports(conn: Any, report_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """``existing_reports`` on an asyncpg connection."""
    if not report_ids:
        return {}
    rows = await conn.fetch(_RAW_EXISTING, list(report_ids))
    return {row["report_id"]: _Stored(*row.values()) for row in rows}


@dataclass(frozen=True, slots=True)
class _Stored:
    hazard_id: uuid.UUID
    report_id: uuid.UUID
    body_hash: str
    status: str
    duplicate_of: uuid.UUID | None


async def raw_open_candidates(conn: Any, probes: Sequence[Probe]) -> dict[int, list[OpenHazard]]:
    """``open_candidates`` on an asyncpg connection."""
    if not probes:
        return {}
    rows = await conn.fetch(
        _OPEN_CANDIDATES,
        [p.index for p in probes],
        [p.category for p in probes],
        [p.building_id for p in probes],
        [p.south for p in probes],
        [p.north for p in probes],
        [p.west for p in probes],
        [p.east for p in probes],
    )
    found: dict[int, list[OpenHazard]] = {}
    for row in rows:
        found.setdefault(row["idx"], []).append(
            OpenHazard(
                row["hazard_id"],
                row["category"],
                row["building_id"],
                row["lat"],
                row["lon"],
                row["requested_datetime"],
            )
        )
    return found


async def raw_insert(conn: Any, rows: Sequence[dict[str, Any]], outbox_rows: Sequence[dict[str, Any]]) -> int:
    """Insert the reports whose id is new and every outbox row; returns how many reports were inserted."""
    args: list[list[Any]] = []
    for name, _ in _RAW_COLUMNS:
        if name in _JSON_ARRAYS:
            args.append([orjson.dumps(list(r[name])).decode() for r in rows])
        else:
            args.append([r[name] for r in rows])
    for name, _ in _OUTBOX_COLUMNS:
        if name == "headers":
            args.append([orjson.dumps(r[name]).decode() for r in outbox_rows])
        else:
            args.append([r[name] for r in outbox_rows])
    return int(await conn.fetchval(_RAW_INSERT, *args))


async def _keep_session(conn: Any) -> None:
    # Instead of asyncpg's full reset query (a round trip per release): the hot path sets no
    # session state, and asyncpg still rolls back a transaction left open before calling this.
    return None


class WritePool:
    """A small asyncpg pool of the hot write path, opened at first use, closed by :meth:`run`'s end.

    No ping before each use (SQLAlchemy's ``pool_pre_ping`` costs a round trip per checkout);
    a connection the server dropped fails once and the caller retries (see ``Intake.write``).
    """

    def __init__(self, url: str, *, max_size: int, application_name: str = "hazard-intake") -> None:
        self.dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
        self.max_size = max_size
        self.application_name = application_name
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _get(self) -> Any:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(
                        self.dsn,
                        min_size=1,
                        max_size=self.max_size,
                        reset=_keep_session,
                        server_settings={
                            "application_name": self.application_name,
                            # The table grows from empty under load; a generic plan made while it
                            # was small (sequential scans in the duplicate probe) would stay cached
                            # until the first ANALYZE and cost seconds per batch. Custom plans use
                            # the table's size at each execution (~0.1 ms of planning).
                            "plan_cache_mode": "force_custom_plan",
                        },
                    )
        return self._pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        """A connection inside a transaction, committed when the block ends without an error."""
        pool = await self._get()
        async with pool.acquire() as conn, conn.transaction():
            yield conn

    async def close(self) -> None:
        """Close the connections (the next use opens a new pool)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def run(self) -> None:
        """A background loop of the service runtime whose only job is closing the pool at shutdown."""
        try:
            await asyncio.Event().wait()
        finally:
            await self.close()


# -- reconciliation: accepted reports no dispatch decision has reached --------------------------------

# An original report (not a duplicate, not rectified on site: those are decided at intake) stays
# 'open' with no lifecycle event applied until dispatch's decision (dispatched or referred to the
# operators) comes back. No index names last_event_at (intake_0013: the view's updates set it, and
# would not be HOT): the undecided are found among the open originals, which the partial index
# reports_open_near holds; ``lat is not null`` (always true: the column is not null) is its
# predicate's last term, which the planner must see to use that index.
UNDECIDED = "status = 'open' and duplicate_of is null and lat is not null and last_event_at is null"


async def undecided_summary(session: AsyncSession, older_than_s: float) -> tuple[int, float]:
    """(how many reports are undecided for longer than ``older_than_s``, the oldest one's age in s)."""
    row = (
        await session.execute(
            sa.text(
                "select count(*) filter (where requested_datetime < now() - make_interval(secs => :s)), "
                "coalesce(extract(epoch from now() - min(requested_datetime)), 0) "
                f"from intake.reports where {UNDECIDED}"
            ),
            {"s": older_than_s},
        )
    ).one()
    return int(row[0]), float(row[1])


async def undecided_reports(session: AsyncSession, older_than_s: float, limit: int) -> list[dict[str, Any]]:
    """The oldest reports undecided for longer than ``older_than_s``, oldest first, with their age."""
    rows = await session.execute(
        sa.text(
            "select hazard_id, report_id, category, grid_id, community_id, reporter_id, source, "
            "requested_datetime, extract(epoch from now() - requested_datetime) as age_s "
            f"from intake.reports where {UNDECIDED} "
            "and requested_datetime < now() - make_interval(secs => :s) "
            "order by requested_datetime, hazard_id limit :limit"
        ),
        {"s": older_than_s, "limit": limit},
    )
    return [dict(r._mapping) for r in rows]


class IntakeRepository:
    """The session-bound reads and writes of intake's use cases (a unit of work's ``repo``).

    The hot write path (reports and their events, many requests per transaction) stays on the
    asyncpg :class:`WritePool` behind ``raw_*`` above: the intake throughput bench showed it pays.
    """

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def apply_status_changes(self, changes: Sequence[Change]) -> list[Unlinked]:
        """Apply lifecycle changes to the Open311 view; the reports whose duplicate link a closure undid."""
        return await apply_status_changes(self.session, changes)

    async def list_requests(self, **filters: Any) -> list[Any]:
        """Open311 requests by ids or by filters (see :func:`list_requests`)."""
        return await list_requests(self.session, **filters)

    async def undecided_summary(self, older_than_s: float) -> tuple[int, float]:
        """How many accepted reports no decision reached, and the oldest one's age."""
        return await undecided_summary(self.session, older_than_s)

    async def undecided_reports(self, older_than_s: float, limit: int) -> list[dict[str, Any]]:
        """The oldest undecided reports."""
        return await undecided_reports(self.session, older_than_s, limit)
