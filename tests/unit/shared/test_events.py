"""The event contracts: every type round-trips through JSON, and the committed samples still parse."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from shared import events as ev
from tests.support.factories import make_event

SAMPLES = Path(__file__).parents[2] / "support" / "events"


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_every_event_type_round_trips_through_json(event_type: str) -> None:
    event = make_event(event_type)
    assert ev.parse_event(ev.dump_event(event)) == event


@pytest.mark.parametrize("event_type", sorted(ev.EVENT_TYPES))
def test_committed_sample_of_each_type_parses_and_reserialises_identically(event_type: str) -> None:
    path = SAMPLES / f"{event_type}.json"
    document = json.loads(path.read_text())
    event = ev.parse_event(path.read_bytes())
    assert event_type == event.TYPE
    assert json.loads(ev.dump_event(event)) == document


def test_a_report_from_before_reporter_types_and_notices_parses_with_their_defaults() -> None:
    """#18 added two optional fields to hazard.reported: events published before keep parsing."""
    raw = json.loads((SAMPLES / "hazard.reported.json").read_text())
    del raw["payload"]["reporter_type"], raw["payload"]["notice_issued"]
    event = ev.parse_event(json.dumps(raw))
    assert isinstance(event, ev.HazardReported)
    assert (event.payload.reporter_type, event.payload.notice_issued) == ("grid_member", False)
    raw["payload"]["reporter_type"] = "astronaut"
    with pytest.raises(ValidationError, match="reporter_type"):
        ev.parse_event(json.dumps(raw))


def test_unknown_event_type_is_refused() -> None:
    raw = json.loads(ev.dump_event(make_event("hazard.closed")))
    raw["event_type"] = "hazard.vanished"
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        ev.parse_event(json.dumps(raw))


def test_unknown_schema_version_is_refused() -> None:
    raw = json.loads(ev.dump_event(make_event("hazard.closed")))
    raw["schema_version"] = 2
    with pytest.raises(ValidationError, match="schema_version"):
        ev.parse_event(json.dumps(raw))


def test_extra_fields_are_refused() -> None:
    raw = json.loads(ev.dump_event(make_event("hazard.closed")))
    raw["payload"]["surprise"] = 1
    with pytest.raises(ValidationError, match="surprise"):
        ev.parse_event(json.dumps(raw))


def test_naive_timestamps_are_refused() -> None:
    raw = json.loads(ev.dump_event(make_event("hazard.closed")))
    raw["occurred_at"] = "2026-04-07T09:30:00"
    with pytest.raises(ValidationError, match="timezone"):
        ev.parse_event(json.dumps(raw))


def test_malformed_json_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="Invalid JSON"):
        ev.parse_event(b'{"event_type": "hazard.closed",')


def test_event_id_and_hazard_id_survive_serialisation_exactly() -> None:
    hazard_id = uuid.uuid4()
    event = make_event("hazard.dispatched", hazard_id=hazard_id)
    again = ev.parse_event(ev.dump_event(event))
    assert (again.event_id, again.hazard_id) == (event.event_id, hazard_id)
