"""Pure rules of receipt deadline extensions (延期申请): one at a time, later but not absurdly, moved on approval."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.dispatch import domain
from shared.reference import ReferenceData, load_reference_data

NOW = datetime(2026, 4, 7, 1, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> ReferenceData:
    return load_reference_data()


def pending(reference: ReferenceData) -> domain.Dispatch:
    facts = domain.HazardFacts(
        hazard_id=uuid.uuid4(), category="locked_rooftop_door", community_id="liuyue", grid_id="liuyue-01"
    )
    outcome = domain.dispatch_to(
        reference, facts, department_id="fire", rule_id="r", now=NOW, reason="routed", causation_id=None
    )
    return outcome.dispatches[0]


def test_a_request_records_the_wish_and_moves_nothing(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    wanted = dispatch.receipt_deadline + timedelta(days=1)
    asked, event = domain.request_extension(
        dispatch, deadline=wanted, reason="crew away", by="dept-fire", now=NOW + timedelta(minutes=5)
    )
    assert asked.receipt_deadline == dispatch.receipt_deadline
    assert asked.extension_request is not None
    assert (asked.extension_request.status, asked.extension_request.requested_deadline) == (
        "awaiting_approval",
        wanted,
    )
    assert asked.extension_request.previous_deadline == dispatch.receipt_deadline
    p = event.payload
    assert (p.stage, p.dispatch_id, p.department_id) == ("receipt", dispatch.dispatch_id, "fire")
    assert (p.original_deadline, p.current_deadline, p.requested_deadline) == (
        dispatch.receipt_deadline,
        dispatch.receipt_deadline,
        wanted,
    )
    with pytest.raises(domain.DispatchConflictError) as again:
        domain.request_extension(asked, deadline=wanted, reason="again", by="dept-fire", now=NOW)
    assert again.value.code == "extension_awaiting_approval"


@pytest.mark.parametrize(
    ("shift", "limit_days"),
    [
        (timedelta(0), 30),
        (-timedelta(minutes=1), 30),
        (timedelta(days=30, seconds=1), 30),
        (timedelta(days=3), 2),
    ],
)
def test_a_deadline_not_later_or_too_far_is_refused(
    reference: ReferenceData, shift: timedelta, limit_days: int
) -> None:
    dispatch = pending(reference)
    with pytest.raises(domain.ExtensionDateRefused):
        domain.request_extension(
            dispatch,
            deadline=dispatch.receipt_deadline + shift,
            reason="x",
            by="dept-fire",
            now=NOW,
            limit=timedelta(days=limit_days),
        )


def test_exactly_the_limit_is_accepted(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    asked, _ = domain.request_extension(
        dispatch, deadline=dispatch.receipt_deadline + timedelta(days=30), reason="x", by="d", now=NOW
    )
    assert asked.extension_request is not None


def test_no_request_once_acknowledged_or_past_the_deadline(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    wanted = dispatch.receipt_deadline + timedelta(hours=1)
    acknowledged = domain.acknowledge(dispatch, now=NOW, by="d").dispatches[0]
    with pytest.raises(domain.DispatchConflictError) as acked:
        domain.request_extension(acknowledged, deadline=wanted, reason="x", by="d", now=NOW)
    assert acked.value.code == "already_acknowledged"
    with pytest.raises(domain.DispatchConflictError) as late:
        domain.request_extension(
            dispatch,
            deadline=wanted,
            reason="x",
            by="d",
            now=dispatch.receipt_deadline + timedelta(seconds=1),
        )
    assert late.value.code == "deadline_passed"


def test_approval_moves_the_deadline_and_every_timer_and_keeps_the_original(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    wanted = dispatch.receipt_deadline + timedelta(days=2)
    asked, _ = domain.request_extension(dispatch, deadline=wanted, reason="x", by="d", now=NOW)
    outcome = domain.approve_extension(
        reference, asked, by="sup-1", note="ok", now=NOW + timedelta(minutes=1)
    )
    (extended,) = outcome.dispatches
    assert (extended.receipt_deadline, extended.original_receipt_deadline) == (
        wanted,
        dispatch.receipt_deadline,
    )
    assert extended.extension_request is not None
    assert (extended.extension_request.status, extended.extension_request.decided_by) == ("approved", "sup-1")
    expected = domain.escalation_plan(deadline=wanted, steps=reference.escalation_steps, reference=reference)
    assert extended.escalation == expected
    assert [s.target for s in extended.escalation] == [s.target for s in dispatch.escalation]
    assert min(t.due_at for t in domain.schedule(extended)) == wanted
    assert domain.first_due(extended) == wanted
    (event,) = outcome.events
    assert (event.payload.approved, event.payload.deadline, event.payload.original_deadline) == (
        True,
        wanted,
        dispatch.receipt_deadline,
    )
    # A second extension keeps the first original deadline.
    again, request2 = domain.request_extension(
        extended, deadline=wanted + timedelta(hours=1), reason="y", by="d", now=NOW + timedelta(minutes=2)
    )
    assert request2.payload.original_deadline == dispatch.receipt_deadline
    assert request2.payload.current_deadline == wanted
    refused, decided = domain.refuse_extension(again, by="op-1", note="no", now=NOW + timedelta(minutes=3))
    assert refused.receipt_deadline == wanted
    assert (decided.payload.approved, decided.payload.deadline) == (False, wanted)
    assert decided.payload.original_deadline == dispatch.receipt_deadline


def test_a_decision_needs_a_waiting_request_and_approval_a_dispatch_not_yet_overdue(
    reference: ReferenceData,
) -> None:
    dispatch = pending(reference)
    with pytest.raises(domain.DispatchConflictError) as none:
        domain.approve_extension(reference, dispatch, by="op", note="", now=NOW)
    assert none.value.code == "no_extension_request"
    with pytest.raises(domain.DispatchConflictError):
        domain.refuse_extension(dispatch, by="op", note="", now=NOW)
    asked, _ = domain.request_extension(
        dispatch, deadline=dispatch.receipt_deadline + timedelta(hours=1), reason="x", by="d", now=NOW
    )
    overdue = replace(asked, overdue_at=dispatch.receipt_deadline)
    with pytest.raises(domain.DispatchConflictError) as late:
        domain.approve_extension(reference, overdue, by="op", note="", now=NOW)
    assert late.value.code == "deadline_passed"
    refused, _ = domain.refuse_extension(overdue, by="op", note="", now=NOW)
    assert refused.extension_request is not None
    assert refused.extension_request.status == "refused"
