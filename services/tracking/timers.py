"""Background loops of the tracking service: overdue rectification timers and the cases-by-state gauge."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.tracking import domain, metrics, repository, service
from shared.db import database_now
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
    ) -> None:
        self.sessions = sessions
        self.work = work
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s

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
        """Sweep forever, pausing between sweeps."""
        await repeat_every(self.poll_interval_s, self._sweep_and_log, what="rectification timer sweep")

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
