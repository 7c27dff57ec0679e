"""Use cases of the dispatch service: each one unit of work of lock, decide (domain), write, publish.

Every use case is a plain ``async def verb_noun(uow, ...)``: ``uow`` is one transaction
(:mod:`shared.uow`) with the :class:`~services.dispatch.repository.DispatchRepository`, the
database's now and the outbox, whether the call comes from an HTTP route, the consumer or the
timer loop. Refusals are domain exceptions (:mod:`shared.domain_errors`); ``shared/errors.py``
turns them into the API's error shape. Metrics are counted after commit (``uow.after_commit``),
so a retried batch never counts twice.

"Now" is always the database's clock, read at the start of the unit of work: a replica whose
host clock is off reaches the same verdicts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from services.dispatch import domain, metrics
from services.dispatch.repository import DispatchRecord, DispatchRepository, HazardRow, ListStatus
from shared import tracing
from shared.auth import Principal
from shared.domain_errors import ConflictError, ForbiddenError, InvalidError, NotFoundError
from shared.events import AnyEvent, HazardDuplicateUnlinked, HazardRelapsed, HazardReported, LifecycleEvent
from shared.reference import ReferenceData, UnknownReference
from shared.uow import UnitOfWork

_E = TypeVar("_E")

Work = UnitOfWork[DispatchRepository]
"""What a dispatch use case receives: a unit of work on the dispatch repository."""

WorkFactory = Callable[[], AbstractAsyncContextManager[Work]]
"""Opens units of work: ``runtime.work`` in the service, a fake in use-case tests."""


class EventWork(UnitOfWork[DispatchRepository], Protocol):
    """A consumer's unit of work: it may also refuse one event and log each event's ids."""

    async def reject(self, event: AnyEvent, reason: str) -> None: ...

    def each(self, events: Sequence[_E]) -> Iterator[_E]: ...


@dataclass(frozen=True, slots=True)
class Policies:
    """The reference data and the configured rules the use cases decide by."""

    reference: ReferenceData
    returns: domain.ReturnPolicy = field(default_factory=domain.ReturnPolicy)
    extension_limit: timedelta = domain.DEFAULT_EXTENSION_LIMIT


# ---------------------------------------------------------------- refusals


class DispatchNotFoundError(NotFoundError):
    """Unknown, or another department's: the two read alike (the answer never says who holds it)."""

    def __init__(self, dispatch_id: uuid.UUID) -> None:
        super().__init__(f"No dispatch {dispatch_id} is visible to you.")


class HazardNotFoundError(NotFoundError):
    """A hazard dispatch does not know."""

    def __init__(self, hazard_id: uuid.UUID) -> None:
        super().__init__(f"No hazard {hazard_id} is known to dispatch.")


class NotInOperatorQueueError(ConflictError):
    """Assigning from the operators' queue a hazard that is not waiting there."""

    code = "not_in_operator_queue"

    def __init__(self, hazard_id: uuid.UUID) -> None:
        super().__init__(
            f"Hazard {hazard_id} is not waiting in the operators' queue; reassign its dispatch instead."
        )


class ActiveDispatchError(ConflictError):
    """A concurrent action gave the hazard an active dispatch first."""

    def __init__(self, hazard_id: uuid.UUID) -> None:
        super().__init__(f"Hazard {hazard_id} already has an active dispatch; reload and retry.")


class OtherDepartmentError(ForbiddenError):
    """A department asking for another department's inbox."""

    def __init__(self) -> None:
        super().__init__("A department may list only its own dispatches.")


def unknown_department(reference: ReferenceData, department_id: str) -> InvalidError:
    """The refusal of a department id the reference data does not name."""
    known = ", ".join(dep.id for dep in reference.departments)
    return InvalidError.field(
        "department_id",
        f"Unknown department {department_id!r}. Known departments: {known}.",
        code="unknown_department",
        problem="unknown department",
    )


# ---------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Rerouted:
    """A dispatch returned (or its return requested or approved) and where the hazard went next."""

    dispatch: DispatchRecord
    outcome: domain.Outcome


# ---------------------------------------------------------------- consumed events


