"""Tracing's pieces without a broker: the outbox row's context, the publish headers, log lines.

The whole path (intake's request to tracking's case, real PostgreSQL and broker) is
tests/integration/shared/test_tracing.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client import REGISTRY

from shared import tracing
from shared.consumer import BatchContext
from shared.kafka import BrokerSender
from shared.logs import make_handler
from shared.outbox import Outbox, OutgoingMessage
from tests.support import factories

OUTBOX = sa.Table("outbox", sa.MetaData(), sa.Column("id", sa.BigInteger), schema="t")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def test_while_off_rows_carry_no_trace_context_and_nothing_is_recorded() -> None:
    assert not tracing.enabled()
    (row,) = Outbox(OUTBOX, default_topic="life").rows([factories.reported_event()])
    assert set(row["headers"]) == {"event_type", "event_id", "hazard_id", "producer", "schema_version"}  # type: ignore[arg-type]
    with tracing.current_span("intake", "anything") as span:
        assert span is None


def test_a_row_stores_the_span_that_wrote_it_or_its_causes_span(spans: InMemorySpanExporter) -> None:
    outbox = Outbox(OUTBOX, default_topic="life")
    with tracing.current_span("intake", "POST /api/v1/hazards", kind=SpanKind.SERVER) as request:
        assert request is not None
        (row,) = outbox.rows([factories.reported_event()])
    trace_id = f"{request.get_span_context().trace_id:032x}"
    span_id = f"{request.get_span_context().span_id:016x}"
    assert row["headers"]["traceparent"].split("-")[1:3] == [trace_id, span_id]  # type: ignore[index]

    # In a consumer: an event written because of another carries that event's span.
    cause = factories.reported_event()
    parent = tracing.extract(row["headers"])  # type: ignore[arg-type]
    consumed = tracing.ConsumeSpans("dispatch", "life", {cause.event_id: parent}, [cause])
    with consumed.applying():
        (caused,) = outbox.rows([factories.reported_event(causation_id=cause.event_id)])
        (uncaused,) = outbox.rows([factories.reported_event()])
    consumed.end("applied")
    event_span = consumed.events[cause.event_id].get_span_context()
    assert caused["headers"]["traceparent"].split("-")[1:3] == [trace_id, f"{event_span.span_id:016x}"]  # type: ignore[index]
    batch_span = consumed.batch.get_span_context()
    assert uncaused["headers"]["traceparent"].split("-")[2] == f"{batch_span.span_id:016x}"  # type: ignore[index]
    finished = {s.name: s for s in spans.get_finished_spans()}
    assert finished["hazard.reported process"].parent.span_id == request.get_span_context().span_id  # type: ignore[union-attr]
    assert [link.context.span_id for link in finished["life process"].links] == [
        request.get_span_context().span_id
    ]


async def test_the_sender_gives_each_message_a_producer_span_and_counts_it(
    spans: InMemorySpanExporter,
) -> None:
    seen: list[dict[str, str]] = []

    class Broker:
        """Not connected (no producer yet): the sender goes through ``publish``."""

        config = SimpleNamespace(producer=None)

        async def publish(self, value: bytes, topic: str, **kwargs: Any) -> asyncio.Future[None]:
            seen.append(kwargs["headers"])
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    with tracing.current_span("intake", "request") as request:
        assert request is not None
        stored = tracing.current_headers()
    before = REGISTRY.get_sample_value(
        "hazard_published_messages_total", {"service": "unit-sender", "topic": "life", "result": "ok"}
    )
    await BrokerSender(Broker(), service="unit-sender").send_many(  # type: ignore[arg-type]
        [
            OutgoingMessage(
                "life", "k1", b"{}", {"event_id": "e1", "event_type": "hazard.reported", **stored}
            ),
            OutgoingMessage("life", "k2", b"{}", {"event_id": "e2"}),
        ]
    )
    after = REGISTRY.get_sample_value(
        "hazard_published_messages_total", {"service": "unit-sender", "topic": "life", "result": "ok"}
    )
    assert (after or 0) - (before or 0) == 2
    producers = [s for s in spans.get_finished_spans() if s.kind == SpanKind.PRODUCER]
    assert len(producers) == 2
    child = next(s for s in producers if (s.attributes or {})["messaging.message.id"] == "e1")
    assert child.parent is not None
    assert child.parent.span_id == request.get_span_context().span_id
    by_id = {h["event_id"]: h for h in seen}
    assert by_id["e1"]["traceparent"].split("-")[2] == f"{child.context.span_id:016x}"
    lone = next(s for s in producers if (s.attributes or {})["messaging.message.id"] == "e2")
    assert lone.parent is None  # a message without stored context starts its own trace
    assert by_id["e2"]["traceparent"].split("-")[1] == f"{lone.context.trace_id:032x}"


def _json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_carry_the_trace_and_span_and_each_events_ids(spans: InMemorySpanExporter) -> None:
    handler = make_handler("unit", json=True)
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    logger = logging.getLogger("test.tracing.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("no span")
        with tracing.current_span("unit", "work") as span:
            assert span is not None
            logger.info("in a span")
        events = [factories.reported_event(), factories.reported_event()]
        ctx = BatchContext(
            session=None,  # type: ignore[arg-type]
            outbox=Outbox(OUTBOX, default_topic="life"),
            now=datetime.now(UTC),
            service="unit",
            dead_letter_topic="dlt",
        )
        for event in ctx.each(events):
            logger.info("applying %s", event.TYPE)
        logger.info("after the batch")
    finally:
        logger.removeHandler(handler)
    lines = _json_lines(stream)
    assert "trace_id" not in lines[0]
    assert "event_id" not in lines[0]
    assert lines[1]["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert lines[1]["span_id"] == f"{span.get_span_context().span_id:016x}"
    assert [(line.get("event_id"), line.get("hazard_id")) for line in lines[2:4]] == [
        (str(e.event_id), str(e.hazard_id)) for e in events
    ]
    assert "event_id" not in lines[4]


def test_one_setting_exports_spans_by_otlp_http() -> None:
    """``TRACING__OTLP_ENDPOINT`` set: spans leave by OTLP/HTTP (to the benchmarks' counting sink)."""
    from bench.otlp_sink import OtlpSink

    assert not tracing.configure_tracing("unit", otlp_endpoint=None)
    assert not tracing.enabled()
    with OtlpSink() as sink:
        try:
            assert tracing.configure_tracing("unit", otlp_endpoint=sink.endpoint)
            with tracing.current_span("unit", "exported") as span:
                assert span is not None
            tracing.shutdown()  # flushes the batch processor
        finally:
            tracing.uninstall()
        assert sink.figures()["spans"] == 1
        assert sink.figures()["traces"] == 1
    assert not tracing.enabled()
