"""Transactional outbox: events are rows committed with the business change, then relayed to Kafka.

Writers call :meth:`Outbox.add` inside their own transaction. The :class:`OutboxRelay`
takes the oldest unpublished rows, publishes them in one batch, waits for the broker
to confirm every one, then stamps them ``published_at`` in the same transaction. A
crash between publish and commit republishes the batch: delivery is at-least-once and
the event ids are unchanged, so consumers deduplicate.

Order. One relay at a time publishes a given outbox: a batch runs under a transaction
advisory lock on the table, and a replica that does not get it skips its turn. With
``FOR UPDATE SKIP LOCKED`` and no such lock, replica B could publish a hazard's later
row while replica A still held its earlier one. The relay keeps no cursor: each batch
scans the rows still unpublished (a partial index holds only those), so a row whose
transaction took a smaller id but committed after a larger one is published by the
next batch that sees it, never skipped. Published rows are therefore in commit order
per hazard (a hazard's events are written under that hazard's row lock), and each
batch is stamped with one ``clock_timestamp()`` taken under the lock, so ordering by
``(published_at, id)`` gives the publish order back.

Retention. Published rows stay ``retention_days`` and are pruned in bounded batches;
:meth:`OutboxRelay.replay` publishes again, in publish order, every row published
since a time T (``python -m shared.outbox_replay``): a broker that lost its data is
refilled, and consumers skip what they had applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared import metrics, tracing
from shared.db import array_param
from shared.events import AnyEvent, dump_event
from shared.idle import IdleBackoff

log = logging.getLogger(__name__)

# Relays of this process waiting for rows, by outbox table: a commit that added rows wakes them at
# once, so an event leaves as soon as it is committed and the poll is only the fallback for rows
# another process committed and did not relay (it crashed).
_WAITING: dict[str, set[asyncio.Event]] = {}
_WAKE_ON_COMMIT = "outbox_wake_on_commit"


def _wake(table_name: str) -> None:
    for event in _WAITING.get(table_name, ()):
        event.set()


def _wake_after_commit(session: Session) -> None:
    for table_name in session.info.pop(_WAKE_ON_COMMIT, ()):
        _wake(table_name)


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One message to put on a topic."""

    topic: str
    key: str | None
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)


class MessageSender(Protocol):
    """Sends a batch and returns only when the broker has confirmed every message."""

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None: ...


def event_headers(event: AnyEvent) -> dict[str, str]:
    """Headers that let tools route and trace an event without parsing it."""
    return {
        "event_type": event.TYPE,
        "event_id": str(event.event_id),
        "hazard_id": str(event.hazard_id),
        "producer": event.producer,
        "schema_version": str(event.schema_version),
    }