async def apply_events(uow: EventWork, reference: ReferenceData, events: Sequence[LifecycleEvent]) -> None:
    """Route every newly reported hazard of a batch and annotate relapses, with bulk writes."""
    # A report intake unlinked from a closed original is routed as a newly reported hazard.
    reported = [e for e in events if isinstance(e, HazardReported | HazardDuplicateUnlinked)]
    relapsed = [e for e in events if isinstance(e, HazardRelapsed)]
    if reported:
        await route_reported(uow, reference, reported)
    if relapsed:
        await uow.repo.add_relapses(
            [
                {
                    "hazard_id": e.hazard_id,
                    "original_hazard_id": e.payload.original_hazard_id,
                    "original_department_id": e.payload.original_department_id,
                    "recorded_at": uow.now,
                }
                for e in relapsed
            ]
        )


async def route_reported(
    uow: EventWork, reference: ReferenceData, reported: Sequence[HazardReported | HazardDuplicateUnlinked]
) -> None:
    """Dispatch (or refer to the operators) each hazard seen for the first time; refuse unroutable ones."""
    outcomes: dict[uuid.UUID, domain.Outcome] = {}
    hazard_rows: list[dict[str, Any]] = []
    for event in uow.each(reported):
        if event.hazard_id in outcomes or (
            isinstance(event, HazardReported) and not domain.needs_dispatch(event)
        ):
            continue
        try:
            outcome = domain.on_reported(reference, event, now=uow.now)
        except (UnknownReference, ValueError) as exc:
            await uow.reject(event, f"cannot route hazard {event.hazard_id}: {exc}")
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
                "updated_at": uow.now,
                **_report_details(event),
            }
        )
    # A hazard already known (the same report published twice under new event ids) is not routed again.
    # Rows go in id order so two replicas inserting overlapping batches never deadlock on each other.
    hazard_rows.sort(key=lambda row: row["hazard_id"].int)  # UUID order, compared as ints (cheaper)
    fresh = await uow.repo.add_hazards(hazard_rows)
    new: list[domain.Dispatch] = []
    out: list[domain.DispatchEvent] = []
    for hazard_id, outcome in outcomes.items():
        if hazard_id not in fresh:
            continue
        new.extend(outcome.dispatches)
        out.extend(outcome.events)
    await uow.repo.add_dispatches(new, dispatched_by="system")
    await uow.publish(*out)
    counted = [outcomes[hazard_id] for hazard_id in fresh]
    uow.after_commit(lambda: _count_outcomes(counted))


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


def _count_outcomes(outcomes: Iterable[domain.Outcome]) -> None:
    for outcome in outcomes:
        count_outcome(outcome)


# ---------------------------------------------------------------- reads


async def get_dispatch(uow: Work, dispatch_id: uuid.UUID, *, principal: Principal) -> DispatchRecord:
    """One dispatch; another department's is not found, like an unknown id."""
    record = await uow.repo.get_dispatch(dispatch_id)
    if record is None or (
        principal.role == "department" and record.dispatch.department_id != principal.department_id
    ):
        raise DispatchNotFoundError(dispatch_id)
    return record


async def list_dispatches(
    uow: Work,
    *,
    principal: Principal,
    status: ListStatus | None = None,
    department_id: str | None = None,
    return_request: domain.ReturnRequestStatus | None = None,
    extension_request: domain.ExtensionStatus | None = None,
    limit: int,
    offset: int,
) -> list[DispatchRecord]:
    """The inbox: a department sees only its own dispatches; operators and supervisors see all."""
    if principal.role == "department":
        if department_id is not None and department_id != principal.department_id:
            raise OtherDepartmentError()
        department_id = principal.department_id
    return await uow.repo.list_dispatches(
        department_id=department_id,
        status=status,
        limit=limit,
        offset=offset,
        return_request=return_request,
        extension_request=extension_request,
    )


async def list_operator_queue(uow: Work, *, limit: int, offset: int) -> list[HazardRow]:
    """Hazards no department holds, oldest first."""
    return await uow.repo.list_operator_queue(limit=limit, offset=offset)


# ---------------------------------------------------------------- department actions


