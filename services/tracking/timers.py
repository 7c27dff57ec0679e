"""Background loops of the tracking service: overdue rectification timers and the cases-by-state gauge."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracking import domain, metrics, repository, service
from shared.db import database_now
from shared.idle import Wakeup, until_due_s
from shared.service import repeat_every

log = logging.getLogger(__name__)


class TimerLoop:
    """Fires due rectification timers through the outbox; safe with several replicas (SKIP LOCKED).

    "Now" is the database's clock, read at the start of each batch: a replica whose host clock is
    off neither fires early nor late.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        work: service.Casework,
        batch_size: int,
        poll_interval_s: float,
        idle_poll_max_s: float | None = None,
    ) -> None:
        self.sessions = sessions
        self.work = work
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        # Idle, the sweep sleeps until the next timer is due, at most this long (#20).
        self.idle_poll_max_s = max(poll_interval_s, idle_poll_max_s or poll_interval_s)

    async def sweep(self) -> int:
        """Fire every timer due now, a batch per transaction; returns how many fired."""
        total = 0
        while True:
            async with self.sessions() as session, session.begin():
                claimed, fired = await service.fire_due_timers(
                    session, now=await database_now(session), work=self.work, limit=self.batch_size
                )
            total += fired
            # A short batch means nothing more is due (or another replica holds the rest).
            if claimed < self.batch_size:
                return total

    async def run(self) -> None:
        """Sweep forever; between sweeps, sleep until the next timer is due, within the bounds.

        New or moved timers of this process wake it; the sweep follows ``poll_interval_s`` later.
        """
        if self.idle_poll_max_s <= self.poll_interval_s:
            await repeat_every(self.poll_interval_s, self._sweep_and_log, what="rectification timer sweep")
            return
        with Wakeup(repository.TIMERS_WAKE) as wakeup:
            while True:
                wakeup.clear()
                due_in: float | None = 0.0
                try:
                    await self._sweep_and_log()
                    async with self.sessions() as session:
                        due_in = await repository.seconds_to_next_timer(
                            session, now=await database_now(session)
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("rectification timer sweep failed, the next round retries: %s", exc)
                wait = until_due_s(due_in, busy_s=self.poll_interval_s, idle_max_s=self.idle_poll_max_s)
                if await wakeup.wait(wait):
                    await asyncio.sleep(self.poll_interval_s)

    async def _sweep_and_log(self) -> None:
        fired = await self.sweep()
        if fired:
            log.info("fired %d overdue rectification timers", fired)


class CaseGauge:
    """Refreshes the cases-by-state gauge from the database (right with any number of replicas)."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], interval_s: float) -> None:
        self.sessions = sessions
        self.interval_s = interval_s

    async def refresh(self) -> None:
        """Count cases by state once."""
        async with self.sessions() as session:
            counts = await repository.count_by_state(session)
        for state in domain.STATES:
            metrics.CASES.labels(state).set(counts.get(state, 0))

    async def run(self) -> None:
        """Refresh forever."""
        await repeat_every(self.interval_s, self.refresh, what="case gauge refresh")
