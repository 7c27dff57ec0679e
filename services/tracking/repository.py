"""Statements of the tracking schema, as methods of :class:`TrackingRepository` bound to a unit of
work's session (SQLAlchemy Core from ``tables.py``; the batch writes over arrays are ``sa.text``
statements, one round trip whatever the batch). They flush; the unit of work commits."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.tracking import tables
from services.tracking.domain import Case, ClosedCase, Entry, actor_of
from shared import events as ev
from shared.db import array_param
from shared.idle import wake_on_commit

_T = tables.timeline
_C = tables.cases
_TIMERS = tables.rectification_timers
_H = tables.hotspots

_METRES_PER_DEGREE_LAT = 111_320.0


def _event_from_row(row: Any) -> ev.AnyEvent:
    return ev.parse_event_obj(
        {
            "event_id": row.event_id,
            "event_type": row.event_type,
            "occurred_at": row.occurred_at,
            "hazard_id": row.hazard_id,
            "producer": row.producer,
            "causation_id": row.causation_id,
            "payload": row.payload,
        }
    )


# The cases' rows locked in hazard order (the lock order every writer follows).
_LOCK_CASES = (
    sa.select(_C.c.hazard_id)
    .where(_C.c.hazard_id == sa.any_(array_param("ids", _C.c.hazard_id)))
    .order_by(_C.c.hazard_id)
    .with_for_update()
)
_LOAD_ENTRIES = (
    sa.select(_T).where(_T.c.hazard_id == sa.any_(array_param("ids", _T.c.hazard_id))).order_by(_T.c.seq)
)
# ``order_event_id <> all('{}')`` is true: with nothing to keep, every open timer of the cases goes.
_CANCEL_TIMERS = (
    sa.update(_TIMERS)
    .where(
        _TIMERS.c.hazard_id == sa.any_(array_param("hazard_ids", _TIMERS.c.hazard_id)),
        _TIMERS.c.fired_at.is_(None),
        _TIMERS.c.cancelled_at.is_(None),
        _TIMERS.c.order_event_id != sa.all_(array_param("keep", _TIMERS.c.order_event_id)),
    )
    .values(cancelled_at=sa.bindparam("now", type_=_TIMERS.c.cancelled_at.type))
)

_ADD_ENTRIES = sa.text(
    """
    insert into tracking.timeline
        (hazard_id, event_id, event_type, occurred_at, producer, actor, causation_id, payload)
    select u.hazard_id, u.event_id, u.event_type, u.occurred_at, u.producer, u.actor, u.causation_id,
           cast(u.payload as jsonb)
      from unnest(
        cast(:hazard_id as uuid[]), cast(:event_id as uuid[]), cast(:event_type as text[]),
        cast(:occurred_at as timestamptz[]), cast(:producer as text[]), cast(:actor as text[]),
        cast(:causation_id as uuid[]), cast(:payload as text[])
      ) with ordinality as u(hazard_id, event_id, event_type, occurred_at, producer, actor, causation_id,
                             payload, n)
     order by u.n  -- seq follows the batch's order
    on conflict (hazard_id, event_id) do nothing  -- an event belongs to one hazard (tracking_0008)
    """
)


def _case_row(case: Case, *, hotspot: bool, now: datetime) -> dict[str, Any]:
    return {
        "hazard_id": case.hazard_id,
        "state": case.state,
        "category": case.category,
        "grid_id": case.grid_id,
        "community_id": case.community_id,
        "building_id": case.building_id,
        "lat": case.lat,
        "lon": case.lon,
        "place_key": case.place_key,
        "reporter_id": case.reporter_id,
        "reported_at": case.reported_at,
        "rectified_on_site": case.rectified_on_site,
        "department_id": case.department_id,
        "departments_involved": list(case.departments_involved),
        "dispatch_id": case.dispatch_id,
        "receipt_deadline": case.receipt_deadline,
        "round": case.round,
        "order_event_id": case.order_event_id,
        "rectification_deadline": case.rectification_deadline,
        "rectification_overdue": case.rectification_overdue,
        "rework_count": case.rework_count,
        "closed_at": case.closed_at,
        "closed_by": case.closed_by,
        "closed_department_id": case.closed_department_id,
        "close_reason": case.close_reason,
        "relapse_of": case.relapse_of,
        "duplicate_of": case.duplicate_of,
        "hotspot": hotspot,
        "updated_at": now,
    }


# (column, SQL array type) of the case rows, in _case_row's order; departments_involved travels
# as JSON text because unnest cannot take an array of arrays.
_CASE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hazard_id", "uuid"),
    ("state", "text"),
    ("category", "text"),
    ("grid_id", "text"),
    ("community_id", "text"),
    ("building_id", "text"),
    ("lat", "float8"),
    ("lon", "float8"),
    ("place_key", "text"),
    ("reporter_id", "text"),
    ("reported_at", "timestamptz"),
    ("rectified_on_site", "boolean"),
    ("department_id", "text"),
    ("departments_involved", "text"),
    ("dispatch_id", "uuid"),
    ("receipt_deadline", "timestamptz"),
    ("round", "integer"),
    ("order_event_id", "uuid"),
    ("rectification_deadline", "timestamptz"),
    ("rectification_overdue", "boolean"),
    ("rework_count", "integer"),
    ("closed_at", "timestamptz"),
    ("closed_by", "text"),
    ("closed_department_id", "text"),
    ("close_reason", "text"),
    ("relapse_of", "uuid"),
    ("duplicate_of", "uuid"),
    ("hotspot", "boolean"),
    ("updated_at", "timestamptz"),
)
_CASE_NAMES = [name for name, _ in _CASE_COLUMNS]
_SAVE_CASES = sa.text(
    "insert into tracking.cases ({cols}) select {select} from unnest({arrays}) as u({cols}) "
    "on conflict (hazard_id) do update set {updates}".format(
        cols=", ".join(_CASE_NAMES),
        select=", ".join(
            "array(select jsonb_array_elements_text(cast(u.departments_involved as jsonb)))"
            if name == "departments_involved"
            else f"u.{name}"
            for name in _CASE_NAMES
        ),
        arrays=", ".join(f"cast(:{name} as {kind}[])" for name, kind in _CASE_COLUMNS),
        updates=", ".join(
            # Once at a hotspot, a case stays marked.
            "hotspot = tracking.cases.hotspot or excluded.hotspot"
            if name == "hotspot"
            else f"{name} = excluded.{name}"
            for name in _CASE_NAMES
            if name != "hazard_id"
        ),
    )
)


OPEN_STATES = (
    "new",
    "reported",
    "referred_to_operators",
    "dispatched",
    "acknowledged",
    "rectification_ordered",
    "rectified",
    "verification_failed",
    "verified",
)
"""States of a case not yet closed (nor folded into another as its duplicate)."""


@dataclass(frozen=True, slots=True)
class PlaceQuery:
    """Where to look for closed cases a new report may relapse: category, building, point, since when."""

    hazard_id: uuid.UUID
    category: str
    building_id: str | None
    lat: float
    lon: float
    distance_m: float
    closed_since: datetime


# Closed cases of each query's category in the same building, or inside its box, for a whole batch
# in one round trip. Two LATERAL branches, each one small lookup per query on its own partial index
# (a single join with an OR let the planner scan every case once per batch: 33 ms a batch at 45 k
# cases); UNION drops a case found by both. Two more branches look the same way at the closed
# hazards of the history import (tracking_0007, #18), which have no case.
_CLOSED = (
    "c.category = q.category and c.closed_at is not null and c.closed_at >= q.since "
    "and c.state = 'closed' and c.hazard_id <> q.hazard and c.lat is not null"
)
_CLOSED_COLUMNS = "c.hazard_id, c.category, c.building_id, c.lat, c.lon, c.closed_at, c.closed_department_id"
_IMPORTED = "c.category = q.category and c.closed_at >= q.since and c.hazard_id <> q.hazard"
_IMPORTED_COLUMNS = "c.hazard_id, c.category, c.building_id, c.lat, c.lon, c.closed_at, c.department_id as closed_department_id"
_CLOSED_NEAR = sa.text(
    f"""
    with q as materialized (
        select * from unnest(
            cast(:i as int[]), cast(:hazard as uuid[]), cast(:category as text[]), cast(:building as text[]),
            cast(:lat_lo as float8[]), cast(:lat_hi as float8[]), cast(:lon_lo as float8[]),
            cast(:lon_hi as float8[]), cast(:since as timestamptz[])
        ) as q(i, hazard, category, building, lat_lo, lat_hi, lon_lo, lon_hi, since)
    )
    select q.i, c.* from q cross join lateral (
        select {_CLOSED_COLUMNS} from tracking.cases c
         where {_CLOSED} and q.building is not null and c.building_id = q.building
        offset 0
    ) as c
    union
    select q.i, c.* from q cross join lateral (
        select {_CLOSED_COLUMNS} from tracking.cases c
         where {_CLOSED} and c.lat between q.lat_lo and q.lat_hi and c.lon between q.lon_lo and q.lon_hi
        offset 0
    ) as c
    union
    select q.i, c.* from q cross join lateral (
        select {_IMPORTED_COLUMNS} from tracking.imported_closures c
         where {_IMPORTED} and q.building is not null and c.building_id = q.building
        offset 0
    ) as c
    union
    select q.i, c.* from q cross join lateral (
        select {_IMPORTED_COLUMNS} from tracking.imported_closures c
         where {_IMPORTED} and c.lat between q.lat_lo and q.lat_hi and c.lon between q.lon_lo and q.lon_hi
        offset 0
    ) as c
    """
)


@dataclass(frozen=True, slots=True)
class Hotspot:
    """A place with repeated relapses."""

    place_key: str
    relapses: int
    categories: list[str]
    community_id: str | None
    grid_id: str | None
    first_relapse_at: datetime
    last_relapse_at: datetime
    last_hazard_id: uuid.UUID
    flagged_at: datetime | None


def relapse_window_start(observed_at: datetime, window_days: int) -> datetime:
    """The earliest closure a report seen at ``observed_at`` can relapse from."""
    return observed_at - timedelta(days=window_days)


# Commits that add or move timers wake this process's timer loop (shared.idle).
TIMERS_WAKE = "tracking.timers"


class TrackingRepository:
    """The tracking schema's statements, bound to one session (they flush; the unit of work commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_notifications(self, events: Sequence[ev.HazardNotified]) -> None:
        """Keep delivery records (the same one twice is kept once)."""
        if events:
            await self.session.execute(
                pg_insert(tables.notifications)
                .values(
                    [
                        {
                            "event_id": e.event_id,
                            "hazard_id": e.hazard_id,
                            "occurred_at": e.occurred_at,
                            "causation_id": e.causation_id,
                            "payload": e.payload.model_dump(mode="json"),
                        }
                        for e in events
                    ]
                )
                .on_conflict_do_nothing()
            )

    async def list_notifications(self, hazard_id: uuid.UUID) -> list[Any]:
        """A hazard's delivery records, oldest first."""
        n = tables.notifications.c
        return list(
            (
                await self.session.execute(
                    sa.select(tables.notifications)
                    .where(n.hazard_id == hazard_id)
                    .order_by(n.occurred_at, n.event_id)
                )
            ).all()
        )

    async def add_imported_closures(self, events: Sequence[ev.HazardImported]) -> None:
        """Keep the closed hazards of the history import where relapse detection looks (once each).

        An imported hazard not closed is no case and is not kept: it can have no relapse.
        """
        rows = [
            {
                "hazard_id": e.hazard_id,
                "category": e.payload.category,
                "building_id": e.payload.location.building_id,
                "lat": e.payload.location.lat,
                "lon": e.payload.location.lon,
                "closed_at": e.payload.closed_at,
                "department_id": e.payload.department_id,
                "grid_id": e.payload.grid_id,
                "community_id": e.payload.community_id,
            }
            for e in events
            if e.payload.closed_at is not None
        ]
        if rows:
            await self.session.execute(
                pg_insert(tables.imported_closures).values(rows).on_conflict_do_nothing()
            )

    async def lock_cases(self, hazard_ids: Iterable[uuid.UUID]) -> None:
        """Lock the existing case rows so concurrent writers (consumer, API, timers) take turns."""
        ids = list(set(hazard_ids))
        if ids:
            await self.session.execute(_LOCK_CASES, {"ids": ids})

    async def load_entries(self, hazard_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Entry]]:
        """The stored timeline of each case (cases without entries map to an empty list)."""
        ids = list(set(hazard_ids))
        found: dict[uuid.UUID, list[Entry]] = {hazard_id: [] for hazard_id in ids}
        if not ids:
            return found
        rows = await self.session.execute(_LOAD_ENTRIES, {"ids": ids})
        for row in rows:
            found[row.hazard_id].append(Entry(seq=row.seq, event=_event_from_row(row)))
        return found

    async def add_entries(self, events: Sequence[ev.AnyEvent]) -> None:
        """Append events to their cases' timelines, in this order (an event already there is kept as it was).

        One statement over arrays, whatever the number of events (an executemany would be one
        execution per row in the database and a parameter set per row in SQLAlchemy).
        """
        if not events:
            return
        await self.session.execute(
            _ADD_ENTRIES,
            {
                "hazard_id": [e.hazard_id for e in events],
                "event_id": [e.event_id for e in events],
                "event_type": [e.TYPE for e in events],
                "occurred_at": [e.occurred_at for e in events],
                "producer": [e.producer for e in events],
                "actor": [actor_of(e) for e in events],
                "causation_id": [e.causation_id for e in events],
                "payload": [e.payload.model_dump_json() for e in events],  # type: ignore[attr-defined]
            },
        )

    async def mark_applied(self, event_ids: Sequence[uuid.UUID]) -> None:
        """Record this service's own events in its inbox, so they are skipped when they come back from the topic.

        One inbox row holding them all (``shared.db.inbox_table``); no lock is needed: nobody else
        can apply them before this transaction publishes them.
        """
        if event_ids:
            await self.session.execute(sa.insert(tables.inbox), {"event_ids": list(event_ids)})

    async def save_cases(self, cases: Sequence[Case], *, hotspots: set[uuid.UUID], now: datetime) -> None:
        """Write the cases' projection rows (insert or replace); ``hotspots`` names cases at a hotspot place."""
        if not cases:
            return
        rows = [_case_row(case, hotspot=case.hazard_id in hotspots, now=now) for case in cases]
        params: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in _CASE_NAMES}
        params["departments_involved"] = [orjson.dumps(d).decode() for d in params["departments_involved"]]
        await self.session.execute(_SAVE_CASES, params)

    async def get_case_row(self, hazard_id: uuid.UUID, *, lock: bool = False) -> Any | None:
        """The projection row of one case, or None."""
        query = sa.select(_C).where(_C.c.hazard_id == hazard_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).first()

    async def list_cases(
        self,
        *,
        grid_id: str | None,
        department_id: str | None,
        reporter_id: str | None,
        states: Sequence[str],
        limit: int,
        offset: int,
        rectification_extension_awaiting: bool = False,
    ) -> list[Any]:
        """Case rows, newest report first, scoped by grid, holding department and reporter, filtered by state.

        ``rectification_extension_awaiting``: only cases awaiting rectification whose latest rectification
        deadline extension request (since the round's order) awaits a decision.
        """
        query = sa.select(_C)
        if rectification_extension_awaiting:
            latest = (
                sa.select(_T.c.event_type)
                .where(
                    _T.c.hazard_id == _C.c.hazard_id,
                    sa.or_(
                        _T.c.event_type == "hazard.rectification_ordered",
                        sa.and_(
                            _T.c.event_type.in_(["hazard.extension_requested", "hazard.extension_decided"]),
                            _T.c.payload["stage"].astext == "rectification",
                        ),
                    ),
                )
                .order_by(_T.c.occurred_at.desc(), _T.c.seq.desc())
                .limit(1)
                .scalar_subquery()
            )
            query = query.where(_C.c.state == "rectification_ordered", latest == "hazard.extension_requested")
        if grid_id is not None:
            query = query.where(_C.c.grid_id == grid_id)
        if department_id is not None:
            query = query.where(_C.c.department_id == department_id)
        if reporter_id is not None:
            query = query.where(_C.c.reporter_id == reporter_id)
        if states:
            query = query.where(_C.c.state.in_(list(states)))
        query = (
            query.order_by(_C.c.reported_at.desc().nulls_last(), _C.c.hazard_id).limit(limit).offset(offset)
        )
        return list((await self.session.execute(query)).all())

    async def list_duplicates(self, hazard_id: uuid.UUID) -> list[uuid.UUID]:
        """Hazards linked to this one as its duplicates."""
        rows = await self.session.execute(
            sa.select(_C.c.hazard_id).where(_C.c.duplicate_of == hazard_id).order_by(_C.c.reported_at)
        )
        return list(rows.scalars())

    async def list_relapses(self, hazard_id: uuid.UUID) -> list[uuid.UUID]:
        """Hazards that relapsed from this one."""
        rows = await self.session.execute(
            sa.select(_C.c.hazard_id).where(_C.c.relapse_of == hazard_id).order_by(_C.c.reported_at)
        )
        return list(rows.scalars())

    async def list_closed_near(self, queries: Sequence[PlaceQuery]) -> list[list[ClosedCase]]:
        """For each query, closed cases of its category in the same building or inside a box around its point.

        One round trip for a whole batch; the domain then measures the exact distance.
        """
        found: list[list[ClosedCase]] = [[] for _ in queries]
        if not queries:
            return found
        d_lat = [q.distance_m / _METRES_PER_DEGREE_LAT for q in queries]
        d_lon = [
            q.distance_m / (_METRES_PER_DEGREE_LAT * max(math.cos(math.radians(q.lat)), 0.01))
            for q in queries
        ]
        rows = await self.session.execute(
            _CLOSED_NEAR,
            {
                "i": list(range(len(queries))),
                "hazard": [q.hazard_id for q in queries],
                "category": [q.category for q in queries],
                "building": [q.building_id or None for q in queries],
                "lat_lo": [q.lat - d for q, d in zip(queries, d_lat, strict=True)],
                "lat_hi": [q.lat + d for q, d in zip(queries, d_lat, strict=True)],
                "lon_lo": [q.lon - d for q, d in zip(queries, d_lon, strict=True)],
                "lon_hi": [q.lon + d for q, d in zip(queries, d_lon, strict=True)],
                "since": [q.closed_since for q in queries],
            },
        )
        for r in rows:
            found[r.i].append(
                ClosedCase(
                    hazard_id=r.hazard_id,
                    category=r.category,
                    building_id=r.building_id,
                    lat=r.lat,
                    lon=r.lon,
                    closed_at=r.closed_at,
                    department_id=r.closed_department_id,
                )
            )
        return found

    async def count_relapse(self, relapse: ev.HazardRelapsed, *, case: Case, min_relapses: int) -> int:
        """Count one relapse at its place; returns the place's relapses so far (flagged at ``min_relapses``)."""
        p = relapse.payload
        stmt = pg_insert(_H).values(
            place_key=p.place_key,
            relapses=1,
            categories=[case.category] if case.category else [],
            community_id=case.community_id,
            grid_id=case.grid_id,
            first_relapse_at=relapse.occurred_at,
            last_relapse_at=relapse.occurred_at,
            last_hazard_id=relapse.hazard_id,
            flagged_at=relapse.occurred_at if min_relapses <= 1 else None,
        )
        relapses = _H.c.relapses + 1
        categories = sa.case(
            (
                sa.or_(
                    stmt.excluded.categories == sa.text("'{}'"),
                    _H.c.categories.contains(stmt.excluded.categories),
                ),
                _H.c.categories,
            ),
            else_=_H.c.categories.concat(stmt.excluded.categories),
        )
        upsert = stmt.on_conflict_do_update(
            index_elements=[_H.c.place_key],
            set_={
                "relapses": relapses,
                "categories": categories,
                "last_relapse_at": sa.func.greatest(_H.c.last_relapse_at, stmt.excluded.last_relapse_at),
                "last_hazard_id": stmt.excluded.last_hazard_id,
                "flagged_at": sa.func.coalesce(
                    _H.c.flagged_at,
                    sa.case((relapses >= min_relapses, stmt.excluded.last_relapse_at), else_=None),
                ),
            },
        ).returning(_H.c.relapses)
        return int((await self.session.execute(upsert)).scalar_one())

    async def list_hotspots(self, *, min_relapses: int, limit: int = 100) -> list[Hotspot]:
        """Places with at least ``min_relapses`` relapses, most relapses first."""
        rows = await self.session.execute(
            sa.select(_H)
            .where(_H.c.relapses >= min_relapses)
            .order_by(_H.c.relapses.desc(), _H.c.last_relapse_at.desc())
            .limit(limit)
        )
        return [
            Hotspot(
                place_key=r.place_key,
                relapses=r.relapses,
                categories=list(r.categories),
                community_id=r.community_id,
                grid_id=r.grid_id,
                first_relapse_at=r.first_relapse_at,
                last_relapse_at=r.last_relapse_at,
                last_hazard_id=r.last_hazard_id,
                flagged_at=r.flagged_at,
            )
            for r in rows
        ]

    async def add_timers(self, orders: Sequence[ev.HazardRectificationOrdered]) -> None:
        """One durable timer per rectification order, due at its deadline."""
        if orders:
            wake_on_commit(self.session, TIMERS_WAKE)
            await self.session.execute(
                pg_insert(_TIMERS).on_conflict_do_nothing(),
                [
                    {
                        "order_event_id": o.event_id,
                        "hazard_id": o.hazard_id,
                        "round": o.payload.round,
                        "due_at": o.payload.deadline,
                    }
                    for o in orders
                ],
            )

    async def reschedule_timers(self, moves: Sequence[tuple[uuid.UUID, datetime]]) -> None:
        """Move open rectification timers (by order) to a new due time: an approved extension."""
        if moves:
            wake_on_commit(self.session, TIMERS_WAKE)
        for order_event_id, due_at in moves:
            await self.session.execute(
                sa.update(_TIMERS)
                .where(
                    _TIMERS.c.order_event_id == order_event_id,
                    _TIMERS.c.fired_at.is_(None),
                    _TIMERS.c.cancelled_at.is_(None),
                )
                .values(due_at=due_at)
            )

    async def cancel_timers(
        self, *, hazard_ids: Sequence[uuid.UUID], keep: Sequence[uuid.UUID], now: datetime
    ) -> None:
        """Cancel the open timers of these cases except the ones of the orders still awaiting rectification."""
        if not hazard_ids:
            return
        await self.session.execute(
            _CANCEL_TIMERS, {"hazard_ids": list(set(hazard_ids)), "keep": list(keep), "now": now}
        )

    async def seconds_to_next_timer(self, *, now: datetime) -> float | None:
        """Seconds from ``now`` until the earliest open timer falls due (None: there is none)."""
        value = (
            await self.session.execute(
                sa.select(sa.extract("epoch", sa.func.min(_TIMERS.c.due_at) - now)).where(
                    _TIMERS.c.fired_at.is_(None), _TIMERS.c.cancelled_at.is_(None)
                )
            )
        ).scalar()
        return None if value is None else float(value)

    async def list_due_timers(self, *, now: datetime, limit: int) -> list[Any]:
        """Due, open timers, oldest first (not locked: see :func:`claim_timers`)."""
        rows = await self.session.execute(
            sa.select(_TIMERS.c.order_event_id, _TIMERS.c.hazard_id)
            .where(_TIMERS.c.due_at <= now, _TIMERS.c.fired_at.is_(None), _TIMERS.c.cancelled_at.is_(None))
            .order_by(_TIMERS.c.due_at)
            .limit(limit)
        )
        return list(rows)

    async def claim_timers(self, order_event_ids: Sequence[uuid.UUID], *, now: datetime) -> list[Any]:
        """Lock those of these timers that are still due and open and no other replica holds (SKIP LOCKED)."""
        if not order_event_ids:
            return []
        rows = await self.session.execute(
            sa.select(_TIMERS.c.order_event_id, _TIMERS.c.hazard_id, _TIMERS.c.round, _TIMERS.c.due_at)
            .where(
                _TIMERS.c.order_event_id.in_(list(order_event_ids)),
                _TIMERS.c.due_at <= now,
                _TIMERS.c.fired_at.is_(None),
                _TIMERS.c.cancelled_at.is_(None),
            )
            .order_by(_TIMERS.c.due_at)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def close_timers(
        self, *, fired: Sequence[uuid.UUID], cancelled: Sequence[uuid.UUID], now: datetime
    ) -> None:
        """Mark timers fired or cancelled."""
        if fired:
            await self.session.execute(
                sa.update(_TIMERS).where(_TIMERS.c.order_event_id.in_(list(fired))).values(fired_at=now)
            )
        if cancelled:
            await self.session.execute(
                sa.update(_TIMERS)
                .where(_TIMERS.c.order_event_id.in_(list(cancelled)))
                .values(cancelled_at=now)
            )

    async def count_by_state(self) -> dict[str, int]:
        """How many cases are in each state."""
        rows = await self.session.execute(sa.select(_C.c.state, sa.func.count()).group_by(_C.c.state))
        return {str(row[0]): int(row[1]) for row in rows}
