"""Periodic steps of the notifications service: due reminders (催办) and the deliveries gauge.

``app.py`` declares the reminder sweep with ``runtime.until_due`` (idle, it sleeps until the next
reminder falls due; this process's new reminders wake it) and the gauge with ``runtime.every``.
"""

from __future__ import annotations

import logging

from services.notifications import metrics, service
from services.notifications.service import WorkFactory

log = logging.getLogger(__name__)

STATUSES = ("pending", "retrying", "sent", "failed", "cancelled")


class ReminderLoop:
    """Fires due reminders into deliveries, a batch per transaction; safe with several replicas.

    Whether a reminder is due is decided on the database's clock (the unit of work's ``now``),
    read in the transaction that claims it: replicas whose hosts disagree on the time agree.
    """

    def __init__(self, *, work: WorkFactory, batch_size: int) -> None:
        self.work = work
        self.batch_size = batch_size

    async def sweep(self) -> int:
        """Fire every reminder due now; returns how many fired."""
        total = 0
        while True:
            async with self.work() as uow:
                fired = await service.fire_due_reminders(uow, limit=self.batch_size)
            total += fired
            metrics.REMINDERS_FIRED.inc(fired)
            if fired < self.batch_size:
                return total

    async def seconds_to_next(self) -> float | None:
        """Seconds until the earliest open reminder falls due, on the database's clock (None: none)."""
        async with self.work() as uow:
            return await uow.repo.seconds_to_next_reminder(now=uow.now)


class DeliveryGauge:
    """Refreshes the deliveries-by-status gauge from the database."""

    def __init__(self, *, work: WorkFactory, interval_s: float = 15.0) -> None:
        self.work = work
        self.interval_s = interval_s

    async def refresh(self) -> None:
        """Count deliveries by status once."""
        async with self.work() as uow:
            counts = await uow.repo.count_by_status()
        for status in STATUSES:
            metrics.DELIVERIES.labels(status).set(counts.get(status, 0))
