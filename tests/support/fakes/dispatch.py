"""An in-memory :class:`~services.dispatch.repository.DispatchRepository` for dispatch use-case tests.

Same method names and answers as the real repository, on dictionaries: a hazard routed once,
at most one active dispatch per hazard (the partial unique index), dispatches claimed in the order
their next step falls due (``next_due_at``, as the real claim walks its index), fired steps recorded,
``past_deadline`` judged on ``clock()`` (the database's now in the real one). Locks do not
exist here; what locking decides is covered by the integration tests.

    repo = FakeDispatchRepository()
    work = FakeWork(repo, now=T0)
    repo.clock = lambda: work.now
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from services.dispatch import domain
from services.dispatch.repository import DispatchRecord, HazardRow, ListStatus, Report
from services.dispatch.tables import ACTIVE_STATUSES


@dataclass
class FakeTimer:
    """A row of dispatch.timers: a step that fired."""

    id: int
    dispatch_id: uuid.UUID
    kind: domain.TimerKind
    level: int
    target: str
    due_at: datetime
    fired_at: datetime | None = None
    cancelled: bool = False


@dataclass
class FakeDispatch:
    """A dispatch row: the domain value and the columns only the desk reads."""

    dispatch: domain.Dispatch
    dispatched_by: str
    note: str | None = None
    acknowledged_by: str | None = None
    returned_by: str | None = None
    escalation_level: int = 0
    closed_at: datetime | None = None
    next_due_at: datetime | None = None
    """When its next unfired step falls due (None: nothing left, or no longer pending)."""


@dataclass
class FakeDispatchRepository:
    """The dispatch schema in memory."""

    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    hazards: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)
    dispatches: dict[uuid.UUID, FakeDispatch] = field(default_factory=dict)
    timers: list[FakeTimer] = field(default_factory=list)
    """The steps that fired, in firing order."""
    returns: dict[tuple[uuid.UUID, str], uuid.UUID] = field(default_factory=dict)
    relapses: dict[uuid.UUID, dict[str, Any]] = field(default_factory=dict)

    # ------------------------------------------------------------ hazards

    async def add_hazards(self, rows: Sequence[dict[str, Any]]) -> set[uuid.UUID]:
        fresh: set[uuid.UUID] = set()
        for row in rows:
            if row["hazard_id"] not in self.hazards:
                self.hazards[row["hazard_id"]] = dict(row)
                fresh.add(row["hazard_id"])
        return fresh

    async def get_hazard(self, hazard_id: uuid.UUID, *, for_update: bool = False) -> HazardRow | None:
        row = self.hazards.get(hazard_id)
        return None if row is None else _hazard(row)

    async def set_queue(self, hazard_id: uuid.UUID, *, queue: str, reason: str | None, now: datetime) -> None:
        if hazard_id in self.hazards:
            self.hazards[hazard_id] |= {"queue": queue, "referral_reason": reason, "updated_at": now}

    async def list_operator_queue(self, *, limit: int, offset: int) -> list[HazardRow]:
        queued = sorted(
            (row for row in self.hazards.values() if row["queue"] == "operators"),
            key=lambda row: (row["reported_at"], row["hazard_id"]),
        )
        return [_hazard(row) for row in queued[offset : offset + limit]]

    async def returned_departments(self, hazard_id: uuid.UUID) -> set[str]:
        return {department for hazard, department in self.returns if hazard == hazard_id}

    async def add_return(
        self, *, hazard_id: uuid.UUID, department_id: str, dispatch_id: uuid.UUID, now: datetime
    ) -> None:
        self.returns.setdefault((hazard_id, department_id), dispatch_id)

    async def add_relapses(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.relapses.setdefault(row["hazard_id"], dict(row))

    # ------------------------------------------------------------ dispatches

    async def add_dispatches(
        self, new: Sequence[domain.Dispatch], *, dispatched_by: str, note: str | None = None
    ) -> None:
        for x in new:
            if x.dispatch_id in self.dispatches or (
                x.status in ACTIVE_STATUSES and self._active(x.hazard_id) is not None
            ):
                raise ValueError(f"duplicate key: dispatch {x.dispatch_id} of hazard {x.hazard_id}")
            self.dispatches[x.dispatch_id] = FakeDispatch(
                dispatch=x, dispatched_by=dispatched_by, note=note, next_due_at=domain.first_due(x)
            )

    async def add_dispatches_unless_active(
        self, new: Sequence[domain.Dispatch], *, dispatched_by: str, note: str | None = None
    ) -> bool:
        if any(x.status in ACTIVE_STATUSES and self._active(x.hazard_id) is not None for x in new):
            return False
        await self.add_dispatches(new, dispatched_by=dispatched_by, note=note)
        return True

    async def get_dispatch(self, dispatch_id: uuid.UUID) -> DispatchRecord | None:
        row = self.dispatches.get(dispatch_id)
        return None if row is None else self._record(row)

    async def lock_dispatch(self, dispatch_id: uuid.UUID) -> domain.Dispatch | None:
        row = self.dispatches.get(dispatch_id)
        return None if row is None else row.dispatch

    async def update_dispatch(
        self,
        dispatch: domain.Dispatch,
        *,
        acknowledged_by: str | None = None,
        returned_by: str | None = None,
        now: datetime,
        reschedule: bool = False,
    ) -> None:
        row = self.dispatches[dispatch.dispatch_id]
        stored = row.dispatch
        # The columns the real update writes; the rest (the deadline without an extension) stays.
        changed = replace(
            stored,
            status=dispatch.status,
            acknowledged_at=dispatch.acknowledged_at,
            on_time=dispatch.on_time,
            overdue_at=dispatch.overdue_at,
            returned_reason=dispatch.returned_reason,
        )
        if dispatch.return_request is not None:
            changed = replace(changed, return_request=dispatch.return_request)
        if dispatch.extension_request is not None:
            changed = replace(
                changed,
                receipt_deadline=dispatch.receipt_deadline,
                original_receipt_deadline=dispatch.original_receipt_deadline,
                extension_request=dispatch.extension_request,
            )
        row.dispatch = changed
        if acknowledged_by is not None:
            row.acknowledged_by = acknowledged_by
        if returned_by is not None:
            row.returned_by = returned_by
        if dispatch.status in ("returned", "superseded"):
            row.closed_at = now
        if dispatch.status != "pending":
            row.next_due_at = None
        elif reschedule:
            row.dispatch = replace(row.dispatch, escalation=dispatch.escalation)
            row.next_due_at = domain.first_due(row.dispatch)

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
        now = self.clock()

        def wanted(x: domain.Dispatch) -> bool:
            if status == "overdue" and not (x.status == "pending" and x.receipt_deadline < now):
                return False
            if status not in (None, "overdue") and x.status != status:
                return False
            if return_request is not None and (
                x.return_request is None or x.return_request.status != return_request
            ):
                return False
            if extension_request is not None and (
                x.extension_request is None or x.extension_request.status != extension_request
            ):
                return False
            return department_id is None or x.department_id == department_id

        found = sorted(
            (row for row in self.dispatches.values() if wanted(row.dispatch)),
            key=lambda row: (row.dispatch.receipt_deadline, row.dispatch.dispatch_id),
        )
        return [self._record(row) for row in found[offset : offset + limit]]

    # ------------------------------------------------------------ timers

    async def seconds_to_next_timer(self, *, now: datetime) -> float | None:
        due = [row.next_due_at for row in self.dispatches.values() if row.next_due_at is not None]
        return None if not due else (min(due) - now).total_seconds()

    async def claim_due_timers(self, *, now: datetime, limit: int) -> list[domain.DueDispatch]:
        due = sorted(
            (
                row
                for row in self.dispatches.values()
                if row.next_due_at is not None and row.next_due_at <= now
            ),
            key=lambda row: row.next_due_at or now,
        )
        return [
            domain.DueDispatch(
                dispatch_id=row.dispatch.dispatch_id,
                hazard_id=row.dispatch.hazard_id,
                department_id=row.dispatch.department_id,
                status=row.dispatch.status,
                receipt_deadline=row.dispatch.receipt_deadline,
                overdue_at=row.dispatch.overdue_at,
                escalation_level=row.escalation_level,
                escalation=row.dispatch.escalation,
            )
            for row in due[:limit]
        ]

    async def mark_fired(self, firings: Sequence[domain.Firing], *, now: datetime) -> None:
        for firing in firings:
            row = self.dispatches[firing.dispatch_id]
            row.dispatch = replace(row.dispatch, overdue_at=firing.overdue_at)
            row.escalation_level = firing.escalation_level
            row.next_due_at = firing.next_due_at
            for step in firing.fired:
                if any(
                    (t.dispatch_id, t.kind, t.level) == (step.dispatch_id, step.kind, step.level)
                    for t in self.timers
                ):
                    raise ValueError(f"duplicate key: step {step.kind} {step.level} of {step.dispatch_id}")
                self.timers.append(
                    FakeTimer(
                        id=len(self.timers) + 1,
                        dispatch_id=step.dispatch_id,
                        kind=step.kind,
                        level=step.level,
                        target=step.target,
                        due_at=step.due_at,
                        fired_at=now,
                    )
                )

    def next_due(self, dispatch_id: uuid.UUID) -> datetime | None:
        """When the dispatch's next unfired step falls due (None: nothing left to fire)."""
        return self.dispatches[dispatch_id].next_due_at

    # ------------------------------------------------------------ gauges

    async def pending_and_overdue(self) -> dict[str, tuple[int, int]]:
        now = self.clock()
        counts: dict[str, tuple[int, int]] = {}
        for row in self.dispatches.values():
            x = row.dispatch
            if x.status == "pending":
                pending, overdue = counts.get(x.department_id, (0, 0))
                counts[x.department_id] = (pending + 1, overdue + (x.receipt_deadline < now))
        return counts

    async def operator_queue_size(self) -> int:
        return sum(1 for row in self.hazards.values() if row["queue"] == "operators")

    # ------------------------------------------------------------ helpers

    def _active(self, hazard_id: uuid.UUID) -> FakeDispatch | None:
        for row in self.dispatches.values():
            if row.dispatch.hazard_id == hazard_id and row.dispatch.status in ACTIVE_STATUSES:
                return row
        return None

    def _record(self, row: FakeDispatch) -> DispatchRecord:
        x = row.dispatch
        hazard = self.hazards.get(x.hazard_id)
        relapse = self.relapses.get(x.hazard_id)
        return DispatchRecord(
            dispatch=x,
            dispatched_by=row.dispatched_by,
            acknowledged_by=row.acknowledged_by,
            returned_by=row.returned_by,
            escalation_level=row.escalation_level,
            note=row.note,
            relapse_of=None if relapse is None else relapse["original_hazard_id"],
            past_deadline=x.status == "pending" and x.receipt_deadline < self.clock(),
            report=None
            if hazard is None or hazard.get("description") is None
            else Report(
                description=hazard["description"],
                address=hazard.get("address"),
                building_id=hazard.get("building_id"),
                reporter_id=hazard.get("reporter_id"),
                photos=tuple(hazard.get("photos") or ()),
            ),
        )


def _hazard(row: dict[str, Any]) -> HazardRow:
    return HazardRow(
        facts=domain.HazardFacts(
            hazard_id=row["hazard_id"],
            category=row["category"],
            community_id=row["community_id"],
            grid_id=row["grid_id"],
            urgency=row.get("urgency"),
        ),
        queue=row["queue"],
        referral_reason=row.get("referral_reason"),
        reported_at=row["reported_at"],
    )
