"""Queries of the dispatch schema, behind :class:`DispatchRepository` bound to one session.

The caller (a unit of work, :mod:`shared.uow`) owns the transaction. Statements are SQLAlchemy
Core built from ``tables.py``; the batch inserts are one ``unnest`` statement per batch (compiling
a multi-row VALUES costs far more) and the timer claim is hand-written SQL (see ``_CLAIM``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.dispatch import domain
from services.dispatch.tables import dispatches, hazards, relapses, returns
from shared.events import FrozenDeadlineRule
from shared.idle import wake_on_commit

ListStatus = Literal["pending", "acknowledged", "overdue", "returned", "superseded"]

d = dispatches.c
h = hazards.c


@dataclass(frozen=True, slots=True)
class HazardRow:
    """A hazard as dispatch keeps it."""

    facts: domain.HazardFacts
    queue: str
    referral_reason: str | None
    reported_at: datetime


@dataclass(frozen=True, slots=True)
class Report:
    """What the grid member reported, kept by dispatch from hazard.reported (for the desk)."""

    description: str
    address: str | None
    building_id: str | None
    reporter_id: str | None
    photos: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DispatchRecord:
    """A dispatch as the API shows it: its domain state and what only the desk reads."""

    dispatch: domain.Dispatch
    dispatched_by: str
    acknowledged_by: str | None
    returned_by: str | None
    escalation_level: int
    note: str | None
    relapse_of: uuid.UUID | None
    past_deadline: bool
    """Pending and past its receipt deadline on the database's clock (the reading transaction's now)."""
    report: Report | None


# ---------------------------------------------------------------- statements and row shapes

_HAZARD_COLUMNS = (
    ("hazard_id", "uuid"),
    ("category", "text"),
    ("community_id", "text"),
    ("grid_id", "text"),
    ("urgency", "text"),
    ("queue", "text"),
    ("referral_reason", "text"),
    ("reported_at", "timestamptz"),
    ("updated_at", "timestamptz"),
    ("description", "text"),
    ("address", "text"),
    ("building_id", "text"),
    ("reporter_id", "text"),
    ("photos", "jsonb"),
)
# One statement for a whole batch, its columns as arrays: compiling a multi-row VALUES costs far more.
_INSERT_HAZARDS = sa.text(
    f"insert into dispatch.hazards ({', '.join(c for c, _ in _HAZARD_COLUMNS)}) "
    f"select * from unnest({', '.join(f'cast(:{c} as {t}[])' for c, t in _HAZARD_COLUMNS)}) "
    "on conflict do nothing returning hazard_id"
)
_REPORT_COLUMNS = frozenset({"description", "address", "building_id", "reporter_id", "photos"})


def _unnest_insert(table: str, columns: Sequence[tuple[str, str]]) -> sa.TextClause:
    """`insert into <table> (...) select * from unnest(<one array per column>)`: one statement per batch."""
    return sa.text(
        f"insert into dispatch.{table} ({', '.join(c for c, _ in columns)}) "
        f"select * from unnest({', '.join(f'cast(:{c} as {t}[])' for c, t in columns)})"
    )


_DISPATCH_COLUMNS = (
    ("dispatch_id", "uuid"),
    ("hazard_id", "uuid"),
    ("department_id", "text"),
    ("rule_id", "text"),
    ("category", "text"),
    ("community_id", "text"),
    ("grid_id", "text"),
    ("status", "text"),
    ("receipt_deadline", "timestamptz"),
    ("deadline_minutes", "integer"),
    ("deadline_working_time", "boolean"),
    ("reason", "text"),
    ("previous_dispatch_id", "uuid"),
    ("dispatched_by", "text"),
    ("created_at", "timestamptz"),
    ("note", "text"),
    ("escalation", "jsonb"),
    ("next_due_at", "timestamptz"),
)
# A row of dispatch.timers is written only when a step fires (#20): the history of what went out.
_FIRED_COLUMNS = (
    ("dispatch_id", "uuid"),
    ("kind", "text"),
    ("level", "integer"),
    ("target", "text"),
    ("due_at", "timestamptz"),
    ("fired_at", "timestamptz"),
)
_INSERT_DISPATCHES = _unnest_insert("dispatches", _DISPATCH_COLUMNS)
_INSERT_FIRED = _unnest_insert("timers", _FIRED_COLUMNS)


def _columns(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    *,
    optional: frozenset[str] = frozenset(),
) -> dict[str, list[Any]]:
    return {
        column: [row.get(column) if column in optional else row[column] for row in rows]
        for column, _ in columns
    }


def escalation_json(steps: Sequence[domain.EscalationDue]) -> list[dict[str, Any]]:
    """The frozen escalation steps as the ``escalation`` column holds them."""
    return [{"level": s.level, "target": s.target, "due_at": s.due_at.isoformat()} for s in steps]


def escalation_of(value: Any) -> tuple[domain.EscalationDue, ...]:
    """The ``escalation`` column as domain values (JSON text or decoded; NULL: none)."""
    if value is None:
        return ()
    steps = json.loads(value) if isinstance(value, str) else value
    return tuple(
        domain.EscalationDue(
            level=int(x["level"]), target=x["target"], due_at=datetime.fromisoformat(x["due_at"])
        )
        for x in steps
    )


def dispatch_row(dispatch: domain.Dispatch, *, dispatched_by: str, note: str | None = None) -> dict[str, Any]:
    """The table row of a new dispatch, with its schedule: its frozen steps and the first one's due time."""
    return {
        "dispatch_id": dispatch.dispatch_id,
        "hazard_id": dispatch.hazard_id,
        "department_id": dispatch.department_id,
        "rule_id": dispatch.rule_id,
        "category": dispatch.category,
        "community_id": dispatch.community_id,
        "grid_id": dispatch.grid_id,
        "status": dispatch.status,
        "receipt_deadline": dispatch.receipt_deadline,
        "deadline_minutes": dispatch.deadline_rule.minutes,
        "deadline_working_time": dispatch.deadline_rule.working_time,
        "reason": dispatch.reason,
        "previous_dispatch_id": dispatch.previous_dispatch_id,
        "dispatched_by": dispatched_by,
        "created_at": dispatch.created_at,
        "note": note,
        "escalation": escalation_json(dispatch.escalation),
        "next_due_at": domain.first_due(dispatch),
    }


