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
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.events import AnyEvent, dump_event

log = logging.getLogger(__name__)


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
            await session.execute(sa.insert(self.table), self.rows(events, topic=topic))

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

    async def pending(self, session: AsyncSession) -> int:
        """How many rows wait to be published."""
        return int((await session.execute(sa.select(sa.func.count()).select_from(self.table))).scalar_one())


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
        poll_interval_s: float = 0.05,
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
        """Relay until stopped; a failure (broker or database away) is logged and retried."""
        while not self._stopping.is_set():
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
                await self._sleep(self.poll_interval_s)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    def stop(self) -> None:
        """Ask the loop to finish after the current batch."""
        self._stopping.set()

    async def drain(self, *, timeout_s: float = 30.0) -> None:
        """Publish until the outbox is empty (tests and shutdown)."""
        async with asyncio.timeout(timeout_s):
            while await self.relay_once():
                pass
