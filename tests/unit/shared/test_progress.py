"""Progress: a redrawn bar on a terminal, a line every interval (and at each stage) otherwise."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from shared.progress import Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_terminal_gets_one_redrawn_bar_with_rate_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("demo load", total=200, unit="reports", stream=out, tty=True, clock=clock)
    clock.now += 10
    progress.update(50, stage="sending reports")
    clock.now += 0.01  # redrawn at most ten times a second
    progress.update(51)
    clock.now += 0.2
    progress.update(100)
    frames = out.getvalue().split("\r\x1b[2K")[1:]
    assert len(frames) == 2
    assert frames[0] == (
        "demo load  [######..................]  25%  50/200 reports  5.0/s  ETA 30 s  (sending reports)"
    )
    assert frames[1].startswith("demo load  [############............]  50%  100/200 reports")
    clock.now += 10
    progress.update(200)
    progress.finish()
    assert out.getvalue().endswith("100%  200/200 reports  9.9/s  took 20 s  (sending reports)\n")


def test_a_log_gets_a_line_per_interval_and_per_stage() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress("rebuild", unit="events", stream=out, tty=False, interval_s=10, clock=clock)
    progress.update(0, stage="replaying the topic")  # first line at once
    for _ in range(25):
        clock.now += 1
        progress.advance(1000)
    progress.update(progress.done, stage="swap")
    progress.finish()
    lines = out.getvalue().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "rebuild: 0 events, 0.0/s, replaying the topic",
        "rebuild: 10000 events, 1,000.0/s, replaying the topic",
        "rebuild: 20000 events, 1,000.0/s, replaying the topic",
        "rebuild: 25000 events, 1,000.0/s, swap",
        "rebuild: 25000 events, 1,000.0/s, took 25 s, swap",
    ]
    assert all(line[:4].isdigit() and "T" in line.split(" ", 1)[0] for line in lines)  # ISO time first
    assert "\r" not in out.getvalue()
    assert "\x1b" not in out.getvalue()


def test_a_logger_takes_the_lines_when_given(caplog: pytest.LogCaptureFixture) -> None:
    progress = Progress("x", total=2, stream=io.StringIO(), tty=False, logger=logging.getLogger("t.progress"))
    with caplog.at_level(logging.INFO, logger="t.progress"):
        progress.update(1)
        progress.finish()
    assert next(r.getMessage() for r in caplog.records).startswith("x: 1/2 (50%)")
    assert len(caplog.records) == 2


async def test_ticking_reads_the_counter_while_the_work_runs() -> None:
    out = io.StringIO()
    counter = {"n": 0}
    progress = Progress("work", total=30, unit="items", stream=out, tty=True)
    async with progress.ticking(lambda: counter["n"], period_s=0.01):
        for _ in range(30):
            counter["n"] += 1
            await asyncio.sleep(0.005)
    assert progress.done == 30
    assert "30/30 items" in out.getvalue().split("\r\x1b[2K")[-1]
    assert out.getvalue().endswith("\n")