def _hazard(row: Any) -> HazardRow:
    return HazardRow(
        facts=domain.HazardFacts(
            hazard_id=row.hazard_id,
            category=row.category,
            community_id=row.community_id,
            grid_id=row.grid_id,
            urgency=row.urgency,
        ),
        queue=row.queue,
        referral_reason=row.referral_reason,
        reported_at=row.reported_at,
    )


def to_domain(row: Any) -> domain.Dispatch:
    """A dispatch row as the domain value."""
    return domain.Dispatch(
        dispatch_id=row.dispatch_id,
        hazard_id=row.hazard_id,
        department_id=row.department_id,
        rule_id=row.rule_id,
        category=row.category,
        community_id=row.community_id,
        grid_id=row.grid_id,
        status=row.status,
        receipt_deadline=row.receipt_deadline,
        deadline_rule=FrozenDeadlineRule(
            minutes=row.deadline_minutes, working_time=row.deadline_working_time
        ),
        created_at=row.created_at,
        reason=row.reason,
        previous_dispatch_id=row.previous_dispatch_id,
        acknowledged_at=row.acknowledged_at,
        on_time=row.on_time,
        overdue_at=row.overdue_at,
        returned_reason=row.returned_reason,
        return_request=return_request_of(row),
        original_receipt_deadline=row.original_receipt_deadline,
        extension_request=extension_request_of(row),
        escalation=escalation_of(row.escalation),
    )


