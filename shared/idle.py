"""Idle pacing: loops that poll stay quick while there is work and grow slow while there is none (#20).

An idle stack should cost almost nothing, yet a loop that finds work must keep its pace. Two pieces:

- :class:`IdleBackoff`: the wait before a loop's next round. ``busy_s`` after a round that found
  work (or after :meth:`IdleBackoff.reset`, e.g. a wake-up from this process), then doubling each
  idle round up to ``idle_max_s``. A loop whose work also arrives by a wake-up (an event set by a
  commit of this process) loses nothing by waiting long; only work nobody announced (another
  process's rows) waits up to ``idle_max_s``.
- :class:`FetchPacer`: the broker fetch wait of a consumer (``fetch_max_wait_ms``). The local broker
  (Tansu) holds a fetch that finds nothing for the whole wait even when a record arrives meanwhile,
  so a short wait keeps hops fast but costs a fetch round trip (broker and consumer) many times a
  second. While records flow the wait stays short; after ``idle_after_s`` without any, it becomes
  ``idle_ms``; the first batch brings it back. Only the first record after a quiet spell pays the
  longer wait.
- :class:`Wakeup` / :func:`wake_on_commit`: a commit that wrote work for a loop of this process
  wakes it at once; timer loops sleep :func:`until_due_s` the next row falls due.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


class IdleBackoff:
    """The wait before the next round of a polling loop: short while busy, doubling while idle."""

    def __init__(self, busy_s: float, idle_max_s: float, *, factor: float = 2.0) -> None:
        if busy_s <= 0 or idle_max_s < busy_s or factor < 1:
            raise ValueError("need 0 < busy_s <= idle_max_s and factor >= 1")
        self.busy_s = busy_s
        self.idle_max_s = idle_max_s
        self.factor = factor
        self._wait = busy_s

    @property
    def current_s(self) -> float:
        """The wait the next idle round would start from."""
        return self._wait

    def reset(self) -> None:
        """Work arrived (or was announced): the next wait is ``busy_s`` again."""
        self._wait = self.busy_s

    def next_wait(self, *, worked: bool) -> float:
        """The wait after a round: ``busy_s`` if it found work, else the idle wait (which then grows)."""
        if worked:
            self._wait = self.busy_s
            return self.busy_s
        wait = self._wait
        self._wait = min(self.idle_max_s, self._wait * self.factor)
        return wait


def fetcher_of(consumer: Any) -> Any | None:
    """The aiokafka fetcher of a consumer (private; None if an upgrade moved it)."""
    fetcher = getattr(consumer, "_fetcher", None)
    return fetcher if fetcher is not None and hasattr(fetcher, "_fetch_max_wait_ms") else None


class FetchPacer:
    """Keeps a consumer's fetch wait at ``busy_ms`` while records flow and ``idle_ms`` once idle.

    ``consumer`` is a callable returning the aiokafka consumer (or None before it runs): the
    FastStream subscriber makes it when the broker connects (:func:`shared.kafka.subscribe_lifecycle`
    binds it to its subscriber). aiokafka reads the fetcher's
    ``_fetch_max_wait_ms`` for every fetch request it builds, so a change applies from the next
    fetch on. ``clock`` is injected by tests.
    """

    def __init__(
        self,
        consumer: Callable[[], Any] | None = None,
        *,
        busy_ms: int,
        idle_ms: int,
        idle_after_s: float,
        busy_batch_ms: int | None = None,
        idle_batch_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.consumer = consumer
        self.busy_ms = busy_ms
        self.idle_ms = max(busy_ms, idle_ms)
        self.idle_after_s = idle_after_s
        # The FastStream batch subscriber waits this long for records, and as long again after finding
        # none: a loop round 5 times a second at 100 ms. Idle, it may turn slower too (``subscriber``
        # is the object whose ``batch_timeout_ms`` it reads for every round).
        self.subscriber: Any = None
        self.busy_batch_ms = busy_batch_ms
        self.idle_batch_ms = idle_batch_ms
        self._busy_fetcher_timeout: float | None = None
        self.clock = clock
        self.last_records = clock()
        self.idle = False
        self._warned = False

    def _set(self, wait_ms: int) -> bool:
        consumer = None
        if self.consumer is not None:
            with contextlib.suppress(Exception):
                consumer = self.consumer()
        if consumer is None:
            return False
        fetcher = fetcher_of(consumer)
        if fetcher is None:
            if not self._warned:
                log.warning("the consumer's fetcher has no _fetch_max_wait_ms: its fetch wait stays fixed")
                self._warned = True
            return False
        fetcher._fetch_max_wait_ms = wait_ms
        # aiokafka's fetch routine also looks round every consumer_timeout_ms (0.2 s) with a fetch in
        # flight and nothing to do; idle, once per fetch wait is enough.
        if hasattr(fetcher, "_fetcher_timeout"):
            if self._busy_fetcher_timeout is None:
                self._busy_fetcher_timeout = fetcher._fetcher_timeout
            fetcher._fetcher_timeout = (
                max(self._busy_fetcher_timeout, wait_ms / 1000)
                if wait_ms == self.idle_ms
                else self._busy_fetcher_timeout
            )
        batch_ms = self.idle_batch_ms if wait_ms == self.idle_ms else self.busy_batch_ms
        if (
            batch_ms is not None
            and self.subscriber is not None
            and hasattr(self.subscriber, "batch_timeout_ms")
        ):
            self.subscriber.batch_timeout_ms = batch_ms
        return True

    def on_records(self) -> None:
        """Records arrived: short fetches again (at once, for the fetch after this batch)."""
        self.last_records = self.clock()
        if self.idle and self._set(self.busy_ms):
            self.idle = False

    def tick(self) -> None:
        """Called periodically: long fetches once nothing arrived for ``idle_after_s``."""
        if (
            not self.idle
            and self.clock() - self.last_records >= self.idle_after_s
            and self._set(self.idle_ms)
        ):
            self.idle = True


# ---------------------------------------------------------------- wake-ups on commit

# Loops of this process waiting for work, by key (e.g. "dispatch.timers"): a commit that wrote such
# work wakes them at once, so they may poll slowly for the work nobody announced (another process's).
_WAITERS: dict[str, set[asyncio.Event]] = {}
_WAKE_KEYS = "idle_wake_on_commit"


def wake(key: str) -> None:
    """Wake this process's loops waiting on ``key`` now."""
    for event in _WAITERS.get(key, ()):
        event.set()