class Outbox:
    """Writes events into a service schema's outbox table, inside the caller's transaction."""

    def __init__(self, table: sa.Table, *, default_topic: str) -> None:
        self.table = table
        self.default_topic = default_topic
        self._insert_stmt: Any = None

    def rows(
        self,
        events: Sequence[AnyEvent],
        *,
        topic: str | None = None,
        traces: Mapping[uuid.UUID, Mapping[str, str]] | None = None,
    ) -> list[dict[str, object]]:
        """The outbox rows for these events.

        Each row stores the trace context of the span that wrote it (tracing on): ``traces``
        by event id when given (written in another task than the request's), else
        :func:`shared.tracing.outbox_headers`.
        """
        rows: list[dict[str, object]] = []
        for event in events:
            headers = event_headers(event)
            key = headers["hazard_id"]  # the hazard id as text, formatted once
            headers.update(
                traces[event.event_id]
                if traces is not None and event.event_id in traces
                else tracing.outbox_headers(event)
            )
            rows.append(
                {
                    "event_id": event.event_id,
                    "topic": topic or self.default_topic,
                    "key": key,
                    "value": dump_event(event),
                    "headers": headers,
                }
            )
        return rows

    async def add(self, session: AsyncSession, *events: AnyEvent, topic: str | None = None) -> None:
        """Stage events for publication; they are sent only if the caller's transaction commits."""
        if events:
            rows = self.rows(events, topic=topic)
            await session.execute(
                self._insert,
                {
                    "event_id": [r["event_id"] for r in rows],
                    "topic": [r["topic"] for r in rows],
                    "key": [r["key"] for r in rows],
                    "value": [r["value"] for r in rows],
                    "headers": [orjson.dumps(r["headers"]).decode() for r in rows],
                },
            )
            _wake_relays_on_commit(session, self.table)

    @property
    def _insert(self) -> Any:
        # One statement over arrays whatever the number of events (an executemany is one
        # execution per row in the database); ids follow the events' order.
        if self._insert_stmt is None:
            self._insert_stmt = sa.text(
                f"insert into {self.table.fullname} (event_id, topic, key, value, headers) "
                "select u.e, u.t, u.k, u.v, cast(u.h as jsonb) from unnest(cast(:event_id as uuid[]), "
                "cast(:topic as text[]), cast(:key as text[]), cast(:value as bytea[]), "
                "cast(:headers as text[])) with ordinality as u(e, t, k, v, h, n) order by u.n"
            )
        return self._insert_stmt

    async def add_raw(self, session: AsyncSession, messages: Sequence[OutgoingMessage]) -> None:
        """Stage raw messages (e.g. dead letters) whose event id may be absent or unusable."""
        if messages:
            await session.execute(
                sa.insert(self.table),
                [
                    {
                        "event_id": uuid.uuid4(),
                        "topic": m.topic,
                        "key": m.key,
                        "value": m.value,
                        "headers": m.headers,
                    }
                    for m in messages
                ],
            )
            _wake_relays_on_commit(session, self.table)

    async def pending(self, session: AsyncSession) -> int:
        """How many rows wait to be published."""
        query = sa.select(sa.func.count()).select_from(self.table).where(self.table.c.published_at.is_(None))
        return int((await session.execute(query)).scalar_one())


def wake_relays(table: sa.Table) -> None:
    """Wake this process's relays of ``table`` now (for rows committed without :class:`Outbox`)."""
    _wake(table.fullname)


def _wake_relays_on_commit(session: AsyncSession, table: sa.Table) -> None:
    """Have this session's next commit wake the relays of ``table`` in this process."""
    sync = session.sync_session
    pending = sync.info.get(_WAKE_ON_COMMIT)
    if pending is None:
        sync.info[_WAKE_ON_COMMIT] = {table.fullname}
        sa.event.listen(sync, "after_commit", _wake_after_commit, once=True)
    else:
        pending.add(table.fullname)


# Advisory locks of the two-key form, class (first key) of the outbox relays; the second key is
# hashtext(<schema>.outbox). The one-key form (migrations) is a separate space.
RELAY_LOCK_CLASS = 0x0B0C


def relay_lock_sql(table: sa.Table, *, wait: bool) -> sa.TextClause:
    """The statement taking the transaction lock that makes one relay at a time publish ``table``."""
    function = "pg_advisory_xact_lock" if wait else "pg_try_advisory_xact_lock"
    return sa.text(f"select {function}({RELAY_LOCK_CLASS}, hashtext('{table.fullname}')), clock_timestamp()")


