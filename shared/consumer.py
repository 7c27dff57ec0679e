"""Idempotent, batch-at-a-time consumption of the lifecycle topic, with bounded retry and dead letters.

One batch from the broker is applied in one database transaction: the ids of
the events applied are inserted into the service's ``inbox`` table in that same
transaction, so a redelivered event is skipped. Offsets are committed only
after the transaction commits (``AckPolicy.MANUAL``).

Failures are sorted by whose fault they are:

* a message that is not a valid event (bad JSON, unknown type or version,
  failed validation) goes straight to the dead-letter topic;
* an infrastructure failure (database or broker away) is nobody's message's
  fault: the batch is rewound and retried, without limit, after a pause;
* any other failure is retried ``retry_attempts`` times; then each event is
  applied on its own, and the ones that still fail go to the dead-letter topic
  with the error, so one poison message never blocks its partition.

A handler refuses a single event that does not fit (say, a verification of a
case never rectified) with :meth:`BatchContext.reject`; the dead letter rides
in the same transaction through the outbox.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics
from shared.db import database_now
from shared.events import EVENT_TYPES, AnyEvent, LifecycleEvent, parse_event
from shared.outbox import MessageSender, Outbox, OutgoingMessage

log = logging.getLogger(__name__)

current_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)
current_hazard_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("hazard_id", default=None)

_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "40001", "40P01", "55P03")


class Record(Protocol):
    """The parts of a Kafka consumer record the consumer reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a message came from."""

    topic: str
    partition: int
    offset: int

    def headers(self) -> dict[str, str]:
        return {
            "dlt_origin_topic": self.topic,
            "dlt_origin_partition": str(self.partition),
            "dlt_origin_offset": str(self.offset),
        }


class TransientError(Exception):
    """The batch could not be applied because something it depends on is away; retry it later."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the infrastructure's (retry without limit) rather than the message's."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientError | ConnectionError | TimeoutError | OSError):
            return True
        if isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sa.exc.TimeoutError | sa.exc.InterfaceError):
            return True
        sqlstate = getattr(current, "sqlstate", None) or getattr(
            getattr(current, "orig", None), "sqlstate", None
        )
        if isinstance(sqlstate, str) and sqlstate.startswith(_TRANSIENT_SQLSTATE_PREFIXES):
            return True
        name = type(current).__name__
        if name in {
            "ConnectionDoesNotExistError",
            "CannotConnectNowError",
            "ConnectionFailureError",
            "InterfaceError",
            "KafkaConnectionError",
            "KafkaTimeoutError",
            "RequestTimedOutError",
            "NodeNotReadyError",
            "NotLeaderForPartitionError",
            "LeaderNotAvailableError",
        }:
            return True
        current = current.__cause__ or current.__context__
    return False


@dataclass
class BatchContext:
    """What a handler gets with its events: the transaction, the outbox and the way to refuse one event."""

    session: AsyncSession
    outbox: Outbox
    now: datetime  # the database's clock at the start of the batch (shared.db.database_now)
    service: str
    dead_letter_topic: str
    origins: dict[uuid.UUID, Origin] = field(default_factory=dict)
    raw: dict[uuid.UUID, bytes] = field(default_factory=dict)
    rejected: list[tuple[AnyEvent, str]] = field(default_factory=list)

    async def reject(self, event: AnyEvent, reason: str) -> None:
        """Refuse one event: it goes to the dead-letter topic with the reason, in this transaction."""
        self.rejected.append((event, reason))
        origin = self.origins.get(event.event_id)
        headers = {
            "event_id": str(event.event_id),
            "event_type": event.TYPE,
            "hazard_id": str(event.hazard_id),
            "dlt_reason": "rejected",
            "dlt_error": reason[:1000],
            "dlt_consumer": self.service,
            "dlt_failed_at": self.now.isoformat(),
            **(origin.headers() if origin else {}),
        }
        await self.outbox.add_raw(
            self.session,
            [
                OutgoingMessage(
                    topic=self.dead_letter_topic,
                    key=str(event.hazard_id),
                    value=self.raw.get(event.event_id) or event.model_dump_json().encode(),
                    headers=headers,
                )
            ],
        )
        metrics.DEAD_LETTERED.labels(self.service, "rejected").inc()
        log.warning(
            "event refused: %s",
            reason,
            extra={
                "event_id": str(event.event_id),
                "hazard_id": str(event.hazard_id),
                "event_type": event.TYPE,
            },
        )


