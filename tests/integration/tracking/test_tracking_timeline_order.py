"""The case history follows causality: a consequence never comes before its cause (#21, item 2)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from services.dispatch import domain as dispatch_domain
from shared import events as ev
from shared.reference import load_reference_data
from tests.integration.tracking.tracking_helpers import (
    AppFactory,
    Hazard,
    app_factory,
    auth,
    publish,
    wait_for_state,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def tracking_app(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    return app_factory(db_url, kafka, topics)


def _pending(hazard: Hazard, event: ev.HazardDispatched) -> dispatch_domain.Dispatch:
    p = event.payload
    return dispatch_domain.Dispatch(
        dispatch_id=p.dispatch_id,
        hazard_id=hazard.hazard_id,
        department_id=p.department_id,
        rule_id=p.rule_id,
        category=hazard.category,
        community_id="liuyue",
        grid_id=hazard.grid_id,
        status="pending",
        receipt_deadline=p.receipt_deadline,
        deadline_rule=p.deadline_rule,
        created_at=event.occurred_at,
    )


async def test_returns_come_before_the_rerouting_and_the_referral_they_caused(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    """Dispatch stamps a return and what it causes with one instant; the history still reads cause first."""
    reference = load_reference_data()
    hazard = Hazard(category="direct_vent_water_heater")  # gas first, fire as the fallback
    reported = hazard.reported()
    first = hazard.dispatched("gas")
    # Exactly what dispatch publishes when the fire department returns the hazard, and then the
    # department it was rerouted to returns it too (each step's events share one `now`).
    first_return = dispatch_domain.return_dispatch(
        reference,
        _pending(hazard, first),
        reason="no gas contract on file",
        by="officer-gas",
        now=first.occurred_at + timedelta(minutes=5),
        returned_before=(),
    )
    rerouted = first_return.events[1]
    assert isinstance(rerouted, ev.HazardDispatched)
    everyone = {rule.department_id for rule in reference.routing_rules}
    second_return = dispatch_domain.return_dispatch(
        reference,
        _pending(hazard, rerouted),
        reason="not ours either",
        by=f"officer-{rerouted.payload.department_id}",
        now=rerouted.occurred_at + timedelta(minutes=5),
        returned_before=everyone,
    )
    assert [e.TYPE for e in second_return.events] == ["hazard.returned", "hazard.referred_to_operators"]
    produced = [reported, first, *first_return.events, *second_return.events]

    async with tracking_app() as (_app, client):
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *produced)
        case = await wait_for_state(client, hazard.hazard_id, "referred_to_operators", timeout_s=30)
        response = await client.get(f"/api/v1/hazards/{hazard.hazard_id}", headers=auth("tok-supervisor"))

    assert response.status_code == 200
    timeline = response.json()["timeline"]
    assert [entry["event_id"] for entry in timeline] == [str(e.event_id) for e in produced]
    assert [entry["event_type"] for entry in timeline] == [
        "hazard.reported",
        "hazard.dispatched",
        "hazard.returned",
        "hazard.dispatched",
        "hazard.returned",
        "hazard.referred_to_operators",
    ]
    assert case["state"] == "referred_to_operators"
    assert case["department_id"] is None
    assert case["returns"] == 2
    assert uuid.UUID(timeline[3]["details"]["previous_dispatch_id"]) == first.payload.dispatch_id
