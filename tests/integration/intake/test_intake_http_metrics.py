"""Intake's HTTP metrics count every request: its hot (lean) routes, its other routes and the body limit's refusals."""

from __future__ import annotations

import json

import pytest
from prometheus_client import REGISTRY

from tests.integration.intake.intake_helpers import AppFactory, auth, report

pytestmark = pytest.mark.integration

OFF = {"outbox": {"enabled": False}, "broker": False}


def count(route: str, status_class: str, method: str = "POST") -> float:
    labels = {"service": "intake", "method": method, "route": route, "status_class": status_class}
    return REGISTRY.get_sample_value("hazard_http_requests_total", labels) or 0.0


async def test_hot_routes_routes_and_refusals_are_counted_by_template(intake_app: AppFactory) -> None:
    before = {
        "single": count("/api/v1/hazards", "2xx"),
        "batch": count("/api/v1/hazards/batch", "2xx"),
        "too_large": count("/api/v1/hazards", "4xx"),
        "services": count("/open311/v2/services.{fmt}", "2xx", "GET"),
        "unmatched": count("(unmatched)", "4xx", "GET"),
    }
    async with intake_app(**OFF) as (_app, client):
        fast = await client.post("/api/v1/hazards", json=report(), headers=auth("tok-gm1"))
        assert fast.status_code == 201, fast.text
        assert fast.headers["x-request-id"]
        routed = await client.post(
            "/api/v1/hazards",
            content=json.dumps(report()),
            headers={**auth("tok-gm1"), "Content-Type": "application/vnd.hazard+json"},
        )
        assert routed.status_code == 201, routed.text
        batch = await client.post(
            "/api/v1/hazards/batch", json={"reports": [report(), report()]}, headers=auth("tok-gm1")
        )
        assert batch.status_code == 200, batch.text
        huge = await client.post(
            "/api/v1/hazards",
            content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
            headers={**auth("tok-gm1"), "Content-Type": "application/json"},
        )
        assert huge.status_code == 413
        hazard_id = fast.json()["hazard_id"]
        assert (await client.get("/open311/v2/services.json")).status_code == 200
        assert (await client.get(f"/no/such/{hazard_id}")).status_code == 404
        exposed = (await client.get("/metrics")).text
    assert count("/api/v1/hazards", "2xx") - before["single"] == 2
    assert count("/api/v1/hazards/batch", "2xx") - before["batch"] == 1
    assert count("/api/v1/hazards", "4xx") - before["too_large"] == 1
    assert count("/open311/v2/services.{fmt}", "2xx", "GET") - before["services"] == 1
    assert count("(unmatched)", "4xx", "GET") - before["unmatched"] == 1
    assert (
        'hazard_http_requests_total{method="POST",route="/api/v1/hazards",service="intake",status_class="2xx"}'
        in exposed
    )
    assert "hazard_http_request_duration_seconds_bucket" in exposed
    assert hazard_id not in exposed
