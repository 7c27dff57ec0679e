"""Prometheus gauges of the domain figures, with label sets bounded by the reference data."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from prometheus_client import Gauge

from services.reporting.domain import Counts, rates
from services.reporting.store import queries
from services.reporting.store.common import Executor, Filters, Period
from shared.reference import ReferenceData

OVERDUE_RECEIPT_RATE = Gauge(
    "hazard_report_overdue_receipt_rate",
    "Share of dispatches of the last N days acknowledged late or not at all past the deadline.",
    ["department"],
)
OPEN_OVERDUE = Gauge(
    "hazard_report_open_overdue_dispatches",
    "Dispatches past their receipt deadline, still unacknowledged, now.",
    ["department"],
)
RELAPSE_RATE = Gauge(
    "hazard_report_relapse_rate",
    "Share of closed hazards (reported in the last N days) that relapsed.",
    ["community"],
)


async def refresh_domain_gauges(
    db: Executor, *, reference: ReferenceData, now: datetime, window_days: int
) -> None:
    """Set the gauges from the projection; only ids of the reference data become label values."""
    today = now.astimezone(ZoneInfo(reference.calendar.timezone)).date()
    period = Period(today - timedelta(days=window_days - 1), today)
    by_department = await queries.period_counts(
        db, group_by="department", periods=(period,), filters=Filters(), now=now
    )
    by_community = await queries.period_counts(
        db, group_by="community", periods=(period,), filters=Filters(), now=now
    )
    open_by_department = await queries.count_open_overdue_by_department(db, now=now)
    for department in reference.departments:
        counts = by_department.get((department.id, 0), Counts())
        rate = rates(counts)["overdue_receipt_rate"]
        OVERDUE_RECEIPT_RATE.labels(department.id).set(rate if rate is not None else 0.0)
        OPEN_OVERDUE.labels(department.id).set(open_by_department.get(department.id, 0))
    for community in reference.communities:
        counts = by_community.get((community.id, 0), Counts())
        rate = rates(counts)["relapse_rate"]
        RELAPSE_RATE.labels(community.id).set(rate if rate is not None else 0.0)
