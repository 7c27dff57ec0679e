"""The timer loops: due receipt deadlines and escalation steps fire through the outbox, once each.

A dispatch is its own timer (#20): its row carries its frozen steps and the due time of the next
unfired one (``next_due_at``), written with it; no timer row is written until a step fires. Each
pass is one unit of work running the :func:`~services.dispatch.service.fire_due_timers` use case:
it claims the dispatches with a step due (``FOR UPDATE SKIP LOCKED``), so several replicas never
fire the same step, fires their due steps and moves each to its next step in the same
transaction. An acknowledgement in progress (which holds its dispatch row) is never raced:
either it commits first (clearing the next due step) and the pass no longer finds the dispatch,
or the pass commits first and the acknowledgement finds it overdue and records itself as late. A deadline
that fell due while the service was down is simply due on the next pass. "Now" is the
database's clock, read at the start of each pass: a replica whose host clock is off neither
fires early nor late.

The timer passes are declared with ``runtime.until_due`` and the gauge with ``runtime.every``
(:func:`declare_loops`); tests call :func:`fire_due`
and :func:`sweep` on a unit-of-work factory of their own.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from services.dispatch import service
from services.dispatch.repository import TIMERS_WAKE
from services.dispatch.service import WorkFactory
from services.dispatch.settings import DispatchSettings
from shared.service import ServiceRuntime


async def fire_due(work: WorkFactory, *, batch_size: int) -> int:
    """One pass: claim up to ``batch_size`` dispatches with a step due and fire them in one transaction;
    how many dispatches it claimed."""
    async with work() as uow:
        return await service.fire_due_timers(uow, limit=batch_size)


async def sweep(work: WorkFactory, *, batch_size: int) -> int:
    """Pass after pass until one claims less than a full batch (a backlog drains without pauses)."""
    total = 0
    while True:
        claimed = await fire_due(work, batch_size=batch_size)
        total += claimed
        if claimed < batch_size:
            return total


async def seconds_to_next(work: WorkFactory) -> float | None:
    """Seconds until the earliest unfired step of any dispatch falls due, on the database's clock (None: none)."""
    async with work() as uow:
        return await uow.repo.seconds_to_next_timer(now=uow.now)


@dataclass
class Gauges:
    """Keeps the pending, overdue and operator-queue gauges current (departments emptied drop to zero)."""

    work: WorkFactory
    seen: set[str] = field(default_factory=set)

    async def refresh(self) -> None:
        """Read the counts once and set the gauges."""
        async with self.work() as uow:
            self.seen = await service.refresh_gauges(uow, seen=self.seen)


def declare_loops(runtime: ServiceRuntime[DispatchSettings]) -> None:
    """Declare the timer sweeps (``concurrency`` of them) and the gauge refresh, when timers are enabled.

    Several sweeps in one process are safe (claims skip what another pass holds): while one waits on
    the database another builds events.
    """
    settings = runtime.settings.timers
    if not settings.enabled:
        return
    # Idle, one pass sleeps until the next step falls due (at most idle_poll_max_s); this process's
    # new or moved steps (a new dispatch, an approved extension) wake the passes at once (#20). A full batch wakes every pass (a backlog).
    runtime.until_due(
        functools.partial(fire_due, runtime.work, batch_size=settings.batch_size),
        functools.partial(seconds_to_next, runtime.work),
        wake_key=TIMERS_WAKE,
        busy_s=settings.poll_interval_s,
        idle_max_s=settings.idle_poll_max_s,
        full_batch=settings.batch_size,
        passes=settings.concurrency,
        what="dispatch timers",
    )
    runtime.every(settings.gauge_interval_s, Gauges(runtime.work).refresh, what="dispatch gauges")