Handler = Callable[[BatchContext, Sequence[LifecycleEvent]], Awaitable[None]]
Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


class EventConsumer:
    """Applies batches of lifecycle records through a handler, exactly once in effect."""

    def __init__(
        self,
        *,
        service: str,
        sessions: async_sessionmaker[AsyncSession],
        inbox: sa.Table,
        outbox: Outbox,
        handler: Handler,
        sender: MessageSender,
        dead_letter_topic: str,
        interested: frozenset[str] | None = None,
        retry_attempts: int = 3,
        retry_backoff_s: float = 0.2,
        clock: Clock = _utcnow,
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.inbox = inbox
        # One statement text whatever the batch size (a VALUES list would be compiled per size and
        # never reuse a prepared statement).
        ids = sa.bindparam("ids", type_=pg.ARRAY(pg.UUID(as_uuid=True)))
        self._inbox_insert = (
            pg_insert(inbox)
            .from_select(["event_id"], sa.select(sa.func.unnest(ids)))
            .on_conflict_do_nothing()
            .returning(inbox.c.event_id)
        )
        self.outbox = outbox
        self.handler = handler
        self.sender = sender
        self.dead_letter_topic = dead_letter_topic
        # Interested in every type is interested in all: no header to look at.
        self.interested = None if interested is not None and interested >= EVENT_TYPES.keys() else interested
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self.clock = clock

    # ------------------------------------------------------------------ entry points

    async def process(self, records: Sequence[Record]) -> None:
        """Apply one batch; returns when every record is applied, skipped or dead-lettered.

        Raises :class:`TransientError` when the batch must be retried later (nothing was lost
        or half-applied: the transaction rolled back and offsets must not be committed).
        """
        started = time.perf_counter()
        metrics.BATCH_SIZE.labels(self.service).observe(len(records))
        events, raw, origins = await self._decode(records)
        if events:
            await self._apply_with_retry(events, raw, origins)
        metrics.BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)

    # ------------------------------------------------------------------ decoding

    async def _decode(
        self, records: Sequence[Record]
    ) -> tuple[list[LifecycleEvent], dict[uuid.UUID, bytes], dict[uuid.UUID, Origin]]:
        events: list[LifecycleEvent] = []
        raw: dict[uuid.UUID, bytes] = {}
        origins: dict[uuid.UUID, Origin] = {}
        dead: list[OutgoingMessage] = []
        interested = self.interested
        ignored = 0
        for record in records:
            if interested is not None:
                kind = _header_type(record)
                if kind is not None and kind not in interested:
                    # Our producers name the type in a header: skip what we don't apply without parsing
                    # it. A record without the header is parsed (and dead-lettered if it is no event).
                    ignored += 1
                    continue
            origin = Origin(record.topic, record.partition, record.offset)
            value = record.value or b""
            try:
                event = parse_event(value)
            except ValidationError as exc:
                dead.append(self._dead_letter(record, origin, "invalid", _validation_summary(exc)))
                continue
            if interested is not None and event.TYPE not in interested:
                ignored += 1
                continue
            if event.event_id in raw:  # the same event twice in one batch
                metrics.EVENTS_CONSUMED.labels(self.service, "duplicate").inc()
                continue
            events.append(event)
            raw[event.event_id] = value
            origins[event.event_id] = origin
        if ignored:
            metrics.EVENTS_CONSUMED.labels(self.service, "ignored").inc(ignored)
        if dead:
            try:
                await self.sender.send_many(dead)
            except Exception as exc:
                raise TransientError(f"dead-letter publish failed: {exc}") from exc
            metrics.DEAD_LETTERED.labels(self.service, "invalid").inc(len(dead))
            metrics.EVENTS_CONSUMED.labels(self.service, "dead_lettered").inc(len(dead))
        return events, raw, origins

    def _dead_letter(self, record: Record, origin: Origin, reason: str, error: str) -> OutgoingMessage:
        headers = {k: v.decode(errors="replace") for k, v in (record.headers or ())}
        headers.update(
            {
                "dlt_reason": reason,
                "dlt_error": error[:1000],
                "dlt_consumer": self.service,
                "dlt_failed_at": self.clock().isoformat(),
                **origin.headers(),
            }
        )
        log.warning(
            "message sent to dead-letter topic: %s",
            error[:300],
            extra={
                "dlt_reason": reason,
                **origin.headers(),
                "event_id": headers.get("event_id"),
                "hazard_id": headers.get("hazard_id"),
            },
        )
        key = record.key.decode(errors="replace") if record.key else None
        return OutgoingMessage(self.dead_letter_topic, key, record.value or b"", headers)

    # ------------------------------------------------------------------ applying

    async def _apply_with_retry(
        self, events: list[LifecycleEvent], raw: dict[uuid.UUID, bytes], origins: dict[uuid.UUID, Origin]
    ) -> None:
        last: BaseException | None = None
        for attempt in range(1, self.retry_attempts + 1):
            try:
                await self._apply(events, raw, origins)
                return
            except Exception as exc:
                if is_transient(exc):
                    metrics.CONSUMER_RETRIES.labels(self.service, "transient").inc()
                    raise TransientError(str(exc)) from exc
                last = exc
                metrics.CONSUMER_RETRIES.labels(self.service, "failure").inc()
                log.warning(
                    "batch of %d failed (attempt %d/%d): %r", len(events), attempt, self.retry_attempts, exc
                )
                if attempt < self.retry_attempts:
                    await asyncio.sleep(self.retry_backoff_s * attempt)
        if len(events) == 1:
            await self._dead_letter_applied(events[0], raw, origins, last)
            return
        # Isolate the poison: apply each event on its own.
        for event in events:
            await self._apply_with_retry([event], raw, origins)

    async def _apply(
        self, events: list[LifecycleEvent], raw: dict[uuid.UUID, bytes], origins: dict[uuid.UUID, Origin]
    ) -> None:
        async with self.sessions() as session, session.begin():
            fresh_ids = set(
                (await session.execute(self._inbox_insert, {"ids": [e.event_id for e in events]})).scalars()
            )
            fresh = [e for e in events if e.event_id in fresh_ids]
            if len(fresh) < len(events):
                metrics.EVENTS_CONSUMED.labels(self.service, "duplicate").inc(len(events) - len(fresh))
            if not fresh:
                return
            ctx = BatchContext(
                session=session,
                outbox=self.outbox,
                now=await database_now(session),
                service=self.service,
                dead_letter_topic=self.dead_letter_topic,
                origins=origins,
                raw=raw,
            )
            await self.handler(ctx, fresh)
        metrics.EVENTS_CONSUMED.labels(self.service, "applied").inc(len(fresh) - len(ctx.rejected))
        metrics.EVENTS_CONSUMED.labels(self.service, "dead_lettered").inc(len(ctx.rejected))

    async def _dead_letter_applied(
        self,
        event: LifecycleEvent,
        raw: dict[uuid.UUID, bytes],
        origins: dict[uuid.UUID, Origin],
        error: BaseException | None,
    ) -> None:
        """Give up on one event: dead-letter it and record it as applied, in one transaction."""
        now = self.clock()
        origin = origins.get(event.event_id)
        message = OutgoingMessage(
            self.dead_letter_topic,
            str(event.hazard_id),
            raw.get(event.event_id, b""),
            {
                "event_id": str(event.event_id),
                "event_type": event.TYPE,
                "hazard_id": str(event.hazard_id),
                "dlt_reason": "failed",
                "dlt_error": f"{type(error).__name__}: {error}"[:1000],
                "dlt_consumer": self.service,
                "dlt_failed_at": now.isoformat(),
                **(origin.headers() if origin else {}),
            },
        )
        try:
            async with self.sessions() as session, session.begin():
                await session.execute(
                    pg_insert(self.inbox).values(event_id=event.event_id).on_conflict_do_nothing()
                )
                await self.outbox.add_raw(session, [message])
        except Exception as exc:
            raise TransientError(f"could not record dead letter: {exc}") from exc
        metrics.DEAD_LETTERED.labels(self.service, "failed").inc()
        metrics.EVENTS_CONSUMED.labels(self.service, "dead_lettered").inc()
        log.error(
            "event failed %d times, sent to dead-letter topic: %r",
            self.retry_attempts,
            error,
            extra={
                "event_id": str(event.event_id),
                "hazard_id": str(event.hazard_id),
                "event_type": event.TYPE,
            },
        )


def _header_type(record: Record) -> str | None:
    for key, value in record.headers or ():
        if key == "event_type":
            return value.decode(errors="replace")
    return None


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or '(root)'}: {err.get('msg')}")
    return "; ".join(parts) or str(exc)


def bind_event_context(event: Any) -> None:
    """Put the event and hazard ids where every log line of this task will find them."""
    current_event_id.set(str(event.event_id))
    current_hazard_id.set(str(event.hazard_id))
