"""Pure dispatch decisions: routing, frozen deadlines on the working calendar, acknowledgement, return, reassign."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.dispatch import domain
from shared import events as ev
from shared.reference import ReferenceData, load_reference_data
from tests.support import factories

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def reference() -> ReferenceData:
    return load_reference_data()


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def facts(category: str, grid_id: str = "liuyue-01", urgency: str | None = None) -> domain.HazardFacts:
    return domain.HazardFacts(
        hazard_id=uuid.uuid4(),
        category=category,
        community_id=grid_id.rsplit("-", 1)[0],
        grid_id=grid_id,
        urgency=urgency,
    )


def reported(category: str, grid_id: str = "liuyue-01", **overrides: object) -> ev.HazardReported:
    return factories.reported_event(
        at=datetime(2026, 4, 7, 1, 30, tzinfo=UTC),
        category=category,
        grid_id=grid_id,
        **{**factories.PLAIN_REPORT, **overrides},
    )


# ---------------------------------------------------------------- routing


def test_generic_rule_routes_by_category(reference: ReferenceData) -> None:
    assert domain.route(reference, facts("locked_rooftop_door")) == domain.Route(
        "fire", "r-locked-rooftop-door"
    )
    assert domain.route(reference, facts("public_security_hazard")) == domain.Route(
        "police", "r-public-security-hazard"
    )


def test_community_override_wins_over_generic_rule(reference: ReferenceData) -> None:
    assert domain.route(reference, facts("group_rental_fire_hazard", "silian-03")) == domain.Route(
        "housing_rental", "r-silian-group-rental"
    )
    assert domain.route(reference, facts("group_rental_fire_hazard", "huale-03")) == domain.Route(
        "fire", "r-group-rental-fire-hazard"
    )


def test_grid_override_applies_only_to_its_grid(reference: ReferenceData) -> None:
    assert domain.route(reference, facts("electrical_fire_hazard", "huale-04")) == domain.Route(
        "safety_supervision", "r-huale-04-electrical"
    )
    assert domain.route(reference, facts("electrical_fire_hazard", "huale-05")) == domain.Route(
        "fire", "r-electrical-fire-hazard"
    )


def test_category_without_rule_goes_to_operators(reference: ReferenceData) -> None:
    outcome = domain.on_reported(reference, reported("other"), now=datetime(2026, 4, 7, 1, 0, tzinfo=UTC))
    assert outcome.referred
    assert outcome.dispatches == ()
    (event,) = outcome.events
    assert isinstance(event, ev.HazardReferredToOperators)
    assert event.payload.reason == "no_rule"


def test_excluded_department_falls_through_to_the_next_rule(reference: ReferenceData) -> None:
    hazard = facts("direct_vent_water_heater")
    assert domain.route(reference, hazard) == domain.Route("gas", "r-direct-vent-water-heater")
    assert domain.route(reference, hazard, exclude={"gas"}) == domain.Route(
        "fire", "r-direct-vent-water-heater-fallback"
    )
    assert domain.route(reference, hazard, exclude={"gas", "fire"}) == domain.Route(None, None)


def test_rectified_on_site_and_duplicates_are_not_dispatched() -> None:
    assert domain.needs_dispatch(reported("locked_rooftop_door"))
    assert not domain.needs_dispatch(reported("locked_rooftop_door", rectified_on_site=True))
    assert not domain.needs_dispatch(reported("locked_rooftop_door", duplicate_of=uuid.uuid4()))


# ---------------------------------------------------------------- deadlines


def deadline_of(
    reference: ReferenceData, category: str, start: datetime, urgency: str | None = None
) -> datetime:
    deadline, _ = domain.receipt_deadline(reference, category=category, urgency=urgency, start=start)
    return deadline.astimezone(SHANGHAI)


def test_working_time_deadline_skips_the_lunch_break(reference: ReferenceData) -> None:
    # Tuesday 11:30 + 2 working hours: 30 minutes before lunch, 90 after 14:00.
    assert deadline_of(reference, "locked_rooftop_door", local(2026, 4, 7, 11, 30)) == local(
        2026, 4, 7, 15, 30
    )


def test_working_time_deadline_skips_the_weekend(reference: ReferenceData) -> None:
    # Friday 17:00 + 2 h: one hour on Friday, the second on Monday morning.
    assert deadline_of(reference, "locked_rooftop_door", local(2026, 3, 13, 17)) == local(2026, 3, 16, 9, 30)


def test_working_time_deadline_skips_public_holidays(reference: ReferenceData) -> None:
    # Qingming 2026: Sat 4 April - Mon 6 April. Friday 17:00 + 2 h ends Tuesday 09:30.
    assert deadline_of(reference, "locked_rooftop_door", local(2026, 4, 3, 17)) == local(2026, 4, 7, 9, 30)
    # Labour Day 2026: Fri 1 May - Tue 5 May. Thursday 17:00 + 2 h ends Wednesday 6 May 09:30.
    assert deadline_of(reference, "locked_rooftop_door", local(2026, 4, 30, 17)) == local(2026, 5, 6, 9, 30)


def test_working_time_deadline_counts_make_up_days(reference: ReferenceData) -> None:
    # Saturday 9 May 2026 is a make-up working day: Friday 17:00 + 2 h ends on that Saturday.
    assert deadline_of(reference, "locked_rooftop_door", local(2026, 5, 8, 17)) == local(2026, 5, 9, 9, 30)
    # An ordinary Saturday is not: the week after, the deadline moves to Monday.
    assert deadline_of(reference, "locked_rooftop_door", local(2026, 5, 15, 17)) == local(2026, 5, 18, 9, 30)


def test_report_outside_working_hours_starts_counting_at_the_next_interval(reference: ReferenceData) -> None:
    # Sunday night: counting begins Monday 08:30; 4 h = 3.5 h before lunch + 30 min after 14:00.
    assert deadline_of(reference, "direct_vent_water_heater", local(2026, 3, 15, 22)) == local(
        2026, 3, 16, 14, 30
    )


def test_urgent_level_uses_its_wall_clock_rule(reference: ReferenceData) -> None:
    start = local(2026, 4, 4, 23)  # a holiday night: wall-clock time ignores the calendar
    deadline, frozen = domain.receipt_deadline(
        reference, category="locked_rooftop_door", urgency="urgent", start=start
    )
    assert deadline == start + timedelta(minutes=30)
    assert frozen == ev.FrozenDeadlineRule(minutes=30, working_time=False)


def test_unknown_urgency_uses_the_default_rule(reference: ReferenceData) -> None:
    _, frozen = domain.receipt_deadline(
        reference, category="locked_rooftop_door", urgency="whenever", start=local(2026, 4, 7, 9)
    )
    assert frozen == ev.FrozenDeadlineRule(minutes=120, working_time=True)


def test_dispatch_freezes_its_rule_and_schedules_overdue_and_escalations(reference: ReferenceData) -> None:
    now = local(2026, 4, 7, 9).astimezone(UTC)
    outcome = domain.on_reported(reference, reported("locked_rooftop_door"), now=now)
    (dispatch,) = outcome.dispatches
    assert dispatch.status == "pending"
    assert dispatch.department_id == "fire"
    assert dispatch.receipt_deadline == local(2026, 4, 7, 11).astimezone(UTC)
    assert dispatch.deadline_rule == ev.FrozenDeadlineRule(minutes=120, working_time=True)
    (event,) = outcome.events
    assert isinstance(event, ev.HazardDispatched)
    assert event.payload.dispatch_id == dispatch.dispatch_id
    assert event.payload.deadline_rule == dispatch.deadline_rule
    assert event.payload.reason == "routed"
    deadline = dispatch.receipt_deadline
    assert domain.first_due(dispatch) == deadline
    assert [(t.kind, t.level, t.target, t.due_at) for t in domain.schedule(dispatch)] == [
        ("receipt_overdue", 0, "fire", deadline),
        ("escalation", 1, "department", deadline),
        ("escalation", 2, "supervisor", deadline + timedelta(hours=2)),
        ("escalation", 3, "district", deadline + timedelta(hours=24)),
    ]


# ---------------------------------------------------------------- acknowledgement


def pending(reference: ReferenceData, category: str = "locked_rooftop_door") -> domain.Dispatch:
    now = local(2026, 4, 7, 9).astimezone(UTC)
    (dispatch,) = domain.on_reported(reference, reported(category), now=now).dispatches
    return dispatch


def test_acknowledgement_before_the_deadline_is_on_time(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    outcome = domain.acknowledge(
        dispatch, now=dispatch.receipt_deadline - timedelta(minutes=1), by="dept-fire"
    )
    (acknowledged,) = outcome.dispatches
    assert acknowledged.status == "acknowledged"
    assert acknowledged.on_time is True
    (event,) = outcome.events
    assert isinstance(event, ev.HazardAcknowledged)
    assert event.payload.on_time is True


def test_late_acknowledgement_is_recorded_as_late_and_declares_the_overdue(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    late = dispatch.receipt_deadline + timedelta(seconds=1)
    outcome = domain.acknowledge(dispatch, now=late, by="dept-fire")
    assert outcome.dispatches[0].on_time is False
    assert outcome.dispatches[0].overdue_at == late
    assert [type(e) for e in outcome.events] == [ev.HazardReceiptOverdue, ev.HazardAcknowledged]


def test_acknowledgement_after_the_overdue_fired_is_late_without_a_second_overdue(
    reference: ReferenceData,
) -> None:
    dispatch = replace(pending(reference), overdue_at=datetime(2026, 4, 7, 3, 0, tzinfo=UTC))
    # Even a clock that says "before the deadline" cannot undo an overdue already published.
    outcome = domain.acknowledge(dispatch, now=dispatch.receipt_deadline - timedelta(seconds=1), by="x")
    assert outcome.dispatches[0].on_time is False
    assert [type(e) for e in outcome.events] == [ev.HazardAcknowledged]


@pytest.mark.parametrize("status", ["acknowledged", "returned", "superseded"])
def test_acknowledging_a_dispatch_that_left_pending_is_refused(reference: ReferenceData, status: str) -> None:
    dispatch = replace(pending(reference), status=status)  # type: ignore[arg-type]
    with pytest.raises(domain.DispatchConflictError) as refused:
        domain.acknowledge(dispatch, now=dispatch.created_at, by="dept-fire")
    assert refused.value.code == f"already_{status}"


# ---------------------------------------------------------------- return and reassign


def test_return_reroutes_excluding_the_returning_department(reference: ReferenceData) -> None:
    dispatch = pending(reference, "direct_vent_water_heater")
    now = dispatch.created_at + timedelta(minutes=5)
    outcome = domain.return_dispatch(
        reference, dispatch, reason="No gas contract", by="dept-gas", now=now, returned_before=()
    )
    returned, rerouted = outcome.dispatches
    assert returned.status == "returned"
    assert returned.returned_reason == "No gas contract"
    assert rerouted.department_id == "fire"
    assert rerouted.rule_id == "r-direct-vent-water-heater-fallback"
    assert rerouted.previous_dispatch_id == dispatch.dispatch_id
    assert rerouted.reason == "rerouted"
    returned_event, dispatched_event = outcome.events
    assert isinstance(returned_event, ev.HazardReturned)
    assert isinstance(dispatched_event, ev.HazardDispatched)
    assert dispatched_event.payload.reason == "rerouted"
    assert dispatched_event.causation_id == returned_event.event_id
    assert domain.first_due(returned) is None  # its steps stop; the new dispatch has its own
    assert domain.first_due(rerouted) == rerouted.receipt_deadline


def test_hazard_returned_by_every_candidate_goes_to_operators(reference: ReferenceData) -> None:
    dispatch = replace(pending(reference, "direct_vent_water_heater"), department_id="fire")
    outcome = domain.return_dispatch(
        reference,
        dispatch,
        reason="Not ours",
        by="dept-fire",
        now=dispatch.created_at,
        returned_before=("gas",),
    )
    assert outcome.referred
    assert [d.status for d in outcome.dispatches] == ["returned"]
    _, referred = outcome.events
    assert isinstance(referred, ev.HazardReferredToOperators)
    assert referred.payload.reason == "all_candidates_returned"
    assert referred.payload.excluded_departments == ("fire", "gas")
    assert referred.payload.previous_dispatch_id == dispatch.dispatch_id


def _acknowledged(reference: ReferenceData) -> domain.Dispatch:
    dispatch = pending(reference)
    (acked,) = domain.acknowledge(dispatch, now=dispatch.created_at + timedelta(minutes=5), by="d").dispatches
    return acked


def test_within_the_window_an_acknowledged_dispatch_is_returned_and_its_receipt_stays(
    reference: ReferenceData,
) -> None:
    dispatch = _acknowledged(reference)
    assert dispatch.acknowledged_at is not None
    policy = domain.ReturnPolicy(after_receipt="window", window=timedelta(hours=2))
    outcome = domain.return_dispatch(
        reference,
        dispatch,
        reason="Not ours",
        by="dept-fire",
        now=dispatch.acknowledged_at + timedelta(hours=2),
        returned_before=(),
        policy=policy,
    )
    returned = outcome.dispatches[0]
    assert (returned.status, returned.acknowledged_at, returned.on_time) == (
        "returned",
        dispatch.acknowledged_at,
        True,
    )
    back = outcome.events[0]
    assert isinstance(back, ev.HazardReturned)
    assert (back.payload.after_receipt, back.payload.acknowledged_at, back.payload.approved_by) == (
        True,
        dispatch.acknowledged_at,
        None,
    )


def test_after_the_window_returning_an_acknowledged_dispatch_is_refused(reference: ReferenceData) -> None:
    dispatch = _acknowledged(reference)
    assert dispatch.acknowledged_at is not None
    with pytest.raises(domain.DispatchConflictError) as refused:
        domain.return_dispatch(
            reference,
            dispatch,
            reason="x",
            by="y",
            now=dispatch.acknowledged_at + timedelta(hours=2, microseconds=1),
            returned_before=(),
            policy=domain.ReturnPolicy(after_receipt="window", window=timedelta(hours=2)),
        )
    assert refused.value.code == "return_window_passed"


def test_in_approval_mode_a_return_after_receipt_waits_for_the_operator(reference: ReferenceData) -> None:
    dispatch = _acknowledged(reference)
    now = dispatch.created_at + timedelta(days=3)
    asked = domain.return_dispatch(
        reference,
        dispatch,
        reason="Not ours",
        by="dept-fire",
        now=now,
        returned_before=(),
        policy=domain.ReturnPolicy(after_receipt="approval"),
    )
    assert asked.return_requested
    assert asked.events == ()
    (waiting,) = asked.dispatches
    assert waiting.status == "acknowledged"
    assert waiting.return_request == domain.ReturnRequest(
        status="awaiting_approval", reason="Not ours", requested_by="dept-fire", requested_at=now
    )
    refused = domain.refuse_return(waiting, by="op-1", reason="It is yours", now=now)
    assert refused.return_request is not None
    assert (refused.return_request.status, refused.return_request.refusal_reason) == (
        "refused",
        "It is yours",
    )
    with pytest.raises(domain.DispatchConflictError):
        domain.approve_return(reference, refused, by="op-1", now=now, returned_before=())
    approved = domain.approve_return(reference, waiting, by="op-1", now=now, returned_before=())
    assert approved.dispatches[0].status == "returned"
    back = approved.events[0]
    assert isinstance(back, ev.HazardReturned)
    assert (back.payload.returned_by, back.payload.approved_by, back.payload.after_receipt) == (
        "dept-fire",
        "op-1",
        True,
    )


@pytest.mark.parametrize("status", ["returned", "superseded"])
def test_returning_a_dispatch_that_was_returned_or_superseded_is_refused(
    reference: ReferenceData, status: str
) -> None:
    dispatch = replace(pending(reference), status=status)
    with pytest.raises(domain.DispatchConflictError):
        domain.return_dispatch(
            reference, dispatch, reason="x", by="y", now=dispatch.created_at, returned_before=()
        )


def test_operator_reassign_supersedes_and_dispatches_anew(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    outcome = domain.reassign(
        reference, dispatch, department_id="police", by="op-1", now=dispatch.created_at + timedelta(hours=1)
    )
    superseded, fresh = outcome.dispatches
    assert superseded.status == "superseded"
    assert fresh.department_id == "police"
    assert fresh.status == "pending"
    (event,) = outcome.events
    assert isinstance(event, ev.HazardDispatched)
    assert event.payload.reason == "reassigned"
    assert event.payload.previous_dispatch_id == dispatch.dispatch_id
    assert event.payload.dispatched_by == "op-1"
    assert event.payload.rule_id is None


def test_reassign_to_the_same_department_is_refused(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    with pytest.raises(domain.DispatchConflictError) as refused:
        domain.reassign(reference, dispatch, department_id="fire", by="op-1", now=dispatch.created_at)
    assert refused.value.code == "same_department"


# ---------------------------------------------------------------- timers


def due(dispatch: domain.Dispatch, **changes: object) -> domain.DueDispatch:
    claimed = domain.DueDispatch(
        dispatch_id=dispatch.dispatch_id,
        hazard_id=dispatch.hazard_id,
        department_id=dispatch.department_id,
        status=dispatch.status,
        receipt_deadline=dispatch.receipt_deadline,
        overdue_at=dispatch.overdue_at,
        escalation_level=0,
        escalation=dispatch.escalation,
    )
    return replace(claimed, **changes)  # type: ignore[arg-type]


def kinds(firing: domain.Firing) -> list[tuple[str, int]]:
    return [(t.kind, t.level) for t in firing.fired]


def test_due_receipt_step_of_a_pending_dispatch_publishes_overdue_and_the_reminder_due_with_it(
    reference: ReferenceData,
) -> None:
    dispatch = pending(reference)
    firing = domain.fire(due(dispatch), now=dispatch.receipt_deadline)
    assert firing.marks_overdue
    assert kinds(firing) == [("receipt_overdue", 0), ("escalation", 1)]
    overdue, reminder = firing.events
    assert isinstance(overdue, ev.HazardReceiptOverdue)
    assert overdue.payload.receipt_deadline == dispatch.receipt_deadline
    assert isinstance(reminder, ev.HazardEscalated)
    assert (reminder.payload.level, reminder.payload.target) == (1, "department")
    assert (firing.overdue_at, firing.escalation_level) == (dispatch.receipt_deadline, 1)
    # The next step (level 2) is created only now: its due time becomes the dispatch's next one.
    assert firing.next_due_at == dispatch.receipt_deadline + timedelta(hours=2)


def test_nothing_is_due_before_the_deadline(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    firing = domain.fire(due(dispatch), now=dispatch.receipt_deadline - timedelta(microseconds=1))
    assert (firing.fired, firing.events, firing.overdue_at) == ((), (), None)
    assert firing.next_due_at == dispatch.receipt_deadline


def test_due_escalation_step_publishes_its_level_and_moves_on_to_the_next(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    now = dispatch.receipt_deadline + timedelta(hours=3)
    firing = domain.fire(due(dispatch, overdue_at=dispatch.receipt_deadline, escalation_level=1), now=now)
    assert not firing.marks_overdue
    (event,) = firing.events
    assert isinstance(event, ev.HazardEscalated)
    assert (event.payload.level, event.payload.target) == (2, "supervisor")
    assert (firing.overdue_at, firing.escalation_level) == (dispatch.receipt_deadline, 2)
    assert firing.next_due_at == dispatch.receipt_deadline + timedelta(hours=24)


def test_a_pass_after_a_long_outage_fires_every_step_due_in_order_once(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    now = dispatch.receipt_deadline + timedelta(days=3)
    firing = domain.fire(due(dispatch), now=now)
    assert kinds(firing) == [("receipt_overdue", 0), ("escalation", 1), ("escalation", 2), ("escalation", 3)]
    assert [type(e) for e in firing.events] == [ev.HazardReceiptOverdue] + [ev.HazardEscalated] * 3
    assert (firing.escalation_level, firing.next_due_at) == (3, None)
    after = domain.fire(due(dispatch, overdue_at=firing.overdue_at, escalation_level=3), now=now)
    assert (after.fired, after.events, after.next_due_at) == ((), (), None)


@pytest.mark.parametrize("status", ["acknowledged", "returned", "superseded"])
def test_steps_of_a_dispatch_that_left_pending_fire_nothing(reference: ReferenceData, status: str) -> None:
    dispatch = pending(reference)
    firing = domain.fire(due(dispatch, status=status), now=dispatch.receipt_deadline + timedelta(days=3))
    assert (firing.fired, firing.events, firing.next_due_at) == ((), (), None)
    assert not firing.marks_overdue


def test_overdue_already_declared_is_not_published_again(reference: ReferenceData) -> None:
    dispatch = pending(reference)
    firing = domain.fire(
        due(dispatch, overdue_at=dispatch.receipt_deadline, escalation_level=1),
        now=dispatch.receipt_deadline,
    )
    assert firing.events == ()
    assert firing.next_due_at == dispatch.receipt_deadline + timedelta(hours=2)
