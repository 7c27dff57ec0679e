"""Closed hazards of the history import (#18) are relapse candidates: a new report at their place,
within the category's relapse window, is published as their relapse, while the import makes no case."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shared import events as ev
from shared.events import parse_event
from tests.integration.tracking.tracking_helpers import AppFactory, Hazard, auth, publish, wait_for_state
from tests.support.kafka_tools import read_topic

pytestmark = pytest.mark.integration


def imported(*, hazard_id: uuid.UUID, closed_at: datetime | None, record_id: str) -> ev.HazardImported:
    """A record as intake's history import publishes it (Liuyue Rd 12, building B-12)."""
    observed = (closed_at or datetime.now(UTC)) - timedelta(days=10)
    return ev.HazardImported(
        event_id=uuid.uuid4(),
        occurred_at=datetime.now(UTC),
        hazard_id=hazard_id,
        producer="intake",
        payload=ev.HazardImportedPayload(
            record_id=record_id,
            import_id=uuid.uuid4(),
            category="locked_rooftop_door",
            location=ev.Location(lat=22.62200, lon=114.16813, address="Liuyue Rd 12", building_id="B-12"),
            grid_id="liuyue-01",
            community_id="liuyue",
            street_id="henggang",
            observed_at=observed,
            notice_issued=True,
            department_id="fire",
            dispatch_id=uuid.uuid4(),
            dispatched_at=observed + timedelta(hours=1),
            acknowledged_at=observed + timedelta(hours=2),
            receipt_deadline=observed + timedelta(hours=3),
            rectified_at=None if closed_at is None else closed_at - timedelta(days=1),
            closed_at=closed_at,
        ),
    )


async def test_a_report_at_the_place_of_an_imported_closed_hazard_is_its_relapse(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    closed_at = datetime.now(UTC) - timedelta(days=20)
    past = imported(hazard_id=uuid.uuid4(), closed_at=closed_at, record_id="R-1")
    still_open = imported(hazard_id=uuid.uuid4(), closed_at=None, record_id="R-2")
    async with tracking_app() as (app, client):
        await publish(kafka.bootstrap_servers, topics["lifecycle"], past, still_open)
        report = Hazard(lat=22.62210, start=datetime.now(UTC))  # ~11 m away, the same building
        await publish(kafka.bootstrap_servers, topics["lifecycle"], report.reported())
        case = await wait_for_state(client, report.hazard_id, "reported")

        records = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=4, timeout_s=60)
        relapses = [e for e in (parse_event(r.value) for r in records) if isinstance(e, ev.HazardRelapsed)]
        assert [(e.hazard_id, e.payload.original_hazard_id) for e in relapses] == [
            (report.hazard_id, past.hazard_id)
        ]
        [relapse] = relapses
        assert relapse.payload.original_department_id == "fire"
        assert relapse.payload.original_closed_at == closed_at
        assert relapse.payload.same_building is True
        assert relapse.payload.place_key == "building:B-12"
        assert 19 < relapse.payload.days_since_closure < 21
        case = (
            await client.get(f"/api/v1/hazards/{report.hazard_id}", headers=auth("tok-supervisor"))
        ).json()
        assert case["relapse_of"] == str(past.hazard_id)

        # The import itself is no case: nothing to read, list, time or notify.
        for hazard_id in (past.hazard_id, still_open.hazard_id):
            response = await client.get(f"/api/v1/hazards/{hazard_id}", headers=auth("tok-supervisor"))
            assert response.status_code == 404
        async with app.state.runtime.sessions() as session:
            kept = (
                (await session.execute(sa.text("select hazard_id from tracking.imported_closures")))
                .scalars()
                .all()
            )
            cases = (
                await session.execute(
                    sa.text("select count(*) from tracking.cases where hazard_id in (:a, :b)"),
                    {"a": past.hazard_id, "b": still_open.hazard_id},
                )
            ).scalar_one()
        assert (list(kept), cases) == ([past.hazard_id], 0)
