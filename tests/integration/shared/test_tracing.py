"""One report, one trace: intake's request → outbox → publish → dispatch → hazard.dispatched → tracking.

Intake, dispatch and tracking run in this process on the real PostgreSQL and broker, with an
in-memory span exporter installed (``shared.tracing.install``). The spans must form one tree in
one trace, each hop a child of the span that published what it consumed; the tree is printed
(``pytest -s``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing
from shared.logs import make_handler
from tests.integration.dispatch.dispatch_helpers import app_factory as dispatch_factory
from tests.integration.intake.intake_helpers import app_factory as intake_factory
from tests.integration.intake.intake_helpers import auth, report
from tests.integration.tracking.tracking_helpers import app_factory as tracking_factory

pytestmark = pytest.mark.integration


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


def tree(spans: Sequence[ReadableSpan]) -> str:
    """The spans as an indented tree (children by start time), with service, kind and links."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    ids = {s.context.span_id for s in spans}
    for s in spans:
        parent = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        by_parent.setdefault(parent, []).append(s)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for s in sorted(by_parent.get(parent, []), key=lambda x: x.start_time or 0):
            attrs = s.attributes or {}
            took = ((s.end_time or 0) - (s.start_time or 0)) / 1e6
            extra = f" links={len(s.links)}" if s.links else ""
            event = f" {attrs['hazard.event_type']}" if attrs.get("hazard.event_type") else ""
            lines.append(
                f"{'  ' * depth}{s.name}  [{attrs.get('hazard.service')}, {s.kind.name.lower()}{event},"
                f" span {s.context.span_id:016x}, {took:.1f} ms{extra}]"
            )
            walk(s.context.span_id, depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def one(spans: Sequence[ReadableSpan], **want: Any) -> ReadableSpan:
    found = [
        s
        for s in spans
        if all(
            (s.kind == v if k == "kind" else s.name == v if k == "name" else (s.attributes or {}).get(k) == v)
            for k, v in want.items()
        )
    ]
    assert len(found) == 1, (want, [s.name for s in found])
    return found[0]


async def test_one_report_yields_one_connected_trace_to_dispatch_and_tracking(
    db_url: str, kafka: Any, topics: dict[str, str], spans: InMemorySpanExporter
) -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = make_handler("test")
    keep = Keep()
    for f in handler.filters:
        keep.addFilter(f)
    access_log = logging.getLogger("hazard.access")
    level = access_log.level
    access_log.setLevel(logging.INFO)
    access_log.addHandler(keep)
    try:
        async with (
            tracking_factory(db_url, kafka, topics)() as (tracking_app, _),
            dispatch_factory(db_url, kafka, topics)() as (dispatch_app, _),
            intake_factory(db_url, kafka.bootstrap_servers, topics)() as (_, intake),
        ):
            response = await intake.post("/api/v1/hazards", json=report(), headers=auth("tok-gm1"))
            assert response.status_code == 201, response.text
            hazard_id = uuid.UUID(response.json()["hazard_id"])
            deadline = time.monotonic() + 60
            while True:
                async with tracking_app.state.runtime.sessions() as session:
                    seen = (
                        await session.execute(
                            sa.text(
                                "select count(*) from tracking.timeline "
                                "where hazard_id = :h and event_type = 'hazard.dispatched'"
                            ),
                            {"h": hazard_id},
                        )
                    ).scalar_one()
                if seen:
                    break
                assert time.monotonic() < deadline, "tracking never applied hazard.dispatched"
                await asyncio.sleep(0.1)
            assert dispatch_app.state.runtime.consumer is not None
    finally:
        access_log.removeHandler(keep)
        access_log.setLevel(level)

    finished = list(spans.get_finished_spans())
    request = one(finished, kind=SpanKind.SERVER, name="POST /api/v1/hazards")
    trace_id = request.context.trace_id
    in_trace = [s for s in finished if s.context.trace_id == trace_id]
    print(f"\ntrace {trace_id:032x} of hazard {hazard_id}:\n{tree(in_trace)}")

    published_report = one(in_trace, kind=SpanKind.PRODUCER, **{"hazard.event_type": "hazard.reported"})
    dispatch_applies = one(
        in_trace,
        kind=SpanKind.CONSUMER,
        **{"hazard.service": "dispatch", "hazard.event_type": "hazard.reported"},
    )
    published_dispatch = one(in_trace, kind=SpanKind.PRODUCER, **{"hazard.event_type": "hazard.dispatched"})
    tracking_applies = one(
        in_trace,
        kind=SpanKind.CONSUMER,
        **{"hazard.service": "tracking", "hazard.event_type": "hazard.dispatched"},
    )
    # Each hop is the child of the one before: request → publish → dispatch → publish → tracking.
    assert request.parent is None
    assert published_report.parent is not None
    assert published_report.parent.span_id == request.context.span_id
    assert dispatch_applies.parent is not None
    assert dispatch_applies.parent.span_id == published_report.context.span_id
    assert published_dispatch.parent is not None
    assert published_dispatch.parent.span_id == dispatch_applies.context.span_id
    assert (published_dispatch.attributes or {})["hazard.service"] == "dispatch"
    assert tracking_applies.parent is not None
    assert tracking_applies.parent.span_id == published_dispatch.context.span_id
    assert (tracking_applies.attributes or {})["hazard.hazard_id"] == str(hazard_id)
    # Every event span is linked to its batch's span, and the batch span to its producers' spans.
    for event_span in (dispatch_applies, tracking_applies):
        (link,) = event_span.links
        batch = next(s for s in finished if s.context.span_id == link.context.span_id)
        assert batch.kind == SpanKind.CONSUMER
        assert batch.name.endswith(" process")
        assert event_span.parent is not None
        assert event_span.parent.span_id in {bl.context.span_id for bl in batch.links}
    # The access log line of the request carries its trace and span ids.
    (access,) = [r for r in records if getattr(r, "route", None) == "/api/v1/hazards"]
    assert access.trace_id == f"{trace_id:032x}"  # type: ignore[attr-defined]
    assert access.span_id == f"{request.context.span_id:016x}"  # type: ignore[attr-defined]


async def test_a_deadline_firing_is_a_span_its_events_carry(db_url: str, spans: InMemorySpanExporter) -> None:
    """Dispatch's receipt deadline fires: one ``deadlines fire`` span, its events' rows carry it."""
    from datetime import UTC, datetime, timedelta

    from services.dispatch import tables as dispatch_tables
    from services.dispatch import timers
    from shared.db import create_engine, create_session_factory
    from shared.outbox import Outbox
    from shared.reference import load_reference_data
    from shared.settings import DatabaseSettings
    from tests.integration.dispatch.dispatch_helpers import seed_due, work_on

    engine = create_engine(DatabaseSettings(url=db_url))
    sessions = create_session_factory(engine)
    try:
        outbox = Outbox(dispatch_tables.outbox, default_topic="deadlines")
        await seed_due(sessions, load_reference_data(), 2, due_at=datetime.now(UTC) - timedelta(seconds=1))
        assert await timers.fire_due(work_on(sessions, outbox), batch_size=1000) > 0
        async with sessions() as session:
            rows = (
                (
                    await session.execute(
                        sa.text("select headers from dispatch.outbox where topic = 'deadlines'")
                    )
                )
                .scalars()
                .all()
            )
    finally:
        await engine.dispose()
    (fired,) = [s for s in spans.get_finished_spans() if s.name == "deadlines fire"]
    assert (fired.attributes or {})["hazard.service"] == "dispatch"
    assert (fired.attributes or {})["hazard.timers_fired"] == len(rows) >= 2
    for headers in rows:
        assert headers["traceparent"].split("-")[1:3] == [
            f"{fired.context.trace_id:032x}",
            f"{fired.context.span_id:016x}",
        ]
