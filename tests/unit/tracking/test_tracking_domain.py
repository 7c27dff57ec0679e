"""The tracking case state machine: every transition, the refused ones, rework, on-site fixes, relapse."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tracking import domain
from services.tracking.domain import ClosedCase, Entry, Progress, build_case
from shared import events as ev
from shared.reference import ReferenceData, add_deadline, load_reference_data

T0 = datetime(2026, 4, 7, 1, 30, tzinfo=UTC)  # a Tuesday, 09:30 in Shenzhen
HAZARD = uuid.UUID(int=1)
DISPATCH = uuid.UUID(int=2)


@cache
def reference() -> ReferenceData:
    return load_reference_data()


def _event(cls: type[ev.AnyEvent], payload: Any, *, at: datetime, producer: str = "dispatch") -> Any:
    return cls(event_id=uuid.uuid4(), occurred_at=at, hazard_id=HAZARD, producer=producer, payload=payload)


def reported(
    *,
    at: datetime = T0,
    hazard_id: uuid.UUID = HAZARD,
    building_id: str | None = "B-12",
    lat: float = 22.62200,
    lon: float = 114.16813,
    category: str = "locked_rooftop_door",
    on_site: bool = False,
    duplicate_of: uuid.UUID | None = None,
) -> ev.HazardReported:
    return ev.HazardReported(
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=hazard_id,
        producer="intake",
        payload=ev.HazardReportedPayload(
            report_id=uuid.uuid4(),
            category=category,
            description="Rooftop door padlocked",
            location=ev.Location(lat=lat, lon=lon, address="Liuyue Rd 12", building_id=building_id),
            grid_id="liuyue-01",
            community_id="liuyue",
            street_id="henggang",
            reporter_id="gm-liuyue-01",
            observed_at=at - timedelta(minutes=10),
            accepted_at=at,
            rectified_on_site=on_site,
            duplicate_of=duplicate_of,
        ),
    )


def dispatched(
    *, at: datetime = T0 + timedelta(minutes=1), department: str = "fire", dispatch_id: uuid.UUID = DISPATCH
) -> ev.HazardDispatched:
    return _event(
        ev.HazardDispatched,
        ev.HazardDispatchedPayload(
            dispatch_id=dispatch_id,
            department_id=department,
            rule_id="r1",
            receipt_deadline=at + timedelta(hours=2),
            deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
        ),
        at=at,
    )


def acknowledged(
    *, at: datetime = T0 + timedelta(minutes=30), department: str = "fire", dispatch_id: uuid.UUID = DISPATCH
) -> ev.HazardAcknowledged:
    return _event(
        ev.HazardAcknowledged,
        ev.HazardAcknowledgedPayload(
            dispatch_id=dispatch_id,
            department_id=department,
            acknowledged_at=at,
            receipt_deadline=T0 + timedelta(hours=2),
            on_time=True,
            acknowledged_by=f"dept-{department}",
        ),
        at=at,
    )


def returned(*, at: datetime, dispatch_id: uuid.UUID = DISPATCH) -> ev.HazardReturned:
    return _event(
        ev.HazardReturned,
        ev.HazardReturnedPayload(
            dispatch_id=dispatch_id, department_id="fire", reason="not ours", returned_by="dept-fire"
        ),
        at=at,
    )


def progress(*events: ev.AnyEvent, now: datetime = T0 + timedelta(hours=1)) -> Progress:
    p = Progress(hazard_id=HAZARD)
    for event in events:
        p.record(event)
    p.settle(now=now, reference=reference())
    return p


def acknowledged_case(now: datetime = T0 + timedelta(hours=1)) -> Progress:
    return progress(reported(), dispatched(), acknowledged(), now=now)


def do_rectify(p: Progress, *, at: datetime, department: str = "fire") -> ev.HazardRectified:
    event = domain.rectify(
        p.case, department_id=department, actor="officer-1", note="Padlock removed", photos=(), now=at
    )
    p.emit(event)
    p.settle(now=at, reference=reference())
    return event


def do_verify(p: Progress, *, at: datetime, passed: bool, grid: str = "liuyue-01") -> ev.HazardVerified:
    event = domain.verify(
        p.case, grid_id=grid, actor="gm-liuyue-01", passed=passed, note="", photos=(), now=at
    )
    p.emit(event)
    p.settle(now=at, reference=reference())
    return event


# ------------------------------------------------------------------ the way through


def test_report_awaits_dispatch_and_needs_no_reaction() -> None:
    p = progress(reported())
    assert p.case.state == "reported"
    assert p.emitted == []
    assert (p.case.category, p.case.grid_id, p.case.building_id) == (
        "locked_rooftop_door",
        "liuyue-01",
        "B-12",
    )


def test_dispatch_puts_the_case_with_the_department() -> None:
    p = progress(reported(), dispatched())
    assert (p.case.state, p.case.department_id, p.case.dispatch_id) == ("dispatched", "fire", DISPATCH)
    assert p.emitted == []


def test_acknowledgement_orders_rectification_with_the_category_deadline() -> None:
    now = T0 + timedelta(hours=1)
    p = acknowledged_case(now)
    [order] = p.emitted
    assert isinstance(order, ev.HazardRectificationOrdered)
    rule = reference().rectification_rule("locked_rooftop_door")
    assert order.payload == ev.HazardRectificationOrderedPayload(
        department_id="fire",
        deadline=add_deadline(now, rule, reference().calendar),
        deadline_rule=ev.FrozenDeadlineRule(minutes=rule.minutes, working_time=True),
        round=1,
    )
    assert order.producer == "tracking"
    assert p.case.state == "rectification_ordered"
    assert p.case.round == 1
    assert p.case.order_event_id == order.event_id


def test_rectified_then_passed_verification_closes_the_case() -> None:
    p = acknowledged_case()
    do_rectify(p, at=T0 + timedelta(days=1))
    assert p.case.state == "rectified"
    verified = do_verify(p, at=T0 + timedelta(days=2), passed=True)
    assert p.case.state == "closed"
    closed = p.emitted[-1]
    assert isinstance(closed, ev.HazardClosed)
    assert closed.payload == ev.HazardClosedPayload(
        reason="verified", department_id="fire", closed_by="gm-liuyue-01"
    )
    assert closed.causation_id == verified.event_id
    assert p.case.closed_department_id == "fire"
    assert p.case.closed_at == T0 + timedelta(days=2, microseconds=1), "just after its cause"
    assert p.case.rework_count == 0


def test_failed_verification_orders_the_next_round_and_counts_rework() -> None:
    p = acknowledged_case()
    do_rectify(p, at=T0 + timedelta(days=1))
    do_verify(p, at=T0 + timedelta(days=2), passed=False)
    order = p.emitted[-1]
    assert isinstance(order, ev.HazardRectificationOrdered)
    assert order.payload.round == 2
    assert (p.case.state, p.case.round, p.case.rework_count) == ("rectification_ordered", 2, 1)
    do_rectify(p, at=T0 + timedelta(days=3))
    assert p.emitted[-1].payload.round == 2  # type: ignore[attr-defined]
    do_verify(p, at=T0 + timedelta(days=4), passed=True)
    assert (p.case.state, p.case.rework_count) == ("closed", 1)
    assert [e.TYPE for e in p.emitted] == [
        "hazard.rectification_ordered",
        "hazard.rectified",
        "hazard.verified",
        "hazard.rectification_ordered",
        "hazard.rectified",
        "hazard.verified",
        "hazard.closed",
    ]


def test_on_site_rectification_is_closed_at_once() -> None:
    p = progress(reported(on_site=True))
    [closed] = p.emitted
    assert isinstance(closed, ev.HazardClosed)
    assert closed.payload == ev.HazardClosedPayload(
        reason="rectified_on_site", department_id=None, closed_by="gm-liuyue-01"
    )
    assert p.case.state == "closed"
    assert p.case.close_reason == "rectified_on_site"


def test_return_sends_the_case_back_to_dispatch_and_reroute_holds_the_new_department() -> None:
    p = progress(reported(), dispatched(), returned(at=T0 + timedelta(minutes=20)))
    assert (p.case.state, p.case.department_id, p.case.returns) == ("reported", None, 1)
    p.record(dispatched(at=T0 + timedelta(minutes=25), department="police", dispatch_id=uuid.UUID(int=3)))
    assert (p.case.state, p.case.department_id) == ("dispatched", "police")
    assert p.case.departments_involved == ("fire", "police")


def test_referral_to_operators_and_overdue_receipt_and_escalation_are_recorded() -> None:
    referred = _event(
        ev.HazardReferredToOperators, ev.HazardReferredToOperatorsPayload(reason="no_rule"), at=T0
    )
    p = progress(reported(), referred)
    assert (p.case.state, p.case.department_id) == ("referred_to_operators", None)
    p.record(dispatched(at=T0 + timedelta(minutes=5)))
    p.record(
        _event(
            ev.HazardReceiptOverdue,
            ev.HazardReceiptOverduePayload(
                dispatch_id=DISPATCH, department_id="fire", receipt_deadline=T0 + timedelta(hours=2)
            ),
            at=T0 + timedelta(hours=2),
        )
    )
    p.record(
        _event(
            ev.HazardEscalated,
            ev.HazardEscalatedPayload(
                dispatch_id=DISPATCH,
                department_id="fire",
                level=2,
                target="supervisor",
                receipt_deadline=T0 + timedelta(hours=2),
            ),
            at=T0 + timedelta(hours=3),
        )
    )
    assert (p.case.state, p.case.receipt_overdue, p.case.escalation_level) == ("dispatched", True, 2)


def test_duplicate_is_linked_and_not_a_case_of_its_own() -> None:
    original = uuid.UUID(int=77)
    p = progress(reported(duplicate_of=original, on_site=True))
    assert (p.case.state, p.case.duplicate_of) == ("duplicate", original)
    assert p.emitted == []
    linked = _event(
        ev.HazardDuplicateLinked,
        ev.HazardDuplicateLinkedPayload(original_hazard_id=original, distance_m=3.0, same_building=True),
        at=T0,
        producer="intake",
    )
    p.record(linked)
    assert p.case.state == "duplicate"


def test_rectification_overdue_fires_only_for_the_current_order() -> None:
    p = acknowledged_case()
    order_id = p.case.order_event_id
    assert order_id is not None
    late = T0 + timedelta(days=10)
    fired = domain.overdue(p.case, order_event_id=order_id, now=late)
    assert fired is not None
    assert fired.payload.round == 1
    assert fired.payload.deadline == p.case.rectification_deadline
    p.emit(fired)
    assert p.case.rectification_overdue
    assert domain.overdue(p.case, order_event_id=order_id, now=late) is None, "fires once"
    assert domain.overdue(p.case, order_event_id=uuid.uuid4(), now=late) is None, "a stale timer stays silent"
    do_rectify(p, at=late + timedelta(hours=1))
    assert p.case.state == "rectified", "a late rectification is still recorded"
    assert domain.overdue(p.case, order_event_id=order_id, now=late) is None


# ------------------------------------------------------------------ refused


def test_verification_before_rectification_is_refused_with_a_readable_reason() -> None:
    p = acknowledged_case()
    with pytest.raises(domain.TransitionRefused) as refused:
        domain.verify(p.case, grid_id="liuyue-01", actor="gm", passed=True, note="", photos=(), now=T0)
    assert str(refused.value) == (
        f"cannot verify hazard {HAZARD}: it is awaiting rectification (rectification_ordered); "
        "verification needs a rectified case"
    )


def test_rectification_of_a_closed_case_is_refused() -> None:
    p = acknowledged_case()
    do_rectify(p, at=T0 + timedelta(days=1))
    do_verify(p, at=T0 + timedelta(days=2), passed=True)
    with pytest.raises(domain.TransitionRefused, match="it is closed"):
        domain.rectify(
            p.case, department_id="fire", actor="o", note="", photos=(), now=T0 + timedelta(days=3)
        )


def test_rectification_before_the_order_is_refused() -> None:
    p = progress(reported(), dispatched())
    with pytest.raises(domain.TransitionRefused, match="awaiting receipt by the department"):
        domain.rectify(p.case, department_id="fire", actor="o", note="", photos=(), now=T0)


def test_second_verification_is_refused() -> None:
    p = acknowledged_case()
    do_rectify(p, at=T0 + timedelta(days=1))
    do_verify(p, at=T0 + timedelta(days=2), passed=False)
    with pytest.raises(domain.TransitionRefused, match="verification needs a rectified case"):
        domain.verify(p.case, grid_id="liuyue-01", actor="gm", passed=True, note="", photos=(), now=T0)


def test_only_the_holding_department_may_rectify_and_the_refusal_names_no_holder() -> None:
    p = acknowledged_case()
    with pytest.raises(domain.NotPermitted, match="only the department holding hazard") as refused:
        domain.rectify(p.case, department_id="police", actor="o", note="", photos=(), now=T0)
    assert "fire" not in str(refused.value)


def test_only_a_reporter_of_the_grid_may_verify_and_the_refusal_names_no_grid() -> None:
    p = acknowledged_case()
    do_rectify(p, at=T0 + timedelta(days=1))
    with pytest.raises(domain.NotPermitted, match="only a reporter of the grid") as refused:
        domain.verify(p.case, grid_id="liuyue-02", actor="gm", passed=True, note="", photos=(), now=T0)
    assert "liuyue-01" not in str(refused.value)


def test_a_case_is_visible_to_its_grid_the_departments_that_held_it_and_read_all_roles() -> None:
    p = acknowledged_case()
    p.record(dispatched(at=T0 + timedelta(hours=2), department="police", dispatch_id=uuid.UUID(int=5)))

    def sees(role: str, grid: str | None = None, department: str | None = None) -> bool:
        return domain.visible_to(p.case, role=role, grid_id=grid, department_id=department)

    assert [sees("operator"), sees("supervisor")] == [True, True]
    assert [sees("reporter", grid="liuyue-01"), sees("reporter", grid="liuyue-02")] == [True, False]
    assert [sees("department", department=d) for d in ("police", "fire", "gas")] == [True, True, False]
    assert sees("department") is False


def test_stream_events_that_do_not_fit_are_refused() -> None:
    p = acknowledged_case()
    verified = ev.HazardVerified(
        event_id=uuid.uuid4(),
        occurred_at=T0 + timedelta(days=1),
        hazard_id=HAZARD,
        producer="test",
        payload=ev.HazardVerifiedPayload(passed=True, verified_by="gm"),
    )
    assert domain.refusal(p.case, verified) == (
        f"cannot verify hazard {HAZARD}: it is awaiting rectification (rectification_ordered); "
        "verification needs a rectified case"
    )
    do_rectify(p, at=T0 + timedelta(days=1))
    do_verify(p, at=T0 + timedelta(days=2), passed=True)
    rectified = ev.HazardRectified(
        event_id=uuid.uuid4(),
        occurred_at=T0 + timedelta(days=3),
        hazard_id=HAZARD,
        producer="test",
        payload=ev.HazardRectifiedPayload(department_id="fire", rectified_by="o"),
    )
    reason = domain.refusal(p.case, rectified)
    assert reason is not None
    assert reason.startswith(f"cannot mark hazard {HAZARD} rectified: it is closed (closed)")
    assert domain.state_before(p.entries, rectified, hazard_id=HAZARD).state == "closed"


# ------------------------------------------------------------------ out of order and twice


def test_acknowledgement_before_its_dispatch_gives_the_same_case() -> None:
    in_order = progress(reported(), dispatched(), acknowledged())
    swapped = progress(reported(), acknowledged(), dispatched())
    assert swapped.case.state == in_order.case.state == "rectification_ordered"
    assert swapped.case.department_id == "fire"
    assert [e.TYPE for e in swapped.emitted] == ["hazard.rectification_ordered"]


def test_acknowledgement_before_the_report_orders_once_the_report_is_known() -> None:
    p = progress(dispatched(), acknowledged())
    assert p.case.state == "acknowledged"
    assert p.emitted == [], "no category yet, so no deadline: wait for the report"
    p.record(reported())
    p.settle(now=T0 + timedelta(hours=1), reference=reference())
    assert [e.TYPE for e in p.emitted] == ["hazard.rectification_ordered"]
    assert p.case.state == "rectification_ordered"


def test_late_dispatch_after_the_order_neither_reopens_nor_reorders() -> None:
    p = acknowledged_case()
    p.record(dispatched(at=T0 + timedelta(minutes=1)))  # the same dispatch arriving again, late
    p.settle(now=T0 + timedelta(hours=2), reference=reference())
    assert p.case.state == "rectification_ordered"
    assert [e.TYPE for e in p.emitted] == ["hazard.rectification_ordered"]


def test_repeated_acknowledgement_does_not_order_twice() -> None:
    p = acknowledged_case()
    p.record(acknowledged(at=T0 + timedelta(minutes=31)))
    p.settle(now=T0 + timedelta(hours=2), reference=reference())
    assert [e.TYPE for e in p.emitted] == ["hazard.rectification_ordered"]


def test_stale_return_of_an_earlier_dispatch_is_only_recorded() -> None:
    p = acknowledged_case()
    p.record(returned(at=T0 + timedelta(hours=3), dispatch_id=uuid.UUID(int=99)))
    assert p.case.state == "rectification_ordered"
    assert p.case.returns == 1


def test_dispatch_events_after_closure_do_not_reopen() -> None:
    p = progress(reported(on_site=True))
    p.record(dispatched(at=T0 + timedelta(hours=5)))
    p.record(acknowledged(at=T0 + timedelta(hours=6)))
    p.settle(now=T0 + timedelta(hours=7), reference=reference())
    assert p.case.state == "closed"
    assert [e.TYPE for e in p.emitted] == ["hazard.closed"]


def test_fold_does_not_depend_on_arrival_order() -> None:
    events: list[ev.AnyEvent] = [reported(), dispatched(), acknowledged()]
    forward = build_case(HAZARD, [Entry(i, e) for i, e in enumerate(events)])
    backward = build_case(HAZARD, [Entry(i, e) for i, e in enumerate(reversed(events))])
    assert forward.state == backward.state == "acknowledged"
    assert dataclass_fields(forward) == dataclass_fields(backward)


def dataclass_fields(case: domain.Case) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(case, f.name) for f in dataclasses.fields(case)}


# ------------------------------------------------------------------ relapse


def closed_case(
    *,
    days_ago: float,
    building_id: str | None = "B-12",
    lat: float = 22.62200,
    lon: float = 114.16813,
    category: str = "locked_rooftop_door",
    department: str | None = "fire",
    hazard_id: uuid.UUID | None = None,
    seen_at: datetime = T0,
) -> ClosedCase:
    return ClosedCase(
        hazard_id=hazard_id or uuid.uuid4(),
        category=category,
        building_id=building_id,
        lat=lat,
        lon=lon,
        closed_at=seen_at - timedelta(days=days_ago),
        department_id=department,
    )


def detect(report: ev.HazardReported, *candidates: ClosedCase, window: int = 180) -> ev.HazardRelapsed | None:
    return domain.detect_relapse(report, candidates, window_days=window, distance_m=30.0, now=T0)


def test_same_building_inside_the_window_is_a_relapse_of_the_most_recent_closure() -> None:
    report = reported(at=T0 + timedelta(minutes=10))  # observed at T0
    older = closed_case(days_ago=100)
    newer = closed_case(days_ago=20, lat=22.6230)  # ~110 m away but the same building
    relapse = detect(report, older, newer)
    assert relapse is not None
    assert relapse.hazard_id == HAZARD
    assert relapse.causation_id == report.event_id
    assert relapse.payload.original_hazard_id == newer.hazard_id
    assert relapse.payload.original_department_id == "fire"
    assert relapse.payload.original_closed_at == newer.closed_at
    assert relapse.payload.days_since_closure == 20.0
    assert relapse.payload.same_building is True
    assert relapse.payload.distance_m > 100
    assert relapse.payload.place_key == "building:B-12"


def test_within_distance_without_a_building_is_a_relapse() -> None:
    report = reported(building_id=None, at=T0 + timedelta(minutes=10))
    near = closed_case(days_ago=5, building_id=None, lat=22.62210)  # ~11 m north
    relapse = detect(report, near)
    assert relapse is not None
    assert relapse.payload.same_building is False
    assert 10 < relapse.payload.distance_m < 12
    assert relapse.payload.place_key == "point:22.6221,114.1681"


def test_farther_than_the_distance_in_another_building_is_no_relapse() -> None:
    report = reported(at=T0 + timedelta(minutes=10))
    far = closed_case(days_ago=5, building_id="B-13", lat=22.62240)  # ~44 m
    assert detect(report, far) is None


def test_different_building_but_within_distance_is_a_relapse() -> None:
    report = reported(at=T0 + timedelta(minutes=10))
    next_door = closed_case(days_ago=5, building_id="B-13", lat=22.62220)  # ~22 m
    relapse = detect(report, next_door)
    assert relapse is not None
    assert relapse.payload.same_building is False


def test_outside_the_category_window_is_no_relapse() -> None:
    report = reported(category="ebike_indoor_charging", at=T0 + timedelta(minutes=10))
    window = reference().category("ebike_indoor_charging").relapse_window_days
    assert window == 60
    inside = closed_case(days_ago=59, category="ebike_indoor_charging")
    outside = closed_case(days_ago=61, category="ebike_indoor_charging")
    assert detect(report, outside, window=window) is None
    found = detect(report, inside, outside, window=window)
    assert found is not None
    assert found.payload.original_hazard_id == inside.hazard_id


def test_other_category_or_closure_after_the_sighting_is_no_relapse() -> None:
    report = reported(at=T0 + timedelta(minutes=10))
    assert detect(report, closed_case(days_ago=3, category="blocked_fire_passage")) is None
    assert detect(report, closed_case(days_ago=-1)) is None


def test_duplicate_report_is_never_a_relapse() -> None:
    report = reported(duplicate_of=uuid.uuid4(), at=T0 + timedelta(minutes=10))
    assert detect(report, closed_case(days_ago=3)) is None


def test_relapse_links_the_case() -> None:
    report = reported(at=T0 + timedelta(minutes=10))
    original = closed_case(days_ago=3)
    relapse = detect(report, original)
    assert relapse is not None
    p = progress(report, relapse)
    assert (p.case.relapse_of, p.case.relapse_place_key) == (original.hazard_id, "building:B-12")


def test_hotspot_needs_the_reference_number_of_relapses() -> None:
    minimum = reference().hotspot_min_relapses
    assert domain.is_hotspot(relapses=minimum, min_relapses=minimum)
    assert not domain.is_hotspot(relapses=minimum - 1, min_relapses=minimum)


# ------------------------------------------------------------------ any arrival order


def _full_life() -> Progress:
    p = progress(
        reported(),
        dispatched(),
        returned(at=T0 + timedelta(minutes=10)),
        dispatched(at=T0 + timedelta(minutes=12), dispatch_id=uuid.UUID(int=3)),
        acknowledged(at=T0 + timedelta(minutes=40), dispatch_id=uuid.UUID(int=3)),
    )
    do_rectify(p, at=T0 + timedelta(days=1))
    do_verify(p, at=T0 + timedelta(days=2), passed=False)
    do_rectify(p, at=T0 + timedelta(days=3))
    do_verify(p, at=T0 + timedelta(days=4), passed=True)
    return p


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_arrival_order_of_a_whole_life_folds_to_the_same_case(data: st.DataObject) -> None:
    life = _full_life()
    assert life.case.state == "closed"
    events = [entry.event for entry in life.entries]
    shuffled = data.draw(st.permutations(events))
    case = build_case(HAZARD, [Entry(i, e) for i, e in enumerate(shuffled)])
    assert dataclass_fields(case) == dataclass_fields(life.case)
    # Arriving one by one in that order, the case settles the same and reacts with nothing new.
    p = Progress(hazard_id=HAZARD)
    for event in shuffled:
        p.record(event)
    p.settle(now=T0 + timedelta(days=5), reference=reference())
    assert p.emitted == []
    assert p.case.state == "closed"


def test_reassignment_after_the_order_orders_again_for_the_new_department_in_the_same_round() -> None:
    p = acknowledged_case()
    first_order = p.case.order_event_id
    p.record(dispatched(at=T0 + timedelta(hours=2), department="police", dispatch_id=uuid.UUID(int=5)))
    assert (p.case.state, p.case.department_id, p.case.order_event_id) == ("dispatched", "police", None)
    with pytest.raises(domain.NotPermitted):
        domain.rectify(
            p.case, department_id="fire", actor="o", note="", photos=(), now=T0 + timedelta(hours=3)
        )
    p.record(acknowledged(at=T0 + timedelta(hours=3), department="police", dispatch_id=uuid.UUID(int=5)))
    p.settle(now=T0 + timedelta(hours=4), reference=reference())
    order = p.emitted[-1]
    assert isinstance(order, ev.HazardRectificationOrdered)
    assert (order.payload.department_id, order.payload.round) == ("police", 1)
    assert p.case.order_event_id not in (None, first_order)
    assert p.case.departments_involved == ("fire", "police")


def test_a_consequence_stamped_with_its_cause_s_instant_or_earlier_folds_after_it() -> None:
    at = T0 + timedelta(minutes=10)
    back = returned(at=at)
    referral = ev.HazardReferredToOperators(
        event_id=uuid.uuid4(),
        occurred_at=at - timedelta(seconds=2),  # another clock, behind
        hazard_id=HAZARD,
        producer="dispatch",
        causation_id=back.event_id,
        payload=ev.HazardReferredToOperatorsPayload(reason="all_candidates_returned"),
    )
    events: list[ev.AnyEvent] = [reported(), dispatched(), back, referral]
    for arrival in (events, [events[0], events[1], referral, back]):
        entries = [Entry(i, e) for i, e in enumerate(arrival)]
        assert [e.event.TYPE for e in domain.ordered(entries)] == [
            "hazard.reported",
            "hazard.dispatched",
            "hazard.returned",
            "hazard.referred_to_operators",
        ]
        assert build_case(HAZARD, entries).state == "referred_to_operators"
        p = Progress(hazard_id=HAZARD)
        for event in arrival:
            p.record(event)
        assert p.case.state == "referred_to_operators"


def test_a_return_after_receipt_sends_the_case_back_and_the_next_department_gets_its_own_order() -> None:
    p = acknowledged_case()
    assert p.case.state == "rectification_ordered"
    back = ev.HazardReturned(
        event_id=uuid.uuid4(),
        occurred_at=T0 + timedelta(hours=2),
        hazard_id=HAZARD,
        producer="dispatch",
        payload=ev.HazardReturnedPayload(
            dispatch_id=DISPATCH,
            department_id="fire",
            reason="An electric heater",
            returned_by="dept-fire",
            after_receipt=True,
            acknowledged_at=T0 + timedelta(minutes=30),
        ),
    )
    p.record(back)
    assert (p.case.state, p.case.department_id, p.case.order_event_id, p.case.rectification_deadline) == (
        "reported",
        None,
        None,
        None,
    )
    assert p.case.returns == 1
    p.record(dispatched(at=T0 + timedelta(hours=2), department="police", dispatch_id=uuid.UUID(int=7)))
    p.record(acknowledged(at=T0 + timedelta(hours=3), department="police", dispatch_id=uuid.UUID(int=7)))
    p.settle(now=T0 + timedelta(hours=3), reference=reference())
    order = p.emitted[-1]
    assert isinstance(order, ev.HazardRectificationOrdered)
    assert (order.payload.department_id, order.payload.round) == ("police", 1)
    assert p.case.departments_involved == ("fire", "police")
