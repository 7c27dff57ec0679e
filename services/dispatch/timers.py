"""The timer loop: fires due receipt deadlines and escalation steps through the outbox, once each.

Timers are rows written with their dispatch. Each pass claims due, unfired timers
together with their dispatch rows (``FOR UPDATE ... SKIP LOCKED``), so several
replicas never fire the same timer, and an acknowledgement in progress (which holds
its dispatch row) is never raced: either it commits first and the timer finds the
dispatch acknowledged, or the timer commits first and the acknowledgement finds
it overdue and records itself as late. A deadline that fell due while the service
was down is simply due on the next pass. "Now" is the database's clock, read at the start of
each pass: a replica whose host clock is off neither fires early nor late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.dispatch import domain, metrics
from services.dispatch import repository as repo
from shared import tracing
from shared.db import database_now
from shared.idle import Wakeup, until_due_s, wake
from shared.outbox import Outbox
from shared.service import repeat_every

log = logging.getLogger(__name__)


@dataclass
class TimerLoop:
    """Claims and fires due timers in batches; safe to run in every replica."""

    sessions: async_sessionmaker[AsyncSession]
    outbox: Outbox
    batch_size: int = 1000
    poll_interval_s: float = 0.2
    # Idle, a pass sleeps until the next timer falls due, at most this long (#20); a commit of this
    # process that adds or moves timers wakes it, so only another process's new timers can wait this.
    idle_poll_max_s: float = 0.2
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    # Whether a pass of this loop is sleeping until the next due timer: one is enough; the others
    # wait to be woken (new timers, or a pass that found a full batch: a backlog to share).
    _watching: bool = False

    async def fire_due(self) -> int:
        """Claim and fire one batch of due timers in one transaction; returns how many were claimed."""
        return (await self._fire_due())[0]

    async def _fire_due(self) -> tuple[int, float | None]:
        """(timers claimed, and when none: seconds until the next falls due, if asked for and any)."""
        async with self.sessions() as session, session.begin():
            now = await database_now(session)
            claimed = await repo.claim_due_timers(session, now=now, limit=self.batch_size)
            if not claimed:
                if self.idle_poll_max_s > self.poll_interval_s:
                    return 0, await repo.seconds_to_next_timer(session, now=now)
                return 0, None
            decisions = [domain.fire(c.timer, now=now) for c in claimed]
            fired = [x.timer_id for x in decisions if x.event is not None]
            cancelled = [x.timer_id for x in decisions if x.event is None]
            overdue = {
                c.timer.dispatch_id for c, x in zip(claimed, decisions, strict=True) if x.marks_overdue
            }
            escalated: dict[uuid.UUID, int] = {}
            for c, x in zip(claimed, decisions, strict=True):
                if x.event is not None and c.timer.kind == "escalation":
                    escalated[c.timer.dispatch_id] = max(escalated.get(c.timer.dispatch_id, 0), c.timer.level)
            events = [x.event for x in decisions if x.event is not None]
            # A span per pass that fired something (tracing on): the events it writes carry it.
            with tracing.current_span(
                "dispatch",
                "deadlines fire",
                attributes={"hazard.timers_fired": len(events), "hazard.timers_claimed": len(claimed)},
            ):
                await self.outbox.add(session, *events)
            await repo.mark_timers(session, fired=fired, cancelled=cancelled, now=now)
            await repo.mark_overdue(session, overdue=overdue, escalated=escalated, now=now)
        for c, x in zip(claimed, decisions, strict=True):
            if x.event is None:
                continue
            metrics.TIMER_LATENESS.observe(max(0.0, (now - c.due_at).total_seconds()))
            if c.timer.kind == "receipt_overdue":
                metrics.RECEIPT_OVERDUE.labels(c.timer.department_id).inc()
            else:
                metrics.ESCALATIONS.labels(str(c.timer.level)).inc()
        return len(claimed), None

    async def run(self) -> None:
        """Fire due timers until stopped; a full batch is followed at once by the next.

        After a pass that found nothing due, it sleeps until the next timer falls due (between
        ``poll_interval_s`` and ``idle_poll_max_s``); new or moved timers of this process wake it,
        and the pass follows ``poll_interval_s`` later (as under load, passes stay that far apart).
        """
        with Wakeup(repo.TIMERS_WAKE) as wakeup:
            while not self._stopping.is_set():
                wakeup.clear()
                try:
                    claimed, due_in_s = await self._fire_due()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("timer pass failed, will retry: %s", exc)
                    await self._sleep(1.0)
                    continue
                if claimed == 0 and self.idle_poll_max_s > self.poll_interval_s:
                    wait = until_due_s(due_in_s, busy_s=self.poll_interval_s, idle_max_s=self.idle_poll_max_s)
                    watching = not self._watching
                    if watching:
                        self._watching = True
                    else:
                        wait = 30 * self.idle_poll_max_s  # another pass watches the clock
                    try:
                        woken = await wakeup.wait(wait)
                    finally:
                        if watching:
                            self._watching = False
                    if woken and not self._stopping.is_set():
                        await self._sleep(self.poll_interval_s)
                elif claimed < self.batch_size:
                    await self._sleep(self.poll_interval_s)
                else:
                    wake(repo.TIMERS_WAKE)  # a backlog: every pass of this process helps

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def stop(self) -> None:
        """Finish after the current pass."""
        self._stopping.set()
        wake(repo.TIMERS_WAKE)


@dataclass
class GaugeRefresher:
    """Keeps the pending, overdue and operator-queue gauges current from the database."""

    sessions: async_sessionmaker[AsyncSession]
    interval_s: float = 5.0
    _seen: set[str] = field(default_factory=set)

    async def refresh(self) -> None:
        """Read the counts once and set the gauges (departments with none drop to zero)."""
        async with self.sessions() as session:
            counts = await repo.pending_and_overdue(session)
            queue = await repo.operator_queue_size(session)
        for department in self._seen - counts.keys():
            metrics.PENDING.labels(department).set(0)
            metrics.OVERDUE.labels(department).set(0)
        for department, (pending, overdue) in counts.items():
            metrics.PENDING.labels(department).set(pending)
            metrics.OVERDUE.labels(department).set(overdue)
        self._seen |= counts.keys()
        metrics.OPERATOR_QUEUE.set(queue)

    async def run(self) -> None:
        """Refresh every `interval_s` until cancelled."""
        await repeat_every(self.interval_s, self.refresh, what="gauge refresh")


def background_loops(
    loop: TimerLoop, gauges: GaugeRefresher, *, concurrency: int = 1
) -> list[Callable[[], Awaitable[None]]]:
    """The coroutine functions the runtime supervises: `concurrency` timer passes and the gauges."""

    async def dispatch_timers() -> None:
        await loop.run()

    async def dispatch_gauges() -> None:
        await gauges.run()

    return [*([dispatch_timers] * concurrency), dispatch_gauges]
