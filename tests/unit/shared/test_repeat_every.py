"""shared.service.repeat_every: a fixed interval, or one that depends on how long the step took."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from shared import service


async def test_the_pause_can_depend_on_how_long_the_step_took(monkeypatch: pytest.MonkeyPatch) -> None:
    took: list[float] = []
    pauses: list[float] = []
    real_sleep = asyncio.sleep

    async def step() -> None:
        await real_sleep(0.05)
        if len(took) == 1:
            raise RuntimeError("database away")  # logged; the next round still comes

    def pause(seconds: float) -> float:
        took.append(seconds)
        return 10 * seconds

    async def recorded_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 3:
            raise asyncio.CancelledError
        await real_sleep(0)

    monkeypatch.setattr(service.asyncio, "sleep", recorded_sleep)
    with contextlib.suppress(asyncio.CancelledError):
        await service.repeat_every(pause, step, what="paced step")
    assert len(took) == 3
    assert all(0.04 <= t < 1.0 for t in took)
    assert pauses == [10 * t for t in took]


async def test_a_fixed_interval_stays_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    async def step() -> None:
        return None

    async def recorded_sleep(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 2:
            raise asyncio.CancelledError

    monkeypatch.setattr(service.asyncio, "sleep", recorded_sleep)
    with contextlib.suppress(asyncio.CancelledError):
        await service.repeat_every(2.5, step, what="fixed step")
    assert pauses == [2.5, 2.5]