def extension_request_of(row: Any) -> domain.ExtensionRequest | None:
    """The receipt deadline extension a dispatch row records, if any."""
    if row.extension_status is None:
        return None
    return domain.ExtensionRequest(
        status=row.extension_status,
        requested_deadline=row.extension_requested_deadline,
        reason=row.extension_reason,
        requested_by=row.extension_requested_by,
        requested_at=row.extension_requested_at,
        previous_deadline=row.extension_previous_deadline,
        decided_by=row.extension_decided_by,
        decided_at=row.extension_decided_at,
        decision_note=row.extension_decision_note,
    )


def return_request_of(row: Any) -> domain.ReturnRequest | None:
    """The return request a dispatch row records, if any."""
    if row.return_request_status is None:
        return None
    return domain.ReturnRequest(
        status=row.return_request_status,
        reason=row.return_request_reason,
        requested_by=row.return_requested_by,
        requested_at=row.return_requested_at,
        decided_by=row.return_decided_by,
        decided_at=row.return_decided_at,
        refusal_reason=row.return_refusal_reason,
    )


def to_record(row: Any) -> DispatchRecord:
    """A dispatch row as shown (``_shown()``) as the record the API answers."""
    return DispatchRecord(
        dispatch=to_domain(row),
        dispatched_by=row.dispatched_by,
        acknowledged_by=row.acknowledged_by,
        returned_by=row.returned_by,
        escalation_level=row.escalation_level,
        note=row.note,
        relapse_of=row.relapse_of,
        past_deadline=bool(row.past_deadline),
        report=None
        if row.report_description is None
        else Report(
            description=row.report_description,
            address=row.report_address,
            building_id=row.report_building_id,
            reporter_id=row.report_reporter_id,
            photos=tuple(row.report_photos or ()),
        ),
    )


# Whether a pending dispatch is past its receipt deadline, on the database's clock (the time of the
# reading transaction): no replica's own clock decides what the inbox shows as overdue.
_PAST_DEADLINE = sa.and_(d.status == "pending", d.receipt_deadline < sa.func.now()).label("past_deadline")


def _shown() -> sa.Select[Any]:
    """Dispatch rows as the API shows them: with the relapse annotation and `past_deadline`."""
    joined = dispatches.outerjoin(relapses, relapses.c.hazard_id == d.hazard_id).outerjoin(
        hazards, h.hazard_id == d.hazard_id
    )
    return sa.select(
        dispatches,
        relapses.c.original_hazard_id.label("relapse_of"),
        _PAST_DEADLINE,
        h.description.label("report_description"),
        h.address.label("report_address"),
        h.building_id.label("report_building_id"),
        h.reporter_id.label("report_reporter_id"),
        h.photos.label("report_photos"),
    ).select_from(joined)


def _status_filter(status: ListStatus | None) -> list[sa.ColumnElement[bool]]:
    if status is None:
        return []
    if status == "overdue":
        return [d.status == "pending", d.receipt_deadline < sa.func.now()]
    return [d.status == status]


# A dispatch carries the due time of its next unfired step (``next_due_at``, NULL once nothing is
# left or it left ``pending``) under a partial index of the non-NULL ones (#20): no timer rows are
# written with a dispatch. A pass walks that index in due order and locks the dispatches as it
# goes, ``LIMIT`` counting only rows it could lock: a dispatch another transaction holds (an
# acknowledgement, a return, another replica's pass) is skipped and the walk goes on to the next,
# so concurrent passes and replicas share a backlog. A dispatch updated after the statement's
# snapshot is re-read before it is locked (READ COMMITTED): one whose acknowledgement just
# committed no longer matches. The pass fires every due step of the dispatches it holds and moves
# ``next_due_at`` to the next step in the same transaction, so a dispatch is never split between
# two passes (the receipt deadline fired by one, the escalation due with it by another).
_CLAIM = sa.text(
    """
    select dispatch_id, hazard_id, department_id, status, receipt_deadline, overdue_at,
           escalation_level, escalation
    from dispatch.dispatches
    where next_due_at <= :now
    order by next_due_at
    limit :limit
    for update skip locked
    """
).columns(escalation=pg.JSONB)
_MARK_FIRED = sa.text(
    """
    update dispatch.dispatches d
    set overdue_at = v.overdue_at, escalation_level = v.level, next_due_at = v.next_due_at
    from unnest(cast(:ids as uuid[]), cast(:overdue_at as timestamptz[]), cast(:levels as integer[]),
                cast(:next_due_at as timestamptz[]))
         as v(dispatch_id, overdue_at, level, next_due_at)
    where d.dispatch_id = v.dispatch_id
    """
)


