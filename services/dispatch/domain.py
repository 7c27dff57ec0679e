"""Pure dispatch decisions: routing, frozen receipt deadlines, acknowledgement, return, reassign, escalation.

Nothing here does I/O or reads the clock: time comes in as a value, and every
function returns new values (state and the events to publish).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal, TypedDict

from shared.domain_errors import ConflictError, InvalidError
from shared.events import (
    FrozenDeadlineRule,
    HazardAcknowledged,
    HazardAcknowledgedPayload,
    HazardDispatched,
    HazardDispatchedPayload,
    HazardDuplicateUnlinked,
    HazardEscalated,
    HazardEscalatedPayload,
    HazardExtensionDecided,
    HazardExtensionDecidedPayload,
    HazardExtensionRequested,
    HazardExtensionRequestedPayload,
    HazardReceiptOverdue,
    HazardReceiptOverduePayload,
    HazardReferredToOperators,
    HazardReferredToOperatorsPayload,
    HazardReported,
    HazardReturned,
    HazardReturnedPayload,
)
from shared.reference import DeadlineRule, EscalationStep, ReferenceData, add_deadline

DispatchStatus = Literal["pending", "acknowledged", "returned", "superseded"]
ReturnAfterReceipt = Literal["window", "approval"]
ReturnRequestStatus = Literal["awaiting_approval", "approved", "refused"]
ExtensionStatus = Literal["awaiting_approval", "approved", "refused"]
TimerKind = Literal["receipt_overdue", "escalation"]
DispatchReason = Literal["routed", "rerouted", "reassigned"]
ReferralReason = Literal["no_rule", "all_candidates_returned"]
IdFactory = Callable[[], uuid.UUID]
DispatchEvent = (
    HazardDispatched
    | HazardReferredToOperators
    | HazardReturned
    | HazardAcknowledged
    | HazardReceiptOverdue
    | HazardEscalated
    | HazardExtensionRequested
    | HazardExtensionDecided
)

RECEIPT_OVERDUE_LEVEL = 0
"""Timer level of the receipt deadline itself; escalation steps use their own levels (1, 2, ...)."""


class DispatchConflictError(ConflictError):
    """A request that the dispatch's state does not allow (the API answers 409 with its code)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


@dataclass(frozen=True, slots=True)
class HazardFacts:
    """What dispatch keeps of a reported hazard to route it (and route it again)."""

    hazard_id: uuid.UUID
    category: str
    community_id: str
    grid_id: str
    urgency: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Where a hazard goes: a department by a rule, or the operators' queue (department None)."""

    department_id: str | None
    rule_id: str | None


@dataclass(frozen=True, slots=True)
class Timer:
    """One deadline of a dispatch: the receipt deadline (level 0) or an escalation step.

    Not a row of its own (#20): a dispatch carries its schedule (``receipt_deadline`` and
    ``escalation``) and the due time of its next unfired step; :func:`schedule` lists the steps.
    """

    dispatch_id: uuid.UUID
    kind: TimerKind
    level: int
    target: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class EscalationDue:
    """One escalation step as frozen on its dispatch: its level, whom it goes to, when it falls due.

    Computed once when the dispatch is made (from the chain and the calendar in force then), so a
    later change of ``escalation.yaml`` or of the calendar never moves a dispatch's steps; only an
    approved extension recomputes the due times, as the timers were moved before #20.
    """

    level: int
    target: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One dispatch of a hazard to a department, with its deadline frozen at creation."""

    dispatch_id: uuid.UUID
    hazard_id: uuid.UUID
    department_id: str
    rule_id: str | None
    category: str
    community_id: str
    grid_id: str
    status: DispatchStatus
    receipt_deadline: datetime
    deadline_rule: FrozenDeadlineRule
    created_at: datetime
    reason: DispatchReason = "routed"
    previous_dispatch_id: uuid.UUID | None = None
    acknowledged_at: datetime | None = None
    on_time: bool | None = None
    overdue_at: datetime | None = None
    returned_reason: str | None = None
    return_request: ReturnRequest | None = None
    original_receipt_deadline: datetime | None = None
    """The receipt deadline as first frozen, once an extension moved it (None: never moved)."""
    extension_request: ExtensionRequest | None = None
    escalation: tuple[EscalationDue, ...] = ()
    """The escalation steps frozen at dispatch time, after the receipt deadline (level 0)."""


@dataclass(frozen=True, slots=True)
class ExtensionRequest:
    """A department's request to move its receipt deadline (延期申请), and the decision on it."""

    status: ExtensionStatus
    requested_deadline: datetime
    reason: str
    requested_by: str
    requested_at: datetime
    previous_deadline: datetime
    """The deadline in force when the request was made."""
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_note: str | None = None


