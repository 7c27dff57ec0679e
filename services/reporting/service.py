"""Reporting's use cases: plain functions on a unit of work (``uow.repo`` is a ReportingRepository).

Reporting publishes nothing and refuses nothing: an event becomes fact rows merged into the
projection, with what they change in the rollup recorded beside them; the rollup and the gauges are refreshed by loops
declared in ``app.py`` with ``runtime.every``. The figures' reads are in ``reports.py`` and
``period_report.py`` (read-only, on a session of their own).
"""

from __future__ import annotations

from collections.abc import Sequence
from zoneinfo import ZoneInfo

from services.reporting import domain, metrics
from services.reporting.repository import ReportingRepository
from shared.events import LifecycleEvent
from shared.reference import ReferenceData
from shared.uow import UnitOfWork


async def apply_events(
    uow: UnitOfWork[ReportingRepository], events: Sequence[LifecycleEvent], *, tz: ZoneInfo
) -> None:
    """Fold new (never applied) events into fact rows and merge them, recording what they change in the rollup."""
    await uow.repo.merge_facts(domain.project_events(events, tz=tz))


async def refresh_rollup(uow: UnitOfWork[ReportingRepository]) -> int:
    """Fold the changes recorded since the last refresh into the rollup; returns how many (and dirty days)."""
    return await uow.repo.refresh_rollup()


async def refresh_if_stale(uow: UnitOfWork[ReportingRepository], *, max_staleness_s: float) -> None:
    """Bring the rollup up to date when its oldest unrefreshed change is older than allowed.

    The background refresher keeps that age near ``rollup_refresh_s``, so with the default bound a
    summary never waits for a refresh; 0 refreshes before every answer.
    """
    if max_staleness_s > 0:
        age = await uow.repo.unrefreshed_for_s()
        if age is None or age <= max_staleness_s:
            return
    await uow.repo.refresh_rollup()


async def refresh_gauges(
    uow: UnitOfWork[ReportingRepository], *, reference: ReferenceData, window_days: int
) -> None:
    """Set the Prometheus domain gauges from the rollup (brought up to date in an earlier unit of work)."""
    await metrics.refresh_domain_gauges(
        uow.repo.db, reference=reference, now=uow.now, window_days=window_days
    )
