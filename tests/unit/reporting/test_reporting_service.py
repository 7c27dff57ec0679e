"""Reporting's use cases (services/reporting/service.py) on a fake unit of work: no database, milliseconds."""

from __future__ import annotations

import uuid
from typing import Any, cast
from zoneinfo import ZoneInfo

from services.reporting import domain, service
from services.reporting.domain import FactBatch
from services.reporting.repository import ReportingRepository
from tests.support.factories import T0, make_event
from tests.support.fake_uow import FakeWork

TZ = ZoneInfo("Asia/Shanghai")


class FakeReportingRepository:
    """ReportingRepository's methods, in memory: merged batches (each records its rollup changes), the rollup's lag."""

    def __init__(self, *, unrefreshed_for_s: float | None = None) -> None:
        self.merged: list[FactBatch] = []
        self.lag = unrefreshed_for_s
        self.refreshes = 0

    async def merge_facts(self, batch: FactBatch) -> None:
        self.merged.append(batch)

    async def unrefreshed_for_s(self) -> float | None:
        return self.lag

    async def refresh_rollup(self) -> int:
        self.refreshes += 1
        self.lag = None
        return 1


def _work(repo: FakeReportingRepository) -> FakeWork[Any]:
    return FakeWork(cast(ReportingRepository, repo), now=T0)


async def test_applying_events_merges_their_fact_rows_once() -> None:
    hazard = uuid.uuid4()
    events: list[Any] = [
        make_event("hazard.reported", hazard_id=hazard),
        make_event("hazard.dispatched", hazard_id=hazard),
    ]
    repo = FakeReportingRepository()
    work = _work(repo)
    async with work() as uow:
        await service.apply_events(uow, events, tz=TZ)
    want = domain.project_events(events, tz=TZ)
    assert [(b.hazards, b.dispatches, b.relapses, b.actions) for b in repo.merged] == [
        (want.hazards, want.dispatches, want.relapses, want.actions)
    ]
    assert hazard in repo.merged[0].hazards
    # Reporting publishes and refuses nothing.
    assert work.published == []
    assert work.rejected == []


async def test_a_refresh_before_an_answer_happens_only_when_the_rollup_lags_more_than_allowed() -> None:
    for lag, bound, refreshed in (
        (None, 10.0, 0),  # nothing unrefreshed
        (4.0, 10.0, 0),  # within the bound
        (12.0, 10.0, 1),  # older than allowed
        (None, 0.0, 1),  # bound 0: before every answer
    ):
        repo = FakeReportingRepository(unrefreshed_for_s=lag)
        async with _work(repo)() as uow:
            await service.refresh_if_stale(uow, max_staleness_s=bound)
        assert repo.refreshes == refreshed, (lag, bound)


async def test_the_periodic_refresh_recomputes_the_dirty_days() -> None:
    repo = FakeReportingRepository(unrefreshed_for_s=3.0)
    async with _work(repo)() as uow:
        assert await service.refresh_rollup(uow) == 1
    assert repo.refreshes == 1
    assert repo.lag is None
