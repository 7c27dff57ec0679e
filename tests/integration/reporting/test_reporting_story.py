"""Reporting counts each hazard's story right (#21): unlinked relapses, returns after receipt."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared import events as ev
from shared.events import dump_event
from tests.integration.reporting.reporting_helpers import auth, running_app, settings_for, wait_applied
from tests.support.kafka_tools import produce

pytestmark = pytest.mark.integration

T0 = datetime(2026, 4, 7, 1, 30, tzinfo=UTC)  # a Tuesday, 09:30 in Shenzhen
APRIL = {"from": "2026-04-01", "to": "2026-04-30"}


def _envelope(
    cls: type[Any], hazard_id: uuid.UUID, at: datetime, producer: str, payload: Any, **kw: Any
) -> Any:
    return cls(
        event_id=uuid.uuid4(), occurred_at=at, hazard_id=hazard_id, producer=producer, payload=payload, **kw
    )


def _reported(
    hazard_id: uuid.UUID, at: datetime, *, duplicate_of: uuid.UUID | None = None
) -> ev.HazardReported:
    return _envelope(
        ev.HazardReported,
        hazard_id,
        at,
        "intake",
        ev.HazardReportedPayload(
            report_id=uuid.uuid4(),
            category="locked_rooftop_door",
            description="Rooftop door padlocked",
            location=ev.Location(lat=22.622, lon=114.16813, address="Liuyue Rd 12", building_id="B-12"),
            grid_id="liuyue-01",
            community_id="liuyue",
            street_id="henggang",
            reporter_id="gm-liuyue-01",
            observed_at=at,
            accepted_at=at,
            duplicate_of=duplicate_of,
        ),
    )


def _dispatched(hazard_id: uuid.UUID, dispatch_id: uuid.UUID, at: datetime) -> ev.HazardDispatched:
    return _envelope(
        ev.HazardDispatched,
        hazard_id,
        at,
        "dispatch",
        ev.HazardDispatchedPayload(
            dispatch_id=dispatch_id,
            department_id="fire",
            rule_id="r-locked-rooftop-door",
            receipt_deadline=at + timedelta(hours=2),
            deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
        ),
    )


@contextlib.asynccontextmanager
async def _projected(
    db_url: str, kafka: Any, topics: dict[str, str], log: list[ev.AnyEvent]
) -> AsyncIterator[httpx.AsyncClient]:
    """The log on the topic, the reporting app running with all of it applied."""
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in log],
    )
    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_app, client):
        await wait_applied(db_url, len(log))
        yield client


async def _summary(client: Any, group_by: str) -> dict[str, Any]:
    response = await client.get(
        "/api/v1/reports/summary", params={**APRIL, "group_by": group_by}, headers=auth()
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_report_unlinked_from_a_closed_original_counts_as_reported_and_as_its_relapse(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    original, later = uuid.uuid4(), uuid.uuid4()
    closed_at = T0 + timedelta(days=2)
    seen = closed_at + timedelta(minutes=3)
    later_report = _reported(later, seen, duplicate_of=original)
    log: list[ev.AnyEvent] = [
        _reported(original, T0),
        _dispatched(original, uuid.uuid4(), T0 + timedelta(minutes=1)),
        _envelope(
            ev.HazardClosed,
            original,
            closed_at,
            "tracking",
            ev.HazardClosedPayload(reason="verified", department_id="fire", closed_by="gm-liuyue-01"),
        ),
        later_report,
        _envelope(
            ev.HazardDuplicateLinked,
            later,
            seen,
            "intake",
            ev.HazardDuplicateLinkedPayload(original_hazard_id=original, distance_m=0.0, same_building=True),
            causation_id=later_report.event_id,
        ),
        _envelope(
            ev.HazardDuplicateUnlinked,
            later,
            seen + timedelta(seconds=5),
            "intake",
            ev.HazardDuplicateUnlinkedPayload(
                original_hazard_id=original,
                original_closed_at=closed_at,
                observed_at=seen,
                category="locked_rooftop_door",
                community_id="liuyue",
                grid_id="liuyue-01",
            ),
            causation_id=later_report.event_id,
        ),
        _dispatched(later, uuid.uuid4(), seen + timedelta(seconds=6)),
        _envelope(
            ev.HazardRelapsed,
            later,
            seen + timedelta(seconds=6),
            "tracking",
            ev.HazardRelapsedPayload(
                original_hazard_id=original,
                original_department_id="fire",
                original_closed_at=closed_at,
                days_since_closure=0.002,
                same_building=True,
                distance_m=0.0,
                place_key="building:B-12",
            ),
        ),
    ]
    async with _projected(db_url, kafka, topics, log) as client:
        body = await _summary(client, "community")
    (liuyue,) = [g for g in body["groups"] if g["key"] == "liuyue"]
    assert (liuyue["reported"], liuyue["duplicates"], liuyue["dispatched"]) == (2, 0, 2)
    assert (liuyue["closed"], liuyue["relapsed"], liuyue["relapse_rate"]) == (1, 1, 1.0)


async def test_returns_after_receipt_are_counted_by_department(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    hazard = uuid.uuid4()
    first, second = uuid.uuid4(), uuid.uuid4()
    at = T0 + timedelta(minutes=1)
    acked_at = at + timedelta(minutes=20)
    back_at = acked_at + timedelta(hours=1)
    returned = _envelope(
        ev.HazardReturned,
        hazard,
        back_at,
        "dispatch",
        ev.HazardReturnedPayload(
            dispatch_id=first,
            department_id="fire",
            reason="An electric heater, not ours",
            returned_by="dept-fire",
            after_receipt=True,
            acknowledged_at=acked_at,
        ),
    )
    rerouted = _dispatched(hazard, second, back_at).model_copy(update={"causation_id": returned.event_id})
    rerouted = rerouted.model_copy(
        update={"payload": rerouted.payload.model_copy(update={"department_id": "gas", "reason": "rerouted"})}
    )
    log: list[ev.AnyEvent] = [
        _reported(hazard, T0),
        _dispatched(hazard, first, at),
        _envelope(
            ev.HazardAcknowledged,
            hazard,
            acked_at,
            "dispatch",
            ev.HazardAcknowledgedPayload(
                dispatch_id=first,
                department_id="fire",
                acknowledged_at=acked_at,
                receipt_deadline=at + timedelta(hours=2),
                on_time=True,
                acknowledged_by="dept-fire",
            ),
        ),
        returned,
        rerouted,
    ]
    async with _projected(db_url, kafka, topics, log) as client:
        body = await _summary(client, "department")
        csv_text = (
            await client.get(
                "/api/v1/reports/summary",
                params={**APRIL, "group_by": "department", "format": "csv"},
                headers=auth(),
            )
        ).text
    by_department = {g["key"]: g for g in body["groups"]}
    assert by_department["fire"]["returned_after_receipt"] == 1
    assert by_department["fire"]["acknowledged"] == 1, "the receipt stays on record"
    assert by_department["gas"]["returned_after_receipt"] == 0
    assert body["totals"]["returned_after_receipt"] == 1
    header, *rows = csv_text.strip().splitlines()
    column = header.split(",").index("returned_after_receipt")
    fire_row = next(r.split(",") for r in rows if r.split(",")[1] == "fire")
    assert fire_row[column] == "1"
