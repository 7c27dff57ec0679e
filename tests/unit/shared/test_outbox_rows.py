"""An outbox row: the event's bytes, keyed by its hazard, with the headers tools route by."""

from __future__ import annotations

import sqlalchemy as sa

from shared.events import dump_event
from shared.outbox import Outbox
from tests.support import factories

OUTBOX = sa.Table("outbox", sa.MetaData(), sa.Column("id", sa.BigInteger), schema="t")


def test_rows_are_keyed_by_the_hazard_and_carry_its_routing_headers() -> None:
    events = [factories.reported_event(), factories.reported_event()]
    rows = Outbox(OUTBOX, default_topic="life").rows(events)
    assert rows == [
        {
            "event_id": event.event_id,
            "topic": "life",
            "key": str(event.hazard_id),
            "value": dump_event(event),
            "headers": {
                "event_type": "hazard.reported",
                "event_id": str(event.event_id),
                "hazard_id": str(event.hazard_id),
                "producer": event.producer,
                "schema_version": str(event.schema_version),
            },
        }
        for event in events
    ]


def test_a_row_takes_the_trace_headers_given_for_its_event() -> None:
    event = factories.reported_event()
    traceparent = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
    (row,) = Outbox(OUTBOX, default_topic="life").rows(
        [event], topic="other", traces={event.event_id: {"traceparent": traceparent}}
    )
    assert row["topic"] == "other"
    assert row["key"] == str(event.hazard_id)
    assert row["headers"]["traceparent"] == traceparent  # type: ignore[index]
    assert row["headers"]["hazard_id"] == str(event.hazard_id)  # type: ignore[index]
