"""Idempotent, batch-at-a-time consumption of the lifecycle topic, with bounded retry and dead letters.

One batch from the broker is applied in one database transaction: the ids of
the events applied are recorded in the service's inbox (``inbox_batches``, one
row per batch holding the ids as an array, :func:`shared.db.inbox_table`) in
that same transaction, so a redelivered event is skipped by its id. The
transaction first takes an advisory lock per partition of the batch
(:func:`shared.db.inbox_lock_keys`): a consumer applying the same events at
the same time (a rebalance's overlap) waits, then finds them recorded.
Offsets are committed only after the transaction commits
(``AckPolicy.MANUAL``).

Failures are sorted by whose fault they are:

* a message that is not a valid event (bad JSON, unknown type or version,
  failed validation) goes straight to the dead-letter topic;
* a failure of the environment (:func:`environment_fault`: database or broker
  away, a table or column missing, a grant revoked, a database missing) is
  nobody's message's fault: the consumer stops progressing, the batch is
  rewound and retried without limit (with capped backoff), and the consumer
  says it is blocked, and why (:attr:`EventConsumer.blocked`: readiness, the
  ``hazard_consumer_blocked`` gauge). Nothing is dead-lettered; once the
  environment is fixed, progress resumes by itself;
* any other failure is retried ``retry_attempts`` times; then each event is
  applied on its own, and the ones that still fail go to the dead-letter topic
  with the error, so one poison message never blocks its partition.

A handler refuses a single event that does not fit (say, a verification of a
case never rectified) with :meth:`BatchContext.reject`; the dead letter rides
in the same transaction through the outbox.

A dead-lettered event is not recorded in the inbox: replayed later
(``python -m shared.replay_dead_letters``), it is applied. A replayed record
carries a ``replay_for`` header naming the one service that applies it; every
other service skips it unread. Dead letters are bounded in size
(:mod:`shared.deadletter`) so that one can always be sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import metrics, tracing
from shared.db import inbox_lock_keys, inbox_record_sql
from shared.deadletter import REPLAY_FOR, bound_dead_letter
from shared.events import EVENT_TYPES, AnyEvent, LifecycleEvent, parse_event
from shared.outbox import MessageSender, Outbox, OutgoingMessage
from shared.uow import SqlUnitOfWork, no_repository

log = logging.getLogger(__name__)

_E = TypeVar("_E")

# The ids as the event has them (a UUID): a log line's filter writes them as text, only when a line
# is written (formatting two UUIDs for every event applied was 1% of a consumer's profiled time).
current_event_id: contextvars.ContextVar[object | None] = contextvars.ContextVar("event_id", default=None)
current_hazard_id: contextvars.ContextVar[object | None] = contextvars.ContextVar("hazard_id", default=None)

# SQLSTATE prefixes that are the environment's fault, by kind (the first match wins).
_ENVIRONMENT_SQLSTATES: tuple[tuple[str, str], ...] = (
    ("40001", "contention"),  # serialization failure
    ("40P01", "contention"),  # deadlock
    ("55P03", "contention"),  # lock not available
    ("08", "unavailable"),  # connection exceptions
    ("57P", "unavailable"),  # operator intervention: shutdown, cannot connect now
    ("53", "resources"),  # insufficient resources: disk full, out of memory, too many connections
    ("42501", "permission"),  # insufficient privilege
    ("28", "permission"),  # invalid authorization specification (bad password, no such role)
    ("3D", "database_missing"),  # invalid catalog name
    ("42", "schema"),  # undefined table or column...: code ahead of its migration
    ("3F", "schema"),  # invalid schema name
    ("0A", "schema"),  # feature not supported (a cached plan invalidated by a schema change)
)
ENVIRONMENT_KINDS = (
    "contention",
    "unavailable",
    "resources",
    "permission",
    "database_missing",
    "schema",
    "broker",
)
"""What ``hazard_consumer_blocked{reason}`` can say."""
_UNAVAILABLE_NAMES = frozenset(
    {
        "ConnectionDoesNotExistError",
        "CannotConnectNowError",
        "ConnectionFailureError",
        "InterfaceError",
    }
)
_BROKER_NAMES = frozenset(
    {
        "KafkaConnectionError",
        "KafkaTimeoutError",
        "RequestTimedOutError",
        "NodeNotReadyError",
        "NotLeaderForPartitionError",
        "LeaderNotAvailableError",
    }
)
# Errors of the code or the data: "permission denied" in their text is not the environment speaking.
_NOT_ENVIRONMENT_TEXT = (ValueError, LookupError, TypeError, AssertionError)


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


# Under aiokafka's default max_request_size (1 MiB) and Kafka's default message.max.bytes.
DEAD_LETTER_MAX_BYTES = 1_000_000


class TransientError(Exception):
    """The batch could not be applied because of the environment; retry it later, without limit."""

    def __init__(self, message: str, fault: EnvironmentFault | None = None) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True, slots=True)
class EnvironmentFault:
    """A failure that is the environment's, not the message's: its kind and what it said."""

    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class Blocked:
    """Why a consumer is not progressing, since when (UTC) and how many attempts failed in a row."""

    kind: str
    detail: str
    since: datetime
    attempts: int


def _sqlstate(exc: BaseException) -> str | None:
    sqlstate = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "orig", None), "sqlstate", None)
    return sqlstate if isinstance(sqlstate, str) else None


def _detail(exc: BaseException, sqlstate: str | None) -> str:
    """What the deepest exception with this SQLSTATE says (the driver's own words, no SQL or parameters)."""
    deepest = exc
    while sqlstate is not None and deepest.__cause__ is not None and _sqlstate(deepest.__cause__) == sqlstate:
        deepest = deepest.__cause__
    text = str(deepest).splitlines()[0] if str(deepest) else ""
    if sqlstate is not None:
        return f"{text} (SQLSTATE {sqlstate})"[:500]
    return f"{type(deepest).__name__}: {text}"[:500]


def environment_fault(exc: BaseException) -> EnvironmentFault | None:
    """The environment's failure behind ``exc`` (database or broker), or None when it is the message's.

    The environment's: connection and server availability (SQLSTATE 08, 57P), resources (53),
    contention (40001, 40P01, 55P03), missing or changed objects (42 undefined table or column,
    3F, 0A), privileges and authentication (42501, 28, any "permission denied"), a missing
    database (3D), and the broker or network away. Such a failure never dead-letters a message.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = _sqlstate(current)
        if sqlstate is not None:
            for prefix, kind in _ENVIRONMENT_SQLSTATES:
                if sqlstate.startswith(prefix):
                    return EnvironmentFault(kind, _detail(current, sqlstate))
        if isinstance(current, TransientError) and current.fault is not None:
            return current.fault
        if isinstance(current, PermissionError) or (
            not isinstance(current, _NOT_ENVIRONMENT_TEXT) and "permission denied" in str(current).lower()
        ):
            return EnvironmentFault("permission", _detail(current, sqlstate))
        name = type(current).__name__
        if name in _BROKER_NAMES:
            return EnvironmentFault("broker", _detail(current, None))
        if (
            isinstance(
                current,
                ConnectionError | TimeoutError | OSError | sa.exc.TimeoutError | sa.exc.InterfaceError,
            )
            or (isinstance(current, sa.exc.DBAPIError) and current.connection_invalidated)
            or name in _UNAVAILABLE_NAMES
        ):
            return EnvironmentFault("unavailable", _detail(current, None))
        current = current.__cause__ or current.__context__
    if isinstance(exc, TransientError):
        return EnvironmentFault("unavailable", str(exc)[:500])
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a failure is the environment's (retry without limit) rather than the message's."""
    return environment_fault(exc) is not None


@dataclass(kw_only=True)
class BatchContext(SqlUnitOfWork[Any]):
    """A consumer's unit of work: the batch's transaction, its repository, the database's now
    (read at the start of the batch), the outbox, and the way to refuse one event."""

    repo: Any = None
    service: str
    dead_letter_topic: str
    origins: dict[uuid.UUID, Origin] = field(default_factory=dict)
    raw: dict[uuid.UUID, bytes] = field(default_factory=dict)
    rejected: list[tuple[AnyEvent, str]] = field(default_factory=list)
    dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES

    def each(self, events: Sequence[_E]) -> Iterator[_E]:
        """The events one by one, each one's ids on every log line written while the caller handles it."""
        return each_event(events)

    async def reject(self, event: AnyEvent, reason: str) -> None:
        """Refuse one event: it goes to the dead-letter topic with the reason, in this transaction.

        The event is not recorded as applied: replayed later, it is applied then.
        """
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
                bound_dead_letter(
                    OutgoingMessage(
                        topic=self.dead_letter_topic,
                        key=str(event.hazard_id),
                        value=self.raw.get(event.event_id) or event.model_dump_json().encode(),
                        headers=headers,
                    ),
                    max_bytes=self.dead_letter_max_bytes,
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
        dead_letter_max_bytes: int = DEAD_LETTER_MAX_BYTES,
        clock: Clock = _utcnow,
        repository: Callable[[AsyncSession], Any] = no_repository,
    ) -> None:
        self.service = service
        self.sessions = sessions
        self.repository = repository
        self.inbox = inbox
        # Lock, look up and record in one statement (shared.db.inbox_record_sql).
        self._inbox_record = inbox_record_sql(inbox)
        # A batch whose events were refused in part: its row keeps the others; all of them, no row.
        self._inbox_keep = sa.update(inbox).where(inbox.c.id == sa.bindparam("batch_id"))
        self._inbox_drop = sa.delete(inbox).where(inbox.c.id == sa.bindparam("batch_id"))
        self.outbox = outbox
        self.handler = handler
        self.sender = sender
        self.dead_letter_topic = dead_letter_topic
        # Interested in every type is interested in all: no header to look at.
        self.interested = None if interested is not None and interested >= EVENT_TYPES.keys() else interested
        self.retry_attempts = retry_attempts
        self.retry_backoff_s = retry_backoff_s
        self.dead_letter_max_bytes = dead_letter_max_bytes
        self.clock = clock
        self.blocked: Blocked | None = None
        """Set while the environment keeps batches from being applied; cleared by the next success."""
        for kind in ENVIRONMENT_KINDS:  # every series exists from the start, at 0
            metrics.CONSUMER_BLOCKED.labels(service, kind).set(0)

    # ------------------------------------------------------------------ entry points

    async def process(self, records: Sequence[Record]) -> None:
        """Apply one batch; returns when every record is applied, skipped or dead-lettered.

        Raises :class:`TransientError` when the batch must be retried later (nothing was lost
        or half-applied: the transaction rolled back and offsets must not be committed); the
        consumer is then :attr:`blocked` until a batch goes through.
        """
        started = time.perf_counter()
        metrics.BATCH_SIZE.labels(self.service).observe(len(records))
        spans: tracing.ConsumeSpans | None = None
        try:
            events, raw, origins = await self._decode(records)
            if events:
                if tracing.enabled():
                    spans = self._consume_spans(records, events, origins)
                    with spans.applying():
                        await self._apply_with_retry(events, raw, origins)
                else:
                    await self._apply_with_retry(events, raw, origins)
        except TransientError as exc:
            if spans is not None:
                spans.end("retried", exc)
            self._hold(exc.fault or environment_fault(exc) or EnvironmentFault("unavailable", str(exc)[:500]))
            raise
        except BaseException as exc:
            if spans is not None:
                spans.end("failed", exc)
            raise
        if spans is not None:
            spans.end("applied")
        self._release()
        metrics.BATCH_SECONDS.labels(self.service).observe(time.perf_counter() - started)

    def _consume_spans(
        self, records: Sequence[Record], events: Sequence[LifecycleEvent], origins: dict[uuid.UUID, Origin]
    ) -> tracing.ConsumeSpans:
        """The batch's span and one per event, each a child of the span that published it."""
        by_origin = {(r.topic, r.partition, r.offset): r for r in records}
        parents = {}
        for event in events:
            origin = origins[event.event_id]
            record = by_origin.get((origin.topic, origin.partition, origin.offset))
            parents[event.event_id] = tracing.extract_record(record.headers if record is not None else None)
        topic = records[0].topic if records else ""
        return tracing.ConsumeSpans(self.service, topic, parents, events)

    def _hold(self, fault: EnvironmentFault) -> None:
        previous = self.blocked
        if previous is not None and previous.kind != fault.kind:
            metrics.CONSUMER_BLOCKED.labels(self.service, previous.kind).set(0)
        self.blocked = Blocked(
            kind=fault.kind,
            detail=fault.detail,
            since=previous.since if previous is not None else self.clock(),
            attempts=previous.attempts + 1 if previous is not None else 1,
        )
        metrics.CONSUMER_BLOCKED.labels(self.service, fault.kind).set(1)
        metrics.CONSUMER_ENVIRONMENT_ERRORS.labels(self.service, fault.kind).inc()
        log.log(
            logging.WARNING if fault.kind == "contention" else logging.ERROR,
            "consumer blocked by the environment (%s), the batch waits: %s",
            fault.kind,
            fault.detail,
            extra={"blocked_reason": fault.kind, "attempts": self.blocked.attempts},
        )

    def _release(self) -> None:
        previous = self.blocked
        if previous is None:
            return
        self.blocked = None
        metrics.CONSUMER_BLOCKED.labels(self.service, previous.kind).set(0)
        log.warning(
            "consumer progressing again after %d failed attempts (%s)",
            previous.attempts,
            previous.kind,
            extra={"blocked_reason": previous.kind},
        )

    def retry_pause_s(self, base_s: float, max_s: float) -> float:
        """How long to wait before the next attempt of a held-back batch (:func:`blocked_pause_s`)."""
        return blocked_pause_s(self.blocked.attempts if self.blocked is not None else 1, base_s, max_s)

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
            kind, replay_for = _routing_headers(record)
            if replay_for is not None and replay_for != self.service:
                ignored += 1  # a dead letter replayed for another service: not ours to apply
                continue
            if interested is not None and kind is not None and kind not in interested:
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
                fault = environment_fault(exc) or EnvironmentFault("broker", _detail(exc, None))
                raise TransientError(f"dead-letter publish failed: {exc}", fault) from exc
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
        return bound_dead_letter(
            OutgoingMessage(self.dead_letter_topic, key, record.value or b"", headers),
            max_bytes=self.dead_letter_max_bytes,
        )

    # ------------------------------------------------------------------ applying

    async def _apply_with_retry(
        self, events: list[LifecycleEvent], raw: dict[uuid.UUID, bytes], origins: dict[uuid.UUID, Origin]
    ) -> None:
        if len(events) == 1:
            # One event (a poison being isolated, or a batch of one): its ids go on every log line.
            with event_context(events[0]):
                await self._apply_with_retry_inner(events, raw, origins)
            return
        await self._apply_with_retry_inner(events, raw, origins)

    async def _apply_with_retry_inner(
        self, events: list[LifecycleEvent], raw: dict[uuid.UUID, bytes], origins: dict[uuid.UUID, Origin]
    ) -> None:
        last: BaseException | None = None
        for attempt in range(1, self.retry_attempts + 1):
            try:
                await self._apply(events, raw, origins)
                return
            except Exception as exc:
                fault = environment_fault(exc)
                if fault is not None:
                    metrics.CONSUMER_RETRIES.labels(self.service, "transient").inc()
                    raise TransientError(str(exc), fault) from exc
                last = exc
                metrics.CONSUMER_RETRIES.labels(self.service, "failure").inc()
                log.warning(
                    "batch of %d failed (attempt %d/%d): %r", len(events), attempt, self.retry_attempts, exc
                )
                if attempt < self.retry_attempts:
                    await asyncio.sleep(self.retry_backoff_s * attempt)
        if len(events) == 1:
            await self._dead_letter_failed(events[0], raw, origins, last)
            return
        # Isolate the poison: apply each event on its own.
        for event in events:
            await self._apply_with_retry([event], raw, origins)

    async def _apply(
        self, events: list[LifecycleEvent], raw: dict[uuid.UUID, bytes], origins: dict[uuid.UUID, Origin]
    ) -> None:
        async with self.sessions() as session, session.begin():
            keys = inbox_lock_keys(self.inbox, {origins[e.event_id].partition for e in events})
            recorded = (
                await session.execute(
                    self._inbox_record, {"lock_keys": keys, "ids": [e.event_id for e in events]}
                )
            ).one()
            seen = set(recorded.seen)
            fresh = [e for e in events if e.event_id not in seen] if seen else events
            if len(fresh) < len(events):
                metrics.EVENTS_CONSUMED.labels(self.service, "duplicate").inc(len(events) - len(fresh))
            if not fresh:
                return
            ctx = BatchContext(
                session=session,
                outbox=self.outbox,
                now=recorded.now,  # the database's clock as the inbox took the batch
                repo=self.repository(session),
                service=self.service,
                dead_letter_topic=self.dead_letter_topic,
                origins=origins,
                raw=raw,
                dead_letter_max_bytes=self.dead_letter_max_bytes,
            )
            await self.handler(ctx, fresh)
            if ctx.rejected:
                await self._forget_refused(session, recorded.batch_id, fresh, ctx.rejected)
        metrics.EVENTS_CONSUMED.labels(self.service, "applied").inc(len(fresh) - len(ctx.rejected))
        metrics.EVENTS_CONSUMED.labels(self.service, "dead_lettered").inc(len(ctx.rejected))

    async def _forget_refused(
        self,
        session: AsyncSession,
        batch_id: int,
        fresh: Sequence[LifecycleEvent],
        rejected: Sequence[tuple[AnyEvent, str]],
    ) -> None:
        """Refused, not applied: take the refused ids out of the batch's row, so that a replay of
        their dead letters finds them new."""
        refused = {event.event_id for event, _ in rejected}
        kept = [e.event_id for e in fresh if e.event_id not in refused]
        if kept:
            await session.execute(self._inbox_keep.values(event_ids=kept), {"batch_id": batch_id})
        else:
            await session.execute(self._inbox_drop, {"batch_id": batch_id})

    async def _dead_letter_failed(
        self,
        event: LifecycleEvent,
        raw: dict[uuid.UUID, bytes],
        origins: dict[uuid.UUID, Origin],
        error: BaseException | None,
    ) -> None:
        """Give up on one event: stage its dead letter through the outbox.

        The event is not recorded as applied: a replay of the dead letter (once the cause is
        fixed) applies it, and a redelivery before the offset is committed tries it again.
        """
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
        message = bound_dead_letter(message, max_bytes=self.dead_letter_max_bytes)
        try:
            async with self.sessions() as session, session.begin():
                await self.outbox.add_raw(session, [message])
        except Exception as exc:
            raise TransientError(f"could not record dead letter: {exc}", environment_fault(exc)) from exc
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


def blocked_pause_s(attempts: int, base_s: float, max_s: float) -> float:
    """The pause after ``attempts`` failed attempts in a row: ``base_s`` doubling each time, at most ``max_s``."""
    return float(min(max_s, base_s * 2 ** min(max(attempts, 1) - 1, 16)))


def _routing_headers(record: Record) -> tuple[str | None, str | None]:
    """The ``event_type`` and ``replay_for`` headers of a record, when present."""
    kind: str | None = None
    replay_for: str | None = None
    for key, value in record.headers or ():
        if key == "event_type":
            kind = value.decode(errors="replace")
        elif key == REPLAY_FOR:
            replay_for = value.decode(errors="replace")
    return kind, replay_for


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{loc or '(root)'}: {err.get('msg')}")
    return "; ".join(parts) or str(exc)


def each_event(events: Sequence[_E]) -> Iterator[_E]:
    """The events one by one, each one's ids bound (:func:`bind_event_context`) while the caller
    handles it; unbound after the last."""
    try:
        for event in events:
            bind_event_context(event)
            yield event
    finally:
        current_event_id.set(None)
        current_hazard_id.set(None)


def bind_event_context(event: Any) -> None:
    """Put the event and hazard ids where every log line of this task will find them."""
    current_event_id.set(event.event_id)
    current_hazard_id.set(event.hazard_id)


@contextlib.contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Bind the event and hazard ids for the log lines written inside the block, then restore them."""
    event_token = current_event_id.set(event.event_id)
    hazard_token = current_hazard_id.set(event.hazard_id)
    try:
        yield
    finally:
        current_hazard_id.reset(hazard_token)
        current_event_id.reset(event_token)
