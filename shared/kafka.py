"""FastStream wiring: the broker factory, the outbox's sender, and the batch subscriber for EventConsumer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from faststream import AckPolicy
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.message import StreamMessage
from prometheus_client import REGISTRY, CollectorRegistry

from shared import metrics, tracing
from shared.consumer import EventConsumer, TransientError
from shared.idle import FetchPacer
from shared.outbox import OutgoingMessage
from shared.partition import kafka_partitioner
from shared.settings import KafkaSettings

log = logging.getLogger(__name__)


def create_broker(
    settings: KafkaSettings, *, service: str, registry: CollectorRegistry = REGISTRY
) -> KafkaBroker:
    """A Kafka broker client for one service; producer idempotence and acks come from settings."""
    return KafkaBroker(
        # A list, one host:port each: FastStream wraps a plain string in a list, and aiokafka only
        # splits commas in a string, so "a:9092,b:9092" would otherwise become one unresolvable host.
        bootstrap_list(settings.bootstrap_servers),
        client_id=settings.client_id or f"hazard-{service}",
        enable_idempotence=settings.idempotent_producer,
        acks="all" if settings.acks == "all" else 1,
        allow_auto_create_topics=False,
        graceful_timeout=settings.graceful_timeout_s,
        request_timeout_ms=settings.request_timeout_ms,
        linger_ms=5,
        partitioner=kafka_partitioner,  # aiokafka's choice of partition, in half its CPU
        middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name=service)],
        # A plain logger: its lines go through the root handler, so they are JSON like the rest.
        logger=logging.getLogger("hazard.broker"),
        log_level=logging.DEBUG,
        description=f"hazard-dispatch {service} service",
    )


def bootstrap_list(servers: str) -> list[str]:
    """``"a:9092, b:9092"`` -> ``["a:9092", "b:9092"]``."""
    return [server.strip() for server in servers.split(",") if server.strip()]


class BrokerSender:
    """Sends many messages at once and waits until the broker has confirmed all of them.

    The messages go out on the connected broker's own aiokafka producer. ``broker.publish`` would
    wrap each one in a publish command, the middlewares and a fresh correlation id, which cost
    more than the send itself (see ``bench/results/report.md``); every message this sender
    carries already has its key, headers and bytes. Before the broker has connected, the sender
    goes through ``broker.publish``, which fails the way FastStream fails then.

    Either way the sender counts what it sends itself (``hazard_published_messages_total``,
    ``hazard_publish_batch_duration_seconds``) and, while tracing is on, gives each message a
    ``PRODUCER`` span whose W3C ``traceparent`` goes in the message's headers
    (:class:`shared.tracing.PublishSpans`): none of it depends on which path sent the message.
    """

    def __init__(self, broker: KafkaBroker, *, service: str = "unknown") -> None:
        self.broker = broker
        self.service = service
        self._batch_seconds = metrics.PUBLISH_BATCH_SECONDS.labels(service)
        self._counters: dict[tuple[str, str], Any] = {}

    def _count(self, messages: Sequence[OutgoingMessage], result: str) -> None:
        per_topic: dict[str, int] = {}
        for m in messages:
            per_topic[m.topic] = per_topic.get(m.topic, 0) + 1
        for topic, n in per_topic.items():
            counter = self._counters.get((topic, result))
            if counter is None:
                counter = metrics.PUBLISHED_MESSAGES.labels(self.service, topic, result)
                self._counters[(topic, result)] = counter
            counter.inc(n)

    async def send_many(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish without waiting message by message; then wait for every confirmation."""
        if not messages:
            return
        started = time.perf_counter()
        spans = tracing.PublishSpans(self.service, messages) if tracing.enabled() else None
        headers = spans.headers if spans is not None else [m.headers for m in messages]
        try:
            await self._send(messages, headers)
        except BaseException as exc:
            if spans is not None:
                spans.end(exc)
            self._count(messages, "error")
            raise
        if spans is not None:
            spans.end()
        self._count(messages, "ok")
        self._batch_seconds.observe(time.perf_counter() - started)

    async def _send(self, messages: Sequence[OutgoingMessage], headers: Sequence[dict[str, str]]) -> None:
        producer = connected_producer(self.broker)
        if producer is None:
            futures = [
                await self.broker.publish(
                    m.value,
                    m.topic,
                    key=m.key.encode() if m.key is not None else None,
                    headers=h,
                    no_confirm=True,
                )
                for m, h in zip(messages, headers, strict=True)
            ]
        else:
            futures = [
                await producer.send(
                    m.topic,
                    value=m.value,
                    key=m.key.encode() if m.key is not None else None,
                    headers=[(name, value.encode()) for name, value in h.items()],
                )
                for m, h in zip(messages, headers, strict=True)
            ]
        await asyncio.gather(*futures)


def connected_producer(broker: KafkaBroker) -> AIOKafkaProducer | None:
    """The aiokafka producer of a connected FastStream broker, or None before it connects.

    FastStream 0.7 keeps it at ``broker.config.producer._producer.producer``; an upgrade that moves
    it makes this None (``BrokerSender`` then publishes through FastStream, slower but correct),
    and ``tests/integration/shared/test_outbox.py`` fails so that somebody looks.
    """
    try:
        # Until the broker connects, FastStream's producer state raises IncorrectState when asked.
        producer = getattr(getattr(broker.config.producer, "_producer", None), "producer", None)
    except IncorrectState:
        return None
    return producer if isinstance(producer, AIOKafkaProducer) else None


async def _raw_decoder(msg: StreamMessage[Any]) -> Any:
    # The consumer parses and validates each record itself; skip FastStream's JSON decoding.
    return None


