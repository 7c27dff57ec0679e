"""Cancelling reminders by (hazard, kind) pairs on the real database: exactly the pending ones of those
pairs, however many a batch brings (one statement over arrays; the planning of the IN list it replaced
grew with the square of the pairs: see services/notifications/README.md, Speed)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from services.notifications import domain, repository
from services.notifications.tables import reminders
from shared.db import create_engine
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def _reminder(hazard_id: uuid.UUID, kind: domain.ReminderKind, fraction: float) -> domain.Reminder:
    return domain.Reminder(
        reminder_id=uuid.uuid4(),
        hazard_id=hazard_id,
        kind=kind,
        department_id="fire",
        fraction=fraction,
        deadline=NOW + timedelta(hours=2),
        due_at=NOW + timedelta(hours=2 * fraction),
    )


async def test_cancel_reminders_settles_exactly_the_pending_ones_of_the_pairs(db_url: str) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    hazards = [uuid.uuid4() for _ in range(3000)]
    planned = [
        _reminder(h, kind, f) for h in hazards for kind in ("receipt", "rectification") for f in (0.5, 0.8)
    ]
    try:
        async with sessions() as session, session.begin():
            await repository.NotificationsRepository(session).add_reminders(planned)
            # One already fired: a cancel leaves it as it is.
            await session.execute(
                sa.update(reminders)
                .where(reminders.c.reminder_id == planned[0].reminder_id)
                .values(status="fired", settled_at=NOW)
            )
        # A batch's worth of pairs (and one repeated, and hazards with no reminder at all): the
        # receipt reminders of the first 2,000 hazards.
        pairs = [(h, "receipt") for h in hazards[:2000]] + [(hazards[1], "receipt")]
        pairs += [(uuid.uuid4(), "receipt") for _ in range(500)]
        async with sessions() as session, session.begin():
            await repository.NotificationsRepository(session).cancel_reminders(
                pairs, now=NOW + timedelta(minutes=1)
            )
        async with sessions() as session:
            rows = (
                await session.execute(
                    sa.select(
                        reminders.c.hazard_id, reminders.c.kind, reminders.c.status, reminders.c.settled_at
                    )
                )
            ).all()
        first = set(hazards[:2000])
        for hazard_id, kind, status, settled_at in rows:
            if hazard_id == planned[0].hazard_id and kind == "receipt" and status == "fired":
                assert settled_at == NOW
            elif hazard_id in first and kind == "receipt":
                assert (status, settled_at) == ("cancelled", NOW + timedelta(minutes=1))
            else:
                assert (status, settled_at) == ("pending", None)
        assert sum(1 for r in rows if r.status == "cancelled") == 2000 * 2 - 1
    finally:
        await engine.dispose()
