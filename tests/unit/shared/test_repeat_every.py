"""shared.service.repeat_every: a fixed interval, or one that depends on how long the step took."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from shared import service


async def test_the_pause_can_depend_on_how_long_the_step_took() -> None:
    now = [0.0]
    took: list[float] = []
    pauses: list[float] = []

    async def step() -> None:
        now[0] += 0.05 * (len(took) + 1)  # each round's work takes longer
        if len(took) == 1:
            raise RuntimeError("database away")  # logged; the next round still comes

    def pause(seconds: float) -> float:
        took.append(seconds)
        return 10 * seconds

    async def recorded_sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds
        if len(pauses) == 3:
            raise asyncio.CancelledError

    with contextlib.suppress(asyncio.CancelledError):
        await service.repeat_every(pause, step, what="paced step", clock=lambda: now[0], sleep=recorded_sleep)
    assert took == pytest.approx([0.05, 0.10, 0.15])
    assert pauses == pytest.approx([0.5, 1.0, 1.5])


async def test_a_fixed_interval_stays_fixed() -> None:
    pauses: list[float] = []

    async def step() -> None:
        return None

    async def recorded_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise asyncio.CancelledError

    with contextlib.suppress(asyncio.CancelledError):
        await service.repeat_every(2.5, step, what="fixed step", sleep=recorded_sleep)
    assert pauses == [2.5, 2.5]