class ExtensionDateRefused(InvalidError):  # noqa: N818 - reads as what happened
    """A requested deadline that cannot be granted: not after the current one, or too far (422)."""

    code = "invalid_deadline"

    def __init__(self, message: str) -> None:
        super().__init__(message, details=[{"field": "deadline", "problem": message}])


@dataclass(frozen=True, slots=True)
class ReturnRequest:
    """A department's request to return a dispatch it acknowledged, and the dispatch center's decision."""

    status: ReturnRequestStatus
    reason: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    refusal_reason: str | None = None


@dataclass(frozen=True, slots=True)
class ReturnPolicy:
    """How a department may return a hazard after acknowledging receipt (退单 after 签收).

    ``window``: by itself, within ``window`` of its acknowledgement; ``approval``: any time,
    once the dispatch center approves its request.
    """

    after_receipt: ReturnAfterReceipt = "window"
    window: timedelta = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of a decision: dispatches created or changed (each with its schedule), events to publish."""

    dispatches: tuple[Dispatch, ...] = ()
    events: tuple[DispatchEvent, ...] = ()
    referral: ReferralReason | None = None
    return_requested: bool = False
    """The return awaits the dispatch center's approval: nothing is published yet."""

    @property
    def referred(self) -> bool:
        """Whether the hazard went to the operators' queue."""
        return self.referral is not None


# ---------------------------------------------------------------- routing and deadlines


def route(reference: ReferenceData, facts: HazardFacts, *, exclude: Iterable[str] = ()) -> Route:
    """The first routing rule for the hazard's category and place not naming an excluded department."""
    rule = reference.route(
        facts.category,
        community_id=facts.community_id,
        grid_id=facts.grid_id,
        exclude_departments=frozenset(exclude),
    )
    if rule is None:
        return Route(department_id=None, rule_id=None)
    return Route(department_id=rule.department_id, rule_id=rule.id)


def freeze_rule(rule: DeadlineRule) -> FrozenDeadlineRule:
    """The deadline rule as it stands now, to be kept on the dispatch."""
    return FrozenDeadlineRule(minutes=rule.minutes, working_time=rule.working_time)


def receipt_deadline(
    reference: ReferenceData, *, category: str, urgency: str | None, start: datetime
) -> tuple[datetime, FrozenDeadlineRule]:
    """The receipt deadline counted from `start` by the category's (and urgency's) rule, and that rule."""
    level = urgency if urgency in ("normal", "urgent") else None
    rule = reference.receipt_rule(category, level)
    deadline = add_deadline(start, rule, reference.calendar)
    return deadline, freeze_rule(rule)


def escalation_plan(
    *, deadline: datetime, steps: Iterable[EscalationStep], reference: ReferenceData
) -> tuple[EscalationDue, ...]:
    """One due step per escalation step of the chain, each due `after` the receipt deadline."""
    return tuple(
        EscalationDue(
            level=step.level,
            target=step.target,
            due_at=add_deadline(deadline, step.after, reference.calendar),
        )
        for step in steps
    )


def schedule(dispatch: Dispatch) -> tuple[Timer, ...]:
    """Every step of a dispatch: the receipt deadline (level 0), then its frozen escalation steps."""
    receipt = Timer(
        dispatch_id=dispatch.dispatch_id,
        kind="receipt_overdue",
        level=RECEIPT_OVERDUE_LEVEL,
        target=dispatch.department_id,
        due_at=dispatch.receipt_deadline,
    )
    return (receipt, *_escalation_timers(dispatch.dispatch_id, dispatch.escalation))


