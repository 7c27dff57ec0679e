"""Periodic steps of the notifications service: due reminders (催办) and the deliveries gauge.

``app.py`` declares the reminder sweep with ``runtime.until_due`` (idle, it sleeps until the next
reminder falls due; this process's new reminders wake it) and the gauge with ``runtime.every``.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notifications import metrics, repository, service
from shared.db import database_now

log = logging.getLogger(__name__)

STATUSES = ("pending", "retrying", "sent", "failed", "cancelled")


class ReminderLoop:
    """Fires due reminders into deliveries, a batch per transaction; safe with several replicas.

    Whether a reminder is due is decided on the database's clock (``shared.db.database_now``),
    read in the transaction that claims it: replicas whose hosts disagree on the time agree.
    """

    def __init__(self, *, sessions: async_sessionmaker[AsyncSession], batch_size: int) -> None:
        self.sessions = sessions
        self.batch_size = batch_size

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

    async def seconds_to_next(self) -> float | None:
        """Seconds until the earliest open reminder falls due, on the database's clock (None: none)."""
        async with self.sessions() as session:
            return await repository.seconds_to_next_reminder(session, now=await database_now(session))


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
