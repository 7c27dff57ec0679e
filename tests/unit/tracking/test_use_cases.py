"""Tracking's use cases on a fake unit of work and an in-memory repository: milliseconds, no database.

What the API and the consumer rely on: what each use case publishes, stores and refuses (with
the code, message and details the API answers), timers fired once, relapses and hotspots, and
metrics counted only once committed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from services.tracking import service, timers
from services.tracking.service import TrackingConfig
from services.tracking.views import CaseView
from shared import events as ev
from shared.auth import Principal
from shared.errors import status_of
from shared.reference import ReferenceData, load_reference_data
from tests.support.factories import sample_payloads
from tests.support.fake_uow import FakeWork
from tests.support.fakes.tracking import FakeTrackingRepository

T0 = datetime(2026, 4, 7, 1, 30, tzinfo=UTC)  # a Tuesday, 09:30 in Shenzhen
FIRE = Principal(id="officer-fire", role="department", department_id="fire")
POLICE = Principal(id="officer-police", role="department", department_id="police")
GM = Principal(id="gm-liuyue-01", role="reporter", grid_id="liuyue-01")
OTHER_GM = Principal(id="gm-liuyue-02", role="reporter", grid_id="liuyue-02")
OPERATOR = Principal(id="op-1", role="operator")
E = TypeVar("E", bound=ev.AnyEvent)


@cache
def reference() -> ReferenceData:
    return load_reference_data()


@pytest.fixture
def config() -> TrackingConfig:
    return TrackingConfig(reference=reference())


@pytest.fixture
def work() -> FakeWork[FakeTrackingRepository]:
    return FakeWork(FakeTrackingRepository(), now=T0 + timedelta(hours=1))


class Hazard:
    """The events other services publish about one hazard."""

    def __init__(self, *, building_id: str | None = "B-12", at: datetime = T0) -> None:
        self.hazard_id = uuid.uuid4()
        self.dispatch_id = uuid.uuid4()
        self.building_id = building_id
        self.at = at

    def _event(self, cls: type[E], payload: Any, *, minutes: int, producer: str = "dispatch") -> E:
        return cls.model_validate(
            {
                "event_id": uuid.uuid4(),
                "occurred_at": self.at + timedelta(minutes=minutes),
                "hazard_id": self.hazard_id,
                "producer": producer,
                "payload": payload,
            }
        )

    def reported(self) -> ev.HazardReported:
        return self._event(
            ev.HazardReported,
            ev.HazardReportedPayload(
                report_id=uuid.uuid4(),
                category="locked_rooftop_door",
                description="Rooftop door padlocked",
                location=ev.Location(
                    lat=22.62200, lon=114.16813, address="Liuyue Rd 12", building_id=self.building_id
                ),
                grid_id="liuyue-01",
                community_id="liuyue",
                street_id="henggang",
                reporter_id="gm-liuyue-01",
                observed_at=self.at - timedelta(minutes=10),
                accepted_at=self.at,
            ),
            minutes=0,
            producer="intake",
        )

    def dispatched(self, department: str = "fire") -> ev.HazardDispatched:
        return self._event(
            ev.HazardDispatched,
            ev.HazardDispatchedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                rule_id="r1",
                receipt_deadline=self.at + timedelta(hours=2),
                deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
            ),
            minutes=1,
        )

    def acknowledged(self, department: str = "fire") -> ev.HazardAcknowledged:
        return self._event(
            ev.HazardAcknowledged,
            ev.HazardAcknowledgedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                acknowledged_at=self.at + timedelta(minutes=30),
                receipt_deadline=self.at + timedelta(hours=2),
                on_time=True,
                acknowledged_by=f"officer-{department}",
            ),
            minutes=30,
        )

    def stream(self) -> list[ev.AnyEvent]:
        return [self.reported(), self.dispatched(), self.acknowledged()]


async def apply(work: FakeWork[FakeTrackingRepository], config: TrackingConfig, *events: ev.AnyEvent) -> None:
    async with work() as uow:
        await service.apply_events(uow, list(events), config=config)


async def ordered(work: FakeWork[FakeTrackingRepository], config: TrackingConfig, hazard: Hazard) -> None:
    await apply(work, config, *hazard.stream())


async def closed(work: FakeWork[FakeTrackingRepository], config: TrackingConfig, hazard: Hazard) -> None:
    await ordered(work, config, hazard)
    async with work() as uow:
        await service.rectify_hazard(
            uow, hazard.hazard_id, principal=FIRE, note="fixed", photos=[], config=config
        )
    async with work() as uow:
        await service.verify_hazard(
            uow, hazard.hazard_id, principal=GM, passed=True, note="", photos=[], config=config
        )


def counter(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# ---------------------------------------------------------------------------- events from the stream


async def test_an_acknowledged_dispatch_orders_rectification_with_a_timer(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    assert work.types() == ["hazard.rectification_ordered"]
    order = work.published[0]
    assert work.repo.cases[hazard.hazard_id].state == "rectification_ordered"
    assert [t.order_event_id for t in work.repo.open_timers(hazard.hazard_id)] == [order.event_id]
    assert order.event_id in work.repo.applied, "its own event is skipped when it comes back"
    assert [e.event.TYPE for e in work.repo.entries[hazard.hazard_id]][-1] == "hazard.rectification_ordered"


async def test_a_tracking_event_that_does_not_fit_the_case_is_refused_not_applied(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await apply(work, config, hazard.reported())
    stray = ev.HazardRectified(
        event_id=uuid.uuid4(),
        occurred_at=T0 + timedelta(minutes=5),
        hazard_id=hazard.hazard_id,
        producer="test",
        payload=ev.HazardRectifiedPayload(
            department_id="fire", rectified_by="x", note="n", photos=(), round=1
        ),
    )
    await apply(work, config, stray)
    assert [(e.event_id, bool(reason)) for e, reason in work.rejected] == [(stray.event_id, True)]
    assert stray.event_id not in work.repo.event_ids


async def test_delivery_records_are_kept_beside_the_timeline_and_merged_by_time(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    told = ev.HazardNotified(
        event_id=uuid.uuid4(),
        occurred_at=T0 + timedelta(minutes=2),
        hazard_id=hazard.hazard_id,
        producer="notifications",
        payload=_notified_payload(),
    )
    await apply(work, config, told)
    await apply(work, config, told)  # the same record twice is kept once
    async with work() as uow:
        case = await service.view_case(uow, hazard.hazard_id, principal=OPERATOR)
    types = [entry.event_type for entry in case.timeline]
    assert types.count("hazard.notified") == 1
    assert types.index("hazard.notified") == types.index("hazard.dispatched") + 1
    assert case.state == "rectification_ordered"


def _notified_payload() -> Any:
    return sample_payloads(uuid.uuid4(), uuid.uuid4())["hazard.notified"]


# ---------------------------------------------------------------------------- commands


async def test_the_holding_department_rectifies_and_the_timer_is_cancelled(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    before = counter("hazard_tracking_rectified_total")
    async with work() as uow:
        case = await service.rectify_hazard(
            uow, hazard.hazard_id, principal=FIRE, note="padlock removed", photos=[], config=config
        )
        assert counter("hazard_tracking_rectified_total") == before, "counted after commit only"
    assert isinstance(case, CaseView)
    assert case.state == "rectified"
    assert case.timeline[-1].event_type == "hazard.rectified"
    assert work.types()[-1] == "hazard.rectified"
    assert work.repo.open_timers(hazard.hazard_id) == []
    assert counter("hazard_tracking_rectified_total") == before + 1


async def test_a_refused_command_publishes_and_counts_nothing(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await apply(work, config, hazard.reported(), hazard.dispatched())  # not acknowledged yet
    published = list(work.published)
    with pytest.raises(service.InvalidStateError) as refused:
        async with work() as uow:
            await service.rectify_hazard(
                uow, hazard.hazard_id, principal=FIRE, note="n", photos=[], config=config
            )
    assert (status_of(refused.value), refused.value.code, refused.value.details) == (
        409,
        "invalid_state",
        [{"action": "rectification"}],
    )
    assert work.published == published
    assert work.rollbacks == 1


async def test_a_case_the_caller_may_not_see_is_not_found_as_an_unknown_one(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    unknown = uuid.uuid4()
    for hazard_id, principal in ((hazard.hazard_id, POLICE), (unknown, FIRE)):
        with pytest.raises(service.CaseNotFound) as missing:
            async with work() as uow:
                await service.rectify_hazard(
                    uow, hazard_id, principal=principal, note="n", photos=[], config=config
                )
        assert (status_of(missing.value), missing.value.code, missing.value.message) == (
            404,
            "not_found",
            f"No hazard {hazard_id} that you may see.",
        )
    with pytest.raises(service.CaseNotFound):
        async with work() as uow:
            await service.view_case(uow, hazard.hazard_id, principal=OTHER_GM)


async def test_a_department_that_held_the_case_may_see_but_not_rectify_it(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    returned = hazard._event(
        ev.HazardReturned,
        ev.HazardReturnedPayload(
            dispatch_id=hazard.dispatch_id, department_id="police", reason="not ours", returned_by="p"
        ),
        minutes=5,
    )
    police = hazard.dispatched("police")
    hazard.dispatch_id = uuid.uuid4()
    fire = hazard._event(
        ev.HazardDispatched,
        ev.HazardDispatchedPayload(
            dispatch_id=hazard.dispatch_id,
            department_id="fire",
            rule_id="r1",
            receipt_deadline=hazard.at + timedelta(hours=3),
            deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
        ),
        minutes=6,
    )
    await apply(work, config, hazard.reported(), police, returned, fire, hazard.acknowledged())
    async with work() as uow:
        assert (await service.view_case(uow, hazard.hazard_id, principal=POLICE)).department_id == "fire"
    with pytest.raises(service.NotYours) as forbidden:
        async with work() as uow:
            await service.rectify_hazard(
                uow, hazard.hazard_id, principal=POLICE, note="n", photos=[], config=config
            )
    assert (status_of(forbidden.value), forbidden.value.code) == (403, "forbidden")


async def test_a_passed_verification_closes_the_case(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await closed(work, config, hazard)
    assert work.types()[-3:] == ["hazard.rectified", "hazard.verified", "hazard.closed"]
    async with work() as uow:
        case = await service.view_case(uow, hazard.hazard_id, principal=GM)
    assert case.state == "closed"
    assert case.closed is not None
    assert case.closed.department_id == "fire"


async def test_urging_and_notes_answer_the_event_they_record(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    async with work() as uow:
        urged = await service.urge_hazard(
            uow, hazard.hazard_id, principal=OPERATOR, note="hurry", config=config
        )
    async with work() as uow:
        noted = await service.note_progress(
            uow, hazard.hazard_id, principal=FIRE, note="ordered a locksmith", photos=[], config=config
        )
    assert (urged.TYPE, urged.payload.stage, urged.payload.department_id) == (
        "hazard.urged",
        "rectification",
        "fire",
    )
    assert (noted.TYPE, noted.payload.noted_by) == ("hazard.progress_noted", "officer-fire")
    assert work.types()[-2:] == ["hazard.urged", "hazard.progress_noted"]
    async with work() as uow:
        case = await service.view_case(uow, hazard.hazard_id, principal=FIRE)
    assert (case.urgings, case.progress_notes) == (1, 1)


async def test_an_extension_too_far_is_refused_on_its_deadline_field(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    deadline = work.repo.cases[hazard.hazard_id].rectification_deadline
    assert deadline is not None
    with pytest.raises(service.InvalidDeadlineError) as refused:
        async with work() as uow:
            await service.request_extension(
                uow,
                hazard.hazard_id,
                principal=FIRE,
                deadline=deadline + config.extension_limit + timedelta(days=1),
                reason="parts on order",
                config=config,
            )
    error = refused.value
    assert (status_of(error), error.code) == (422, "invalid_deadline")
    assert error.details == [{"field": "deadline", "problem": error.message}]


async def test_an_approved_extension_moves_the_timer(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    hazard = Hazard()
    await ordered(work, config, hazard)
    deadline = work.repo.cases[hazard.hazard_id].rectification_deadline
    assert deadline is not None
    later = deadline + timedelta(days=3)
    async with work() as uow:
        asked = await service.request_extension(
            uow, hazard.hazard_id, principal=FIRE, deadline=later, reason="parts on order", config=config
        )
    assert asked.extension_requests.rectification is not None
    assert asked.extension_requests.rectification.status == "awaiting_approval"
    async with work() as uow:
        listed = await service.list_cases(
            uow,
            principal=OPERATOR,
            states=(),
            open_only=True,
            mine=False,
            extension_awaiting=True,
            limit=10,
            offset=0,
        )
    assert [item.hazard_id for item in listed.items] == [str(hazard.hazard_id)]
    async with work() as uow:
        decided = await service.decide_extension(
            uow, hazard.hazard_id, principal=OPERATOR, approved=True, note="ok", config=config
        )
    assert decided.deadlines.rectification == later.isoformat()
    assert [t.due_at for t in work.repo.open_timers(hazard.hazard_id)] == [later]


# ---------------------------------------------------------------------------- timers and the gauge


async def test_a_due_timer_fires_once_and_a_rectified_case_has_none(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    late, done = Hazard(), Hazard(building_id="B-13")
    await ordered(work, config, late)
    await ordered(work, config, done)
    async with work() as uow:
        await service.rectify_hazard(
            uow, done.hazard_id, principal=FIRE, note="done", photos=[], config=config
        )
    deadline = work.repo.cases[late.hazard_id].rectification_deadline
    assert deadline is not None
    assert await timers.sweep_due_timers(work, batch_size=10, config=config) == 0, "nothing due yet"
    work.advance(deadline - work.now + timedelta(minutes=1))
    before = counter("hazard_tracking_rectification_overdue_total")
    assert await timers.sweep_due_timers(work, batch_size=1, config=config) == 1
    assert await timers.sweep_due_timers(work, batch_size=10, config=config) == 0
    overdue = [e for e in work.published if e.TYPE == "hazard.rectification_overdue"]
    assert [e.hazard_id for e in overdue] == [late.hazard_id]
    assert work.repo.cases[late.hazard_id].rectification_overdue is True
    assert counter("hazard_tracking_rectification_overdue_total") == before + 1


async def test_the_gauge_names_every_state(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    await ordered(work, config, Hazard())
    await timers.refresh_case_gauge(work)
    assert counter("hazard_tracking_cases", state="rectification_ordered") == 1
    assert counter("hazard_tracking_cases", state="closed") == 0


# ---------------------------------------------------------------------------- relapse and hotspots


async def test_a_new_report_at_a_closed_case_place_is_its_relapse_and_twice_a_hotspot(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    first = Hazard()
    await closed(work, config, first)
    work.advance(timedelta(days=3))
    again = Hazard(at=work.now)
    await apply(work, config, again.reported())
    relapses = [e for e in work.published if isinstance(e, ev.HazardRelapsed)]
    assert [(e.hazard_id, e.payload.original_hazard_id) for e in relapses] == [
        (again.hazard_id, first.hazard_id)
    ]
    async with work() as uow:
        original = await service.view_case(uow, first.hazard_id, principal=OPERATOR)
    assert original.relapsed_as == [str(again.hazard_id)]
    assert config.reference.hotspot_min_relapses == 2
    async with work() as uow:
        assert (await service.list_hotspots(uow, config=config)).hotspots == []
    third = Hazard(at=work.now + timedelta(minutes=5))
    await apply(work, config, third.reported())
    async with work() as uow:
        spots = await service.list_hotspots(uow, config=config)
    assert [(h.relapses, h.last_hazard_id) for h in spots.hotspots] == [(2, str(third.hazard_id))]
    row = await work.repo.get_case_row(third.hazard_id)
    assert row is not None
    assert row.hotspot is True


async def test_a_report_past_the_relapse_window_is_no_relapse(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    first = Hazard()
    await closed(work, config, first)
    window = config.reference.category("locked_rooftop_door").relapse_window_days
    work.advance(timedelta(days=window + 1))
    await apply(work, config, Hazard(at=work.now).reported())
    assert not any(isinstance(e, ev.HazardRelapsed) for e in work.published)


def imported_closed(
    *, closed_at: datetime | None, building_id: str | None = "B-12", lat: float = 22.62200
) -> ev.HazardImported:
    """A past record of the history import at Liuyue Rd 12 (closed unless ``closed_at`` is None)."""
    observed = (closed_at or T0) - timedelta(days=5)
    return ev.HazardImported(
        event_id=uuid.uuid4(),
        occurred_at=T0,
        hazard_id=uuid.uuid4(),
        producer="intake",
        payload=ev.HazardImportedPayload(
            record_id="R-1",
            import_id=uuid.uuid4(),
            category="locked_rooftop_door",
            location=ev.Location(lat=lat, lon=114.16813, address="Liuyue Rd 12", building_id=building_id),
            grid_id="liuyue-01",
            community_id="liuyue",
            street_id="henggang",
            observed_at=observed,
            department_id="fire",
            rectified_at=closed_at,
            closed_at=closed_at,
        ),
    )


async def test_a_new_report_at_an_imported_closed_hazard_is_its_relapse(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    past = imported_closed(closed_at=T0 - timedelta(days=20))
    report = Hazard(building_id=None)  # found by distance alone
    await apply(work, config, past)
    await apply(work, config, report.reported())
    [relapse] = [e for e in work.published if isinstance(e, ev.HazardRelapsed)]
    assert (relapse.hazard_id, relapse.payload.original_hazard_id) == (report.hazard_id, past.hazard_id)
    assert relapse.payload.original_department_id == "fire"
    assert relapse.payload.original_closed_at == past.payload.closed_at
    assert past.hazard_id not in work.repo.cases, "a historical hazard is no case"
    assert work.repo.timers == {}


async def test_an_import_and_a_report_in_one_batch_relapse_and_open_or_old_imports_do_not(
    work: FakeWork[FakeTrackingRepository], config: TrackingConfig
) -> None:
    window = config.reference.category("locked_rooftop_door").relapse_window_days
    recent = imported_closed(closed_at=T0 - timedelta(days=2))
    await apply(work, config, Hazard().reported(), recent)
    assert [e.payload.original_hazard_id for e in work.published if isinstance(e, ev.HazardRelapsed)] == [
        recent.hazard_id
    ]
    work.published.clear()
    for past in (imported_closed(closed_at=None), imported_closed(closed_at=T0 - timedelta(days=window + 1))):
        fresh = FakeWork(FakeTrackingRepository(), now=T0 + timedelta(hours=1))
        await apply(fresh, config, past, Hazard().reported())
        assert not any(isinstance(e, ev.HazardRelapsed) for e in fresh.published)
