"""Background loops of the notifications service: due reminders (催办) and the deliveries gauge."""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import metrics, repository, service
from shared.db import database_now
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
    ) -> None:
        self.sessions = sessions
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s

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
        """Sweep forever."""
        await repeat_every(self.poll_interval_s, self.sweep, what="reminder sweep")


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
