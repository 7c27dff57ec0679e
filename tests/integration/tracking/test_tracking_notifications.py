"""Delivery records (hazard.notified, from the notifications service) on the hazard's timeline (#16)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest

from shared import events as ev
from tests.integration.tracking.tracking_helpers import AppFactory, Hazard, auth, publish, wait_for_state
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration


def notified(
    about: ev.AnyEvent, *, minutes: float, result: str, error: str | None = None
) -> ev.HazardNotified:
    return ev.HazardNotified(
        event_id=uuid.uuid4(),
        occurred_at=about.occurred_at + timedelta(minutes=minutes),
        hazard_id=about.hazard_id,
        producer="notifications",
        causation_id=about.event_id,
        payload=ev.HazardNotifiedPayload(
            source_id=about.event_id,
            trigger="dispatched",
            department_id="fire",
            audience_scope="department",
            audience_id="fire",
            subscription_id=uuid.uuid4(),
            channel="email" if result == "delivered" else "webhook",
            recipient="d***@fire.example.org" if result == "delivered" else "hooks.fire.example.org",
            result=result,  # type: ignore[arg-type]
            attempts=1 if result == "delivered" else 7,
            error=error,
        ),
    )


async def test_who_was_told_what_is_on_the_timeline_in_time_order_and_changes_nothing_of_the_case(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    hazard = Hazard()
    reported, dispatched = hazard.reported(), hazard.dispatched()
    told = notified(dispatched, minutes=0.5, result="delivered")
    failed = notified(dispatched, minutes=30, result="failed", error="HTTP 503")
    async with tracking_app() as (_app, client):
        # The record of a delivery may come before the events it follows (another partition
        # consumer, a replay): it waits beside the timeline and is shown in its place.
        await publish(kafka.bootstrap_servers, topics["lifecycle"], failed, reported, dispatched, told, told)
        await wait_for_state(client, hazard.hazard_id, "dispatched")

        async def both() -> bool:
            response = await client.get(f"/api/v1/hazards/{hazard.hazard_id}", headers=auth("tok-fire"))
            kinds = [e["event_type"] for e in response.json()["timeline"]]
            return kinds.count("hazard.notified") == 2

        await wait_for(both, timeout_s=30, interval_s=0.2)
        case = (await client.get(f"/api/v1/hazards/{hazard.hazard_id}", headers=auth("tok-fire"))).json()
        assert case["state"] == "dispatched"
        assert [(e["event_type"], e["event_id"]) for e in case["timeline"]] == [
            ("hazard.reported", str(reported.event_id)),
            ("hazard.dispatched", str(dispatched.event_id)),
            ("hazard.notified", str(told.event_id)),  # once, though published twice
            ("hazard.notified", str(failed.event_id)),
        ]
        entry = case["timeline"][2]
        assert entry["actor"] == entry["producer"] == "notifications"
        assert entry["details"] == told.payload.model_dump(mode="json")
        assert case["timeline"][3]["details"]["result"] == "failed"
        assert case["timeline"][3]["details"]["error"] == "HTTP 503"
        # Another department does not see the case, nor what was sent about it.
        response = await client.get(f"/api/v1/hazards/{hazard.hazard_id}", headers=auth("tok-police"))
        assert response.status_code == 404
