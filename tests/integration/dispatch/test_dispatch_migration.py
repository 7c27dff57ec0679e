"""Migration dispatch_0007 (#20) on a database at dispatch_0006 with dispatches in every state, and back:
every unfired timer of a pending dispatch is carried onto it (no deadline lost, nothing fired again)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from services.dispatch import domain
from services.dispatch.repository import DispatchRepository, escalation_of
from shared.db import create_engine, create_session_factory
from shared.migrate import alembic_config, migrate
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

D = datetime(2026, 4, 7, 3, 0, tzinfo=UTC)
"""The receipt deadline of every dispatch here."""
STEPS = (
    (1, "department", D),
    (2, "supervisor", D + timedelta(hours=2)),
    (3, "district", D + timedelta(hours=24)),
)

FRESH, ESCALATED, ACKNOWLEDGED, EXHAUSTED = (uuid.UUID(int=i) for i in range(1, 5))

_DISPATCH = sa.text(
    """
    insert into dispatch.dispatches (dispatch_id, hazard_id, department_id, category, community_id, grid_id,
        status, receipt_deadline, deadline_minutes, deadline_working_time, reason, dispatched_by, created_at,
        overdue_at, escalation_level)
    values (:id, gen_random_uuid(), 'fire', 'locked_rooftop_door', 'liuyue', 'liuyue-01', :status, :deadline,
        120, true, 'routed', 'system', :created, :overdue_at, :level)
    """
)
_TIMER = sa.text(
    "insert into dispatch.timers (dispatch_id, kind, level, target, due_at, fired_at, cancelled) "
    "values (:id, :kind, :level, :target, :due_at, :fired_at, :cancelled)"
)


async def _seed_at_0006(engine: Any) -> None:
    """Four dispatches with their timer rows as the code before #20 left them."""
    fired_at = D + timedelta(minutes=1)
    # (dispatch, status, overdue_at, escalation_level, timer levels fired, cancelled)
    cases = (
        (FRESH, "pending", None, 0, set(), False),
        (ESCALATED, "pending", fired_at, 1, {0, 1}, False),
        (ACKNOWLEDGED, "acknowledged", None, 0, {0, 1, 2, 3}, True),
        (EXHAUSTED, "pending", fired_at, 3, {0, 1, 2, 3}, False),
    )
    async with engine.begin() as conn:
        for dispatch_id, status, overdue_at, level, fired, cancelled in cases:
            await conn.execute(
                _DISPATCH,
                {
                    "id": dispatch_id,
                    "status": status,
                    "deadline": D,
                    "created": D - timedelta(hours=2),
                    "overdue_at": overdue_at,
                    "level": level,
                },
            )
            timers = [
                (0, "receipt_overdue", "fire", D),
                *((lv, "escalation", t, due) for lv, t, due in STEPS),
            ]
            for timer_level, kind, target, due_at in timers:
                done = timer_level in fired
                await conn.execute(
                    _TIMER,
                    {
                        "id": dispatch_id,
                        "kind": kind,
                        "level": timer_level,
                        "target": target,
                        "due_at": due_at,
                        "fired_at": fired_at if done else None,
                        "cancelled": done and cancelled,
                    },
                )


async def _unfired(engine: Any) -> set[tuple[uuid.UUID, int, str, datetime]]:
    async with engine.begin() as conn:
        rows = await conn.execute(
            sa.text("select dispatch_id, level, target, due_at from dispatch.timers where fired_at is null")
        )
        return {tuple(row) for row in rows}  # type: ignore[misc]


async def test_0007_carries_every_unfired_timer_onto_its_dispatch_and_back(database_factory: Any) -> None:
    url = await database_factory(template=None, prefix="dispatch_mig")
    await migrate(url, services=("dispatch",), revision="dispatch_0006", service_roles=False, admin=False)
    engine = create_engine(DatabaseSettings(url=url))
    try:
        await _seed_at_0006(engine)
        before = await _unfired(engine)
        assert len(before) == 4 + 2

        await migrate(url, services=("dispatch",), service_roles=False, admin=False)
        async with engine.begin() as conn:
            rows = {
                row.dispatch_id: row
                for row in await conn.execute(
                    sa.text("select dispatch_id, escalation, next_due_at from dispatch.dispatches")
                )
            }
            kept = (await conn.execute(sa.text("select count(*) from dispatch.timers"))).scalar_one()
            indexes = set(
                (
                    await conn.execute(
                        sa.text("select indexname from pg_indexes where schemaname = 'dispatch'")
                    )
                ).scalars()
            )
        steps = tuple(domain.EscalationDue(level, target, due) for level, target, due in STEPS)
        # The pending dispatches wait on their earliest unfired step, with their frozen chain.
        assert (rows[FRESH].next_due_at, escalation_of(rows[FRESH].escalation)) == (D, steps)
        assert (rows[ESCALATED].next_due_at, escalation_of(rows[ESCALATED].escalation)) == (
            STEPS[1][2],
            steps,
        )
        # Nothing left to fire: acknowledged (its timers had been stopped), or every step fired.
        assert rows[ACKNOWLEDGED].next_due_at is None
        assert rows[EXHAUSTED].next_due_at is None
        # The unfired rows are gone; what fired (or was stopped) stays as history.
        assert kept == 4 * 4 - len(before)
        assert "dispatches_next_due" in indexes
        assert "timers_due" not in indexes

        # A pass a day and a half after the deadline fires exactly what had not fired, in order.
        sessions = create_session_factory(engine)
        async with sessions() as session, session.begin():
            repo = DispatchRepository(session)
            now = D + timedelta(hours=36)
            firings = {
                c.dispatch_id: domain.fire(c, now=now) for c in await repo.claim_due_timers(now=now, limit=10)
            }
            await session.rollback()
        assert set(firings) == {FRESH, ESCALATED}
        assert [(t.kind, t.level) for t in firings[FRESH].fired] == [
            ("receipt_overdue", 0),
            ("escalation", 1),
            ("escalation", 2),
            ("escalation", 3),
        ]
        assert [(t.kind, t.level) for t in firings[ESCALATED].fired] == [("escalation", 2), ("escalation", 3)]

        def downgrade(connection: sa.Connection) -> None:
            command.downgrade(alembic_config("dispatch", connection), "dispatch_0006")

        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
        assert await _unfired(engine) == before
    finally:
        await engine.dispose()
