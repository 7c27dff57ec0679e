"""Dispatch use cases on a fake unit of work: no database, no broker, milliseconds per test.

The fake repository (tests/support/fakes/dispatch.py) keeps the real one's answers; what locks
and SQL decide (races, skipped rows, the database's clock) is the integration tests' business.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from services.dispatch import domain, service
from services.dispatch.repository import DispatchRecord
from shared import events as ev
from shared.auth import Principal
from shared.domain_errors import DomainError
from shared.errors import status_of
from shared.reference import ReferenceData, load_reference_data
from tests.support import factories
from tests.support.factories import make_event
from tests.support.fake_uow import FakeWork
from tests.support.fakes.dispatch import FakeDispatchRepository

T0 = datetime(2026, 4, 7, 1, 30, tzinfo=UTC)  # 09:30 on a Tuesday in Shanghai: working time
FIRE = Principal("dept-fire", "department", None, "fire")
GAS = Principal("dept-gas", "department", None, "gas")
POLICE = Principal("dept-police", "department", None, "police")
OPERATOR = Principal("op-1", "operator")


@pytest.fixture(scope="module")
def reference() -> ReferenceData:
    return load_reference_data()


@dataclass
class Desk:
    """A fake unit-of-work factory on an in-memory dispatch schema, and the rules in force."""

    work: FakeWork[FakeDispatchRepository]
    repo: FakeDispatchRepository
    policies: service.Policies

    async def route(self, *events: ev.LifecycleEvent) -> None:
        async with self.work() as uow:
            await service.apply_events(uow, self.policies.reference, events)

    async def run(self, use_case: Any, *args: Any, **kwargs: Any) -> Any:
        async with self.work() as uow:
            return await use_case(uow, *args, **kwargs)

    async def dispatch_of(self, event: ev.HazardReported) -> DispatchRecord:
        (found,) = [row for row in self.repo.dispatches.values() if row.dispatch.hazard_id == event.hazard_id]
        record = await self.repo.get_dispatch(found.dispatch.dispatch_id)
        assert record is not None
        return record


def desk_for(reference: ReferenceData, **policies: Any) -> Desk:
    repo = FakeDispatchRepository()
    work = FakeWork(repo, now=T0)
    repo.clock = lambda: work.now
    return Desk(work=work, repo=repo, policies=service.Policies(reference=reference, **policies))


@pytest.fixture
def desk(reference: ReferenceData) -> Desk:
    return desk_for(reference)


def reported(category: str = "locked_rooftop_door", grid_id: str = "liuyue-01") -> ev.HazardReported:
    return factories.reported_event(
        at=T0,
        category=category,
        grid_id=grid_id,
        description="door padlocked",
        location=ev.Location(lat=22.65, lon=114.2, address="Liuyue Rd 12", building_id="B-12"),
        street_id="henggang",
        reporter_id="gm-1",
    )


def refusal(exc: pytest.ExceptionInfo[DomainError]) -> tuple[int, str]:
    """What the API answers for a refusal: its status and code."""
    return status_of(exc.value), exc.value.code


def counted(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------- consumed events


async def test_a_reported_hazard_is_routed_once_with_what_was_reported(desk: Desk) -> None:
    hazard = reported()
    again = hazard.model_copy(update={"event_id": uuid.uuid4()})
    before = counted(
        "hazard_dispatch_dispatches_total",
        {"department": "fire", "category": "locked_rooftop_door", "reason": "routed"},
    )
    await desk.route(hazard)
    await desk.route(again)

    record = await desk.dispatch_of(hazard)
    assert (record.dispatch.department_id, record.dispatch.status) == ("fire", "pending")
    assert record.dispatched_by == "system"
    assert record.report is not None
    assert (record.report.description, record.report.address, record.report.photos) == (
        "door padlocked",
        "Liuyue Rd 12",
        ("https://img.example.org/1.jpg",),
    )
    assert desk.work.types() == ["hazard.dispatched"]
    assert desk.repo.hazards[hazard.hazard_id]["queue"] == "dispatched"
    after = counted(
        "hazard_dispatch_dispatches_total",
        {"department": "fire", "category": "locked_rooftop_door", "reason": "routed"},
    )
    assert after - before == 1


async def test_a_hazard_no_rule_matches_goes_to_the_operators_queue(desk: Desk) -> None:
    hazard = reported("other")
    await desk.route(hazard)
    assert desk.work.types() == ["hazard.referred_to_operators"]
    (queued,) = await desk.run(service.list_operator_queue, limit=10, offset=0)
    assert (queued.facts.hazard_id, queued.queue, queued.referral_reason) == (
        hazard.hazard_id,
        "operators",
        "no_rule",
    )


async def test_a_relapse_is_annotated_on_the_dispatch(desk: Desk) -> None:
    hazard = reported()
    original = uuid.uuid4()
    relapsed = make_event("hazard.relapsed", hazard_id=hazard.hazard_id, original_hazard_id=original)
    await desk.route(relapsed, hazard)
    assert (await desk.dispatch_of(hazard)).relapse_of == original


# ---------------------------------------------------------------- acknowledgement


async def test_acknowledged_on_time_stops_the_timers_and_counts_after_commit(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    dispatch_id = (await desk.dispatch_of(hazard)).dispatch.dispatch_id
    desk.work.advance(timedelta(minutes=30))
    before = counted("hazard_dispatch_acknowledged_total", {"department": "fire", "on_time": "true"})

    async with desk.work() as uow:
        record = await service.acknowledge_dispatch(uow, dispatch_id, principal=FIRE)
        # Counted once committed, never inside the transaction.
        assert (
            counted("hazard_dispatch_acknowledged_total", {"department": "fire", "on_time": "true"}) == before
        )

    assert (record.dispatch.status, record.dispatch.on_time, record.acknowledged_by) == (
        "acknowledged",
        True,
        "dept-fire",
    )
    assert record.dispatch.acknowledged_at == T0 + timedelta(minutes=30)
    assert record.past_deadline is False
    assert desk.work.types() == ["hazard.dispatched", "hazard.acknowledged"]
    assert desk.repo.next_due(dispatch_id) is None  # its steps stopped with the acknowledgement
    assert (
        counted("hazard_dispatch_acknowledged_total", {"department": "fire", "on_time": "true"}) == before + 1
    )


async def test_acknowledged_after_the_deadline_is_late_and_declares_the_overdue(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    record = await desk.dispatch_of(hazard)
    desk.work.now = record.dispatch.receipt_deadline + timedelta(minutes=1)
    assert (await desk.repo.get_dispatch(record.dispatch.dispatch_id)).past_deadline is True  # type: ignore[union-attr]

    late = await desk.run(service.acknowledge_dispatch, record.dispatch.dispatch_id, principal=FIRE)

    assert (late.dispatch.on_time, late.dispatch.overdue_at) == (False, desk.work.now)
    assert desk.work.types() == ["hazard.dispatched", "hazard.receipt_overdue", "hazard.acknowledged"]


async def test_a_second_acknowledgement_is_a_conflict_and_publishes_nothing(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    dispatch_id = (await desk.dispatch_of(hazard)).dispatch.dispatch_id
    await desk.run(service.acknowledge_dispatch, dispatch_id, principal=FIRE)
    with pytest.raises(domain.DispatchConflictError) as again:
        await desk.run(service.acknowledge_dispatch, dispatch_id, principal=FIRE)
    assert refusal(again) == (409, "already_acknowledged")
    assert desk.work.types() == ["hazard.dispatched", "hazard.acknowledged"]
    assert desk.work.rollbacks == 1


@pytest.mark.parametrize("principal", [POLICE, FIRE], ids=["another department's", "unknown"])
async def test_another_departments_dispatch_reads_as_an_unknown_one(desk: Desk, principal: Principal) -> None:
    hazard = reported()
    await desk.route(hazard)
    known = (await desk.dispatch_of(hazard)).dispatch.dispatch_id
    dispatch_id = known if principal is POLICE else uuid.uuid4()
    for use_case, kwargs in [
        (service.get_dispatch, {}),
        (service.acknowledge_dispatch, {}),
        (service.return_dispatch, {"reason": "not ours", "policies": desk.policies}),
        (
            service.request_extension,
            {"deadline": T0 + timedelta(days=2), "reason": "crew away", "policies": desk.policies},
        ),
    ]:
        with pytest.raises(service.DispatchNotFoundError) as hidden:
            await desk.run(use_case, dispatch_id, principal=principal, **kwargs)
        assert refusal(hidden) == (404, "not_found")
        assert str(hidden.value) == f"No dispatch {dispatch_id} is visible to you."
    assert desk.work.types() == ["hazard.dispatched"]


async def test_a_department_lists_only_its_own_inbox(desk: Desk) -> None:
    fire, police = reported(), reported("public_security_hazard")
    await desk.route(fire, police)
    mine = await desk.run(service.list_dispatches, principal=FIRE, limit=10, offset=0)
    assert [r.dispatch.hazard_id for r in mine] == [fire.hazard_id]
    everything = await desk.run(service.list_dispatches, principal=OPERATOR, limit=10, offset=0)
    assert {r.dispatch.hazard_id for r in everything} == {fire.hazard_id, police.hazard_id}
    with pytest.raises(service.OtherDepartmentError) as refused:
        await desk.run(service.list_dispatches, principal=FIRE, department_id="police", limit=10, offset=0)
    assert refusal(refused) == (403, "forbidden")


# ---------------------------------------------------------------- returns


async def test_a_return_reroutes_excluding_the_department_that_returned(desk: Desk) -> None:
    hazard = reported("direct_vent_water_heater")
    await desk.route(hazard)
    first = await desk.dispatch_of(hazard)
    assert first.dispatch.department_id == "gas"

    result = await desk.run(
        service.return_dispatch,
        first.dispatch.dispatch_id,
        reason="No gas contract",
        principal=GAS,
        policies=desk.policies,
    )

    assert (result.dispatch.dispatch.status, result.dispatch.returned_by) == ("returned", "dept-gas")
    (rerouted,) = [x for x in result.outcome.dispatches if x.status == "pending"]
    assert rerouted.department_id == "fire"
    assert desk.work.types() == ["hazard.dispatched", "hazard.returned", "hazard.dispatched"]
    assert await desk.repo.returned_departments(hazard.hazard_id) == {"gas"}
    assert desk.repo.next_due(first.dispatch.dispatch_id) is None
    assert desk.repo.next_due(rerouted.dispatch_id) == rerouted.receipt_deadline

    # Fire returns it too: nobody is left, the operators get it.
    again = await desk.run(
        service.return_dispatch,
        rerouted.dispatch_id,
        reason="Not ours",
        principal=FIRE,
        policies=desk.policies,
    )
    assert again.outcome.referral == "all_candidates_returned"
    assert desk.repo.hazards[hazard.hazard_id]["queue"] == "operators"


async def test_within_the_window_an_acknowledged_dispatch_is_returned_after_receipt(desk: Desk) -> None:
    hazard = reported("direct_vent_water_heater")
    await desk.route(hazard)
    dispatch_id = (await desk.dispatch_of(hazard)).dispatch.dispatch_id
    await desk.run(service.acknowledge_dispatch, dispatch_id, principal=GAS)
    desk.work.advance(timedelta(hours=1))

    result = await desk.run(
        service.return_dispatch, dispatch_id, reason="No contract", principal=GAS, policies=desk.policies
    )

    assert result.dispatch.dispatch.status == "returned"
    assert result.dispatch.dispatch.acknowledged_at is not None
    assert not result.outcome.return_requested


async def test_after_the_window_a_return_after_receipt_is_refused(reference: ReferenceData) -> None:
    desk = desk_for(reference, returns=domain.ReturnPolicy(after_receipt="window", window=timedelta(hours=2)))
    hazard = reported("direct_vent_water_heater")
    await desk.route(hazard)
    dispatch_id = (await desk.dispatch_of(hazard)).dispatch.dispatch_id
    await desk.run(service.acknowledge_dispatch, dispatch_id, principal=GAS)
    desk.work.advance(timedelta(hours=3))
    with pytest.raises(domain.DispatchConflictError) as late:
        await desk.run(
            service.return_dispatch, dispatch_id, reason="No contract", principal=GAS, policies=desk.policies
        )
    assert refusal(late) == (409, "return_window_passed")


async def test_in_approval_mode_a_return_waits_and_the_operator_approves_or_refuses(
    reference: ReferenceData,
) -> None:
    desk = desk_for(reference, returns=domain.ReturnPolicy(after_receipt="approval"))
    approved_hazard, refused_hazard = (
        reported("direct_vent_water_heater"),
        reported("direct_vent_water_heater"),
    )
    await desk.route(approved_hazard, refused_hazard)
    ids = []
    for hazard in (approved_hazard, refused_hazard):
        dispatch_id = (await desk.dispatch_of(hazard)).dispatch.dispatch_id
        await desk.run(service.acknowledge_dispatch, dispatch_id, principal=GAS)
        asked = await desk.run(
            service.return_dispatch, dispatch_id, reason="No contract", principal=GAS, policies=desk.policies
        )
        assert asked.outcome.return_requested
        assert asked.dispatch.dispatch.return_request.status == "awaiting_approval"
        assert asked.dispatch.returned_by is None
        ids.append(dispatch_id)
    published = len(desk.work.published)

    approved = await desk.run(service.approve_return, ids[0], principal=OPERATOR, policies=desk.policies)
    assert (approved.dispatch.dispatch.status, approved.dispatch.returned_by) == ("returned", "dept-gas")
    assert [x.department_id for x in approved.outcome.dispatches if x.status == "pending"] == ["fire"]
    assert desk.work.types()[published:] == ["hazard.returned", "hazard.dispatched"]

    refused = await desk.run(service.refuse_return, ids[1], reason="It is yours", principal=OPERATOR)
    assert refused.dispatch.status == "acknowledged"
    assert refused.dispatch.return_request.status == "refused"
    with pytest.raises(domain.DispatchConflictError) as none_left:
        await desk.run(service.refuse_return, ids[1], reason="Again", principal=OPERATOR)
    assert refusal(none_left) == (409, "no_return_request")


# ---------------------------------------------------------------- operators


async def test_an_operator_reassigns_a_pending_dispatch(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    old = (await desk.dispatch_of(hazard)).dispatch.dispatch_id

    outcome = await desk.run(
        service.reassign_dispatch,
        old,
        department_id="police",
        reason="Police matter",
        principal=OPERATOR,
        policies=desk.policies,
    )

    superseded, fresh = outcome.dispatches
    assert (superseded.status, fresh.department_id) == ("superseded", "police")
    shown = await desk.repo.get_dispatch(fresh.dispatch_id)
    assert shown is not None
    assert (shown.dispatched_by, shown.note, shown.dispatch.previous_dispatch_id) == (
        "op-1",
        "Police matter",
        old,
    )
    assert desk.repo.dispatches[old].closed_at == T0
    assert desk.repo.next_due(old) is None
    assert desk.repo.next_due(fresh.dispatch_id) == fresh.receipt_deadline
    with pytest.raises(domain.DispatchConflictError) as again:
        await desk.run(
            service.reassign_dispatch,
            old,
            department_id="gas",
            reason="Gas matter",
            principal=OPERATOR,
            policies=desk.policies,
        )
    assert refusal(again) == (409, "already_superseded")


async def test_an_unknown_department_is_refused_before_anything_is_read(desk: Desk) -> None:
    for use_case, target in [
        (service.reassign_dispatch, uuid.uuid4()),
        (service.assign_from_queue, uuid.uuid4()),
    ]:
        with pytest.raises(DomainError) as unknown:
            await desk.run(
                use_case,
                target,
                department_id="nope",
                reason="why not",
                principal=OPERATOR,
                policies=desk.policies,
            )
        assert refusal(unknown) == (422, "unknown_department")
        assert unknown.value.details == [{"field": "department_id", "problem": "unknown department"}]
        assert unknown.value.message.startswith("Unknown department 'nope'. Known departments: ")


async def test_an_operator_assigns_a_hazard_from_the_queue_once(desk: Desk) -> None:
    hazard = reported("other")
    await desk.route(hazard)

    outcome = await desk.run(
        service.assign_from_queue,
        hazard.hazard_id,
        department_id="fire",
        reason="Fire knows",
        principal=OPERATOR,
        policies=desk.policies,
    )

    (fresh,) = outcome.dispatches
    assert (fresh.department_id, fresh.reason) == ("fire", "reassigned")
    assert desk.repo.hazards[hazard.hazard_id]["queue"] == "dispatched"
    assert desk.work.types() == ["hazard.referred_to_operators", "hazard.dispatched"]
    with pytest.raises(service.NotInOperatorQueueError) as again:
        await desk.run(
            service.assign_from_queue,
            hazard.hazard_id,
            department_id="gas",
            reason="Gas knows",
            principal=OPERATOR,
            policies=desk.policies,
        )
    assert refusal(again) == (409, "not_in_operator_queue")
    unknown = uuid.uuid4()
    with pytest.raises(service.HazardNotFoundError) as missing:
        await desk.run(
            service.assign_from_queue,
            unknown,
            department_id="gas",
            reason="Gas knows",
            principal=OPERATOR,
            policies=desk.policies,
        )
    assert refusal(missing) == (404, "not_found")
    assert missing.value.message == f"No hazard {unknown} is known to dispatch."


async def test_a_hazard_given_an_active_dispatch_meanwhile_is_a_conflict(desk: Desk) -> None:
    hazard = reported("other")
    await desk.route(hazard)
    # Another operator's assignment committed first (the unique index of active dispatches holds).
    facts = (await desk.repo.get_hazard(hazard.hazard_id)).facts  # type: ignore[union-attr]
    rival = domain.assign_from_queue(desk.policies.reference, facts, department_id="gas", by="op-2", now=T0)
    await desk.repo.add_dispatches(rival.dispatches, dispatched_by="op-2")
    with pytest.raises(service.ActiveDispatchError) as conflict:
        await desk.run(
            service.assign_from_queue,
            hazard.hazard_id,
            department_id="fire",
            reason="Fire knows",
            principal=OPERATOR,
            policies=desk.policies,
        )
    assert refusal(conflict) == (409, "conflict")


# ---------------------------------------------------------------- extensions


async def test_an_extension_is_requested_then_approved_and_the_timers_move(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    record = await desk.dispatch_of(hazard)
    dispatch_id, deadline = record.dispatch.dispatch_id, record.dispatch.receipt_deadline
    wanted = deadline + timedelta(days=2)

    asked = await desk.run(
        service.request_extension,
        dispatch_id,
        deadline=wanted,
        reason="Crew away",
        principal=FIRE,
        policies=desk.policies,
    )
    assert asked.dispatch.receipt_deadline == deadline
    assert asked.dispatch.extension_request.status == "awaiting_approval"

    approved = await desk.run(
        service.approve_extension, dispatch_id, note="ok", principal=OPERATOR, policies=desk.policies
    )
    assert approved.dispatch.receipt_deadline == wanted
    assert approved.dispatch.original_receipt_deadline == deadline
    # Nothing is due at the old deadline any more: the next step is the new one, the escalation
    # steps count from it.
    assert desk.repo.next_due(dispatch_id) == wanted
    assert [s.due_at for s in approved.dispatch.escalation] == [
        wanted + after for after in (timedelta(0), timedelta(hours=2), timedelta(hours=24))
    ]
    assert desk.work.types() == [
        "hazard.dispatched",
        "hazard.extension_requested",
        "hazard.extension_decided",
    ]


async def test_a_refused_extension_keeps_the_deadline(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    record = await desk.dispatch_of(hazard)
    dispatch_id = record.dispatch.dispatch_id
    await desk.run(
        service.request_extension,
        dispatch_id,
        deadline=record.dispatch.receipt_deadline + timedelta(days=1),
        reason="Crew away",
        principal=FIRE,
        policies=desk.policies,
    )
    refused = await desk.run(service.refuse_extension, dispatch_id, note="no", principal=OPERATOR)
    assert refused.dispatch.receipt_deadline == record.dispatch.receipt_deadline
    assert refused.dispatch.extension_request.status == "refused"
    with pytest.raises(domain.DispatchConflictError) as none_left:
        await desk.run(
            service.approve_extension, dispatch_id, note="", principal=OPERATOR, policies=desk.policies
        )
    assert status_of(none_left.value) == 409


@pytest.mark.parametrize("shift", [timedelta(0), timedelta(days=31)], ids=["not later", "too far"])
async def test_a_bad_extension_date_is_refused_on_the_deadline_field(desk: Desk, shift: timedelta) -> None:
    hazard = reported()
    await desk.route(hazard)
    record = await desk.dispatch_of(hazard)
    with pytest.raises(domain.ExtensionDateRefused) as refused:
        await desk.run(
            service.request_extension,
            record.dispatch.dispatch_id,
            deadline=record.dispatch.receipt_deadline + shift,
            reason="Crew away",
            principal=FIRE,
            policies=desk.policies,
        )
    assert refusal(refused) == (422, "invalid_deadline")
    assert refused.value.details == [{"field": "deadline", "problem": refused.value.message}]


# ---------------------------------------------------------------- timers


async def test_due_timers_fire_once_and_an_acknowledged_dispatchs_never(desk: Desk) -> None:
    late, acknowledged = reported(), reported()
    await desk.route(late, acknowledged)
    await desk.run(
        service.acknowledge_dispatch,
        (await desk.dispatch_of(acknowledged)).dispatch.dispatch_id,
        principal=FIRE,
    )
    deadline = (await desk.dispatch_of(late)).dispatch.receipt_deadline
    assert await desk.run(service.fire_due_timers, limit=100) == 0

    desk.work.now = deadline + timedelta(hours=1)
    before = counted("hazard_dispatch_receipt_overdue_total", {"department": "fire"})
    claimed = await desk.run(service.fire_due_timers, limit=100)

    assert claimed >= 1
    fired = desk.work.types()[3:]
    assert fired[0] == "hazard.receipt_overdue"
    assert set(fired) <= {"hazard.receipt_overdue", "hazard.escalated"}
    assert {e.hazard_id for e in desk.work.published[3:]} == {late.hazard_id}
    record = await desk.dispatch_of(late)
    assert record.dispatch.overdue_at == desk.work.now
    assert counted("hazard_dispatch_receipt_overdue_total", {"department": "fire"}) == before + 1
    assert await desk.run(service.fire_due_timers, limit=100) == 0  # nothing fires twice


async def test_the_gauges_drop_a_department_emptied_to_zero(desk: Desk) -> None:
    hazard = reported()
    await desk.route(hazard)
    seen = await desk.run(service.refresh_gauges, seen=set())
    assert seen == {"fire"}
    assert counted("hazard_dispatch_pending", {"department": "fire"}) == 1
    await desk.run(
        service.acknowledge_dispatch, (await desk.dispatch_of(hazard)).dispatch.dispatch_id, principal=FIRE
    )
    await desk.run(service.refresh_gauges, seen=seen)
    assert counted("hazard_dispatch_pending", {"department": "fire"}) == 0
