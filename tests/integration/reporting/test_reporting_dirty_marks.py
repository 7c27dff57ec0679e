"""A refresh never loses a change committed while it ran, and never makes consumers wait for it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any

import pytest
import sqlalchemy as sa

from services.reporting import repository
from services.reporting.store import rollups
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


class HeldRefresh:
    """A refresh that stops after recomputing, before clearing the marks, until released."""

    def __init__(self, engine: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.engine = engine
        self.recomputed, self.release = asyncio.Event(), asyncio.Event()
        clear_marks = rollups.clear_marks

        async def held_clear(*args: Any, **kwargs: Any) -> None:
            # The refresh has read the marks and recomputed the day from the facts it could see.
            self.recomputed.set()
            await self.release.wait()
            await clear_marks(*args, **kwargs)

        monkeypatch.setattr(rollups, "clear_marks", held_clear)

    async def start(self) -> asyncio.Task[int]:
        """Start the refresh; returns once it has recomputed and waits to clear the marks."""

        async def refresh() -> int:
            async with self.engine.begin() as conn:
                return await repository.refresh_rollup(conn)

        task = asyncio.create_task(refresh())
        await asyncio.wait_for(self.recomputed.wait(), timeout=30)
        return task


async def _migrated_engine(database_factory: Any, prefix: str) -> Any:
    url = await database_factory(template=None, prefix=prefix)
    await migrate(url, services=("reporting",))
    return create_engine(DatabaseSettings(url=url))  # type: ignore[arg-type]


async def test_a_mark_made_during_a_refresh_keeps_its_day_dirty_and_never_waits_for_the_refresh(
    database_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _migrated_engine(database_factory, "reporting_marks")
    held = HeldRefresh(engine, monkeypatch)
    try:
        async with engine.begin() as conn:
            await _add_hazard(conn)
        task = await held.start()
        # A consumer commits a new fact of that day meanwhile; marking does not wait for the
        # refresh (it used to: the refresh deleted the mark first and held it until its commit).
        async with engine.begin() as consumer:
            await asyncio.wait_for(_add_hazard(consumer), timeout=5)
        held.release.set()
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


async def test_a_day_that_keeps_changing_is_only_as_stale_as_its_changes_since_the_last_refresh(
    database_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _migrated_engine(database_factory, "reporting_marks_age")
    held = HeldRefresh(engine, monkeypatch)

    async def marked_at(conn: Any) -> Any:
        return (await conn.execute(sa.text("SELECT marked_at FROM reporting.rollup_dirty"))).scalar_one()

    try:
        async with engine.begin() as conn:
            await _add_hazard(conn)
            first = await marked_at(conn)
        await asyncio.sleep(0.5)
        task = await held.start()
        # Under steady load the day is marked again during every refresh, so it is never clean.
        async with engine.begin() as consumer:
            await _add_hazard(consumer)
            changed_at = (await consumer.execute(sa.text("SELECT now()"))).scalar_one()
            assert await marked_at(consumer) == first, "a mark keeps the oldest unrefreshed change"
        held.release.set()
        assert await asyncio.wait_for(task, timeout=30) == 1

        async with engine.begin() as conn:
            left = await marked_at(conn)
            # What is left is the change made during the refresh: its age counts from the refresh's
            # reading of the marks at the earliest, never from the first mark the refresh covered.
            assert (left - first).total_seconds() >= 0.5
            assert left <= changed_at
            age = await repository.unrefreshed_for_s(conn)
            assert age is not None
            assert age < (changed_at - first).total_seconds()
    finally:
        await engine.dispose()
