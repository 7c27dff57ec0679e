"""A department returns a hazard after acknowledging receipt (退单 after 签收), by window or approval (#21)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from shared import events as ev
from shared.events import dump_event
from tests.integration.dispatch.dispatch_helpers import AppFactory, auth, outbox_events, reported, scalar
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration


async def _acknowledged_gas_dispatch(
    app: Any, client: httpx.AsyncClient, kafka: Any, topics: dict[str, str]
) -> tuple[ev.HazardReported, dict[str, Any]]:
    hazard = reported("direct_vent_water_heater")  # gas first, fire as the fallback
    await produce(
        kafka.bootstrap_servers, topics["lifecycle"], [(str(hazard.hazard_id).encode(), dump_event(hazard))]
    )

    async def routed() -> bool:
        return int(await scalar(app, "select count(*) from dispatch.dispatches") or 0) == 1

    await wait_for(routed, timeout_s=60, interval_s=0.2)
    (item,) = (await client.get("/api/v1/dispatches", headers=auth("tok-gas"))).json()["items"]
    ack = await client.post(f"/api/v1/dispatches/{item['dispatch_id']}/acknowledge", headers=auth("tok-gas"))
    assert ack.status_code == 200, ack.text
    return hazard, ack.json()


async def test_within_the_window_a_department_returns_what_it_acknowledged_and_the_receipt_stays(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        _hazard, acked = await _acknowledged_gas_dispatch(app, client, kafka, topics)
        url = f"/api/v1/dispatches/{acked['dispatch_id']}"
        returned = await client.post(
            url + "/return", headers=auth("tok-gas"), json={"reason": "Electric heater, not a gas appliance"}
        )
        assert returned.status_code == 200, returned.text
        body = returned.json()
        assert body["dispatch"]["status"] == "returned"
        assert body["dispatch"]["returned_after_receipt"] is True
        assert body["dispatch"]["acknowledged_at"] == acked["acknowledged_at"]
        assert body["dispatch"]["on_time"] is True
        assert body["next"]["department_id"] == "fire"
        again = await client.post(url + "/return", headers=auth("tok-gas"), json={"reason": "Once more"})
        assert again.status_code == 409

        events = await outbox_events(app)
        assert [e.TYPE for e in events] == [
            "hazard.dispatched",
            "hazard.acknowledged",
            "hazard.returned",
            "hazard.dispatched",
        ]
        back = events[2]
        assert isinstance(back, ev.HazardReturned)
        assert back.payload.after_receipt is True
        assert back.payload.acknowledged_at == datetime.fromisoformat(acked["acknowledged_at"])
        assert back.payload.approved_by is None
        assert events[3].causation_id == back.event_id


async def test_after_the_window_a_return_of_an_acknowledged_hazard_is_refused(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app(outbox={"enabled": False}, returns={"window_minutes": 0}) as (app, client):
        _hazard, acked = await _acknowledged_gas_dispatch(app, client, kafka, topics)
        late = await client.post(
            f"/api/v1/dispatches/{acked['dispatch_id']}/return",
            headers=auth("tok-gas"),
            json={"reason": "Too late"},
        )
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "return_window_passed"
        assert [e.TYPE for e in await outbox_events(app)] == ["hazard.dispatched", "hazard.acknowledged"]


async def test_in_approval_mode_the_operator_refuses_or_approves_a_return_after_receipt(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app(outbox={"enabled": False}, returns={"after_receipt": "approval"}) as (
        app,
        client,
    ):
        _hazard, acked = await _acknowledged_gas_dispatch(app, client, kafka, topics)
        url = f"/api/v1/dispatches/{acked['dispatch_id']}"
        asked = await client.post(
            url + "/return", headers=auth("tok-gas"), json={"reason": "Not a gas heater"}
        )
        assert asked.status_code == 202, asked.text
        request = asked.json()["dispatch"]["return_request"]
        assert (request["status"], request["reason"], request["requested_by"]) == (
            "awaiting_approval",
            "Not a gas heater",
            "dept-gas",
        )
        assert asked.json()["dispatch"]["status"] == "acknowledged"
        twice = await client.post(url + "/return", headers=auth("tok-gas"), json={"reason": "Again"})
        assert twice.status_code == 409
        assert twice.json()["error"]["code"] == "return_awaiting_approval"
        assert (await client.post(url + "/return/approve", headers=auth("tok-gas"))).status_code == 403

        refused = await client.post(
            url + "/return/refuse", headers=auth("tok-operator"), json={"reason": "The meter is a gas meter"}
        )
        assert refused.status_code == 200, refused.text
        assert refused.json()["status"] == "acknowledged"
        assert refused.json()["return_request"]["status"] == "refused"
        assert refused.json()["return_request"]["decided_by"] == "op-1"
        nothing = await client.post(url + "/return/approve", headers=auth("tok-operator"))
        assert nothing.status_code == 409
        assert nothing.json()["error"]["code"] == "no_return_request"
        assert [e.TYPE for e in await outbox_events(app)] == ["hazard.dispatched", "hazard.acknowledged"]

        asked = await client.post(
            url + "/return", headers=auth("tok-gas"), json={"reason": "Electric after all"}
        )
        assert asked.status_code == 202, asked.text
        approved = await client.post(url + "/return/approve", headers=auth("tok-operator"))
        assert approved.status_code == 200, approved.text
        assert approved.json()["dispatch"]["status"] == "returned"
        assert approved.json()["dispatch"]["acknowledged_at"] == acked["acknowledged_at"]
        assert approved.json()["dispatch"]["return_request"]["status"] == "approved"
        assert approved.json()["next"]["department_id"] == "fire"

        events = await outbox_events(app)
        assert [e.TYPE for e in events][2:] == ["hazard.returned", "hazard.dispatched"]
        back = events[2]
        assert isinstance(back, ev.HazardReturned)
        assert (back.payload.after_receipt, back.payload.approved_by, back.payload.reason) == (
            True,
            "op-1",
            "Electric after all",
        )
        assert back.payload.returned_by == "dept-gas"
