"""Reconciliation: accepted reports that no dispatch decision has reached after a configurable time.

Intake learns dispatch's decision from the lifecycle events it applies (``hazard.dispatched``,
``hazard.referred_to_operators``); a duplicate or a hazard rectified on site is decided at intake.
A report still without any of these ``undecided_after_s`` after it was accepted means an event was
lost or a consumer is stuck: it is counted (``hazard_intake_undecided_reports``, alert
``HazardReportsUndecided``) and listed for the operators at ``GET /api/v1/reconciliation/undecided``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from services.intake import metrics
from services.intake import repository as repo
from services.intake.settings import ReconciliationSettings
from shared.auth import Principal, require
from shared.service import ServiceRuntime

router = APIRouter(prefix="/api/v1/reconciliation", tags=["reconciliation"])


async def _runtime(request: Request) -> ServiceRuntime[Any]:
    runtime: ServiceRuntime[Any] = request.app.state.runtime
    return runtime


async def _settings(request: Request) -> ReconciliationSettings:
    settings: ReconciliationSettings = request.app.state.reconciliation
    return settings


Runtime = Annotated[ServiceRuntime[Any], Depends(_runtime)]
Settings = Annotated[ReconciliationSettings, Depends(_settings)]


class UndecidedReport(BaseModel):
    """One accepted report with no dispatch decision yet."""

    hazard_id: str
    report_id: str
    category: str
    grid_id: str
    community_id: str
    reporter_id: str
    source: str
    accepted_at: datetime
    age_s: float


class UndecidedList(BaseModel):
    """The oldest undecided reports (at most ``limit``) and how many there are in all."""

    undecided_after_s: float
    count: int
    oldest_age_s: float
    items: list[UndecidedReport]


@router.get(
    "/undecided",
    summary="Accepted reports with no dispatch decision after the reconciliation threshold (operators)",
)
async def list_undecided(
    _principal: Annotated[Principal, Depends(require("operator"))],
    runtime: Runtime,
    settings: Settings,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UndecidedList:
    """Oldest first; ``count`` is the total, ``items`` at most ``limit`` of them."""
    async with runtime.sessions() as session:
        count, oldest = await repo.undecided_summary(session, settings.undecided_after_s)
        rows = await repo.undecided_reports(session, settings.undecided_after_s, limit)
    return UndecidedList(
        undecided_after_s=settings.undecided_after_s,
        count=count,
        oldest_age_s=oldest if count else 0.0,
        items=[_item(r) for r in rows],
    )


def _item(row: dict[str, Any]) -> UndecidedReport:
    return UndecidedReport(
        hazard_id=str(row["hazard_id"]),
        report_id=str(row["report_id"]),
        category=row["category"],
        grid_id=row["grid_id"],
        community_id=row["community_id"],
        reporter_id=row["reporter_id"],
        source=row["source"],
        accepted_at=row["requested_datetime"],
        age_s=float(row["age_s"]),
    )


async def refresh_gauges(runtime: ServiceRuntime[Any], settings: ReconciliationSettings) -> int:
    """Count the undecided reports into the gauges; returns the count."""
    async with runtime.sessions() as session:
        count, oldest = await repo.undecided_summary(session, settings.undecided_after_s)
    metrics.UNDECIDED.set(count)
    metrics.UNDECIDED_OLDEST.set(oldest if count else 0.0)
    return count


def install(runtime: ServiceRuntime[Any], settings: ReconciliationSettings) -> None:
    """Keep the gauges current for the life of the process."""
    runtime.every(
        settings.check_interval_s, lambda: refresh_gauges(runtime, settings), what="reconciliation check"
    )
