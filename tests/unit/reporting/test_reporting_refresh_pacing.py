"""The background rollup refresher's pause: paced by a refresh's cost, within the staleness bound; idle, woken by commits."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from services.reporting.app import repeat_rollup_refresh
from services.reporting.repository import ROLLUP_WAKE
from services.reporting.settings import ProjectionSettings, refresh_pause_s
from shared.idle import wake


def test_a_cheap_refresh_runs_every_refresh_interval() -> None:
    projection = ProjectionSettings()
    assert refresh_pause_s(projection, 0.05) == projection.rollup_refresh_s == 0.25


def test_a_costly_refresh_waits_so_the_refresher_keeps_to_its_share_of_the_time() -> None:
    projection = ProjectionSettings(rollup_max_busy=0.1, max_staleness_s=60)
    pause = refresh_pause_s(projection, 0.5)
    assert pause == pytest.approx(4.5)
    assert 0.5 / (0.5 + pause) == pytest.approx(0.1)


def test_the_pause_never_lets_a_change_outgrow_the_staleness_bound() -> None:
    projection = ProjectionSettings(rollup_max_busy=0.1, max_staleness_s=10)
    # Paced alone it would wait 13.5 s; a change marked just after this refresh read its marks
    # is then in the rollup after 1.5 + pause + 1.5 s, within the 10 s bound.
    pause = refresh_pause_s(projection, 1.5)
    assert pause == pytest.approx(7.0)
    assert 1.5 + pause + 1.5 <= projection.max_staleness_s
    # Never below the refresh interval, even when a refresh alone outlasts the bound.
    assert refresh_pause_s(projection, 20.0) == projection.rollup_refresh_s


def test_without_a_bound_or_a_share_the_refresher_keeps_its_interval() -> None:
    always = ProjectionSettings(rollup_refresh_s=0.5, max_staleness_s=0, rollup_max_busy=1)
    assert refresh_pause_s(always, 3.0) == 0.5
    unbounded = ProjectionSettings(max_staleness_s=0, rollup_max_busy=0.25)
    assert refresh_pause_s(unbounded, 3.0) == pytest.approx(9.0)


async def test_the_refresher_keeps_its_pace_while_it_finds_changes_and_a_commit_wakes_it_when_idle() -> None:
    projection = ProjectionSettings(rollup_refresh_s=0.01, rollup_idle_s=30)
    found = [3, 1, 0, 2, 0]  # changes brought in by each refresh
    rounds: list[float] = []
    idle = asyncio.Event()

    async def refresh() -> int:
        rounds.append(time.monotonic())
        brought = found.pop(0) if found else 0
        if not brought:
            idle.set()
        return brought

    task = asyncio.create_task(repeat_rollup_refresh(refresh, projection))
    try:
        await asyncio.wait_for(idle.wait(), timeout=5)
        assert len(rounds) == 3, "busy rounds follow each other at the refresh interval"
        idle.clear()
        await asyncio.sleep(0.2)
        assert len(rounds) == 3, "idle, the refresher waits (here up to 30 s) for a wake-up"
        wake(ROLLUP_WAKE)  # a commit of this process's consumer that recorded changes
        await asyncio.wait_for(idle.wait(), timeout=5)
        assert len(rounds) == 5, "woken, it refreshes, and again while it finds changes"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
