"""Every success answer of tracking is exactly its declared response model (no field more, none less),
and the OpenAPI document names that model for the route."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from services.tracking.views import CaseList, CaseView, HotspotList, NoteView, UrgingView
from tests.integration.tracking.tracking_helpers import (
    AppFactory,
    Hazard,
    auth,
    ordered_case,
    publish,
    wait_for_state,
)
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration


def exactly(model: type[BaseModel], response: httpx.Response, status: int) -> dict[str, Any]:
    """The answer, checked to be the model's fields exactly, with the same values once dumped."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert model.model_validate(body).model_dump(mode="json") == body
    return body


async def test_each_answer_is_its_declared_model(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (app, client):
        hazard = await ordered_case(client, kafka, topics)
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        exactly(CaseView, await client.get(url, headers=auth("tok-fire")), 200)
        urged = exactly(
            UrgingView,
            await client.post(f"{url}/urgings", json={"note": "hurry"}, headers=auth("tok-operator")),
            201,
        )
        assert urged["hazard_id"] == str(hazard.hazard_id)
        noted = exactly(
            NoteView,
            await client.post(
                f"{url}/notes",
                json={"note": "locksmith ordered", "photos": ["https://img.example.org/n.jpg"]},
                headers=auth("tok-fire"),
            ),
            201,
        )
        assert noted["photos"] == ["https://img.example.org/n.jpg"]
        case = exactly(CaseView, await client.get(url, headers=auth("tok-supervisor")), 200)
        later = datetime.fromisoformat(case["deadlines"]["rectification"]) + timedelta(days=2)
        asked = exactly(
            CaseView,
            await client.post(
                f"{url}/rectification/extension",
                json={"deadline": later.isoformat(), "reason": "parts on order"},
                headers=auth("tok-fire"),
            ),
            202,
        )
        assert asked["extension_requests"]["rectification"]["status"] == "awaiting_approval"
        waiting = exactly(
            CaseList,
            await client.get(
                "/api/v1/hazards?extension_request=awaiting_approval", headers=auth("tok-supervisor")
            ),
            200,
        )
        assert [item["hazard_id"] for item in waiting["items"]] == [str(hazard.hazard_id)]
        exactly(
            CaseView,
            await client.post(
                f"{url}/rectification/extension/approve", json={"note": "ok"}, headers=auth("tok-supervisor")
            ),
            200,
        )
        exactly(
            CaseView,
            await client.post(
                f"{url}/rectification", json={"note": "padlock removed"}, headers=auth("tok-fire")
            ),
            200,
        )
        closed = exactly(
            CaseView,
            await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-01")),
            200,
        )
        assert closed["closed"] is not None

        # Two new reports at the same building: two relapses of the closed case, a hotspot.
        again = [Hazard(start=datetime.now(UTC)), Hazard(start=datetime.now(UTC) + timedelta(minutes=1))]
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *(h.reported() for h in again))
        for h in again:
            await wait_for_state(client, h.hazard_id, "reported")

        async def flagged() -> bool:
            response = await client.get("/api/v1/hotspots", headers=auth("tok-supervisor"))
            return bool(response.json()["hotspots"])

        await wait_for(flagged, timeout_s=30)
        spots = exactly(
            HotspotList, await client.get("/api/v1/hotspots", headers=auth("tok-supervisor")), 200
        )
        assert [(s["place_key"], s["relapses"]) for s in spots["hotspots"]] == [("building:B-12", 2)]
        original = exactly(CaseView, await client.get(url, headers=auth("tok-supervisor")), 200)
        assert sorted(original["relapsed_as"]) == sorted(str(h.hazard_id) for h in again)

        schema = app.openapi()
        declared = {
            ("/api/v1/hazards", "get", "200"): "CaseList",
            ("/api/v1/hazards/{hazard_id}", "get", "200"): "CaseView",
            ("/api/v1/hazards/{hazard_id}/rectification", "post", "200"): "CaseView",
            ("/api/v1/hazards/{hazard_id}/verification", "post", "200"): "CaseView",
            ("/api/v1/hazards/{hazard_id}/urgings", "post", "201"): "UrgingView",
            ("/api/v1/hazards/{hazard_id}/notes", "post", "201"): "NoteView",
            ("/api/v1/hazards/{hazard_id}/rectification/extension", "post", "202"): "CaseView",
            ("/api/v1/hazards/{hazard_id}/rectification/extension/approve", "post", "200"): "CaseView",
            ("/api/v1/hazards/{hazard_id}/rectification/extension/refuse", "post", "200"): "CaseView",
            ("/api/v1/hotspots", "get", "200"): "HotspotList",
        }
        for (path, method, status), model in declared.items():
            content = schema["paths"][path][method]["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": f"#/components/schemas/{model}"}, (path, method)