def _escalation_timers(dispatch_id: uuid.UUID, steps: Iterable[EscalationDue]) -> list[Timer]:
    return [
        Timer(dispatch_id=dispatch_id, kind="escalation", level=s.level, target=s.target, due_at=s.due_at)
        for s in steps
    ]


def first_due(dispatch: Dispatch) -> datetime | None:
    """When the first step of a dispatch none of whose steps fired yet falls due (None: not pending)."""
    if dispatch.status != "pending":
        return None
    return min(t.due_at for t in schedule(dispatch))


class _Meta(TypedDict):
    event_id: uuid.UUID
    occurred_at: datetime
    hazard_id: uuid.UUID
    producer: Literal["dispatch"]
    causation_id: uuid.UUID | None


def _event_meta(
    *, hazard_id: uuid.UUID, now: datetime, causation_id: uuid.UUID | None, new_id: IdFactory
) -> _Meta:
    """The envelope fields of an event dispatch publishes."""
    return {
        "event_id": new_id(),
        "occurred_at": now,
        "hazard_id": hazard_id,
        "producer": "dispatch",
        "causation_id": causation_id,
    }


def dispatch_to(
    reference: ReferenceData,
    facts: HazardFacts,
    *,
    department_id: str,
    rule_id: str | None,
    now: datetime,
    reason: DispatchReason,
    causation_id: uuid.UUID | None,
    previous_dispatch_id: uuid.UUID | None = None,
    dispatched_by: str = "system",
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """A new pending dispatch to `department_id` with its frozen deadline, timers and `hazard.dispatched`."""
    deadline, frozen = receipt_deadline(reference, category=facts.category, urgency=facts.urgency, start=now)
    dispatch = Dispatch(
        dispatch_id=new_id(),
        hazard_id=facts.hazard_id,
        department_id=department_id,
        rule_id=rule_id,
        category=facts.category,
        community_id=facts.community_id,
        grid_id=facts.grid_id,
        status="pending",
        receipt_deadline=deadline,
        deadline_rule=frozen,
        created_at=now,
        reason=reason,
        previous_dispatch_id=previous_dispatch_id,
        escalation=escalation_plan(deadline=deadline, steps=reference.escalation_steps, reference=reference),
    )
    event = HazardDispatched(
        **_event_meta(hazard_id=facts.hazard_id, now=now, causation_id=causation_id, new_id=new_id),
        payload=HazardDispatchedPayload(
            dispatch_id=dispatch.dispatch_id,
            department_id=department_id,
            rule_id=rule_id,
            receipt_deadline=deadline,
            deadline_rule=frozen,
            reason=reason,
            previous_dispatch_id=previous_dispatch_id,
            dispatched_by=dispatched_by,
        ),
    )
    return Outcome(dispatches=(dispatch,), events=(event,))


def refer_to_operators(
    facts: HazardFacts,
    *,
    reason: ReferralReason,
    now: datetime,
    causation_id: uuid.UUID | None,
    excluded: Iterable[str] = (),
    previous_dispatch_id: uuid.UUID | None = None,
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """Send the hazard to the operators' queue with `hazard.referred_to_operators`."""
    event = HazardReferredToOperators(
        **_event_meta(hazard_id=facts.hazard_id, now=now, causation_id=causation_id, new_id=new_id),
        payload=HazardReferredToOperatorsPayload(
            reason=reason,
            excluded_departments=tuple(sorted(excluded)),
            previous_dispatch_id=previous_dispatch_id,
        ),
    )
    return Outcome(events=(event,), referral=reason)


def replace_deadline(dispatch: Dispatch, deadline: datetime) -> Dispatch:
    """The same dispatch with another receipt deadline (tests and benchmarks move deadlines to now)."""
    return replace(dispatch, receipt_deadline=deadline)


def needs_dispatch(event: HazardReported) -> bool:
    """Whether a reported hazard is dispatched at all (not fixed on site, not a linked duplicate)."""
    return not event.payload.rectified_on_site and event.payload.duplicate_of is None


def facts_of(event: HazardReported | HazardDuplicateUnlinked) -> HazardFacts:
    """The routing facts of a reported hazard (or of a report whose duplicate link intake undid)."""
    payload = event.payload
    return HazardFacts(
        hazard_id=event.hazard_id,
        category=payload.category,
        community_id=payload.community_id,
        grid_id=payload.grid_id,
        urgency=payload.urgency,
    )


def on_reported(
    reference: ReferenceData,
    event: HazardReported | HazardDuplicateUnlinked,
    *,
    now: datetime,
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """Route a newly reported hazard (or one no longer a duplicate): a dispatch by the first rule, or operators."""
    facts = facts_of(event)
    found = route(reference, facts)
    if found.department_id is None:
        return refer_to_operators(
            facts, reason="no_rule", now=now, causation_id=event.event_id, new_id=new_id
        )
    return dispatch_to(
        reference,
        facts,
        department_id=found.department_id,
        rule_id=found.rule_id,
        now=now,
        reason="routed",
        causation_id=event.event_id,
        new_id=new_id,
    )


# ---------------------------------------------------------------- acknowledgement, return, reassign


def _require_pending(dispatch: Dispatch, action: str) -> None:
    if dispatch.status != "pending":
        raise DispatchConflictError(
            f"already_{dispatch.status}",
            f"Dispatch {dispatch.dispatch_id} is already {dispatch.status}; it cannot be {action}.",
        )


def acknowledge(dispatch: Dispatch, *, now: datetime, by: str, new_id: IdFactory = uuid.uuid4) -> Outcome:
    """Record receipt: on time when before the deadline and not yet declared overdue, else late.

    A late acknowledgement of a dispatch whose overdue timer has not fired yet declares it overdue
    in the same step, so `hazard.receipt_overdue` is published exactly when receipt was late.
    """
    _require_pending(dispatch, "acknowledged")
    on_time = dispatch.overdue_at is None and now <= dispatch.receipt_deadline
    events: list[HazardAcknowledged | HazardReceiptOverdue] = []
    overdue_at = dispatch.overdue_at
    if not on_time and overdue_at is None:
        overdue_at = now
        events.append(overdue_event(dispatch, now=now, new_id=new_id))
    acknowledged = replace(
        dispatch, status="acknowledged", acknowledged_at=now, on_time=on_time, overdue_at=overdue_at
    )
    events.append(
        HazardAcknowledged(
            **_event_meta(hazard_id=dispatch.hazard_id, now=now, causation_id=None, new_id=new_id),
            payload=HazardAcknowledgedPayload(
                dispatch_id=dispatch.dispatch_id,
                department_id=dispatch.department_id,
                acknowledged_at=now,
                receipt_deadline=dispatch.receipt_deadline,
                on_time=on_time,
                acknowledged_by=by,
            ),
        )
    )
    return Outcome(dispatches=(acknowledged,), events=tuple(events))


def facts_of_dispatch(dispatch: Dispatch, *, urgency: str | None) -> HazardFacts:
    """The routing facts carried by a dispatch."""
    return HazardFacts(
        hazard_id=dispatch.hazard_id,
        category=dispatch.category,
        community_id=dispatch.community_id,
        grid_id=dispatch.grid_id,
        urgency=urgency,
    )


def return_dispatch(
    reference: ReferenceData,
    dispatch: Dispatch,
    *,
    reason: str,
    by: str,
    now: datetime,
    returned_before: Iterable[str],
    urgency: str | None = None,
    policy: ReturnPolicy = ReturnPolicy(),
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """Return a dispatch and route the hazard again, excluding every department that returned it.

    An acknowledged dispatch may be returned too (its receipt stays on record): within the
    policy's window after receipt, or, in approval mode, as a request the operators decide.
    """
    if dispatch.status == "acknowledged":
        if dispatch.return_request is not None and dispatch.return_request.status == "awaiting_approval":
            raise DispatchConflictError(
                "return_awaiting_approval",
                f"A return of dispatch {dispatch.dispatch_id} already awaits the dispatch center's approval.",
            )
        if policy.after_receipt == "approval":
            request = ReturnRequest(
                status="awaiting_approval", reason=reason, requested_by=by, requested_at=now
            )
            return Outcome(dispatches=(replace(dispatch, return_request=request),), return_requested=True)
        acknowledged_at = dispatch.acknowledged_at or now
        if now - acknowledged_at > policy.window:
            minutes = int(policy.window.total_seconds() // 60)
            raise DispatchConflictError(
                "return_window_passed",
                f"Dispatch {dispatch.dispatch_id} was acknowledged at {acknowledged_at.isoformat()}; "
                f"a department may return a hazard within {minutes} minutes of its receipt.",
            )
    else:
        _require_pending(dispatch, "returned")
    return _returned(
        reference,
        dispatch,
        reason=reason,
        by=by,
        now=now,
        returned_before=returned_before,
        urgency=urgency,
        approved_by=None,
        new_id=new_id,
    )


def _require_request(dispatch: Dispatch) -> ReturnRequest:
    request = dispatch.return_request
    if dispatch.status != "acknowledged" or request is None or request.status != "awaiting_approval":
        raise DispatchConflictError(
            "no_return_request", f"No return of dispatch {dispatch.dispatch_id} awaits a decision."
        )
    return request


def approve_return(
    reference: ReferenceData,
    dispatch: Dispatch,
    *,
    by: str,
    now: datetime,
    returned_before: Iterable[str],
    urgency: str | None = None,
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """The dispatch center approves a department's return after receipt: returned and routed again."""
    request = _require_request(dispatch)
    decided = replace(
        dispatch, return_request=replace(request, status="approved", decided_by=by, decided_at=now)
    )
    return _returned(
        reference,
        decided,
        reason=request.reason,
        by=request.requested_by,
        now=now,
        returned_before=returned_before,
        urgency=urgency,
        approved_by=by,
        new_id=new_id,
    )


def refuse_return(dispatch: Dispatch, *, by: str, reason: str, now: datetime) -> Dispatch:
    """The dispatch center refuses a return after receipt: the department keeps the hazard."""
    request = _require_request(dispatch)
    return replace(
        dispatch,
        return_request=replace(
            request, status="refused", decided_by=by, decided_at=now, refusal_reason=reason
        ),
    )


def _returned(
    reference: ReferenceData,
    dispatch: Dispatch,
    *,
    reason: str,
    by: str,
    now: datetime,
    returned_before: Iterable[str],
    urgency: str | None,
    approved_by: str | None,
    new_id: IdFactory,
) -> Outcome:
    returned = replace(dispatch, status="returned", returned_reason=reason)
    returned_event = HazardReturned(
        **_event_meta(hazard_id=dispatch.hazard_id, now=now, causation_id=None, new_id=new_id),
        payload=HazardReturnedPayload(
            dispatch_id=dispatch.dispatch_id,
            department_id=dispatch.department_id,
            reason=reason,
            returned_by=by,
            after_receipt=dispatch.acknowledged_at is not None,
            acknowledged_at=dispatch.acknowledged_at,
            approved_by=approved_by,
        ),
    )
    excluded = {*returned_before, dispatch.department_id}
    facts = facts_of_dispatch(dispatch, urgency=urgency)
    found = route(reference, facts, exclude=excluded)
    if found.department_id is None:
        next_step = refer_to_operators(
            facts,
            reason="all_candidates_returned",
            now=now,
            causation_id=returned_event.event_id,
            excluded=excluded,
            previous_dispatch_id=dispatch.dispatch_id,
            new_id=new_id,
        )
    else:
        next_step = dispatch_to(
            reference,
            facts,
            department_id=found.department_id,
            rule_id=found.rule_id,
            now=now,
            reason="rerouted",
            causation_id=returned_event.event_id,
            previous_dispatch_id=dispatch.dispatch_id,
            new_id=new_id,
        )
    return Outcome(
        dispatches=(returned, *next_step.dispatches),
        events=(returned_event, *next_step.events),
        referral=next_step.referral,
    )


def reassign(
    reference: ReferenceData,
    dispatch: Dispatch,
    *,
    department_id: str,
    by: str,
    now: datetime,
    urgency: str | None = None,
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """An operator moves a pending dispatch to another department: the old one is superseded."""
    _require_pending(dispatch, "reassigned")
    reference.department(department_id)
    if department_id == dispatch.department_id:
        raise DispatchConflictError(
            "same_department",
            f"Dispatch {dispatch.dispatch_id} is already with department {department_id!r}.",
        )
    superseded = replace(dispatch, status="superseded")
    next_step = dispatch_to(
        reference,
        facts_of_dispatch(dispatch, urgency=urgency),
        department_id=department_id,
        rule_id=None,
        now=now,
        reason="reassigned",
        causation_id=None,
        previous_dispatch_id=dispatch.dispatch_id,
        dispatched_by=by,
        new_id=new_id,
    )
    return Outcome(dispatches=(superseded, *next_step.dispatches), events=next_step.events)


def assign_from_queue(
    reference: ReferenceData,
    facts: HazardFacts,
    *,
    department_id: str,
    by: str,
    now: datetime,
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """An operator assigns a hazard waiting in the operators' queue to a department."""
    reference.department(department_id)
    return dispatch_to(
        reference,
        facts,
        department_id=department_id,
        rule_id=None,
        now=now,
        reason="reassigned",
        causation_id=None,
        dispatched_by=by,
        new_id=new_id,
    )


# ---------------------------------------------------------------- timers


def overdue_event(
    dispatch: Dispatch, *, now: datetime, new_id: IdFactory = uuid.uuid4
) -> HazardReceiptOverdue:
    """`hazard.receipt_overdue` for a dispatch."""
    return HazardReceiptOverdue(
        **_event_meta(hazard_id=dispatch.hazard_id, now=now, causation_id=None, new_id=new_id),
        payload=HazardReceiptOverduePayload(
            dispatch_id=dispatch.dispatch_id,
            department_id=dispatch.department_id,
            receipt_deadline=dispatch.receipt_deadline,
        ),
    )


@dataclass(frozen=True, slots=True)
class DueDispatch:
    """A dispatch claimed by a timer pass: its state and its frozen schedule, as the timer loop sees it.

    The steps still to fire follow from the state: the receipt deadline while ``overdue_at`` is
    unset, and the escalation steps above ``escalation_level`` (levels strictly increase along the
    chain and fire in due order).
    """

    dispatch_id: uuid.UUID
    hazard_id: uuid.UUID
    department_id: str
    status: DispatchStatus
    receipt_deadline: datetime
    overdue_at: datetime | None
    escalation_level: int
    escalation: tuple[EscalationDue, ...]


def unfired_steps(due: DueDispatch) -> list[Timer]:
    """The steps of a pending dispatch that have not fired, in due order (none once it left pending)."""
    if due.status != "pending":
        return []
    steps = _escalation_timers(due.dispatch_id, (s for s in due.escalation if s.level > due.escalation_level))
    if due.overdue_at is None:
        steps.append(
            Timer(
                dispatch_id=due.dispatch_id,
                kind="receipt_overdue",
                level=RECEIPT_OVERDUE_LEVEL,
                target=due.department_id,
                due_at=due.receipt_deadline,
            )
        )
    return sorted(steps, key=lambda t: (t.due_at, t.level))


@dataclass(frozen=True, slots=True)
class Firing:
    """What a timer pass does to one claimed dispatch: the steps fired, their events, the state after."""

    dispatch_id: uuid.UUID
    fired: tuple[Timer, ...]
    events: tuple[HazardReceiptOverdue | HazardEscalated, ...]
    overdue_at: datetime | None
    escalation_level: int
    next_due_at: datetime | None
    """When the next unfired step falls due (None: nothing left to fire); the claim's index key."""

    @property
    def marks_overdue(self) -> bool:
        """Whether this firing declared the receipt overdue."""
        return any(t.kind == "receipt_overdue" for t in self.fired)


def fire(due: DueDispatch, *, now: datetime, new_id: IdFactory = uuid.uuid4) -> Firing:
    """Fire every step of a claimed dispatch due by `now`, in due order; the next one is the one after.

    A dispatch that left `pending` fires nothing and has nothing left (its leaving cleared the
    next due time already; this only guards rows written otherwise).
    """
    steps = unfired_steps(due)
    fired = [t for t in steps if t.due_at <= now]
    later = [t.due_at for t in steps if t.due_at > now]
    events: list[HazardReceiptOverdue | HazardEscalated] = []
    overdue_at, level = due.overdue_at, due.escalation_level
    for step in fired:
        meta = _event_meta(hazard_id=due.hazard_id, now=now, causation_id=None, new_id=new_id)
        if step.kind == "receipt_overdue":
            overdue_at = now
            events.append(
                HazardReceiptOverdue(
                    **meta,
                    payload=HazardReceiptOverduePayload(
                        dispatch_id=due.dispatch_id,
                        department_id=due.department_id,
                        receipt_deadline=due.receipt_deadline,
                    ),
                )
            )
        else:
            level = max(level, step.level)
            events.append(
                HazardEscalated(
                    **meta,
                    payload=HazardEscalatedPayload(
                        dispatch_id=due.dispatch_id,
                        department_id=due.department_id,
                        level=step.level,
                        target=step.target,
                        receipt_deadline=due.receipt_deadline,
                    ),
                )
            )
    return Firing(
        dispatch_id=due.dispatch_id,
        fired=tuple(fired),
        events=tuple(events),
        overdue_at=overdue_at,
        escalation_level=level,
        next_due_at=min(later, default=None),
    )


# ---------------------------------------------------------------- deadline extensions (延期申请)

DEFAULT_EXTENSION_LIMIT = timedelta(days=30)


def check_extension_date(
    *, requested: datetime, current: datetime, limit: timedelta = DEFAULT_EXTENSION_LIMIT
) -> None:
    """A requested deadline must be after the one in force and at most ``limit`` beyond it."""
    if requested <= current:
        raise ExtensionDateRefused(
            f"The requested deadline {requested.isoformat()} is not after the deadline in force "
            f"({current.isoformat()}); an extension moves a deadline later."
        )
    if requested - current > limit:
        raise ExtensionDateRefused(
            f"The requested deadline {requested.isoformat()} is more than {limit.days} days after the "
            f"deadline in force ({current.isoformat()})."
        )


def _extension_meta(dispatch: Dispatch, *, now: datetime, new_id: IdFactory) -> _Meta:
    return _event_meta(hazard_id=dispatch.hazard_id, now=now, causation_id=None, new_id=new_id)


def request_extension(
    dispatch: Dispatch,
    *,
    deadline: datetime,
    reason: str,
    by: str,
    now: datetime,
    limit: timedelta = DEFAULT_EXTENSION_LIMIT,
    new_id: IdFactory = uuid.uuid4,
) -> tuple[Dispatch, HazardExtensionRequested]:
    """The department holding a pending dispatch asks for a later receipt deadline; nothing moves yet."""
    _require_pending(dispatch, "extended")
    if dispatch.extension_request is not None and dispatch.extension_request.status == "awaiting_approval":
        raise DispatchConflictError(
            "extension_awaiting_approval",
            f"An extension of dispatch {dispatch.dispatch_id} already awaits a decision; one at a time.",
        )
    if dispatch.overdue_at is not None or now > dispatch.receipt_deadline:
        raise DispatchConflictError(
            "deadline_passed",
            f"The receipt deadline of dispatch {dispatch.dispatch_id} has passed; "
            "an extension must be requested before it.",
        )
    check_extension_date(requested=deadline, current=dispatch.receipt_deadline, limit=limit)
    request = ExtensionRequest(
        status="awaiting_approval",
        requested_deadline=deadline,
        reason=reason,
        requested_by=by,
        requested_at=now,
        previous_deadline=dispatch.receipt_deadline,
    )
    original = dispatch.original_receipt_deadline or dispatch.receipt_deadline
    event = HazardExtensionRequested(
        **_extension_meta(dispatch, now=now, new_id=new_id),
        payload=HazardExtensionRequestedPayload(
            stage="receipt",
            dispatch_id=dispatch.dispatch_id,
            department_id=dispatch.department_id,
            original_deadline=original,
            current_deadline=dispatch.receipt_deadline,
            requested_deadline=deadline,
            reason=reason,
            by=by,
        ),
    )
    return replace(dispatch, extension_request=request), event


def _awaiting_extension(dispatch: Dispatch) -> ExtensionRequest:
    request = dispatch.extension_request
    if request is None or request.status != "awaiting_approval":
        raise DispatchConflictError(
            "no_extension_request", f"No extension of dispatch {dispatch.dispatch_id} awaits a decision."
        )
    return request


def _decided_event(
    dispatch: Dispatch,
    request: ExtensionRequest,
    *,
    approved: bool,
    deadline: datetime,
    note: str,
    by: str,
    now: datetime,
    new_id: IdFactory,
) -> HazardExtensionDecided:
    return HazardExtensionDecided(
        **_extension_meta(dispatch, now=now, new_id=new_id),
        payload=HazardExtensionDecidedPayload(
            stage="receipt",
            dispatch_id=dispatch.dispatch_id,
            department_id=dispatch.department_id,
            original_deadline=dispatch.original_receipt_deadline or dispatch.receipt_deadline,
            requested_deadline=request.requested_deadline,
            approved=approved,
            deadline=deadline,
            note=note,
            by=by,
        ),
    )


def approve_extension(
    reference: ReferenceData,
    dispatch: Dispatch,
    *,
    by: str,
    note: str,
    now: datetime,
    new_id: IdFactory = uuid.uuid4,
) -> Outcome:
    """Move the frozen receipt deadline to the requested one; the escalation steps follow it.

    The frozen steps (levels and targets) stay; their due times are counted again from the new
    deadline by the chain's step of the same level (a level the chain no longer has keeps its due
    time), as the timer rows were moved before #20.
    """
    request = _awaiting_extension(dispatch)
    _require_pending(dispatch, "extended")
    if dispatch.overdue_at is not None:
        raise DispatchConflictError(
            "deadline_passed",
            f"Dispatch {dispatch.dispatch_id} was declared overdue before the extension was decided; "
            "refuse the request instead.",
        )
    decided = replace(request, status="approved", decided_by=by, decided_at=now, decision_note=note or None)
    original = dispatch.original_receipt_deadline or dispatch.receipt_deadline
    event = _decided_event(
        dispatch,
        request,
        approved=True,
        deadline=request.requested_deadline,
        note=note,
        by=by,
        now=now,
        new_id=new_id,
    )
    moved = {
        s.level: s
        for s in escalation_plan(
            deadline=request.requested_deadline, steps=reference.escalation_steps, reference=reference
        )
    }
    extended = replace(
        dispatch,
        receipt_deadline=request.requested_deadline,
        original_receipt_deadline=original,
        extension_request=decided,
        escalation=tuple(
            replace(s, due_at=moved[s.level].due_at) if s.level in moved else s for s in dispatch.escalation
        ),
    )
    return Outcome(dispatches=(extended,), events=(event,))


def refuse_extension(
    dispatch: Dispatch, *, by: str, note: str, now: datetime, new_id: IdFactory = uuid.uuid4
) -> tuple[Dispatch, HazardExtensionDecided]:
    """Keep the receipt deadline in force; the refusal is recorded and published."""
    request = _awaiting_extension(dispatch)
    decided = replace(request, status="refused", decided_by=by, decided_at=now, decision_note=note or None)
    event = _decided_event(
        dispatch,
        request,
        approved=False,
        deadline=dispatch.receipt_deadline,
        note=note,
        by=by,
        now=now,
        new_id=new_id,
    )
    return replace(dispatch, extension_request=decided), event
