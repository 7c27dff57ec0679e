"""Background loops of the notifications service: due reminders (催办) and the deliveries gauge."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import metrics, repository, service
from shared.db import database_now
from shared.idle import Wakeup, until_due_s
from shared.service import repeat_every

log = logging.getLogger(__name__)

STATUSES = ("pending", "retrying", "sent", "failed", "cancelled")


class ReminderLoop:
    """Fires due reminders into deliveries, a batch per transaction; safe with several replicas.

    Whether a reminder is due is decided on the database's clock (``shared.db.database_now``),
    read in the transaction that claims it: replicas whose hosts disagree on the time agree.
    """

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        batch_size: int,
        poll_interval_s: float,
        idle_poll_max_s: float | None = None,
    ) -> None:
        self.sessions = sessions
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        # Idle, the sweep sleeps until the next reminder is due, at most this long (#20).
        self.idle_poll_max_s = max(poll_interval_s, idle_poll_max_s or poll_interval_s)

    async def sweep(self) -> int:
        """Fire every reminder due now; returns how many fired."""
        total = 0
        while True:
            async with self.sessions() as session, session.begin():
                now = await database_now(session)
                fired = await service.fire_due_reminders(session, now=now, limit=self.batch_size)
            total += fired
            metrics.REMINDERS_FIRED.inc(fired)
            if fired < self.batch_size:
                return total

    async def run(self) -> None:
        """Sweep forever: after a sweep, sleep until the next reminder is due, within the bounds.

        New reminders of this process wake it; the sweep follows ``poll_interval_s`` later.
        """
        if self.idle_poll_max_s <= self.poll_interval_s:
            await repeat_every(self.poll_interval_s, self.sweep, what="reminder sweep")
            return
        with Wakeup(repository.REMINDERS_WAKE) as wakeup:
            while True:
                wakeup.clear()
                due_in: float | None = 0.0
                try:
                    await self.sweep()
                    async with self.sessions() as session:
                        due_in = await repository.seconds_to_next_reminder(
                            session, now=await database_now(session)
                        )
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("reminder sweep failed, the next round retries: %s", exc)
                wait = until_due_s(due_in, busy_s=self.poll_interval_s, idle_max_s=self.idle_poll_max_s)
                if await wakeup.wait(wait):
                    await asyncio.sleep(self.poll_interval_s)


class DeliveryGauge:
    """Refreshes the deliveries-by-status gauge from the database."""

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], interval_s: float = 15.0) -> None:
        self.sessions = sessions
        self.interval_s = interval_s

    async def refresh(self) -> None:
        """Count deliveries by status once."""
        async with self.sessions() as session:
            counts = await repository.count_by_status(session)
        for status in STATUSES:
            metrics.DELIVERIES.labels(status).set(counts.get(status, 0))

    async def run(self) -> None:
        """Refresh forever."""
        await repeat_every(self.interval_s, self.refresh, what="delivery gauge refresh")
