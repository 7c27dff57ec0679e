"""Use cases of the dispatch service: each one transaction of lock, decide (domain), write, outbox.

"Now" is always the database's clock, read in the use case's own transaction (the consumer's
batch context carries it too): a replica whose host clock is off reaches the same verdicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatch import domain, metrics
from services.dispatch import repository as repo
from shared.auth import Principal
from shared.consumer import BatchContext
from shared.db import after_commit, database_now
from shared.errors import ApiError
from shared.events import HazardDuplicateUnlinked, HazardRelapsed, HazardReported, LifecycleEvent
from shared.outbox import Outbox
from shared.reference import ReferenceData, UnknownReference

_T = TypeVar("_T")

# ---------------------------------------------------------------- consumed events


async def apply_events(ctx: BatchContext, reference: ReferenceData, events: Sequence[LifecycleEvent]) -> None:
    """Route every newly reported hazard of a batch and annotate relapses, with bulk writes."""
    # A report intake unlinked from a closed original is routed as a newly reported hazard.
    reported = [e for e in events if isinstance(e, HazardReported | HazardDuplicateUnlinked)]
    relapsed = [e for e in events if isinstance(e, HazardRelapsed)]
    if reported:
        await _route_reported(ctx, reference, reported)
    if relapsed:
        await repo.add_relapses(
            ctx.session,
            [
                {
                    "hazard_id": e.hazard_id,
                    "original_hazard_id": e.payload.original_hazard_id,
                    "original_department_id": e.payload.original_department_id,
                    "recorded_at": ctx.now,
                }
                for e in relapsed
            ],
        )


async def _route_reported(
    ctx: BatchContext, reference: ReferenceData, reported: Sequence[HazardReported | HazardDuplicateUnlinked]
) -> None:
    outcomes: dict[uuid.UUID, domain.Outcome] = {}
    hazard_rows: list[dict[str, Any]] = []
    for event in ctx.each(reported):
        if event.hazard_id in outcomes or (
            isinstance(event, HazardReported) and not domain.needs_dispatch(event)
        ):
            continue
        try:
            outcome = domain.on_reported(reference, event, now=ctx.now)
        except (UnknownReference, ValueError) as exc:
            await ctx.reject(event, f"cannot route hazard {event.hazard_id}: {exc}")
            continue
        outcomes[event.hazard_id] = outcome
        hazard_rows.append(
            {
                "hazard_id": event.hazard_id,
                "category": event.payload.category,
                "community_id": event.payload.community_id,
                "grid_id": event.payload.grid_id,
                "urgency": event.payload.urgency,
                "queue": "operators" if outcome.referred else "dispatched",
                "referral_reason": outcome.referral,
                "reported_at": event.payload.accepted_at
                if isinstance(event, HazardReported)
                else event.occurred_at,
                "updated_at": ctx.now,
                **_report_details(event),
            }
        )
    # A hazard already known (the same report published twice under new event ids) is not routed again.
    # Rows go in id order so two replicas inserting overlapping batches never deadlock on each other.
    hazard_rows.sort(key=lambda row: row["hazard_id"])
    fresh = await repo.add_hazards(ctx.session, hazard_rows)
    dispatch_rows: list[dict[str, Any]] = []
    timer_rows: list[dict[str, Any]] = []
    out: list[domain.DispatchEvent] = []
    for hazard_id, outcome in outcomes.items():
        if hazard_id not in fresh:
            continue
        dispatch_rows.extend(repo.dispatch_row(x, dispatched_by="system") for x in outcome.dispatches)
        timer_rows.extend(repo.timer_row(x) for x in outcome.timers)
        out.extend(outcome.events)
    await repo.add_dispatches(ctx.session, dispatch_rows, timer_rows)
    # Through the shared outbox, so the commit wakes the relay (no wait for its poll).
    await ctx.outbox.add(ctx.session, *out)
    # Counted once committed: a batch retried after a failure must not count twice.
    counted = [outcomes[hazard_id] for hazard_id in fresh]

    def count() -> None:
        for outcome in counted:
            count_outcome(outcome)

    after_commit(ctx.session, count)


def _report_details(event: HazardReported | HazardDuplicateUnlinked) -> dict[str, Any]:
    """What the grid member reported, for the desk (a report unlinked from a duplicate carries none)."""
    if not isinstance(event, HazardReported):
        return {}
    payload = event.payload
    return {
        "description": payload.description,
        "address": payload.location.address or None,
        "building_id": payload.location.building_id,
        "reporter_id": payload.reporter_id,
        "photos": list(payload.photos),
    }


def count_outcome(outcome: domain.Outcome) -> None:
    """Count the dispatches and referral an outcome made."""
    for x in outcome.dispatches:
        if x.status == "pending":
            metrics.DISPATCHES.labels(x.department_id, x.category, x.reason).inc()
    if outcome.referral is not None:
        metrics.REFERRALS.labels(outcome.referral).inc()


# ---------------------------------------------------------------- department and operator actions


@dataclass(frozen=True, slots=True)
class Commands:
    """The dispatch actions the HTTP API offers, each in its own transaction."""

    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    reference: ReferenceData
    returns: domain.ReturnPolicy = field(default_factory=domain.ReturnPolicy)
    extension_limit: timedelta = domain.DEFAULT_EXTENSION_LIMIT

    async def request_extension(
        self, dispatch_id: uuid.UUID, *, deadline: datetime, reason: str, principal: Principal
    ) -> Any:
        """The department holding a pending dispatch asks for a later receipt deadline (202: awaits a decision)."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._own(session, dispatch_id, principal)
            try:
                requested, event = _decide(
                    lambda x: domain.request_extension(
                        x,
                        deadline=deadline,
                        reason=reason,
                        by=principal.id,
                        now=now,
                        limit=self.extension_limit,
                    ),
                    dispatch,
                )
            except domain.ExtensionDateRefused as exc:
                raise ApiError(
                    422, "invalid_deadline", exc.message, [{"field": "deadline", "problem": exc.message}]
                ) from None
            await repo.update_dispatch(session, requested, now=now)
            await self.outbox.add(session, event)
            return await repo.get_dispatch_row(session, dispatch_id)

    async def approve_extension(self, dispatch_id: uuid.UUID, *, note: str, principal: Principal) -> Any:
        """An operator or supervisor approves: the receipt deadline and its timers move to the requested one."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._locked(session, dispatch_id)
            outcome = _decide(
                lambda x: domain.approve_extension(self.reference, x, by=principal.id, note=note, now=now),
                dispatch,
            )
            await repo.update_dispatch(session, outcome.dispatches[0], now=now)
            await repo.reschedule_timers(session, outcome.timers)
            await self.outbox.add(session, *outcome.events)
            return await repo.get_dispatch_row(session, dispatch_id)

    async def refuse_extension(self, dispatch_id: uuid.UUID, *, note: str, principal: Principal) -> Any:
        """An operator or supervisor refuses: the receipt deadline in force stays."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._locked(session, dispatch_id)
            refused, event = _decide(
                lambda x: domain.refuse_extension(x, by=principal.id, note=note, now=now), dispatch
            )
            await repo.update_dispatch(session, refused, now=now)
            await self.outbox.add(session, event)
            return await repo.get_dispatch_row(session, dispatch_id)

    async def acknowledge(self, dispatch_id: uuid.UUID, *, principal: Principal) -> Any:
        """Acknowledge receipt; on time or late, exactly one outcome even when the deadline fires now."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._own(session, dispatch_id, principal)
            outcome = _decide(domain.acknowledge, dispatch, now=now, by=principal.id)
            (acknowledged,) = outcome.dispatches
            await repo.update_dispatch(session, acknowledged, acknowledged_by=principal.id, now=now)
            await repo.stop_timers(session, dispatch_id, now=now)
            await self.outbox.add(session, *outcome.events)
            row = await repo.get_dispatch_row(session, dispatch_id)
        metrics.ACKNOWLEDGED.labels(acknowledged.department_id, str(acknowledged.on_time).lower()).inc()
        metrics.TIME_TO_ACKNOWLEDGE.labels(acknowledged.department_id).observe(
            max(0.0, (now - dispatch.created_at).total_seconds())
        )
        if dispatch.overdue_at is None and acknowledged.overdue_at is not None:
            metrics.RECEIPT_OVERDUE.labels(acknowledged.department_id).inc()
        return row

    async def return_(self, dispatch_id: uuid.UUID, *, reason: str, principal: Principal) -> dict[str, Any]:
        """Return a dispatch (after receipt: within the window, or as a request awaiting approval)."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._own(session, dispatch_id, principal)
            hazard = await repo.get_hazard(session, dispatch.hazard_id, for_update=True)
            before = await repo.returned_departments(session, dispatch.hazard_id)
            outcome = _decide(
                lambda x: domain.return_dispatch(
                    self.reference,
                    x,
                    reason=reason,
                    by=principal.id,
                    now=now,
                    returned_before=before,
                    urgency=hazard.facts.urgency if hazard else None,
                    policy=self.returns,
                ),
                dispatch,
            )
            await self._write_return(session, outcome, returned_by=principal.id, now=now)
            row = await repo.get_dispatch_row(session, dispatch_id)
        count_outcome(outcome)
        return {"dispatch": row, "next": outcome}

    async def approve_return(self, dispatch_id: uuid.UUID, *, principal: Principal) -> dict[str, Any]:
        """An operator approves a return after receipt: the hazard is routed again."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._locked(session, dispatch_id)
            hazard = await repo.get_hazard(session, dispatch.hazard_id, for_update=True)
            before = await repo.returned_departments(session, dispatch.hazard_id)
            outcome = _decide(
                lambda x: domain.approve_return(
                    self.reference,
                    x,
                    by=principal.id,
                    now=now,
                    returned_before=before,
                    urgency=hazard.facts.urgency if hazard else None,
                ),
                dispatch,
            )
            requester = dispatch.return_request.requested_by if dispatch.return_request else principal.id
            await self._write_return(session, outcome, returned_by=requester, now=now)
            row = await repo.get_dispatch_row(session, dispatch_id)
        count_outcome(outcome)
        return {"dispatch": row, "next": outcome}

    async def refuse_return(self, dispatch_id: uuid.UUID, *, reason: str, principal: Principal) -> Any:
        """An operator refuses a return after receipt: the department keeps the hazard."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            dispatch = await self._locked(session, dispatch_id)
            refused = _decide(
                lambda x: domain.refuse_return(x, by=principal.id, reason=reason, now=now), dispatch
            )
            await repo.update_dispatch(session, refused, now=now)
            return await repo.get_dispatch_row(session, dispatch_id)

    async def _write_return(
        self, session: AsyncSession, outcome: domain.Outcome, *, returned_by: str, now: datetime
    ) -> None:
        returned = outcome.dispatches[0]
        await repo.update_dispatch(
            session, returned, returned_by=None if outcome.return_requested else returned_by, now=now
        )
        if outcome.return_requested:
            return  # awaiting the dispatch center's approval: nothing changes hands yet
        await repo.stop_timers(session, returned.dispatch_id, now=now)
        await repo.add_return(
            session,
            hazard_id=returned.hazard_id,
            department_id=returned.department_id,
            dispatch_id=returned.dispatch_id,
            now=now,
        )
        await self._add_new(session, outcome, dispatched_by="system", now=now)

    async def reassign(
        self, dispatch_id: uuid.UUID, *, department_id: str, reason: str, principal: Principal
    ) -> domain.Outcome:
        """An operator moves a pending dispatch to another department."""
        self._known_department(department_id)
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            row = await repo.get_dispatch_row(session, dispatch_id, for_update=True)
            if row is None:
                raise _not_found(dispatch_id)
            dispatch = repo.to_domain(row)
            hazard = await repo.get_hazard(session, dispatch.hazard_id, for_update=True)
            outcome = _decide(
                lambda x: domain.reassign(
                    self.reference,
                    x,
                    department_id=department_id,
                    by=principal.id,
                    now=now,
                    urgency=hazard.facts.urgency if hazard else None,
                ),
                dispatch,
            )
            await repo.update_dispatch(session, outcome.dispatches[0], now=now)
            await repo.stop_timers(session, dispatch_id, now=now)
            await self._add_new(session, outcome, dispatched_by=principal.id, note=reason, now=now)
        count_outcome(outcome)
        return outcome

    async def assign_from_queue(
        self, hazard_id: uuid.UUID, *, department_id: str, reason: str, principal: Principal
    ) -> domain.Outcome:
        """An operator assigns a hazard waiting in the operators' queue to a department."""
        self._known_department(department_id)
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            hazard = await repo.get_hazard(session, hazard_id, for_update=True)
            if hazard is None:
                raise ApiError(404, "not_found", f"No hazard {hazard_id} is known to dispatch.")
            if hazard.queue != "operators":
                raise ApiError(
                    409,
                    "not_in_operator_queue",
                    f"Hazard {hazard_id} is not waiting in the operators' queue; "
                    "reassign its dispatch instead.",
                )
            outcome = domain.assign_from_queue(
                self.reference, hazard.facts, department_id=department_id, by=principal.id, now=now
            )
            await self._add_new(session, outcome, dispatched_by=principal.id, note=reason, now=now)
        count_outcome(outcome)
        return outcome

    # ------------------------------------------------------------ helpers

    def _known_department(self, department_id: str) -> None:
        try:
            self.reference.department(department_id)
        except UnknownReference:
            known = ", ".join(dep.id for dep in self.reference.departments)
            raise ApiError(
                422,
                "unknown_department",
                f"Unknown department {department_id!r}. Known departments: {known}.",
                [{"field": "department_id", "problem": "unknown department"}],
            ) from None

    async def _locked(self, session: AsyncSession, dispatch_id: uuid.UUID) -> domain.Dispatch:
        """Lock a dispatch (operators act on any); 404 when unknown."""
        row = await repo.get_dispatch_row(session, dispatch_id, for_update=True)
        if row is None:
            raise _not_found(dispatch_id)
        return repo.to_domain(row)

    async def _own(
        self, session: AsyncSession, dispatch_id: uuid.UUID, principal: Principal
    ) -> domain.Dispatch:
        """Lock a dispatch the calling department holds; 404 when unknown or another department's.

        Another department's dispatch is invisible to the caller (GET answers 404), so acting on it is
        404 as well, in the same words as an unknown id: the answer never says who holds it.
        """
        row = await repo.get_dispatch_row(session, dispatch_id, for_update=True)
        if row is None or row.department_id != principal.department_id:
            raise _not_found(dispatch_id)
        return repo.to_domain(row)

    async def _add_new(
        self,
        session: AsyncSession,
        outcome: domain.Outcome,
        *,
        dispatched_by: str,
        now: datetime,
        note: str | None = None,
    ) -> None:
        """Write the new dispatch (or the referral) an outcome carries, and its events."""
        new = [x for x in outcome.dispatches if x.status == "pending"]
        hazard_id = outcome.events[0].hazard_id
        try:
            async with session.begin_nested():
                await repo.add_dispatches(
                    session,
                    [repo.dispatch_row(x, dispatched_by=dispatched_by, note=note) for x in new],
                    [repo.timer_row(x) for x in outcome.timers],
                )
        except IntegrityError:
            raise ApiError(
                409, "conflict", f"Hazard {hazard_id} already has an active dispatch; reload and retry."
            ) from None
        if outcome.referral is not None:
            await repo.set_queue(session, hazard_id, queue="operators", reason=outcome.referral, now=now)
        elif new:
            await repo.set_queue(session, hazard_id, queue="dispatched", reason=None, now=now)
        await self.outbox.add(session, *outcome.events)


def _not_found(dispatch_id: uuid.UUID) -> ApiError:
    return ApiError(404, "not_found", f"No dispatch {dispatch_id} is visible to you.")


def _decide(decide: Callable[..., _T], dispatch: domain.Dispatch, **kwargs: Any) -> _T:
    """Run a domain decision; a refusal becomes 409 with the domain's reason."""
    try:
        return decide(dispatch, **kwargs)
    except domain.DispatchConflictError as exc:
        raise ApiError(409, exc.code, exc.message) from None
