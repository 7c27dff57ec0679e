"""Reporting's repository: the store's functions, and the repository a unit of work carries.

The statements live in :mod:`services.reporting.store`, split by what they do:

* :mod:`~services.reporting.store.facts`: fact rows merged from events, days marked dirty;
* :mod:`~services.reporting.store.rollups`: the rollup refreshed day by day, or rebuilt whole;
* :mod:`~services.reporting.store.queries`: the figures the API, the dashboard and the period report read;
* :mod:`~services.reporting.store.common`: what they share (schema, periods, filters, the counts' SQL).

Every function takes the executor (a session or a connection) and ``schema``, so the rebuild
fills a fresh copy of the tables (``reporting_rebuild``) with exactly the code the live
projection uses. :class:`ReportingRepository` binds the ones a use case calls to its session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from services.reporting.domain import FactBatch
from services.reporting.store.common import (
    GROUPINGS,
    MEASURES,
    ROLLUP_COUNTS,
    SCHEMA,
    US_PER_UNIT,
    Executor,
    Filters,
    Period,
    split_period,
)
from services.reporting.store.facts import PLACE_COPY, mark_dirty, upsert_facts
from services.reporting.store.queries import (
    ACTION_FIGURES,
    CAMPAIGN_GROUPINGS,
    COARSE_BUCKETS,
    GROUP_KEYS,
    ROLLUP_GROUPS,
    action_figures,
    bucket_start,
    campaign_counts,
    count_open_overdue_by_department,
    daily_series,
    groupings_counts,
    list_open_overdue,
    list_relapse_hotspots,
    mapped_key,
    measure_medians,
    medians,
    period_counts,
    returns_after_receipt,
)
from services.reporting.store.rollups import (
    bucket_sql,
    clear_marks,
    rebuild_rollup,
    refresh_rollup,
    unrefreshed_for_s,
)

__all__ = [
    "ACTION_FIGURES",
    "CAMPAIGN_GROUPINGS",
    "COARSE_BUCKETS",
    "GROUPINGS",
    "GROUP_KEYS",
    "MEASURES",
    "PLACE_COPY",
    "ROLLUP_COUNTS",
    "ROLLUP_GROUPS",
    "SCHEMA",
    "US_PER_UNIT",
    "Executor",
    "Filters",
    "Period",
    "ReportingRepository",
    "action_figures",
    "bucket_sql",
    "bucket_start",
    "campaign_counts",
    "clear_marks",
    "count_open_overdue_by_department",
    "daily_series",
    "groupings_counts",
    "list_open_overdue",
    "list_relapse_hotspots",
    "mapped_key",
    "mark_dirty",
    "measure_medians",
    "medians",
    "period_counts",
    "rebuild_rollup",
    "refresh_rollup",
    "returns_after_receipt",
    "split_period",
    "unrefreshed_for_s",
    "upsert_facts",
]


@dataclass(frozen=True, slots=True)
class ReportingRepository:
    """The store's writes a use case makes, bound to its transaction (``uow.repo``)."""

    db: Executor

    async def merge_facts(self, batch: FactBatch) -> None:
        """Merge a batch's fact rows into the stored ones (idempotent, order-independent)."""
        await upsert_facts(self.db, batch)

    async def mark_dirty(self, hazard_ids: Iterable[uuid.UUID]) -> None:
        """Mark the days these hazards feed as needing a rollup recompute."""
        await mark_dirty(self.db, hazard_ids)

    async def unrefreshed_for_s(self) -> float | None:
        """Seconds since the oldest change not yet in the rollup was marked; None when all are in."""
        return await unrefreshed_for_s(self.db)

    async def refresh_rollup(self) -> int:
        """Recompute the rollup of every dirty day; returns how many days were recomputed."""
        return await refresh_rollup(self.db)
