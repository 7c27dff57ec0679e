"""Intake's use cases (services/intake/service.py) without a database: milliseconds each.

The lifecycle use case runs on a fake unit of work (tests/support/fake_uow.py) with an in-memory
repository; the report use cases on a fake write engine (what ``Intake.submit`` answers).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from services.intake import metrics, service
from services.intake.domain import Rejection, ReportIn, StatusChange, Unlinked
from services.intake.service import ItemResult
from shared.auth import Principal
from shared.domain_errors import ConflictError, ForbiddenError, InvalidError
from shared.errors import status_of
from shared.events import LifecycleEvent
from shared.reference import load_reference_data
from tests.support.factories import T0, make_event
from tests.support.fake_uow import FakeWork
from tests.unit.intake.test_intake_domain import make

REFERENCE = load_reference_data()
REPORTER = Principal("gm-liuyue-01", "reporter", grid_id="liuyue-01")


class FakeRepository:
    """The repository's ``apply_status_changes``: records the changes, answers the planned unlinks."""

    def __init__(self, unlink: Sequence[Unlinked] = ()) -> None:
        self.applied: list[Any] = []
        self.unlink = list(unlink)

    async def apply_status_changes(self, changes: Sequence[Any]) -> list[Unlinked]:
        self.applied.extend(changes)
        return self.unlink


def _unlinked(category: str = "locked_rooftop_door") -> Unlinked:
    return Unlinked(
        hazard_id=uuid.uuid4(),
        report_id=uuid.uuid4(),
        original_hazard_id=uuid.uuid4(),
        original_closed_at=T0,
        observed_at=T0 + timedelta(minutes=5),
        category=category,
        community_id="liuyue",
        grid_id="liuyue-01",
        urgency=None,
    )


def _lifecycle(event_type: str, **overrides: Any) -> LifecycleEvent:
    event: Any = make_event(event_type, **overrides)
    return event  # type: ignore[no-any-return]


async def test_lifecycle_events_change_the_open311_view_and_nothing_is_published() -> None:
    repo = FakeRepository()
    work = FakeWork(repo, now=T0)
    events = [_lifecycle("hazard.dispatched"), _lifecycle("hazard.closed")]
    async with work() as uow:
        unlinked = await service.apply_lifecycle_events(uow, events, reference=REFERENCE)
    assert unlinked == []
    assert [hazard for hazard, _change, _at in repo.applied] == [e.hazard_id for e in events]
    assert all(isinstance(change, StatusChange) for _h, change, _at in repo.applied)
    assert repo.applied[0][1].agency is not None  # the department's name
    assert work.published == []


async def test_a_closure_that_unlinks_publishes_duplicate_unlinked_and_counts_after_commit() -> None:
    late = _unlinked("gas_leak")
    work = FakeWork(FakeRepository([late]), now=T0 + timedelta(hours=1))
    counted = metrics.DUPLICATES_UNLINKED.labels("gas_leak")
    before = counted._value.get()
    async with work() as uow:
        await service.apply_lifecycle_events(uow, [_lifecycle("hazard.closed")], reference=REFERENCE)
        assert counted._value.get() == before  # not before the commit
    [published] = work.published
    assert published.TYPE == "hazard.duplicate_unlinked"
    assert published.hazard_id == late.hazard_id
    assert published.occurred_at == T0 + timedelta(hours=1)  # the unit of work's now
    assert published.payload.original_hazard_id == late.original_hazard_id
    assert counted._value.get() == before + 1


async def test_a_rolled_back_batch_publishes_and_counts_nothing() -> None:
    work = FakeWork(FakeRepository([_unlinked("ebike_indoor_charging")]), now=T0)
    counted = metrics.DUPLICATES_UNLINKED.labels("ebike_indoor_charging")
    before = counted._value.get()

    async def failing_batch() -> None:
        async with work() as uow:
            await service.apply_lifecycle_events(uow, [_lifecycle("hazard.closed")], reference=REFERENCE)
            raise RuntimeError("the batch failed after the use case")

    with pytest.raises(RuntimeError):
        await failing_batch()
    assert work.published == []
    assert counted._value.get() == before


class FakeIntake:
    """The write engine's ``submit``: answers planned results, records what it was given."""

    def __init__(self, answer: Any = None) -> None:
        self.answer = answer
        self.calls: list[tuple[list[Any], str]] = []

    async def submit(
        self, *, principal: Principal, items: Sequence[ReportIn | Rejection], source: str
    ) -> list[ItemResult]:
        self.calls.append((list(items), source))
        if self.answer is not None:
            return [self.answer(i, item) for i, item in enumerate(items)]
        return [
            ItemResult(i, None, "rejected", error=item)
            if isinstance(item, Rejection)
            else ItemResult(i, item.report_id, "created", hazard_id=uuid.uuid4(), status="open")
            for i, item in enumerate(items)
        ]


def valid_report() -> dict[str, Any]:
    return make().model_dump(mode="json")


def _report() -> ReportIn:
    return make()


async def test_one_report_accepted_is_its_result() -> None:
    intake = FakeIntake()
    report = _report()
    result = await service.report_hazard(intake, REPORTER, report)  # type: ignore[arg-type]
    assert (result.outcome, result.http_status, result.report_id) == ("created", 201, report.report_id)
    assert intake.calls == [([report], "app")]


@pytest.mark.parametrize(
    ("status", "code", "kind"),
    [
        (403, "grid_not_yours", ForbiddenError),
        (409, "report_id_conflict", ConflictError),
        (422, "outside", InvalidError),
    ],
)
async def test_a_refused_report_raises_the_domain_error_of_its_status(
    status: int, code: str, kind: type[Exception]
) -> None:
    details = ({"field": "grid_id", "problem": "not yours"},)
    refusal = Rejection(status, code, f"refused: {code}", details)
    intake = FakeIntake(lambda i, item: ItemResult(i, item.report_id, "rejected", error=refusal))
    with pytest.raises(kind) as raised:
        await service.report_hazard(intake, REPORTER, _report())  # type: ignore[arg-type]
    error: Any = raised.value
    assert (status_of(error), error.code, error.message, error.details) == (
        status,
        code,
        f"refused: {code}",
        list(details),
    )


async def test_a_batch_over_the_limit_is_refused_before_anything_is_submitted() -> None:
    intake = FakeIntake()
    with pytest.raises(service.BatchTooLargeError) as raised:
        await service.report_batch(intake, REPORTER, [valid_report()] * 4, max_items=3)  # type: ignore[arg-type]
    assert (status_of(raised.value), raised.value.code) == (422, "batch_too_large")
    assert raised.value.message == "A batch holds at most 3 reports; this one has 4. Split it."
    assert raised.value.details == [{"field": "reports", "problem": "at most 3 items", "type": "too_long"}]
    assert intake.calls == []


async def test_a_batch_checks_each_item_and_counts_the_outcomes() -> None:
    intake = FakeIntake()
    good = valid_report()
    outcome = await service.report_batch(
        intake,  # type: ignore[arg-type]
        REPORTER,
        [good, {**valid_report(), "colour": "red"}, "not an object"],
        max_items=500,
    )
    [(items, source)] = intake.calls
    assert source == "batch"
    assert isinstance(items[0], ReportIn)
    assert [type(i) for i in items[1:]] == [Rejection, Rejection]
    assert items[1].status == 422
    assert items[1].code == "invalid"
    assert any(d["field"] == "colour" for d in items[1].details)
    assert [r.outcome for r in outcome.results] == ["created", "rejected", "rejected"]
    assert (outcome.count("created"), outcome.count("replayed"), outcome.count("rejected")) == (1, 0, 2)