class OutboxRelay:
    """Publishes outbox rows in batches, one relay of a table at a time; safe to run in every replica."""

    def __init__(
        self,
        *,
        table: sa.Table,
        sessions: async_sessionmaker[AsyncSession],
        sender: MessageSender,
        service: str,
        batch_size: int = 1000,
        poll_interval_s: float = 0.25,
        idle_poll_max_s: float | None = None,
        error_backoff_s: float = 1.0,
        retention: timedelta = timedelta(days=7),
        prune_batch_size: int = 5000,
        prune_interval_s: float = 60.0,
    ) -> None:
        self.table = table
        self.sessions = sessions
        self.sender = sender
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        # Idle, the poll slows down to this (doubling each empty round); default: it never slows.
        self.idle_poll_max_s = max(poll_interval_s, idle_poll_max_s or poll_interval_s)
        self.error_backoff_s = error_backoff_s
        self.retention = retention
        self.prune_batch_size = prune_batch_size
        self.prune_interval_s = prune_interval_s
        self._lock = relay_lock_sql(table, wait=False)
        self._claim = (
            sa.select(table.c.id, table.c.topic, table.c.key, table.c.value, table.c.headers)
            .where(table.c.published_at.is_(None))
            .order_by(table.c.id)
            .limit(batch_size)
        )
        # The batch's ids as one array parameter: one statement text whatever the batch size.
        self._stamp = (
            sa.update(table)
            .where(table.c.id == sa.any_(array_param("ids", table.c.id)))
            .values(published_at=sa.bindparam("stamp", type_=table.c.published_at.type))
        )
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._next_prune = 0.0
        self.last_error: BaseException | None = None

    async def relay_once(self) -> int:
        """Publish and stamp one batch; returns how many rows were published (0 if another relay has the turn)."""
        return (await self._relay_batch())[1]

    async def _relay_batch(self) -> tuple[bool, int]:
        """(whether this relay had the turn, rows published)."""
        async with self.sessions() as session, session.begin():
            turn, stamp = (await session.execute(self._lock)).one()
            if not turn:
                return False, 0
            rows = (await session.execute(self._claim)).all()
            if not rows:
                return True, 0
            await self.sender.send_many([_message(r) for r in rows])
            await session.execute(self._stamp, {"ids": [r.id for r in rows], "stamp": stamp})
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return True, len(rows)

    async def prune_once(self) -> int:
        """Delete at most ``prune_batch_size`` rows published longer than the retention ago."""
        t = self.table
        oldest = (
            sa.select(t.c.id)
            .where(t.c.published_at < sa.func.now() - self.retention)
            .order_by(t.c.published_at, t.c.id)
            .limit(self.prune_batch_size)
            .scalar_subquery()
        )
        async with self.sessions() as session, session.begin():
            result = await session.execute(sa.delete(t).where(t.c.id.in_(oldest)))
        pruned = int(getattr(result, "rowcount", 0) or 0)
        if pruned:
            metrics.OUTBOX_PRUNED.labels(self.service).inc(pruned)
        return pruned

    async def prune(self) -> int:
        """Prune in bounded batches (one transaction each) until nothing is past the retention."""
        total = 0
        while (pruned := await self.prune_once()) > 0:
            total += pruned
            if pruned < self.prune_batch_size:
                break
        return total

    async def replay(self, since: datetime, *, until: datetime | None = None) -> int:
        """Publish again every retained row of this outbox published since ``since`` (see :func:`replay_published`)."""
        sent = await replay_published(
            self.sessions, self.sender, [self.table], since, until=until, batch_size=self.batch_size
        )
        metrics.OUTBOX_REPLAYED.labels(self.service).inc(sent)
        return sent

    async def run(self) -> None:
        """Relay until stopped; a failure (broker or database away) is logged and retried.

        Between batches it waits for a commit of this process that added rows, or at most
        ``poll_interval_s`` (rows of other processes, or another replica's turn). While rounds
        find nothing and nobody wakes it, that poll doubles up to ``idle_poll_max_s`` (an idle
        relay costs almost nothing); rows, a wake-up or another replica's turn bring it back to
        ``poll_interval_s``. Every ``prune_interval_s`` it prunes what is past the retention.
        """
        waiting = _WAITING.setdefault(self.table.fullname, set())
        waiting.add(self._wake)
        backoff = IdleBackoff(self.poll_interval_s, self.idle_poll_max_s)
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    turn, sent = await self._relay_batch()
                    await self._prune_when_due()
                    self.last_error = None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.last_error = exc
                    metrics.OUTBOX_ERRORS.labels(self.service).inc()
                    log.warning("outbox relay failed, will retry: %s", exc, extra={"service": self.service})
                    await self._sleep(self.error_backoff_s)
                    continue
                if sent < self.batch_size:
                    # Another replica's turn counts as work: rows of ours may be waiting behind it.
                    if await self._wait_for_wake(backoff.next_wait(worked=sent > 0 or not turn)):
                        backoff.reset()
                else:
                    backoff.reset()
        finally:
            waiting.discard(self._wake)

    async def _wait_for_wake(self, seconds: float) -> bool:
        """Wait until woken (True) or ``seconds`` passed (False)."""
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    async def _prune_when_due(self) -> None:
        # One bounded batch between two relay batches: a large expired backlog never holds up
        # publishing; while full batches come back, the next one runs at the next round.
        now = time.monotonic()
        if now >= self._next_prune:
            pruned = await self.prune_once()
            self._next_prune = now if pruned >= self.prune_batch_size else now + self.prune_interval_s

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def stop(self) -> None:
        """Ask the loop to finish after the current batch."""
        self._stopping.set()
        self._wake.set()

    async def drain(self, *, timeout_s: float = 30.0) -> None:
        """Publish until no row waits (tests and shutdown); waits out another relay's turn."""
        async with asyncio.timeout(timeout_s):
            while True:
                turn, sent = await self._relay_batch()
                if turn and sent == 0:
                    return
                if not turn:
                    await asyncio.sleep(0.02)


