"""Idle pacing (#20): back-off of polling loops, fetch waits, wake-ups; no wall-clock bounds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from faststream.kafka import TestKafkaBroker

from shared import idle
from shared.idle import ClockWatch, FetchPacer, IdleBackoff, Wakeup, repeat_until_due, until_due_s, wake
from shared.kafka import create_broker, fetch_pacer, subscribe_lifecycle
from shared.outbox import OutboxRelay
from shared.settings import KafkaSettings


def test_backoff_doubles_while_idle_up_to_the_cap_and_work_or_a_reset_brings_it_back() -> None:
    backoff = IdleBackoff(0.25, 5.0)
    waits = [backoff.next_wait(worked=False) for _ in range(7)]
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.next_wait(worked=True) == 0.25
    assert backoff.next_wait(worked=False) == 0.25, "idle again: starts from the short wait"
    backoff.next_wait(worked=False)
    backoff.reset()
    assert backoff.current_s == 0.25


def test_backoff_with_equal_bounds_never_changes() -> None:
    backoff = IdleBackoff(0.2, 0.2)
    assert {backoff.next_wait(worked=False) for _ in range(5)} == {0.2}


@pytest.mark.parametrize(("busy", "cap"), [(0.0, 1.0), (1.0, 0.5)])
def test_backoff_rejects_impossible_bounds(busy: float, cap: float) -> None:
    with pytest.raises(ValueError):
        IdleBackoff(busy, cap)


def test_a_timer_loop_sleeps_until_the_next_due_row_within_its_bounds() -> None:
    assert until_due_s(1.3, busy_s=0.2, idle_max_s=2.0) == 1.3
    assert until_due_s(0.05, busy_s=0.2, idle_max_s=2.0) == 0.2, "never busier than the ordinary poll"
    assert until_due_s(-3.0, busy_s=0.2, idle_max_s=2.0) == 0.2, "overdue already: the next pass soon"
    assert until_due_s(3600.0, busy_s=0.2, idle_max_s=2.0) == 2.0, "far ahead: the cap bounds lateness"
    assert until_due_s(None, busy_s=0.2, idle_max_s=2.0) == 2.0, "nothing open: the cap"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _consumer(wait_ms: int) -> Any:
    return SimpleNamespace(_fetcher=SimpleNamespace(_fetch_max_wait_ms=wait_ms, _fetcher_timeout=0.2))


def test_fetch_pacer_waits_longer_once_idle_and_short_again_with_the_first_records() -> None:
    clock = FakeClock()
    consumer = _consumer(50)
    pacer = FetchPacer(
        lambda: consumer,
        busy_ms=50,
        idle_ms=1000,
        idle_after_s=5.0,
        busy_batch_ms=100,
        idle_batch_ms=500,
        clock=clock,
    )
    pacer.subscriber = SimpleNamespace(batch_timeout_ms=100)
    clock.now = 4.9
    pacer.tick()
    assert consumer._fetcher._fetch_max_wait_ms == 50
    assert not pacer.idle
    clock.now = 5.0
    pacer.tick()
    assert consumer._fetcher._fetch_max_wait_ms == 1000
    assert pacer.idle
    assert pacer.subscriber.batch_timeout_ms == 500
    assert consumer._fetcher._fetcher_timeout == 1.0, "the fetch routine looks round once per fetch"
    clock.now = 60.0
    pacer.on_records()
    assert consumer._fetcher._fetch_max_wait_ms == 50
    assert not pacer.idle
    assert pacer.subscriber.batch_timeout_ms == 100
    assert consumer._fetcher._fetcher_timeout == 0.2
    clock.now = 64.0
    pacer.tick()
    assert consumer._fetcher._fetch_max_wait_ms == 50, "idle counts from the last records"
    clock.now = 65.0
    pacer.tick()
    assert consumer._fetcher._fetch_max_wait_ms == 1000


def test_fetch_pacer_does_nothing_before_the_consumer_exists_or_without_a_fetcher() -> None:
    clock = FakeClock()
    pacer = FetchPacer(lambda: None, busy_ms=50, idle_ms=1000, idle_after_s=1.0, clock=clock)
    clock.now = 10.0
    pacer.tick()
    assert not pacer.idle, "no consumer yet: still to be done once there is one"
    moved = SimpleNamespace(_fetcher=None)
    pacer.consumer = lambda: moved
    pacer.tick()
    assert not pacer.idle
    unbound = FetchPacer(busy_ms=50, idle_ms=1000, idle_after_s=1.0, clock=clock)
    unbound.tick()
    assert not unbound.idle


class RecordingConsumer:
    service = "fake"

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def process(self, records: Sequence[Any]) -> None:
        self.batches.append(len(records))


async def test_the_lifecycle_subscriber_tells_its_pacer_of_every_batch_and_binds_it() -> None:
    settings = KafkaSettings(
        bootstrap_servers="in-memory:9092", lifecycle_topic="life", idempotent_producer=False
    )
    assert (settings.fetch_max_wait_ms, settings.idle_fetch_max_wait_ms) == (50, 2000)
    clock = FakeClock()
    pacer = fetch_pacer(settings)
    pacer.clock = clock
    assert pacer.consumer is None
    broker = create_broker(settings, service="fake")
    consumer = RecordingConsumer()
    subscribe_lifecycle(broker, consumer, settings, group_id="g", description="d", pacer=pacer)  # type: ignore[arg-type]
    assert pacer.consumer is not None, "bound to the subscriber's consumer"
    assert pacer.subscriber is not None
    assert pacer.subscriber.batch_timeout_ms == settings.batch_timeout_ms
    clock.now = 42.0
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish(b"x", "life")
    assert consumer.batches == [1]
    assert pacer.last_records == 42.0


async def test_a_wakeup_is_woken_by_its_key_only_and_times_out_otherwise() -> None:
    with Wakeup("test.key") as wakeup, Wakeup("other.key") as other:
        assert not await wakeup.wait(0)
        idle.wake("test.key")
        assert await wakeup.wait(0)
        assert not await other.wait(0)
        wakeup.clear()
        assert not await wakeup.wait(0)
    idle.wake("test.key")  # no longer registered: nothing to wake
    assert not wakeup.event.is_set()


class ScriptedRelay(OutboxRelay):
    """A relay whose batches follow a script and whose waits are recorded instead of slept."""

    def __init__(self, script: list[tuple[bool, int]], woken: set[int]) -> None:
        table = sa.Table(
            "outbox",
            sa.MetaData(),
            *(sa.Column(name, sa.Text) for name in ("id", "topic", "key", "value", "headers", "xid")),
            schema="t",
        )
        super().__init__(
            table=table,
            sessions=None,  # type: ignore[arg-type]
            sender=None,  # type: ignore[arg-type]
            service="test",
            batch_size=10,
            poll_interval_s=0.25,
            idle_poll_max_s=2.0,
            retention=timedelta(days=1),
        )
        self.script = script
        self.woken = woken
        self.waits: list[float] = []

    async def _relay_batch(self) -> tuple[bool, int]:
        if not self.script:
            self.stop()
            return True, 0
        return self.script.pop(0)

    async def _prune_when_due(self) -> None:
        return None

    async def _wait_for_wake(self, seconds: float) -> bool:
        self.waits.append(seconds)
        await asyncio.sleep(0)
        return len(self.waits) in self.woken


async def test_an_idle_relay_polls_ever_slower_and_rows_a_wakeup_or_another_turn_speed_it_up() -> None:
    idle_rounds = [(True, 0)] * 5
    relay = ScriptedRelay(
        [*idle_rounds, (True, 3), (True, 0), (True, 0), (False, 0), (True, 0), (True, 10), (True, 0)],
        woken={3},
    )
    await relay.run()
    assert relay.waits == [
        0.25,
        0.5,
        1.0,  # woken during this one: the next wait is short again
        0.25,
        0.5,
        0.25,  # rows published
        0.25,
        0.5,
        0.25,  # another replica had the turn: our rows may be waiting, stay quick
        0.25,
        # a full batch is followed at once by the next, without a wait, and counts as work
        0.25,
        0.5,
    ]


async def test_the_http_server_turns_round_once_a_second_and_a_stop_signal_ends_its_wait() -> None:
    import signal

    import uvicorn

    from shared.runner import QuietServer

    server = QuietServer(uvicorn.Config(app=lambda scope, receive, send: None))
    ticks: list[int] = []

    async def on_tick(counter: int) -> bool:
        ticks.append(counter)
        return server.should_exit

    server.on_tick = on_tick  # type: ignore[method-assign]
    loop_task = asyncio.create_task(server.main_loop())
    await asyncio.sleep(0)  # the loop runs up to its first wait
    assert server._stop is not None
    assert not server._stop.is_set()
    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
    await asyncio.sleep(0)  # the signal's wake-up is scheduled on the loop
    assert server._stop.is_set(), "the wait ends at once, not at the next tick"
    await loop_task
    assert ticks[0] == 0
    assert all(t % 10 == 0 for t in ticks), "every round refreshes the Date header"


# ---------------------------------------------------------------- repeat_until_due (the timer loops)


async def _run_until(loop: Any, reached: asyncio.Event) -> None:
    task = asyncio.create_task(loop)
    try:
        # A liveness guard only: what is checked is whether the step ran, never how fast.
        await asyncio.wait_for(reached.wait(), timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_idle_timer_loop_is_woken_by_this_processs_commit_not_by_its_long_idle_wait() -> None:
    calls: list[int] = []
    looked = asyncio.Event()
    again = asyncio.Event()

    async def step() -> int:
        calls.append(0)
        if len(calls) == 2:
            again.set()
        return 0

    async def next_due() -> float | None:
        looked.set()
        return None  # nothing due: the loop would sleep idle_max_s (an hour)

    task = asyncio.create_task(
        repeat_until_due(step, next_due, wake_key="t.wake", busy_s=0.001, idle_max_s=3600, what="t")
    )
    try:
        await asyncio.wait_for(looked.wait(), timeout=30)
        assert len(calls) == 1
        wake("t.wake")
        await asyncio.wait_for(again.wait(), timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert len(calls) == 2


async def test_a_full_batch_is_followed_at_once_without_asking_when_the_next_is_due() -> None:
    handled = [5, 5, 2]
    looked: list[int] = []
    done = asyncio.Event()

    async def step() -> int:
        value = handled.pop(0) if handled else 0
        if not handled:
            done.set()
        return value

    async def next_due() -> float | None:
        looked.append(1)
        return None

    await _run_until(
        repeat_until_due(
            step, next_due, wake_key="t.full", busy_s=0.001, idle_max_s=3600, what="t", full_batch=5
        ),
        done,
    )
    assert handled == []
    assert looked == []


async def test_of_several_idle_passes_only_one_asks_when_the_next_row_is_due() -> None:
    watch = ClockWatch()
    looks = 0
    both_waiting = asyncio.Event()
    steps = 0

    async def step() -> int:
        nonlocal steps
        steps += 1
        return 0

    async def next_due() -> float | None:
        nonlocal looks
        looks += 1
        both_waiting.set()
        return None

    passes = [
        asyncio.create_task(
            repeat_until_due(
                step, next_due, wake_key="t.watch", busy_s=0.001, idle_max_s=3600, what="t", watch=watch
            )
        )
        for _ in range(2)
    ]
    try:
        await asyncio.wait_for(both_waiting.wait(), timeout=30)
        for _ in range(50):  # let the other pass run its step and settle into its wait
            await asyncio.sleep(0)
    finally:
        for task in passes:
            task.cancel()
        for task in passes:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert steps == 2
    assert looks == 1