async def acknowledge_dispatch(uow: Work, dispatch_id: uuid.UUID, *, principal: Principal) -> DispatchRecord:
    """Acknowledge receipt; on time or late, exactly one outcome even when the deadline fires now."""
    dispatch = await _own(uow, dispatch_id, principal)
    outcome = domain.acknowledge(dispatch, now=uow.now, by=principal.id)
    (acknowledged,) = outcome.dispatches
    # No longer pending: the same update clears its next due step (its timers stop).
    await uow.repo.update_dispatch(acknowledged, acknowledged_by=principal.id, now=uow.now)
    await uow.publish(*outcome.events)
    waited = max(0.0, (uow.now - dispatch.created_at).total_seconds())
    declared_overdue = dispatch.overdue_at is None and acknowledged.overdue_at is not None

    def count() -> None:
        metrics.ACKNOWLEDGED.labels(acknowledged.department_id, str(acknowledged.on_time).lower()).inc()
        metrics.TIME_TO_ACKNOWLEDGE.labels(acknowledged.department_id).observe(waited)
        if declared_overdue:
            metrics.RECEIPT_OVERDUE.labels(acknowledged.department_id).inc()

    uow.after_commit(count)
    return await _shown(uow, dispatch_id)


async def return_dispatch(
    uow: Work, dispatch_id: uuid.UUID, *, reason: str, principal: Principal, policies: Policies
) -> Rerouted:
    """Return a dispatch (after receipt: within the window, or as a request awaiting approval)."""
    dispatch = await _own(uow, dispatch_id, principal)
    urgency, before = await _hazard_context(uow, dispatch.hazard_id)
    outcome = domain.return_dispatch(
        policies.reference,
        dispatch,
        reason=reason,
        by=principal.id,
        now=uow.now,
        returned_before=before,
        urgency=urgency,
        policy=policies.returns,
    )
    await _write_return(uow, outcome, returned_by=principal.id)
    return Rerouted(dispatch=await _shown(uow, dispatch_id), outcome=outcome)


async def request_extension(
    uow: Work,
    dispatch_id: uuid.UUID,
    *,
    deadline: datetime,
    reason: str,
    principal: Principal,
    policies: Policies,
) -> DispatchRecord:
    """The department holding a pending dispatch asks for a later receipt deadline (awaits a decision)."""
    dispatch = await _own(uow, dispatch_id, principal)
    requested, event = domain.request_extension(
        dispatch,
        deadline=deadline,
        reason=reason,
        by=principal.id,
        now=uow.now,
        limit=policies.extension_limit,
    )
    await uow.repo.update_dispatch(requested, now=uow.now)
    await uow.publish(event)
    return await _shown(uow, dispatch_id)


# ---------------------------------------------------------------- operator and supervisor actions


async def approve_return(
    uow: Work, dispatch_id: uuid.UUID, *, principal: Principal, policies: Policies
) -> Rerouted:
    """An operator approves a return after receipt: the hazard is routed again."""
    dispatch = await _locked(uow, dispatch_id)
    urgency, before = await _hazard_context(uow, dispatch.hazard_id)
    outcome = domain.approve_return(
        policies.reference, dispatch, by=principal.id, now=uow.now, returned_before=before, urgency=urgency
    )
    requester = dispatch.return_request.requested_by if dispatch.return_request else principal.id
    await _write_return(uow, outcome, returned_by=requester)
    return Rerouted(dispatch=await _shown(uow, dispatch_id), outcome=outcome)


async def refuse_return(
    uow: Work, dispatch_id: uuid.UUID, *, reason: str, principal: Principal
) -> DispatchRecord:
    """An operator refuses a return after receipt: the department keeps the hazard."""
    dispatch = await _locked(uow, dispatch_id)
    refused = domain.refuse_return(dispatch, by=principal.id, reason=reason, now=uow.now)
    await uow.repo.update_dispatch(refused, now=uow.now)
    return await _shown(uow, dispatch_id)


