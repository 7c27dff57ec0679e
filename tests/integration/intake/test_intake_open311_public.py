"""Open311 GET requests is public: dates at the ends of the calendar, and what anyone may list.

Before: ``start_date``/``end_date`` at year 1 or 9999 answered 500 without authentication, and
the listing showed every report's exact coordinates, address, building id and photo URL to anyone,
unthrottled. Now the dates are refused in the standard's error shape, and the listing is a set of
documented settings (``INTAKE__OPEN311__*``): on/off, coordinates rounded (default 3 decimals,
about 100 m), photos and address hidden by default, rate limited per client address.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest

from tests.integration.intake.intake_helpers import AppFactory, auth, report

pytestmark = pytest.mark.integration

OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}
# A point inside liuyue-01 with more precision than any listing shows.
EXACT_LAT, EXACT_LON = 22.6223456, 114.1687891

EDGE_DATES = [
    "0001-01-01",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+08:00",
    "9999-12-31",
    "9999-12-31T23:59:59Z",
    "9999-12-31T23:59:59-08:00",
    "1899-12-31T23:59:59Z",
    "3000-01-01T00:00:00Z",
]


@pytest.mark.parametrize("name", ["start_date", "end_date"])
async def test_dates_at_the_ends_of_the_calendar_are_a_400_not_a_500(
    intake_app: AppFactory, name: str
) -> None:
    async with intake_app(**OFF) as (_app, client):
        for value in EDGE_DATES:
            for fmt in ("json", "xml"):
                response = await client.get(f"/open311/v2/requests.{fmt}", params={name: value})
                assert response.status_code == 400, (name, value, fmt, response.text)
                if fmt == "json":
                    [error] = response.json()
                    assert error["code"] == 400
                    assert name in error["description"]
                    assert "1900" in error["description"]
                else:
                    assert ET.fromstring(response.content).findtext("error/code") == "400"
        # The ends of the accepted range still work.
        response = await client.get(
            "/open311/v2/requests.json",
            params={"start_date": "1900-01-01T00:00:00Z", "end_date": "2999-12-31T23:59:59Z"},
        )
        assert response.status_code == 200, response.text


async def _one_report(client: httpx.AsyncClient) -> str:
    body = report(
        location={
            "lat": EXACT_LAT,
            "lon": EXACT_LON,
            "address": "Liuyue, building 7",
            "building_id": "ly01-b7",
        },
        photos=["https://img.example.org/face.jpg"],
    )
    response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
    assert response.status_code == 201, response.text
    return str(response.json()["hazard_id"])


async def test_by_default_the_listing_rounds_coordinates_and_hides_photos_and_address(
    intake_app: AppFactory,
) -> None:
    async with intake_app(**OFF) as (_app, client):
        hazard_id = await _one_report(client)
        [listed] = (await client.get("/open311/v2/requests.json")).json()
        [single] = (await client.get(f"/open311/v2/requests/{hazard_id}.json")).json()
        for item in (listed, single):
            assert item["service_request_id"] == hazard_id
            assert (item["lat"], item["long"]) == (22.622, 114.169)
            assert item["media_url"] is None
            assert item["address"] is None
            assert item["address_id"] is None
            assert item["description"] == "Rooftop escape door padlocked"
        xml = ET.fromstring((await client.get(f"/open311/v2/requests/{hazard_id}.xml")).content)
        assert (xml.findtext("request/lat"), xml.findtext("request/long")) == ("22.622", "114.169")
        assert "face.jpg" not in ET.tostring(xml, encoding="unicode")


async def test_the_listing_settings_show_more_or_turn_it_off(intake_app: AppFactory) -> None:
    everything = {"open311": {"coordinate_decimals": 6, "show_photos": True, "show_address": True}}
    async with intake_app(**OFF, **everything) as (_app, client):
        hazard_id = await _one_report(client)
        [item] = (await client.get(f"/open311/v2/requests/{hazard_id}.json")).json()
        assert (item["lat"], item["long"]) == (22.622346, 114.168789)
        assert item["media_url"] == "https://img.example.org/face.jpg"
        assert (item["address"], item["address_id"]) == ("Liuyue, building 7", "ly01-b7")

    async with intake_app(**OFF, open311={"public_listing": False}) as (_app, client):
        hazard_id = await _one_report(client)
        for path in ("/open311/v2/requests.json", f"/open311/v2/requests/{hazard_id}.json"):
            response = await client.get(path)
            assert response.status_code == 403, response.text
            [error] = response.json()
            assert "not published" in error["description"]
            assert hazard_id not in response.text
        # Reporting the Open311 way and the service list still work.
        assert (await client.get("/open311/v2/services.json")).status_code == 200


async def test_the_listing_is_rate_limited_per_client_address(intake_app: AppFactory) -> None:
    limit = {"open311": {"rate_limit": {"requests_per_s": 0.01, "burst": 3}}}
    async with intake_app(**OFF, **limit) as (app, client):
        answers = [(await client.get("/open311/v2/requests.json")).status_code for _ in range(5)]
        assert answers == [200, 200, 200, 429, 429]
        limited = await client.get("/open311/v2/requests.xml")
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert ET.fromstring(limited.content).findtext("error/code") == "429"
        single = await client.get("/open311/v2/requests/00000000-0000-0000-0000-000000000000.json")
        assert single.status_code == 429
        # Another address has its own bucket.
        other = httpx.ASGITransport(app=app, client=("10.0.0.9", 40000))
        async with httpx.AsyncClient(transport=other, base_url="http://intake") as elsewhere:
            assert (await elsewhere.get("/open311/v2/requests.json")).status_code == 200
        # Reporters' own routes are not charged to the public bucket.
        assert (
            await client.post("/api/v1/hazards", json=report(), headers=auth("tok-gm1"))
        ).status_code == 201
