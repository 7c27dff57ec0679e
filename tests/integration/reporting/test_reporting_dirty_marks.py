"""A refresh never loses a change committed while it ran, and never makes consumers wait for it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

from services.reporting import repository
from shared.db import create_engine
from shared.migrate import migrate
from shared.settings import DatabaseSettings

pytestmark = pytest.mark.integration

DAY = date(2026, 4, 7)


async def _add_hazard(conn: Any) -> uuid.UUID:
    hazard_id = uuid.uuid4()
    await conn.execute(
        sa.text(
            "INSERT INTO reporting.hazards (hazard_id, reported_at, report_day, category, community_id, "
            "grid_id, campaign_ids, rectified_on_site) VALUES (:h, timestamptz '2026-04-07 02:00+00', "
            ":day, 'locked_rooftop_door', 'c1', 'c1-0', '{}', false)"
        ),
        {"h": hazard_id, "day": DAY},
    )
    await repository.mark_dirty(conn, [hazard_id])
    return hazard_id


async def _reported(conn: Any) -> int:
    value = (
        await conn.execute(
            sa.text("SELECT reported FROM reporting.rollup_groups WHERE grouping = 'all' AND day = :day"),
            {"day": DAY},
        )
    ).scalar()
    return int(value or 0)


async def test_a_mark_made_during_a_refresh_keeps_its_day_dirty_and_never_waits_for_the_refresh(
    database_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = await database_factory(template=None, prefix="reporting_marks")
    await migrate(url, services=("reporting",))
    engine = create_engine(DatabaseSettings(url=url))  # type: ignore[arg-type]
    recomputed, release = asyncio.Event(), asyncio.Event()
    clear_marks = repository._clear_marks

    async def held_clear(*args: Any, **kwargs: Any) -> None:
        # The refresh has read the marks and recomputed the day from the facts it could see.
        recomputed.set()
        await release.wait()
        await clear_marks(*args, **kwargs)

    monkeypatch.setattr(repository, "_clear_marks", held_clear)
    try:
        async with engine.begin() as conn:
            await _add_hazard(conn)

        async def refresh() -> int:
            async with engine.begin() as conn:
                return await repository.refresh_rollup(conn)

        task = asyncio.create_task(refresh())
        await asyncio.wait_for(recomputed.wait(), timeout=30)
        # A consumer commits a new fact of that day meanwhile; marking does not wait for the
        # refresh (it used to: the refresh deleted the mark first and held it until its commit).
        async with engine.begin() as consumer:
            await asyncio.wait_for(_add_hazard(consumer), timeout=5)
        release.set()
        assert await asyncio.wait_for(task, timeout=30) == 1

        async with engine.begin() as conn:
            left = (await conn.execute(sa.text("SELECT count(*) FROM reporting.rollup_dirty"))).scalar_one()
            assert left == 1, "the day marked again during the refresh is still dirty"
            assert await _reported(conn) == 1, "the refresh counted what it could see"
            assert await repository.refresh_rollup(conn) == 1
        async with engine.begin() as conn:
            assert await _reported(conn) == 2, "the next refresh counts the fact committed meanwhile"
            left = (await conn.execute(sa.text("SELECT count(*) FROM reporting.rollup_dirty"))).scalar_one()
            assert left == 0
    finally:
        await engine.dispose()
