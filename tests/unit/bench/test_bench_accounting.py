"""The checker the fault suite and the benchmark rely on: it must see what is missing or done twice."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from bench.loadgen import Accepted
from shared.events import dump_event
from tests.support.factories import make_event
from tests.support.oracles import TopicFacts, _note, account, invariant_problems


@dataclass
class FakeRecord:
    """The two fields of a consumer record the checker reads."""

    value: bytes
    timestamp: int = 1_700_000_000_000


def _facts(*events: object, raw: tuple[bytes, ...] = ()) -> TopicFacts:
    facts = TopicFacts()
    for event in events:
        _note(facts, FakeRecord(dump_event(event)))  # type: ignore[arg-type]
    for value in raw:
        _note(facts, FakeRecord(value))
    return facts


def _accepted(hazard_id: uuid.UUID) -> Accepted:
    return Accepted(
        report_id=str(uuid.uuid4()),
        hazard_id=str(hazard_id),
        grid_id="liuyue-01",
        category="locked_rooftop_door",
        on_site=False,
        building_id="liuyue-01-b0001",
        duplicate_of=None,
        scheduled_at=0.0,
        sent_at=0.0,
        accepted_at=0.0,
        batch=False,
    )


def test_a_reported_and_dispatched_hazard_is_accounted_for() -> None:
    hazard = uuid.uuid4()
    facts = _facts(
        make_event("hazard.reported", hazard_id=hazard), make_event("hazard.dispatched", hazard_id=hazard)
    )
    result = account([_accepted(hazard)], facts)
    assert result["problems"] == []
    assert result["dispatched"] == 1


def test_a_hazard_never_decided_is_reported_missing() -> None:
    hazard = uuid.uuid4()
    result = account([_accepted(hazard)], _facts(make_event("hazard.reported", hazard_id=hazard)))
    assert result["problems"] == ["1 not dispatched (nor duplicate/on-site/referred)"]


def test_an_accepted_report_missing_from_the_topic_is_a_problem() -> None:
    result = account([_accepted(uuid.uuid4())], _facts())
    assert "1 accepted hazards have no hazard.reported event" in result["problems"]


def test_duplicates_on_site_and_referred_need_no_dispatch() -> None:
    dup, fixed, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    facts = _facts(
        make_event("hazard.reported", hazard_id=dup, duplicate_of=uuid.uuid4()),
        make_event("hazard.reported", hazard_id=fixed, rectified_on_site=True),
        make_event("hazard.reported", hazard_id=other, category="other"),
        make_event("hazard.referred_to_operators", hazard_id=other),
    )
    result = account([_accepted(dup), _accepted(fixed), _accepted(other)], facts)
    assert result["problems"] == []
    assert (result["duplicates"], result["rectified_on_site"], result["referred_to_operators"]) == (1, 1, 1)


def test_a_second_dispatch_event_is_caught_but_a_resent_one_is_not() -> None:
    hazard = uuid.uuid4()
    reported = make_event("hazard.reported", hazard_id=hazard)
    dispatched = make_event("hazard.dispatched", hazard_id=hazard)
    resent = _facts(reported, dispatched, dispatched)
    assert resent.redelivered == 1
    assert account([_accepted(hazard)], resent)["problems"] == []
    twice = _facts(reported, dispatched, make_event("hazard.dispatched", hazard_id=hazard))
    assert "1 hazards dispatched twice" in account([_accepted(hazard)], twice)["problems"]


def test_escalations_overdues_orders_and_closures_fired_twice_are_caught() -> None:
    hazard = uuid.uuid4()
    facts = _facts(
        make_event("hazard.escalated", hazard_id=hazard),
        make_event("hazard.escalated", hazard_id=hazard),
        make_event("hazard.receipt_overdue", hazard_id=hazard),
        make_event("hazard.receipt_overdue", hazard_id=hazard),
        make_event("hazard.rectification_ordered", hazard_id=hazard),
        make_event("hazard.rectification_ordered", hazard_id=hazard),
        make_event("hazard.closed", hazard_id=hazard),
        make_event("hazard.closed", hazard_id=hazard),
    )
    problems = " | ".join(invariant_problems(facts))
    for what in ("escalations", "receipt-overdue", "rectification orders", "closures"):
        assert what in problems


def test_a_second_round_order_and_a_higher_escalation_level_are_not_repeats() -> None:
    hazard = uuid.uuid4()
    facts = _facts(
        make_event("hazard.escalated", hazard_id=hazard, level=1),
        make_event("hazard.escalated", hazard_id=hazard, level=2),
        make_event("hazard.rectification_ordered", hazard_id=hazard, round=1),
        make_event("hazard.rectification_ordered", hazard_id=hazard, round=2),
    )
    assert invariant_problems(facts) == []


def test_records_the_consumers_would_refuse_are_not_counted_as_facts() -> None:
    valid = dump_event(make_event("hazard.reported"))
    facts = _facts(raw=(b"not json", b"{}", valid.replace(b'"lat":', b'"lat":999,"x":')))
    assert facts.reported == {}
    assert facts.types["<invalid>"] == 3


def test_a_hazard_every_department_returned_ends_with_the_operators_and_is_decided() -> None:
    hazard = uuid.uuid4()
    facts = _facts(
        make_event("hazard.reported", hazard_id=hazard),
        make_event("hazard.dispatched", hazard_id=hazard),
        make_event("hazard.returned", hazard_id=hazard),
        make_event("hazard.referred_to_operators", hazard_id=hazard, reason="all_candidates_returned"),
    )
    result = account([_accepted(hazard)], facts)
    assert result["problems"] == []
    assert (result["dispatched"], result["referred_to_operators"]) == (1, 0)


def _dispatched(hazard: uuid.UUID, dispatch: uuid.UUID, reason: str, previous: uuid.UUID | None) -> object:
    return make_event(
        "hazard.dispatched",
        hazard_id=hazard,
        dispatch_id=dispatch,
        reason=reason,
        previous_dispatch_id=previous,
    )


def test_a_hazard_rerouted_reassigned_and_assigned_from_the_queue_in_turn_is_dispatched_once() -> None:
    hazard = uuid.uuid4()
    first, second, third, fourth = (uuid.uuid4() for _ in range(4))
    facts = _facts(
        make_event("hazard.reported", hazard_id=hazard),
        _dispatched(hazard, first, "routed", None),
        make_event("hazard.returned", hazard_id=hazard, dispatch_id=first),
        _dispatched(hazard, second, "rerouted", first),
        _dispatched(hazard, third, "reassigned", second),
        make_event("hazard.returned", hazard_id=hazard, dispatch_id=third),
        make_event(
            "hazard.referred_to_operators",
            hazard_id=hazard,
            reason="all_candidates_returned",
            previous_dispatch_id=third,
        ),
        _dispatched(hazard, fourth, "reassigned", None),
    )
    assert invariant_problems(facts) == []
    assert account([_accepted(hazard)], facts)["problems"] == []


def test_a_dispatch_replaced_twice_is_a_hazard_dispatched_twice_whatever_the_reason() -> None:
    # Returned once but rerouted twice; reassigned twice; returned and both rerouted and referred.
    cases = []
    for second_reason, third_reason in (
        ("rerouted", "rerouted"),
        ("reassigned", "reassigned"),
        ("rerouted", None),
    ):
        hazard, first = uuid.uuid4(), uuid.uuid4()
        events = [
            make_event("hazard.reported", hazard_id=hazard),
            _dispatched(hazard, first, "routed", None),
            _dispatched(hazard, uuid.uuid4(), second_reason, first),
        ]
        if third_reason is None:
            events.append(
                make_event("hazard.referred_to_operators", hazard_id=hazard, previous_dispatch_id=first)
            )
            events.append(_dispatched(hazard, uuid.uuid4(), "reassigned", None))
        else:
            events.append(_dispatched(hazard, uuid.uuid4(), third_reason, first))
        cases.append((hazard, _facts(*events)))
    for hazard, facts in cases:
        assert any("dispatched twice" in p for p in invariant_problems(facts)), invariant_problems(facts)
        assert "1 hazards dispatched twice" in account([_accepted(hazard)], facts)["problems"]


def test_an_assignment_from_the_operators_queue_without_a_referral_is_a_second_dispatch() -> None:
    hazard = uuid.uuid4()
    facts = _facts(
        make_event("hazard.reported", hazard_id=hazard),
        _dispatched(hazard, uuid.uuid4(), "routed", None),
        _dispatched(hazard, uuid.uuid4(), "reassigned", None),
    )
    assert any("dispatched twice" in p for p in invariant_problems(facts)), invariant_problems(facts)
    assert "1 hazards dispatched twice" in account([_accepted(hazard)], facts)["problems"]
