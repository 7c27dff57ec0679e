"""Queries of the intake schema; callers own the transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.domain import OpenHazard, StatusChange
from services.intake.tables import reports

_EXISTING = sa.select(
    reports.c.hazard_id,
    reports.c.report_id,
    reports.c.body_hash,
    reports.c.status,
    reports.c.duplicate_of,
).where(reports.c.report_id == sa.any_(sa.bindparam("ids", type_=pg.ARRAY(pg.UUID(as_uuid=True)))))

# Open originals of each probe's category at the same building or inside its box, in one round trip.
# LATERAL makes it one small index lookup per probe (the partial indexes of migration 0002), instead
# of a join whose cost grows with probes times open hazards.
_OPEN = "o.category = q.category and o.status = 'open' and o.duplicate_of is null"
_OPEN_CANDIDATES = sa.text(
    f"""
    with q as materialized (
        select * from unnest(
            cast(:idx as int[]), cast(:category as text[]), cast(:building as text[]),
            cast(:south as float8[]), cast(:north as float8[]),
            cast(:west as float8[]), cast(:east as float8[])
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
)


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


async def existing_reports(session: AsyncSession, report_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    """Stored reports by report id (hazard_id, body_hash, status, duplicate_of)."""
    if not report_ids:
        return {}
    rows = (await session.execute(_EXISTING, {"ids": list(report_ids)})).all()
    return {row.report_id: row for row in rows}


async def open_candidates(session: AsyncSession, probes: Sequence[Probe]) -> dict[int, list[OpenHazard]]:
    """Open original hazards near each probe, by probe index."""
    if not probes:
        return {}
    rows = await session.execute(
        _OPEN_CANDIDATES,
        {
            "idx": [p.index for p in probes],
            "category": [p.category for p in probes],
            "building": [p.building_id for p in probes],
            "south": [p.south for p in probes],
            "north": [p.north for p in probes],
            "west": [p.west for p in probes],
            "east": [p.east for p in probes],
        },
    )
    found: dict[int, list[OpenHazard]] = {}
    for row in rows:
        found.setdefault(row.idx, []).append(
            OpenHazard(row.hazard_id, row.category, row.building_id, row.lat, row.lon, row.requested_datetime)
        )
    return found


_INSERT_REPORTS = (
    pg_insert(reports)
    .on_conflict_do_nothing(index_elements=[reports.c.report_id])
    .returning(reports.c.report_id)
)


async def insert_reports(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert reports whose report id is new; returns the report ids actually inserted."""
    if not rows:
        return set()
    # executemany with RETURNING: one compiled statement, sent as multi-row INSERTs in few round trips.
    result = await session.execute(_INSERT_REPORTS, list(rows))
    return set(result.scalars())


async def apply_status_change(
    session: AsyncSession, *, hazard_id: uuid.UUID, change: StatusChange, at: datetime
) -> None:
    """Apply one event's change to the Open311 view of its hazard, tolerating events out of order.

    Closing is final: a late event of the hazard's earlier life never reopens it or overwrites
    its closing notes; among the others only an event newer than the last one applied changes
    the notes, the agency and the expected time.
    """
    bump = {
        "last_event_at": sa.func.greatest(reports.c.last_event_at, at),
        "updated_datetime": sa.func.greatest(reports.c.updated_datetime, at),
    }
    if change.closes:
        values: dict[str, Any] = {
            "status": "closed",
            "closed_at": sa.func.coalesce(reports.c.closed_at, at),
            "status_notes": change.notes,
            "expected_datetime": None,
            "agency_responsible": sa.func.coalesce(change.agency, reports.c.agency_responsible),
            **bump,
        }
        await session.execute(sa.update(reports).where(reports.c.hazard_id == hazard_id).values(**values))
        # Reports linked to it as duplicates are settled with it.
        await session.execute(
            sa.update(reports)
            .where(reports.c.duplicate_of == hazard_id, reports.c.status == "open")
            .values(
                status="closed",
                closed_at=at,
                status_notes=f"Closed with request {hazard_id}, which this report duplicated.",
                expected_datetime=None,
                **bump,
            )
        )
        return
    current = sa.and_(
        reports.c.status == "open",
        sa.or_(reports.c.last_event_at.is_(None), reports.c.last_event_at <= at),
    )
    values = {"status_notes": sa.case((current, change.notes), else_=reports.c.status_notes), **bump}
    if change.agency is not None:
        values["agency_responsible"] = sa.case((current, change.agency), else_=reports.c.agency_responsible)
    if change.expected is not None or change.clear_expected:
        values["expected_datetime"] = sa.case(
            (current, sa.literal(change.expected, sa.DateTime(timezone=True))),
            else_=reports.c.expected_datetime,
        )
    await session.execute(sa.update(reports).where(reports.c.hazard_id == hazard_id).values(**values))


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
