"""Transactional outbox: events are rows committed with the business change, then relayed to Kafka.

Writers call :meth:`Outbox.add` inside their own transaction. The :class:`OutboxRelay`
claims the oldest unsent rows with ``FOR UPDATE SKIP LOCKED`` (so several relays,
one per replica, never claim the same row), publishes them in one batch, waits for
the broker to confirm every one, then deletes them in the same transaction. A crash
between publish and commit republishes the batch: delivery is at-least-once and the
event ids are unchanged, so consumers deduplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from shared import metrics
from shared.events import AnyEvent, dump_event

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

    def rows(self, events: Sequence[AnyEvent], *, topic: str | None = None) -> list[dict[str, object]]:
        """The outbox rows for these events."""
        return [
            {
                "event_id": event.event_id,
                "topic": topic or self.default_topic,
                "key": str(event.hazard_id),
                "value": dump_event(event),
                "headers": event_headers(event),
            }
            for event in events
        ]

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
                    "headers": [json.dumps(r["headers"]) for r in rows],
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
        return int((await session.execute(sa.select(sa.func.count()).select_from(self.table))).scalar_one())


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


class OutboxRelay:
    """Publishes outbox rows in batches; safe to run in every replica at once."""

    def __init__(
        self,
        *,
        table: sa.Table,
        sessions: async_sessionmaker[AsyncSession],
        sender: MessageSender,
        service: str,
        batch_size: int = 1000,
        poll_interval_s: float = 0.25,
        error_backoff_s: float = 1.0,
    ) -> None:
        self.table = table
        self.sessions = sessions
        self.sender = sender
        self.service = service
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.error_backoff_s = error_backoff_s
        self._claim = (
            sa.select(table.c.id, table.c.topic, table.c.key, table.c.value, table.c.headers)
            .order_by(table.c.id)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self.last_error: BaseException | None = None

    async def relay_once(self) -> int:
        """Claim, publish and delete one batch; returns how many rows were published."""
        async with self.sessions() as session, session.begin():
            rows = (await session.execute(self._claim)).all()
            if not rows:
                return 0
            await self.sender.send_many(
                [
                    OutgoingMessage(topic=r.topic, key=r.key, value=r.value, headers=dict(r.headers))
                    for r in rows
                ]
            )
            await session.execute(sa.delete(self.table).where(self.table.c.id.in_([r.id for r in rows])))
        metrics.OUTBOX_PUBLISHED.labels(self.service).inc(len(rows))
        return len(rows)

    async def run(self) -> None:
        """Relay until stopped; a failure (broker or database away) is logged and retried.

        Between batches it waits for a commit of this process that added rows, or at most
        ``poll_interval_s`` (rows of other processes).
        """
        waiting = _WAITING.setdefault(self.table.fullname, set())
        waiting.add(self._wake)
        try:
            while not self._stopping.is_set():
                self._wake.clear()
                try:
                    sent = await self.relay_once()
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
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
        finally:
            waiting.discard(self._wake)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def stop(self) -> None:
        """Ask the loop to finish after the current batch."""
        self._stopping.set()
        self._wake.set()

    async def drain(self, *, timeout_s: float = 30.0) -> None:
        """Publish until the outbox is empty (tests and shutdown)."""
        async with asyncio.timeout(timeout_s):
            while await self.relay_once():
                pass