# ---------------------------------------------------------------- the repository


# Commits that add or move due steps wake this process's timer passes (shared.idle).
TIMERS_WAKE = "dispatch.timers"
_NEXT_DUE = sa.select(sa.extract("epoch", sa.func.min(d.next_due_at) - sa.bindparam("now"))).where(
    d.next_due_at.is_not(None)
)


class DispatchRepository:
    """The dispatch schema's reads and writes, inside the caller's transaction on ``session``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # ------------------------------------------------------------ hazards

    async def add_hazards(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        """Insert hazards not seen before; returns the ids actually inserted (a hazard is routed once)."""
        if not rows:
            return set()
        columns = _columns(rows, _HAZARD_COLUMNS, optional=_REPORT_COLUMNS)
        # unnest() flattens nested arrays, so each hazard's photo list travels as one JSON text.
        columns["photos"] = [None if p is None else orjson.dumps(list(p)).decode() for p in columns["photos"]]
        inserted = await self.session.execute(_INSERT_HAZARDS, columns)
        return set(inserted.scalars())

    async def get_hazard(self, hazard_id: uuid.UUID, *, for_update: bool = False) -> HazardRow | None:
        """One hazard, optionally locked."""
        query = sa.select(hazards).where(h.hazard_id == hazard_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else _hazard(row)

    async def set_queue(self, hazard_id: uuid.UUID, *, queue: str, reason: str | None, now: datetime) -> None:
        """Move a hazard between a department and the operators' queue."""
        await self.session.execute(
            sa.update(hazards)
            .where(h.hazard_id == hazard_id)
            .values(queue=queue, referral_reason=reason, updated_at=now)
        )

    async def list_operator_queue(self, *, limit: int, offset: int) -> list[HazardRow]:
        """Hazards waiting for an operator, oldest first."""
        rows = await self.session.execute(
            sa.select(hazards)
            .where(h.queue == "operators")
            .order_by(h.reported_at, h.hazard_id)
            .limit(limit)
            .offset(offset)
        )
        return [_hazard(row) for row in rows]

    async def returned_departments(self, hazard_id: uuid.UUID) -> set[str]:
        """Every department that has returned this hazard."""
        rows = await self.session.execute(
            sa.select(returns.c.department_id).where(returns.c.hazard_id == hazard_id)
        )
        return set(rows.scalars())

    async def add_return(
        self, *, hazard_id: uuid.UUID, department_id: str, dispatch_id: uuid.UUID, now: datetime
    ) -> None:
        """Remember that a department returned this hazard (it is never routed there again)."""
        await self.session.execute(
            pg_insert(returns)
            .values(
                hazard_id=hazard_id, department_id=department_id, dispatch_id=dispatch_id, returned_at=now
            )
            .on_conflict_do_nothing()
        )

    async def add_relapses(self, rows: Sequence[dict[str, Any]]) -> None:
        """Annotate hazards as relapses of earlier ones (the hazard row may not exist yet)."""
        if rows:
            await self.session.execute(pg_insert(relapses).values(list(rows)).on_conflict_do_nothing())

    # ------------------------------------------------------------ dispatches

    async def add_dispatches(
        self, new: Sequence[domain.Dispatch], *, dispatched_by: str, note: str | None = None
    ) -> None:
        """Insert new dispatches, each carrying its schedule (no timer rows: the row is the timer)."""
        if new:
            rows = [dispatch_row(x, dispatched_by=dispatched_by, note=note) for x in new]
            columns = _columns(rows, _DISPATCH_COLUMNS)
            # unnest() flattens nested arrays, so each dispatch's steps travel as one JSON text.
            columns["escalation"] = [orjson.dumps(x).decode() for x in columns["escalation"]]
            await self.session.execute(_INSERT_DISPATCHES, columns)
            if any(row["next_due_at"] is not None for row in rows):
                wake_on_commit(self.session, TIMERS_WAKE)

    async def add_dispatches_unless_active(
        self, new: Sequence[domain.Dispatch], *, dispatched_by: str, note: str | None = None
    ) -> bool:
        """Insert like :meth:`add_dispatches`; False (nothing written) when the hazard already has an
        active dispatch (the unique index refuses a second one: a concurrent action won)."""
        try:
            async with self.session.begin_nested():
                await self.add_dispatches(new, dispatched_by=dispatched_by, note=note)
        except IntegrityError:
            return False
        return True

    async def get_dispatch(self, dispatch_id: uuid.UUID) -> DispatchRecord | None:
        """One dispatch as shown; None when unknown."""
        row = (await self.session.execute(_shown().where(d.dispatch_id == dispatch_id))).first()
        return None if row is None else to_record(row)

    async def lock_dispatch(self, dispatch_id: uuid.UUID) -> domain.Dispatch | None:
        """One dispatch, locked for this transaction; None when unknown."""
        query = sa.select(dispatches).where(d.dispatch_id == dispatch_id).with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else to_domain(row)

    async def update_dispatch(
        self,
        dispatch: domain.Dispatch,
        *,
        acknowledged_by: str | None = None,
        returned_by: str | None = None,
        now: datetime,
        reschedule: bool = False,
    ) -> None:
        """Write a changed dispatch's state back.

        A dispatch that left ``pending`` has no step left to fire: its ``next_due_at`` is cleared in
        the same statement (an acknowledgement, return or reassignment stops its timers without a
        write of its own). ``reschedule`` (an approved extension, before any step fired) writes the
        moved steps and the first one's due time.
        """
        values: dict[str, Any] = {
            "status": dispatch.status,
            "acknowledged_at": dispatch.acknowledged_at,
            "on_time": dispatch.on_time,
            "overdue_at": dispatch.overdue_at,
            "returned_reason": dispatch.returned_reason,
        }
        if acknowledged_by is not None:
            values["acknowledged_by"] = acknowledged_by
        if returned_by is not None:
            values["returned_by"] = returned_by
        request = dispatch.return_request
        if request is not None:
            values |= {
                "return_request_status": request.status,
                "return_request_reason": request.reason,
                "return_requested_by": request.requested_by,
                "return_requested_at": request.requested_at,
                "return_decided_by": request.decided_by,
                "return_decided_at": request.decided_at,
                "return_refusal_reason": request.refusal_reason,
            }
        extension = dispatch.extension_request
        if extension is not None:
            values |= {
                "receipt_deadline": dispatch.receipt_deadline,
                "original_receipt_deadline": dispatch.original_receipt_deadline,
                "extension_status": extension.status,
                "extension_requested_deadline": extension.requested_deadline,
                "extension_reason": extension.reason,
                "extension_requested_by": extension.requested_by,
                "extension_requested_at": extension.requested_at,
                "extension_previous_deadline": extension.previous_deadline,
                "extension_decided_by": extension.decided_by,
                "extension_decided_at": extension.decided_at,
                "extension_decision_note": extension.decision_note,
            }
        if dispatch.status in ("returned", "superseded"):
            values["closed_at"] = now
        if dispatch.status != "pending":
            values["next_due_at"] = None
        elif reschedule:
            values |= {
                "receipt_deadline": dispatch.receipt_deadline,
                "escalation": escalation_json(dispatch.escalation),
                "next_due_at": domain.first_due(dispatch),
            }
            wake_on_commit(self.session, TIMERS_WAKE)
        await self.session.execute(
            sa.update(dispatches).where(d.dispatch_id == dispatch.dispatch_id).values(**values)
        )

    async def list_dispatches(
        self,
        *,
        department_id: str | None,
        status: ListStatus | None,
        limit: int,
        offset: int,
        return_request: domain.ReturnRequestStatus | None = None,
        extension_request: domain.ExtensionStatus | None = None,
    ) -> list[DispatchRecord]:
        """Dispatches, oldest receipt deadline first, filtered by department, status and request."""
        conditions = _status_filter(status)
        if return_request is not None:
            conditions.append(d.return_request_status == return_request)
        if extension_request is not None:
            conditions.append(d.extension_status == extension_request)
        if department_id is not None:
            conditions.append(d.department_id == department_id)
        # The page's ids first, from the inbox index alone; the joins (relapse, the report's details)
        # then run for the page's rows only, not for every row an offset skips.
        page = (
            sa.select(d.dispatch_id).order_by(d.receipt_deadline, d.dispatch_id).limit(limit).offset(offset)
        )
        if conditions:
            page = page.where(*conditions)
        ids = page.subquery("page")
        query = (
            _shown().join(ids, ids.c.dispatch_id == d.dispatch_id).order_by(d.receipt_deadline, d.dispatch_id)
        )
        return [to_record(row) for row in await self.session.execute(query)]

    # ------------------------------------------------------------ timers

    async def seconds_to_next_timer(self, *, now: datetime) -> float | None:
        """Seconds from ``now`` until the earliest unfired step falls due (None: there is none)."""
        value = (await self.session.execute(_NEXT_DUE, {"now": now})).scalar()
        return None if value is None else float(value)

    async def claim_due_timers(self, *, now: datetime, limit: int) -> list[domain.DueDispatch]:
        """Lock up to `limit` dispatches with a step due by `now`, in due order, with their schedules.

        Dispatches another transaction holds are skipped (see ``_CLAIM``).
        """
        rows = await self.session.execute(_CLAIM, {"now": now, "limit": limit})
        return [
            domain.DueDispatch(
                dispatch_id=row.dispatch_id,
                hazard_id=row.hazard_id,
                department_id=row.department_id,
                status=row.status,
                receipt_deadline=row.receipt_deadline,
                overdue_at=row.overdue_at,
                escalation_level=row.escalation_level,
                escalation=escalation_of(row.escalation),
            )
            for row in rows
        ]

    async def mark_fired(self, firings: Sequence[domain.Firing], *, now: datetime) -> None:
        """Record a pass: each claimed dispatch's state after it (overdue, level, next due step) and
        one history row per step that fired (the unique ``timers_one_per_step`` refuses a second)."""
        if not firings:
            return
        await self.session.execute(
            _MARK_FIRED,
            {
                "ids": [f.dispatch_id for f in firings],
                "overdue_at": [f.overdue_at for f in firings],
                "levels": [f.escalation_level for f in firings],
                "next_due_at": [f.next_due_at for f in firings],
            },
        )
        fired = [t for f in firings for t in f.fired]
        if fired:
            rows = [
                {
                    "dispatch_id": t.dispatch_id,
                    "kind": t.kind,
                    "level": t.level,
                    "target": t.target,
                    "due_at": t.due_at,
                    "fired_at": now,
                }
                for t in fired
            ]
            await self.session.execute(_INSERT_FIRED, _columns(rows, _FIRED_COLUMNS))

    # ------------------------------------------------------------ gauges

    async def pending_and_overdue(self) -> dict[str, tuple[int, int]]:
        """Per department: dispatches pending, and of those past their deadline (on the database's clock)."""
        rows = await self.session.execute(
            sa.select(
                d.department_id,
                sa.func.count(),
                sa.func.count().filter(d.receipt_deadline < sa.func.now()),
            )
            .where(d.status == "pending")
            .group_by(d.department_id)
        )
        return {row[0]: (int(row[1]), int(row[2])) for row in rows}

    async def operator_queue_size(self) -> int:
        """Hazards waiting in the operators' queue."""
        count = sa.select(sa.func.count()).select_from(hazards).where(h.queue == "operators")
        return int((await self.session.execute(count)).scalar_one())
