"""Pure rules of urging (督办), rectification extensions (延期申请) and progress notes on the case."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.tracking import domain
from shared import events as ev
from tests.unit.tracking.test_tracking_domain import (
    DISPATCH,
    T0,
    acknowledged_case,
    dispatched,
    do_rectify,
    do_verify,
    progress,
    reported,
)

LATER = T0 + timedelta(hours=2)


def test_urging_names_the_stage_and_is_refused_without_an_open_one() -> None:
    receipt = progress(reported(), dispatched())
    urged = domain.urge(receipt.case, actor="sup-1", note="快", now=LATER)
    assert (urged.payload.stage, urged.payload.dispatch_id, urged.payload.department_id) == (
        "receipt",
        DISPATCH,
        "fire",
    )
    receipt.emit(urged)
    assert receipt.case.urgings == 1
    ordered = acknowledged_case()
    assert ordered.case.state == "rectification_ordered"
    urged2 = domain.urge(ordered.case, actor="op-1", note="快", now=LATER)
    assert (urged2.payload.stage, urged2.payload.dispatch_id) == ("rectification", None)
    with pytest.raises(domain.TransitionRefused):
        domain.urge(progress(reported()).case, actor="sup-1", note="?", now=LATER)
    do_rectify(ordered, at=LATER)
    with pytest.raises(domain.TransitionRefused):  # awaiting verification: nothing for the department
        domain.urge(ordered.case, actor="sup-1", note="?", now=LATER)
    do_verify(ordered, at=LATER + timedelta(minutes=1), passed=True)
    assert ordered.case.state == "closed"
    with pytest.raises(domain.TransitionRefused):
        domain.urge(ordered.case, actor="sup-1", note="?", now=LATER)


def test_an_approved_extension_moves_the_rectification_deadline_and_keeps_the_original() -> None:
    p = acknowledged_case()
    old = p.case.rectification_deadline
    assert old is not None
    wanted = old + timedelta(days=3)
    with pytest.raises(domain.NotPermitted):
        domain.request_rectification_extension(
            p.case, department_id="police", actor="x", deadline=wanted, reason="r", now=LATER
        )
    for bad in (old, old - timedelta(hours=1), old + timedelta(days=30, seconds=1)):
        with pytest.raises(domain.ExtensionDateRefused):
            domain.request_rectification_extension(
                p.case, department_id="fire", actor="x", deadline=bad, reason="r", now=LATER
            )
    with pytest.raises(domain.TransitionRefused):
        domain.request_rectification_extension(
            p.case,
            department_id="fire",
            actor="x",
            deadline=wanted,
            reason="r",
            now=old + timedelta(seconds=1),
        )
    with pytest.raises(domain.TransitionRefused):
        domain.decide_rectification_extension(p.case, approved=True, actor="op", note="", now=LATER)
    request = domain.request_rectification_extension(
        p.case, department_id="fire", actor="officer-1", deadline=wanted, reason="parts", now=LATER
    )
    p.emit(request)
    assert p.case.rectification_deadline == old
    assert p.case.rectification_extension is not None
    assert p.case.rectification_extension.status == "awaiting_approval"
    with pytest.raises(domain.TransitionRefused):
        domain.request_rectification_extension(
            p.case, department_id="fire", actor="officer-1", deadline=wanted, reason="again", now=LATER
        )
    decided = domain.decide_rectification_extension(
        p.case, approved=True, actor="sup-1", note="ok", now=LATER + timedelta(minutes=1)
    )
    p.emit(decided)
    assert (p.case.rectification_deadline, p.case.original_rectification_deadline) == (wanted, old)
    assert p.case.rectification_extension.status == "approved"
    assert p.case.rectification_extension.reason == "parts"
    # The overdue check follows the new deadline: an overdue event carries it.
    overdue = domain.overdue(p.case, order_event_id=p.case.order_event_id, now=wanted)  # type: ignore[arg-type]
    assert overdue is not None
    assert overdue.payload.deadline == wanted
    # A refusal of a second request leaves it where it is, the original unchanged.
    p.emit(
        domain.request_rectification_extension(
            p.case,
            department_id="fire",
            actor="officer-1",
            deadline=wanted + timedelta(days=1),
            reason="more",
            now=LATER + timedelta(minutes=2),
        )
    )
    refusal = domain.decide_rectification_extension(
        p.case, approved=False, actor="op-1", note="no", now=LATER + timedelta(minutes=3)
    )
    assert refusal.payload.original_deadline == old
    p.emit(refusal)
    assert (p.case.rectification_deadline, p.case.original_rectification_deadline) == (wanted, old)
    assert p.case.rectification_extension.status == "refused"


def test_receipt_extension_events_from_dispatch_move_the_receipt_deadline_of_that_dispatch_only() -> None:
    p = progress(reported(), dispatched())
    original = p.case.receipt_deadline
    assert original is not None
    common = {"stage": "receipt", "department_id": "fire", "original_deadline": original}

    def decided(dispatch_id: object) -> ev.HazardExtensionDecided:
        return ev.HazardExtensionDecided(
            event_id=uuid.uuid4(),
            occurred_at=LATER,
            hazard_id=p.hazard_id,
            producer="dispatch",
            payload=ev.HazardExtensionDecidedPayload(
                **common,  # type: ignore[arg-type]
                dispatch_id=dispatch_id,  # type: ignore[arg-type]
                requested_deadline=original + timedelta(hours=5),
                approved=True,
                deadline=original + timedelta(hours=5),
                by="op-1",
            ),
        )

    p.record(decided(uuid.UUID(int=999)))  # another (stale) dispatch: ignored
    assert p.case.receipt_deadline == original
    p.record(decided(DISPATCH))
    assert (p.case.receipt_deadline, p.case.original_receipt_deadline) == (
        original + timedelta(hours=5),
        original,
    )


def test_progress_notes_only_by_the_holder_while_the_case_is_open() -> None:
    p = acknowledged_case()
    with pytest.raises(domain.NotPermitted):
        domain.note_progress(p.case, department_id="police", actor="x", note="n", photos=(), now=LATER)
    note = domain.note_progress(
        p.case,
        department_id="fire",
        actor="officer-1",
        note="booked",
        photos=("https://x.org/a.jpg",),
        now=LATER,
    )
    p.emit(note)
    assert p.case.progress_notes == 1
    assert domain.actor_of(note) == "officer-1"
    do_rectify(p, at=LATER + timedelta(minutes=1))
    do_verify(p, at=LATER + timedelta(minutes=2), passed=True)
    with pytest.raises(domain.TransitionRefused):
        domain.note_progress(p.case, department_id="fire", actor="x", note="n", photos=(), now=LATER)