async def approve_extension(
    uow: Work, dispatch_id: uuid.UUID, *, note: str, principal: Principal, policies: Policies
) -> DispatchRecord:
    """An operator or supervisor approves: the receipt deadline and its steps move to the requested one."""
    dispatch = await _locked(uow, dispatch_id)
    outcome = domain.approve_extension(policies.reference, dispatch, by=principal.id, note=note, now=uow.now)
    await uow.repo.update_dispatch(outcome.dispatches[0], now=uow.now, reschedule=True)
    await uow.publish(*outcome.events)
    return await _shown(uow, dispatch_id)


async def refuse_extension(
    uow: Work, dispatch_id: uuid.UUID, *, note: str, principal: Principal
) -> DispatchRecord:
    """An operator or supervisor refuses: the receipt deadline in force stays."""
    dispatch = await _locked(uow, dispatch_id)
    refused, event = domain.refuse_extension(dispatch, by=principal.id, note=note, now=uow.now)
    await uow.repo.update_dispatch(refused, now=uow.now)
    await uow.publish(event)
    return await _shown(uow, dispatch_id)


async def reassign_dispatch(
    uow: Work,
    dispatch_id: uuid.UUID,
    *,
    department_id: str,
    reason: str,
    principal: Principal,
    policies: Policies,
) -> domain.Outcome:
    """An operator moves a pending dispatch to another department."""
    reference = policies.reference
    _require_department(reference, department_id)
    dispatch = await _locked(uow, dispatch_id)
    hazard = await uow.repo.get_hazard(dispatch.hazard_id, for_update=True)
    outcome = domain.reassign(
        reference,
        dispatch,
        department_id=department_id,
        by=principal.id,
        now=uow.now,
        urgency=hazard.facts.urgency if hazard else None,
    )
    await uow.repo.update_dispatch(outcome.dispatches[0], now=uow.now)  # superseded: its steps stop
    await _add_new(uow, outcome, dispatched_by=principal.id, note=reason)
    uow.after_commit(lambda: count_outcome(outcome))
    return outcome


async def assign_from_queue(
    uow: Work,
    hazard_id: uuid.UUID,
    *,
    department_id: str,
    reason: str,
    principal: Principal,
    policies: Policies,
) -> domain.Outcome:
    """An operator assigns a hazard waiting in the operators' queue to a department."""
    reference = policies.reference
    _require_department(reference, department_id)
    hazard = await uow.repo.get_hazard(hazard_id, for_update=True)
    if hazard is None:
        raise HazardNotFoundError(hazard_id)
    if hazard.queue != "operators":
        raise NotInOperatorQueueError(hazard_id)
    outcome = domain.assign_from_queue(
        reference, hazard.facts, department_id=department_id, by=principal.id, now=uow.now
    )
    await _add_new(uow, outcome, dispatched_by=principal.id, note=reason)
    uow.after_commit(lambda: count_outcome(outcome))
    return outcome


# ---------------------------------------------------------------- timers


async def fire_due_timers(uow: Work, *, limit: int) -> int:
    """Claim up to ``limit`` dispatches with a step due and fire those steps; how many dispatches it claimed.

    Claims skip dispatches another transaction holds, so replicas and concurrent passes never fire
    the same step, and an acknowledgement in progress is never raced (see the repository). Each
    claimed dispatch fires every step due (the receipt deadline, then escalation levels, in due
    order) and moves on to its next step in this transaction.
    """
    now = uow.now
    claimed = await uow.repo.claim_due_timers(now=now, limit=limit)
    if not claimed:
        return 0
    firings = [domain.fire(c, now=now) for c in claimed]
    events = [e for f in firings for e in f.events]
    steps = [t for f in firings for t in f.fired]
    # A span per pass that fired something (tracing on): the events it writes carry it.
    with tracing.current_span(
        "dispatch",
        "deadlines fire",
        attributes={"hazard.timers_fired": len(events), "hazard.timers_claimed": len(steps)},
    ):
        await uow.publish(*events)
    await uow.repo.mark_fired(firings, now=now)
    departments = {c.dispatch_id: c.department_id for c in claimed}

    def count() -> None:
        for step in steps:
            metrics.TIMER_LATENESS.observe(max(0.0, (now - step.due_at).total_seconds()))
            if step.kind == "receipt_overdue":
                metrics.RECEIPT_OVERDUE.labels(departments[step.dispatch_id]).inc()
            else:
                metrics.ESCALATIONS.labels(str(step.level)).inc()

    uow.after_commit(count)
    return len(claimed)