async def _batch_parser(
    records: tuple[Any, ...], original: Callable[[tuple[Any, ...]], Awaitable[StreamMessage[Any]]]
) -> StreamMessage[Any]:
    """FastStream's message for a batch, with only the first record's headers decoded.

    FastStream's batch parser decodes every record's headers into a dict of text (``batch_headers``,
    about 1-2 us a record, 6 us per hazard of each consumer's profiled time); nothing here reads
    them: the consumer reads each record's own headers, and the message's ``headers`` (the first
    record's, as FastStream gives them) are all its logging and metrics use. So FastStream parses
    the first record alone, and the message is given the whole batch: its records (what ``ack`` and
    ``nack`` commit and rewind), their bodies (what the metrics measure) and the batch's id.
    ``batch_headers`` holds the first record's headers only.
    """
    message = await original(records[:1])
    if len(records) > 1:
        first, last = records[0], records[-1]
        message.raw_message = records
        message.body = [record.value or b"" for record in records]
        message.message_id = f"{first.offset}-{last.offset}-{first.timestamp}"
    return message


def subscribe_lifecycle(
    broker: KafkaBroker,
    consumer: EventConsumer,
    settings: KafkaSettings,
    *,
    group_id: str,
    description: str,
    retry_pause_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    pacer: FetchPacer | None = None,
) -> Any:
    """Register the batch subscriber that feeds lifecycle records to the consumer.

    Offsets are committed (``ack``) only after the batch's transaction committed;
    on a failure of the environment the batch is rewound (``nack``) and fetched again after a
    pause that doubles from ``retry_pause_s`` up to ``settings.blocked_backoff_max_s``.
    After a batch that was not full the subscriber waits before taking the next, so that a
    consumer that keeps up still works in batches of many records: as long as the batch took, at
    most ``batch_linger_ms``. A cheap batch (light load) is followed by a short wait and adds
    little latency; an expensive one (a busy machine) gathers the next batch for longer.
    ``clock`` and ``sleep`` are injected by tests. ``pacer`` (:class:`shared.idle.FetchPacer`) is told
    of every batch, so that a consumer gone idle fetches with short waits again.
    """
    linger_s = settings.batch_linger_ms / 1000
    subscriber = broker.subscriber(
        settings.lifecycle_topic,
        group_id=group_id,
        batch=True,
        max_records=settings.max_batch,
        batch_timeout_ms=settings.batch_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.MANUAL,
        title=f"{consumer.service}:lifecycle",
        description=description,
    )

    if pacer is not None and pacer.consumer is None:
        pacer.consumer = lambda: getattr(subscriber, "consumer", None)
        pacer.subscriber = subscriber

    @subscriber(decoder=_raw_decoder, parser=_batch_parser)
    async def on_lifecycle_batch(body: Any, msg: KafkaMessage) -> None:
        raw = msg.raw_message
        records = tuple(raw) if isinstance(raw, tuple | list) else (raw,)
        if pacer is not None:
            pacer.on_records()
        started = clock()
        try:
            await consumer.process(records)
        except TransientError as exc:
            pause = consumer.retry_pause_s(retry_pause_s, max(retry_pause_s, settings.blocked_backoff_max_s))
            log.warning("batch of %d will be retried in %.1f s: %s", len(records), pause, exc)
            await sleep(pause)
            await msg.nack()
            return
        except Exception:
            # Never commit past a batch that was not applied: rewind and let it come again.
            log.exception("unexpected failure applying a batch of %d; it will be retried", len(records))
            await sleep(retry_pause_s)
            await msg.nack()
            return
        await msg.ack()
        _record_lag(msg, records, consumer.service)
        if linger_s and len(records) < settings.max_batch:
            await sleep(min(linger_s, clock() - started))

    return subscriber


def _record_lag(msg: Any, records: Sequence[Any], service: str) -> None:
    kafka_consumer = getattr(msg, "consumer", None)
    if kafka_consumer is None or not hasattr(kafka_consumer, "highwater"):
        return
    last: dict[tuple[str, int], int] = {}
    for record in records:
        last[(record.topic, record.partition)] = max(
            last.get((record.topic, record.partition), -1), record.offset
        )
    for (topic, partition), offset in last.items():
        high = kafka_consumer.highwater(TopicPartition(topic, partition))
        if high is not None:
            metrics.CONSUMER_LAG.labels(service, topic, str(partition)).set(max(0, high - offset - 1))


def fetch_pacer(settings: KafkaSettings) -> FetchPacer:
    """A :class:`FetchPacer` from settings, for :func:`subscribe_lifecycle` to bind to its subscriber."""
    return FetchPacer(
        busy_ms=settings.fetch_max_wait_ms,
        idle_ms=settings.idle_fetch_max_wait_ms,
        idle_after_s=settings.idle_after_s,
        busy_batch_ms=settings.batch_timeout_ms,
        idle_batch_ms=max(settings.batch_timeout_ms, settings.idle_batch_timeout_ms),
    )


def declare_publisher(broker: KafkaBroker, topic: str, *, event: type[Any], description: str) -> None:
    """Document an event the service publishes (through its outbox) in the AsyncAPI schema."""
    broker.publisher(topic, title=f"{event.TYPE}", description=description, schema=event)


def subscriber_assigned(broker: KafkaBroker) -> bool:
    """Whether every subscriber's consumer is running (joined its group)."""
    subscribers = list(getattr(broker, "subscribers", []))
    if not subscribers:
        return True
    for sub in subscribers:
        consumer = getattr(sub, "consumer", None)
        if consumer is None:
            return False
    return True
