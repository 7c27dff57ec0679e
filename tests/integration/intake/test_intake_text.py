"""Text PostgreSQL cannot store (NUL, unpaired surrogates) sent as JSON escapes: 422 per field, per item.

``\\u0000`` and ``\\ud800`` are valid JSON escapes, so the body parses; before the shared text
type they reached the database and the client got a 500 (a whole batch failed, on every retry).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.integration.intake.intake_helpers import LAT, LON, AppFactory, auth, report, scalar

pytestmark = pytest.mark.integration

OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}
NUL = "\x00"
SURROGATE = "\ud800"


def escaped(body: Any) -> bytes:
    """The body as JSON with ``\\uXXXX`` escapes (what a client library sends for these characters)."""
    content = json.dumps(body).encode()
    assert b"\\u0000" in content or b"\\ud800" in content
    return content


def post_json(body: Any) -> dict[str, Any]:
    return {"content": escaped(body), "headers": {**auth("tok-gm1"), "content-type": "application/json"}}


# (field path in the report, value); the first element of the path is the top-level key.
BAD_FIELDS: list[tuple[tuple[str, ...], str]] = [
    (("description",), f"Door{NUL}locked"),
    (("description",), f"Door{SURROGATE}locked"),
    (("location", "address"), f"Liuyue{NUL}7"),
    (("location", "address"), f"Liuyue{SURROGATE}"),
    (("category",), f"locked_rooftop_door{NUL}"),
    (("grid_id",), f"liuyue-01{NUL}"),
    (("campaign_id",), f"test{NUL}"),
    (("photos",), f"https://img.example.org/{NUL}.jpg"),
    (("photos",), f"https://img.example.org/{SURROGATE}.jpg"),
]


def with_field(path: tuple[str, ...], value: str) -> dict[str, Any]:
    body = report()
    if path == ("photos",):
        body["photos"] = [value]
    elif len(path) == 2:
        body[path[0]][path[1]] = value
    else:
        body[path[0]] = value
    return body


@pytest.mark.parametrize(("path", "value"), BAD_FIELDS, ids=[f"{'.'.join(p)}-{v!a}" for p, v in BAD_FIELDS])
async def test_a_nul_or_unpaired_surrogate_in_a_report_field_is_422_naming_the_field(
    intake_app: AppFactory, path: tuple[str, ...], value: str
) -> None:
    async with intake_app(**OFF) as (app, client):
        response = await client.post("/api/v1/hazards", **post_json(with_field(path, value)))
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid"
        fields = [d["field"] for d in error["details"]]
        expected = ".".join(path) + (".0" if path == ("photos",) else "")
        assert expected in fields, error
        assert await scalar(app, "select count(*) from intake.reports") == 0


async def test_a_batch_refuses_only_the_items_holding_nul_or_surrogates(intake_app: AppFactory) -> None:
    good = [report(description="first"), report(description="second")]
    items = [
        good[0],
        report(description=f"bad{NUL}"),
        report(location={"lat": LAT, "lon": LON, "address": f"x{SURROGATE}"}),
        good[1],
    ]
    async with intake_app(**OFF) as (app, client):
        response = await client.post("/api/v1/hazards/batch", **post_json({"reports": items}))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [(r["outcome"], r["http_status"]) for r in results] == [
            ("created", 201),
            ("rejected", 422),
            ("rejected", 422),
            ("created", 201),
        ]
        assert [d["field"] for d in results[1]["error"]["details"]] == ["description"]
        assert [d["field"] for d in results[2]["error"]["details"]] == ["location.address"]
        assert await scalar(app, "select count(*) from intake.reports") == 2
        # The phone retries the same batch: the good items replay, the bad stay refused, nothing fails.
        again = await client.post("/api/v1/hazards/batch", **post_json({"reports": items}))
        assert [r["outcome"] for r in again.json()["results"]] == [
            "replayed",
            "rejected",
            "rejected",
            "replayed",
        ]


@pytest.mark.parametrize("name", ["description", "address_string", "attribute[building_id]", "media_url"])
async def test_open311_refuses_nul_in_a_form_field_with_400(intake_app: AppFactory, name: str) -> None:
    fields = {
        "api_key": "tok-gm1",
        "service_code": "blocked_fire_passage",
        "lat": str(LAT),
        "long": str(LON),
        "description": "Stairwell blocked",
        "attribute[report_id]": str(uuid.uuid4()),
    }
    fields[name] = f"https://img.example.org/a{NUL}b.jpg" if name == "media_url" else f"a{NUL}b"
    async with intake_app(**OFF) as (app, client):
        response = await client.post("/open311/v2/requests.json", data=fields)
        assert response.status_code == 400, response.text
        [error] = response.json()
        assert error["code"] == 400
        assert "NUL" in error["description"]
        assert await scalar(app, "select count(*) from intake.reports") == 0


async def test_nul_or_an_unpaired_surrogate_in_a_field_name_is_422_per_item(intake_app: AppFactory) -> None:
    """Names as well as values: refused in the error shape (a guard: pydantic already did so)."""
    async with intake_app(**OFF) as (app, client):
        for bad, problem in ((SURROGATE, "string_unicode"), (NUL, "extra_forbidden")):
            single = await client.post("/api/v1/hazards", **post_json({**report(), f"x{bad}": 1}))
            assert single.status_code == 422, single.text
            assert [d["type"] for d in single.json()["error"]["details"]] == [problem]
            batch = await client.post(
                "/api/v1/hazards/batch", **post_json({"reports": [{**report(), f"x{bad}": 1}, report()]})
            )
            assert batch.status_code == 200, batch.text
            assert [r["outcome"] for r in batch.json()["results"]] == ["rejected", "created"]
        assert await scalar(app, "select count(*) from intake.reports") == 2
