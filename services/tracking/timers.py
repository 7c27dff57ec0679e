"""Periodic steps of the tracking service: overdue rectification timers and the cases-by-state gauge.

The timer loop is declared in ``app.py`` with ``runtime.until_due(...)`` (idle, it sleeps until the
next timer falls due; this process's new or moved timers wake it), the gauge with
``runtime.every(...)``; each step opens its own units of work.
"Now" is the database's clock, read at the start of each unit of work: a replica whose host
clock is off neither fires early nor late.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

from services.tracking import metrics, service
from services.tracking.repository import TrackingRepository
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

Work = Callable[[], contextlib.AbstractAsyncContextManager[UnitOfWork[TrackingRepository]]]


async def sweep_due_timers(work: Work, *, batch_size: int, config: service.TrackingConfig) -> int:
    """Fire every timer due now, a batch per transaction; returns how many fired.

    Safe with several replicas (SKIP LOCKED): each timer fires once, whichever sweep claims it.
    """
    total = 0
    while True:
        async with work() as uow:
            claimed, fired = await service.fire_due_timers(uow, limit=batch_size, config=config)
        total += fired
        # A short batch means nothing more is due (or another replica holds the rest).
        if claimed < batch_size:
            if total:
                log.info("fired %d overdue rectification timers", total)
            return total


async def seconds_to_next(work: Work) -> float | None:
    """Seconds until the earliest open timer falls due, on the database's clock (None: none)."""
    async with work() as uow:
        return await uow.repo.seconds_to_next_timer(now=uow.now)


async def refresh_case_gauge(work: Work) -> None:
    """Count cases by state once (right with any number of replicas)."""
    async with work() as uow:
        counts = await service.count_cases_by_state(uow)
    for state, count in counts.items():
        metrics.CASES.labels(state).set(count)
