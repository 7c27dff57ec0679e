"""The hot routes' fast path (services/intake/fastpath.py) answers exactly as the FastAPI routes do.

``application/json`` requests of a reporter are answered by the fast path; the same body sent
as ``application/vnd.hazard+json`` (FastAPI reads any ``+json`` type as JSON) goes through the
FastAPI routes. Both must give the same status, headers that matter and body.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.integration.intake.intake_helpers import AppFactory, auth, report

pytestmark = pytest.mark.integration

OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}
FAST = "application/json"
ROUTED = "application/vnd.hazard+json"


async def _post(
    client: httpx.AsyncClient, path: str, body: Any, content_type: str, token: str = "tok-gm1"
) -> httpx.Response:
    return await client.post(
        path, content=json.dumps(body), headers={**auth(token), "Content-Type": content_type}
    )


def _without_ids(payload: Any) -> Any:
    """The answer with ids masked: they differ between the two rounds (and the second round's
    reports, at the same place, are open duplicates of the first's)."""
    if isinstance(payload, dict):
        return {
            k: "<id>" if k in ("hazard_id", "report_id", "duplicate_of") else _without_ids(v)
            for k, v in payload.items()
        }
    if isinstance(payload, list):
        return [_without_ids(v) for v in payload]
    return payload


async def test_single_reports_get_the_same_answers_either_way(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (_app, client):
        for content_type in (FAST, ROUTED):
            body = report()
            created = await _post(client, "/api/v1/hazards", body, content_type)
            assert created.status_code == 201, created.text
            assert created.headers["content-type"] == "application/json"
            replayed = await _post(client, "/api/v1/hazards", body, content_type)
            assert (replayed.status_code, replayed.json()) == (200, created.json())
        # Refusals: another body under a used id (409), another's grid (403), outside the street
        # (422), an unknown token (401), a department's token (403), a schema error (422), and
        # malformed JSON (400): the same status and body from both paths.
        used = report()
        assert (await _post(client, "/api/v1/hazards", used, FAST)).status_code == 201
        cases: list[tuple[str, Any, str]] = [
            ("conflict", {**used, "description": "another text"}, "tok-gm1"),
            ("not yours", report(grid_id="liuyue-02"), "tok-gm1"),
            ("outside", report(location={"lat": 10.0, "lon": 10.0}), "tok-gm1"),
            ("unknown token", report(), "nobody"),
            ("department", report(), "tok-fire"),
            ("schema", {**report(), "colour": "red"}, "tok-gm1"),
        ]
        for name, body, token in cases:
            fast = await _post(client, "/api/v1/hazards", body, FAST, token)
            routed = await _post(client, "/api/v1/hazards", body, ROUTED, token)
            assert fast.status_code == routed.status_code, name
            assert fast.status_code >= 400, name
            assert fast.json() == routed.json(), name
        for content_type in (FAST, ROUTED):
            malformed = await client.post(
                "/api/v1/hazards",
                content=b'{"report_id": ',
                headers={**auth("tok-gm1"), "Content-Type": content_type},
            )
            assert malformed.status_code == 400
            assert malformed.json()["error"]["code"] == "malformed_json"


async def test_batches_get_the_same_answers_either_way(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (_app, client):
        answers = []
        for content_type in (FAST, ROUTED):
            good = report()
            items = [good, report(grid_id="liuyue-02"), {**report(), "colour": "red"}, good]
            response = await _post(client, "/api/v1/hazards/batch", {"reports": items}, content_type)
            assert response.status_code == 200, response.text
            answers.append(_without_ids(response.json()))
        assert answers[0] == answers[1]
        assert [r["outcome"] for r in answers[0]["results"]] == [
            "created",
            "rejected",
            "rejected",
            "replayed",
        ]
        for body in ({"reports": []}, {"reports": [report()], "extra": 1}, {"items": [report()]}):
            fast = await _post(client, "/api/v1/hazards/batch", body, FAST)
            routed = await _post(client, "/api/v1/hazards/batch", body, ROUTED)
            assert fast.status_code == routed.status_code == 422
            assert fast.json() == routed.json()


async def test_a_request_handed_to_the_app_takes_one_token_of_the_rate_limit(intake_app: AppFactory) -> None:
    async with intake_app(rate_limit={"enabled": True, "requests_per_s": 0.1, "burst": 2}, **OFF) as (
        _app,
        client,
    ):
        # An invalid body is handed over to the app, which takes the token (once).
        invalid = await _post(client, "/api/v1/hazards", {**report(), "colour": "red"}, FAST)
        assert invalid.status_code == 422
        assert (await _post(client, "/api/v1/hazards", report(), FAST)).status_code == 201
        limited = await _post(client, "/api/v1/hazards", report(), FAST)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["retry-after"]) <= 10
