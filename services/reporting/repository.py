"""Reporting's repository: the store's functions, and the repository a unit of work carries.

The statements live in :mod:`services.reporting.store`, split by what they do:

* :mod:`~services.reporting.store.facts`: fact rows merged from events, days marked dirty;
* :mod:`~services.reporting.store.changes`: what a batch changes in the rollup, recorded with its facts;
* :mod:`~services.reporting.store.rollups`: the rollup refreshed (changes folded, dirty days recomputed), or rebuilt whole;
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

from sqlalchemy.ext.asyncio import AsyncSession

from services.reporting.domain import FactBatch
from services.reporting.store.changes import merge_counted
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
    fold_changes,
    rebuild_rollup,
    recompute_dirty_days,
    refresh_rollup,
    unrefreshed_for_s,
)
from shared.idle import wake_on_commit

ROLLUP_WAKE = "reporting.rollup"
"""The wake-up key of the rollup refresher: a commit that recorded changes wakes it."""

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
    "ROLLUP_WAKE",
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
    "fold_changes",
    "groupings_counts",
    "list_open_overdue",
    "list_relapse_hotspots",
    "mapped_key",
    "mark_dirty",
    "measure_medians",
    "medians",
    "merge_counted",
    "period_counts",
    "rebuild_rollup",
    "recompute_dirty_days",
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
        """Merge a batch's fact rows into the stored ones (idempotent, order-independent) and record
        what they change in the rollup; the commit wakes this process's rollup refresher."""
        await merge_counted(self.db, batch)
        if isinstance(self.db, AsyncSession):
            wake_on_commit(self.db, ROLLUP_WAKE)

    async def mark_dirty(self, hazard_ids: Iterable[uuid.UUID]) -> None:
        """Mark the days these hazards feed as needing a rollup recompute."""
        await mark_dirty(self.db, hazard_ids)

    async def unrefreshed_for_s(self) -> float | None:
        """Seconds since the oldest change not yet in the rollup was marked; None when all are in."""
        return await unrefreshed_for_s(self.db)

    async def refresh_rollup(self) -> int:
        """Fold the recorded changes into the rollup, recompute dirty days; returns how many of both.

        Its commit does not wait for the WAL flush (``durable=False``: a refresh lost in a crash is
        lost whole, its changes stay recorded)."""
        return await refresh_rollup(self.db, durable=False)
