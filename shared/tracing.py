"""OpenTelemetry tracing of a report's path: HTTP request, outbox row, publish, each consumer, deadlines.

Off unless a tracer provider is installed: a service installs one when ``TRACING__OTLP_ENDPOINT``
(``<SERVICE>__TRACING__OTLP_ENDPOINT``) names an OTLP/HTTP collector (``http://otel:4318/v1/traces``);
tests install one with an in-memory exporter (:func:`install`). While off, every helper here
returns at once and no header is added.

The path of one report, one trace:

* **HTTP** (:class:`shared.httpmetrics.HttpObservability`): a ``SERVER`` span per request, a child
  of the caller's ``traceparent`` when it sends one, named by the route template.
* **Outbox row** (:meth:`shared.outbox.Outbox.rows`): each row stores, in its ``headers``, the W3C
  ``traceparent`` of the span that wrote it (the request; in a consumer, the span of the event that
  caused it, found by the event's ``causation_id``; a deadline firing's span).
* **Publish** (:class:`shared.kafka.BrokerSender`): a ``PRODUCER`` span per message, a child of the
  stored context; its own ``traceparent`` replaces the stored one in the Kafka headers.
* **Consume** (:class:`shared.consumer.EventConsumer`): a ``CONSUMER`` span per batch, linked to
  every record's producer span, and a ``CONSUMER`` span per event applied, a child of its
  producer's span (so the trace goes on) and linked to the batch's span.
* **Deadlines** (the timer loops): a span per pass that fired something; what it writes carries it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
MAX_LINKS = 128  # OpenTelemetry's default span limit: a batch links to at most this many producers

_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None
_NOOP = trace.NoOpTracer()

# While a consumer applies a batch: event id -> the context of that event's span, so that an event
# written because of it (``causation_id``) carries that span, whatever the handler's batch shape.
_event_contexts: contextvars.ContextVar[Mapping[uuid.UUID, Context] | None] = contextvars.ContextVar(
    "hazard_event_contexts", default=None
)


def enabled() -> bool:
    """Whether spans are recorded (a provider is installed)."""
    return _provider is not None


def install(provider: TracerProvider) -> None:
    """Record spans through ``provider`` from now on (a service's OTLP exporter, a test's in-memory one)."""
    global _provider
    _provider = provider


def uninstall() -> None:
    """Stop recording spans (tests); the provider is flushed, not shut down."""
    global _provider
    if _provider is not None:
        _provider.force_flush()
    _provider = None


def configure_tracing(service: str, *, otlp_endpoint: str | None, sample_ratio: float = 1.0) -> bool:
    """Export spans by OTLP/HTTP to ``otlp_endpoint`` when one is set; returns whether tracing is on.

    A provider already installed (a test's, or another service of the same process) is kept.
    """
    if not otlp_endpoint:
        return enabled()
    if _provider is not None:
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": f"hazard-{service}", "service.namespace": "hazard-dispatch"}
        ),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, timeout=10)))
    install(provider)
    log.info("tracing on: spans exported by OTLP to %s (sampled %.0f%%)", otlp_endpoint, sample_ratio * 100)
    return True


def shutdown() -> None:
    """Flush and stop the installed provider (a service stopping)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None


def tracer(service: str) -> Tracer:
    """The tracer of one service (its instrumentation scope names the service)."""
    provider = _provider
    if provider is None:
        return _NOOP
    return provider.get_tracer(f"hazard.{service}")


# ------------------------------------------------------------------ carriers


def extract(headers: Mapping[str, str] | None) -> Context | None:
    """The context a ``traceparent`` header carries, or None without one."""
    if not headers or TRACEPARENT not in headers:
        return None
    return _propagator.extract(headers)


def extract_record(headers: Iterable[tuple[str, bytes]] | None) -> Context | None:
    """The context in a Kafka record's headers, or None."""
    carrier = {k: v.decode("latin-1") for k, v in headers or () if k in TRACE_HEADERS}
    return extract(carrier)


def inject(context: Context | None = None) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of ``context`` (the current one by default); empty if none."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=context)
    return carrier


def linked_context(context: Context | None) -> trace.SpanContext | None:
    span_context = trace.get_current_span(context).get_span_context() if context is not None else None
    return span_context if span_context is not None and span_context.is_valid else None


# ------------------------------------------------------------------ outbox rows


def current_headers() -> dict[str, str]:
    """The current span's trace headers, to carry into work another task does; empty while off."""
    return inject() if _provider is not None else {}


def outbox_headers(event: Any) -> dict[str, str]:
    """The trace headers an outbox row of ``event`` stores: its cause's span, else the current span."""
    if _provider is None:
        return {}
    contexts = _event_contexts.get()
    cause = getattr(event, "causation_id", None)
    context = contexts.get(cause) if contexts is not None and cause is not None else None
    return inject(context)


# ------------------------------------------------------------------ spans


@contextlib.contextmanager
def current_span(
    service: str,
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span | None]:
    """A span current inside the block (None while tracing is off); a failure marks it as an error."""
    if _provider is None:
        yield None
        return
    with tracer(service).start_as_current_span(
        name, context=parent, kind=kind, attributes={"hazard.service": service, **(attributes or {})}
    ) as span:
        yield span


class PublishSpans:
    """``PRODUCER`` spans of one batch sent to the broker; each message's headers get its own span."""

    def __init__(self, service: str, messages: Sequence[Any]) -> None:
        self.spans: list[Span] = []
        self.headers: list[dict[str, str]] = []
        t = tracer(service)
        for m in messages:
            parent = extract(m.headers)
            span = t.start_span(
                f"{m.topic} publish",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes={
                    "hazard.service": service,
                    "messaging.system": "kafka",
                    "messaging.operation.type": "send",
                    "messaging.destination.name": m.topic,
                    "messaging.kafka.message.key": m.key or "",
                    "messaging.message.id": m.headers.get("event_id", ""),
                    "hazard.event_type": m.headers.get("event_type", ""),
                },
            )
            self.spans.append(span)
            self.headers.append({**m.headers, **inject(trace.set_span_in_context(span))})

    def end(self, error: BaseException | None = None) -> None:
        for span in self.spans:
            if error is not None:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
            span.end()


class ConsumeSpans:
    """The ``CONSUMER`` span of one batch and one span per event, children of their producers' spans."""

    def __init__(
        self, service: str, topic: str, parents: Mapping[uuid.UUID, Context | None], events: Sequence[Any]
    ):
        t = tracer(service)
        links = [
            Link(sc) for sc in (linked_context(parents.get(e.event_id)) for e in events[:MAX_LINKS]) if sc
        ]
        self.batch = t.start_span(
            f"{topic} process",
            kind=SpanKind.CONSUMER,
            links=links,
            attributes={
                "hazard.service": service,
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": topic,
                "messaging.batch.message_count": len(events),
            },
        )
        batch_link = [Link(self.batch.get_span_context())]
        self.events: dict[uuid.UUID, Span] = {}
        self.contexts: dict[uuid.UUID, Context] = {}
        for e in events:
            span = t.start_span(
                f"{e.TYPE} process",
                context=parents.get(e.event_id) or trace.set_span_in_context(trace.INVALID_SPAN),
                kind=SpanKind.CONSUMER,
                links=batch_link,
                attributes={
                    "hazard.service": service,
                    "messaging.system": "kafka",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": topic,
                    "messaging.message.id": str(e.event_id),
                    "hazard.event_type": e.TYPE,
                    "hazard.hazard_id": str(e.hazard_id),
                },
            )
            self.events[e.event_id] = span
            self.contexts[e.event_id] = trace.set_span_in_context(span)

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        """The batch span is current and each event's span is found by its id (:func:`outbox_headers`)."""
        token = _event_contexts.set(self.contexts)
        try:
            with trace.use_span(self.batch, end_on_exit=False):
                yield
        finally:
            _event_contexts.reset(token)

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        for span in (*self.events.values(), self.batch):
            span.set_attribute("hazard.outcome", outcome)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, str(error)[:200]))
            span.end()


def log_ids() -> tuple[str, str] | None:
    """(trace id, span id) in hex of the current span, for log lines; None without one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")