async def replay_published(
    sessions: async_sessionmaker[AsyncSession],
    sender: MessageSender,
    tables: Sequence[sa.Table],
    since: datetime,
    *,
    until: datetime | None = None,
    batch_size: int = 1000,
) -> int:
    """Publish again, in publish order, every retained row of ``tables`` published at or after ``since``.

    The outboxes of several services are merged by ``(published_at, id)``, so one hazard's events
    from intake, dispatch and tracking go out again in the order they first did. The relay lock of
    every table is held for the whole replay: the ordinary relays publish newer rows only after it.
    Rows are not stamped again. Returns how many rows were sent.
    """
    ordered = sorted(tables, key=lambda t: t.fullname)
    pages = {t.fullname: _replay_page(t, since, until, batch_size) for t in ordered}
    buffered: dict[str, list[Any]] = {t.fullname: [] for t in ordered}
    after: dict[str, tuple[datetime, int] | None] = {t.fullname: None for t in ordered}
    open_tables = {t.fullname: t for t in ordered}
    sent = 0
    async with sessions() as holder, holder.begin():
        for table in ordered:
            await holder.execute(relay_lock_sql(table, wait=True))
        while True:
            async with sessions() as session:
                for name, table in list(open_tables.items()):
                    if buffered[name]:
                        continue
                    query = pages[name]
                    cursor = after[name]
                    if cursor is not None:
                        query = query.where(sa.tuple_(table.c.published_at, table.c.id) > cursor)
                    rows = list((await session.execute(query)).all())
                    if rows:
                        buffered[name] = rows
                        after[name] = (rows[-1].published_at, rows[-1].id)
                    else:
                        del open_tables[name]
            batch: list[OutgoingMessage] = []
            # Merge while every outbox that may still have rows has some in hand.
            while len(batch) < batch_size and all(buffered[n] for n in open_tables):
                candidates = [n for n in buffered if buffered[n]]
                if not candidates:
                    break
                first = min(candidates, key=lambda n: (buffered[n][0].published_at, n, buffered[n][0].id))
                batch.append(_message(buffered[first].pop(0)))
            if not batch:
                break
            await sender.send_many(batch)
            sent += len(batch)
    log.info("outbox replay: %d rows published since %s sent again", sent, since)
    return sent


def _replay_page(table: sa.Table, since: datetime, until: datetime | None, limit: int) -> Any:
    t = table
    page = (
        sa.select(t.c.id, t.c.topic, t.c.key, t.c.value, t.c.headers, t.c.published_at)
        .where(t.c.published_at >= since)
        .order_by(t.c.published_at, t.c.id)
        .limit(limit)
    )
    return page if until is None else page.where(t.c.published_at < until)


def _message(row: Any) -> OutgoingMessage:
    return OutgoingMessage(topic=row.topic, key=row.key, value=row.value, headers=dict(row.headers))