async def wake_on_notify(
    connect: Callable[[], Awaitable[Any]], channel: str, key: str, *, retry_s: float = 5.0
) -> None:
    """Wake this process's loops waiting on ``key`` whenever another process's commit notifies
    ``channel`` (``pg_notify``, delivered at commit); runs until cancelled.

    ``connect`` opens a connection of its own (:func:`shared.db.listening_connection`). Listening,
    and again after every reconnection, it wakes them once: what was committed while nobody listened
    is looked for too. A lost connection is opened again after ``retry_s``; meanwhile the loops'
    own polls are the fallback.
    """
    while True:
        conn = None
        try:
            conn = await connect()
            lost = asyncio.Event()
            conn.add_termination_listener(lambda *_, lost=lost: lost.set())
            await conn.add_listener(channel, lambda *_: wake(key))
            wake(key)
            await lost.wait()
            log.info("the listener on %s lost its connection; listening again in %s s", channel, retry_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("cannot listen on %s (%s); trying again in %s s", channel, exc, retry_s)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
        await asyncio.sleep(retry_s)


def _wake_after_commit(session: Session) -> None:
    for key in session.info.pop(_WAKE_KEYS, ()):
        wake(key)


def wake_on_commit(session: AsyncSession, key: str) -> None:
    """Have this session's next commit wake the loops of this process waiting on ``key``."""
    sync = session.sync_session
    keys = sync.info.get(_WAKE_KEYS)
    if keys is None:
        sync.info[_WAKE_KEYS] = {key}
        sa.event.listen(sync, "after_commit", _wake_after_commit, once=True)
    else:
        keys.add(key)


class Wakeup:
    """What a loop waits on: ``wake(key)`` / ``wake_on_commit(session, key)`` of this process, or a timeout.

    Use as a context manager around the loop (it registers while inside).
    """

    def __init__(self, key: str, event: asyncio.Event | None = None) -> None:
        self.key = key
        self.event = event or asyncio.Event()

    def __enter__(self) -> Wakeup:
        _WAITERS.setdefault(self.key, set()).add(self.event)
        return self

    def __exit__(self, *exc: object) -> None:
        _WAITERS.get(self.key, set()).discard(self.event)

    def clear(self) -> None:
        """Forget earlier wake-ups (call before looking for work, so none is missed)."""
        self.event.clear()

    async def wait(self, timeout_s: float) -> bool:
        """Wait at most ``timeout_s``; True if woken (already, or meanwhile)."""
        if self.event.is_set():
            return True
        try:
            await asyncio.wait_for(self.event.wait(), timeout=timeout_s)
        except TimeoutError:
            return False
        return True


def until_due_s(due_in_s: float | None, *, busy_s: float, idle_max_s: float) -> float:
    """A timer loop's wait after a pass that found nothing due: until the next due row, within bounds.

    ``due_in_s`` is how long until the earliest open row falls due (the database's clock), None if
    there is none. The wait is at least ``busy_s`` (the loop's ordinary poll) and at most
    ``idle_max_s``, which bounds how late a row written by another process (nobody woke this one) fires.
    """
    if due_in_s is None:
        return idle_max_s
    return min(idle_max_s, max(busy_s, due_in_s))


class ClockWatch:
    """Which of several timer passes of one process is sleeping until the next due row: one is enough.

    The others wait to be woken (new timers of this process, or a pass that found a full batch),
    so idle passes do not each ask the database when the next row falls due.
    """

    def __init__(self) -> None:
        self.watching = False


async def repeat_until_due(
    step: Callable[[], Awaitable[int]],
    next_due_s: Callable[[], Awaitable[float | None]],
    *,
    wake_key: str,
    busy_s: float | Callable[[float], float],
    idle_max_s: float,
    what: str,
    full_batch: int | None = None,
    watch: ClockWatch | None = None,
) -> None:
    """A timer loop: run ``step`` (it returns how many rows it handled), then sleep until the next row is due.

    After a step that handled nothing it sleeps until the next row falls due (``next_due_s``: seconds,
    None if there is none), within ``busy_s``..``idle_max_s``; a commit of this process that adds or
    moves rows (``wake_on_commit(session, wake_key)``) wakes it, and the step follows ``busy_s`` later.
    A step that handled a full batch (``full_batch``) is followed at once and wakes the process's other
    passes (a backlog to share). With ``watch`` shared by several passes, only one watches the clock.
    A failing step is logged and the next round retries; with ``idle_max_s <= busy_s`` this is a
    plain poll every ``busy_s``. ``busy_s`` may be a function of how long the step took (seconds), for
    steps paced by their cost; it is asked with 0 for the pause that follows a wake-up.
    """
    pause = busy_s if callable(busy_s) else (lambda _took: busy_s)
    base_s = pause(0.0)
    with Wakeup(wake_key) as wakeup:
        while True:
            wakeup.clear()
            handled = 0
            started = time.monotonic()
            try:
                handled = await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("%s failed, the next round retries: %s", what, exc)
                await asyncio.sleep(max(base_s, 1.0))
                continue
            if full_batch is not None and handled >= full_batch:
                wake(wake_key)  # a backlog: every pass of this process helps
                continue
            if handled or idle_max_s <= base_s:
                await asyncio.sleep(pause(time.monotonic() - started))
                continue
            watching = watch is None or not watch.watching
            if watching:
                try:
                    due_in = await next_due_s()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s could not read the next due time: %s", what, exc)
                    due_in = 0.0
                wait = until_due_s(due_in, busy_s=base_s, idle_max_s=idle_max_s)
            else:
                wait = 30 * idle_max_s  # another pass watches the clock and will wake this one if need be
            if watch is not None and watching:
                watch.watching = True
            try:
                woken = await wakeup.wait(wait)
            finally:
                if watch is not None and watching:
                    watch.watching = False
            if woken:
                await asyncio.sleep(base_s)