async def refresh_gauges(uow: Work, *, seen: set[str]) -> set[str]:
    """Set the pending, overdue and operator-queue gauges from the database; the departments seen so far.

    Departments seen before that have nothing pending now drop to zero.
    """
    counts = await uow.repo.pending_and_overdue()
    queue = await uow.repo.operator_queue_size()
    for department in seen - counts.keys():
        metrics.PENDING.labels(department).set(0)
        metrics.OVERDUE.labels(department).set(0)
    for department, (pending, overdue) in counts.items():
        metrics.PENDING.labels(department).set(pending)
        metrics.OVERDUE.labels(department).set(overdue)
    metrics.OPERATOR_QUEUE.set(queue)
    return seen | counts.keys()


# ---------------------------------------------------------------- helpers


def _require_department(reference: ReferenceData, department_id: str) -> None:
    try:
        reference.department(department_id)
    except UnknownReference:
        raise unknown_department(reference, department_id) from None


async def _locked(uow: Work, dispatch_id: uuid.UUID) -> domain.Dispatch:
    """Lock a dispatch (operators act on any); not found when unknown."""
    dispatch = await uow.repo.lock_dispatch(dispatch_id)
    if dispatch is None:
        raise DispatchNotFoundError(dispatch_id)
    return dispatch


async def _own(uow: Work, dispatch_id: uuid.UUID, principal: Principal) -> domain.Dispatch:
    """Lock a dispatch the calling department holds; not found when unknown or another department's.

    Another department's dispatch is invisible to the caller (a read is not found), so acting on it
    is not found as well, in the same words as an unknown id: the answer never says who holds it.
    """
    dispatch = await uow.repo.lock_dispatch(dispatch_id)
    if dispatch is None or dispatch.department_id != principal.department_id:
        raise DispatchNotFoundError(dispatch_id)
    return dispatch


async def _shown(uow: Work, dispatch_id: uuid.UUID) -> DispatchRecord:
    """The dispatch as it now stands (read back in the same transaction)."""
    record = await uow.repo.get_dispatch(dispatch_id)
    if record is None:  # locked by this transaction a moment ago: cannot happen
        raise DispatchNotFoundError(dispatch_id)
    return record


async def _hazard_context(uow: Work, hazard_id: uuid.UUID) -> tuple[str | None, set[str]]:
    """Lock the hazard; its urgency and every department that returned it."""
    hazard = await uow.repo.get_hazard(hazard_id, for_update=True)
    before = await uow.repo.returned_departments(hazard_id)
    return (hazard.facts.urgency if hazard else None), before


async def _write_return(uow: Work, outcome: domain.Outcome, *, returned_by: str) -> None:
    returned = outcome.dispatches[0]
    await uow.repo.update_dispatch(
        returned, returned_by=None if outcome.return_requested else returned_by, now=uow.now
    )
    if outcome.return_requested:
        return  # awaiting the dispatch center's approval: nothing changes hands yet
    await uow.repo.add_return(
        hazard_id=returned.hazard_id,
        department_id=returned.department_id,
        dispatch_id=returned.dispatch_id,
        now=uow.now,
    )
    await _add_new(uow, outcome, dispatched_by="system")
    uow.after_commit(lambda: count_outcome(outcome))


async def _add_new(
    uow: Work, outcome: domain.Outcome, *, dispatched_by: str, note: str | None = None
) -> None:
    """Write the new dispatch (or the referral) an outcome carries, and publish its events."""
    new = [x for x in outcome.dispatches if x.status == "pending"]
    hazard_id = outcome.events[0].hazard_id
    added = await uow.repo.add_dispatches_unless_active(new, dispatched_by=dispatched_by, note=note)
    if not added:
        raise ActiveDispatchError(hazard_id)
    if outcome.referral is not None:
        await uow.repo.set_queue(hazard_id, queue="operators", reason=outcome.referral, now=uow.now)
    elif new:
        await uow.repo.set_queue(hazard_id, queue="dispatched", reason=None, now=uow.now)
    await uow.publish(*outcome.events)
