"""Every dispatch route's real answer is exactly its declared response model, and OpenAPI says so.

Each answer must validate against the model (no field missing, none extra: the models forbid
extras and declare no defaults) and come back byte for byte from it (same nullability, the
same timestamp spelling), so the document describes what clients get.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from services.dispatch import api
from tests.integration.dispatch.dispatch_helpers import AppFactory, auth, reported
from tests.integration.dispatch.test_dispatch_api import publish, wait_rows

pytestmark = pytest.mark.integration


def exactly(model: type[BaseModel], answer: Any) -> None:
    """The answer is what the model describes: validates, and dumps back to the same JSON."""
    assert model.model_validate(answer).model_dump(mode="json") == answer


async def test_every_answer_is_its_declared_model(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    rooftop, heater, other, security = (
        reported("locked_rooftop_door"),
        reported("direct_vent_water_heater"),
        reported("other"),
        reported("public_security_hazard"),
    )
    fire, gas, police = auth("tok-fire"), auth("tok-gas"), auth("tok-police")
    operator = auth("tok-operator")
    async with dispatch_app(timers={"enabled": False}) as (app, client):
        await publish(kafka, topics, rooftop, heater, other, security)
        await wait_rows(app, "select count(*) from dispatch.hazards", 4)

        page = await client.get("/api/v1/dispatches", headers=auth("tok-supervisor"))
        exactly(api.DispatchPage, page.json())
        ids = {item["hazard_id"]: item["dispatch_id"] for item in page.json()["items"]}
        one = await client.get(f"/api/v1/dispatches/{ids[str(rooftop.hazard_id)]}", headers=fire)
        exactly(api.DispatchOut, one.json())
        assert one.json()["report"] is not None
        assert one.json()["acknowledged_at"] is None

        acknowledged = await client.post(
            f"/api/v1/dispatches/{ids[str(rooftop.hazard_id)]}/acknowledge", headers=fire
        )
        assert acknowledged.status_code == 200, acknowledged.text
        exactly(api.DispatchOut, acknowledged.json())
        # Timestamps as isoformat() writes them, as before the models: "+00:00", never "Z".
        assert acknowledged.json()["acknowledged_at"].endswith("+00:00")

        returned = await client.post(
            f"/api/v1/dispatches/{ids[str(heater.hazard_id)]}/return",
            headers=gas,
            json={"reason": "Not ours"},
        )
        assert returned.status_code == 200, returned.text
        exactly(api.ReturnOut, returned.json())
        assert set(returned.json()["next"]) == {"dispatch_id", "department_id", "receipt_deadline", "reason"}
        rerouted = returned.json()["next"]["dispatch_id"]
        to_operators = await client.post(
            f"/api/v1/dispatches/{rerouted}/return", headers=fire, json={"reason": "Not ours either"}
        )
        assert to_operators.status_code == 200, to_operators.text
        exactly(api.ReturnOut, to_operators.json())
        assert to_operators.json()["next"] == {"operators_queue": True, "reason": "all_candidates_returned"}

        security_id = ids[str(security.hazard_id)]
        deadline = (await client.get(f"/api/v1/dispatches/{security_id}", headers=police)).json()[
            "receipt_deadline"
        ]
        asked = await client.post(
            f"/api/v1/dispatches/{security_id}/extension",
            headers=police,
            json={"deadline": _plus_a_day(deadline), "reason": "Crew away"},
        )
        assert asked.status_code == 202, asked.text
        exactly(api.DispatchOut, asked.json())
        approved = await client.post(f"/api/v1/dispatches/{security_id}/extension/approve", headers=operator)
        assert approved.status_code == 200, approved.text
        exactly(api.DispatchOut, approved.json())
        assert approved.json()["extension_request"]["status"] == "approved"

        reassigned = await client.post(
            f"/api/v1/dispatches/{security_id}/reassign",
            headers=operator,
            json={"department_id": "fire", "reason": "Fire matter"},
        )
        assert reassigned.status_code == 200, reassigned.text
        exactly(api.ReassignOut, reassigned.json())

        queue = await client.get("/api/v1/operator-queue", headers=operator)
        exactly(api.OperatorQueuePage, queue.json())
        assert {item["hazard_id"] for item in queue.json()["items"]} == {
            str(other.hazard_id),
            str(heater.hazard_id),
        }
        assigned = await client.post(
            f"/api/v1/hazards/{other.hazard_id}/assign",
            headers=operator,
            json={"department_id": "gas", "reason": "Gas"},
        )
        assert assigned.status_code == 200, assigned.text
        exactly(api.AssignOut, assigned.json())

        rules = await client.get("/api/v1/routing-rules", headers=operator)
        exactly(api.RoutingRulesOut, rules.json())

        document = app.openapi()
    # The document describes every success answer with its model.
    for path, operations in document["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in operations.items():
            success = [status for status in operation["responses"] if status.startswith("2")]
            assert success, (method, path)
            for status in success:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert "$ref" in schema, (method, path, status, schema)


def _plus_a_day(iso: str) -> str:
    return (datetime.fromisoformat(iso) + timedelta(days=1)).isoformat()
