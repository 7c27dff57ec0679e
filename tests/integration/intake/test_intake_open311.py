"""Open311 GeoReport v2: services, service definitions, requests in and out, JSON and XML."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.intake.open311 import REQUEST_FIELDS
from shared.reference import load_reference_data
from tests.integration.intake.intake_helpers import LAT, LON, AppFactory, auth, report, scalar

pytestmark = pytest.mark.integration

OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}
SERVICE_FIELDS = ["service_code", "service_name", "description", "metadata", "type", "keywords", "group"]
# GeoReport v2, GET requests: every field a service request carries.
GEOREPORT_REQUEST_FIELDS = [
    "service_request_id",
    "status",
    "status_notes",
    "service_name",
    "service_code",
    "description",
    "agency_responsible",
    "service_notice",
    "requested_datetime",
    "updated_datetime",
    "expected_datetime",
    "address",
    "address_id",
    "zipcode",
    "lat",
    "long",
    "media_url",
]


def form(**fields: str) -> dict[str, str]:
    base = {
        "api_key": "tok-gm1",
        "service_code": "blocked_fire_passage",
        "lat": str(LAT),
        "long": str(LON),
        "address_string": "Liuyue, building 9",
        "description": "Stairwell blocked with boxes",
        "media_url": "https://img.example.org/b.jpg",
        "email": "someone@example.org",
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v != ""}


async def test_services_list_every_category_in_json_and_xml(intake_app: AppFactory) -> None:
    codes = [c.code for c in load_reference_data().categories]
    async with intake_app(**OFF) as (_app, client):
        services = (await client.get("/open311/v2/services.json")).json()
        assert [s["service_code"] for s in services] == codes
        assert all(list(s) == SERVICE_FIELDS for s in services)
        rooftop = services[0]
        assert rooftop["service_name"] == "Locked rooftop escape door"
        assert rooftop["type"] == "realtime"
        assert rooftop["metadata"] is True
        assert rooftop["group"] == "fire"

        xml = await client.get("/open311/v2/services.xml")
        assert xml.status_code == 200
        assert xml.headers["content-type"].startswith("text/xml")
        root = ET.fromstring(xml.content)
        assert root.tag == "services"
        assert [s.findtext("service_code") for s in root.findall("service")] == codes
        assert [child.tag for child in root.find("service")] == SERVICE_FIELDS  # type: ignore[union-attr]
        assert root.find("service/metadata").text == "true"  # type: ignore[union-attr]

        definition = (await client.get("/open311/v2/services/gas_leak.json")).json()
        assert definition["service_code"] == "gas_leak"
        attributes = {a["code"]: a for a in definition["attributes"]}
        assert set(attributes) == {"grid_id", "building_id", "report_id", "rectified_on_site"}
        for attribute in definition["attributes"]:
            assert {
                "variable",
                "code",
                "datatype",
                "required",
                "datatype_description",
                "order",
                "description",
            } <= set(attribute)
        assert {"key": "liuyue-01", "name": "Liuyue Grid 01"} in attributes["grid_id"]["values"]
        xml_def = ET.fromstring((await client.get("/open311/v2/services/gas_leak.xml")).content)
        assert xml_def.tag == "service_definition"
        assert [a.findtext("code") for a in xml_def.findall("attributes/attribute")] == list(attributes)
        assert xml_def.find("attributes/attribute/values/value/key").text == "liuyue-01"  # type: ignore[union-attr]

        unknown = await client.get("/open311/v2/services/burning_sofa.json")
        assert unknown.status_code == 404
        [error] = unknown.json()
        assert error["code"] == 404
        assert "gas_leak" in error["description"]
        unknown_xml = await client.get("/open311/v2/services/burning_sofa.xml")
        assert unknown_xml.status_code == 404
        root = ET.fromstring(unknown_xml.content)
        assert root.tag == "errors"
        assert root.findtext("error/code") == "404"
        assert (await client.get("/open311/v2/services.yaml")).status_code == 404


async def test_a_request_posted_the_open311_way_is_a_report(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (app, client):
        created = await client.post("/open311/v2/requests.json", data=form())
        assert created.status_code == 201, created.text
        [answer] = created.json()
        assert set(answer) == {"service_request_id", "service_notice", "account_id"}
        request_id = answer["service_request_id"]

        [item] = (await client.get(f"/open311/v2/requests/{request_id}.json")).json()
        assert list(item) == GEOREPORT_REQUEST_FIELDS == list(REQUEST_FIELDS)
        assert item["service_request_id"] == request_id
        assert item["status"] == "open"
        assert item["service_code"] == "blocked_fire_passage"
        assert item["service_name"] == "Blocked fire passage or escape route"
        assert item["description"] == "Stairwell blocked with boxes"
        # The public defaults: address and photo hidden, coordinates to 3 decimals (about 100 m).
        assert item["address"] is None
        assert (item["lat"], item["long"]) == (round(LAT, 3), round(LON, 3))
        assert item["media_url"] is None
        assert item["agency_responsible"] is None
        requested = datetime.fromisoformat(item["requested_datetime"])
        assert abs(requested - datetime.now(UTC)) < timedelta(minutes=5)
        # Never who reported it.
        assert "gm-liuyue-01" not in str(item)
        assert "someone@example.org" not in str(item)

        xml = await client.get(f"/open311/v2/requests/{request_id}.xml")
        root = ET.fromstring(xml.content)
        assert root.tag == "service_requests"
        [request] = root.findall("request")
        assert [child.tag for child in request] == GEOREPORT_REQUEST_FIELDS
        assert request.findtext("service_request_id") == request_id
        assert request.findtext("status") == "open"
        assert request.findtext("long") == str(round(LON, 3))

        # XML POST, with the grid named and an idempotency key: a retry gives the same request.
        key = str(uuid.uuid4())
        fields = form(
            **{
                "attribute[grid_id]": "liuyue-01",
                "attribute[report_id]": key,
                "attribute[building_id]": "ly01-b9",
            }
        )
        first = await client.post("/open311/v2/requests.xml", data=fields)
        assert first.status_code == 201
        again = await client.post("/open311/v2/requests.xml", data=fields)
        assert again.status_code == 200
        first_id = ET.fromstring(first.content).findtext("request/service_request_id")
        assert ET.fromstring(again.content).findtext("request/service_request_id") == first_id
        [by_xml] = (await client.get(f"/open311/v2/requests/{first_id}.json")).json()
        assert by_xml["service_request_id"] == first_id
        assert by_xml["address_id"] is None  # the building id would undo the rounding
        stored = await scalar(
            app, "select building_id from intake.reports where hazard_id = :h", h=uuid.UUID(first_id)
        )
        assert stored == "ly01-b9"


async def test_open311_post_errors_are_lists_of_code_and_description(intake_app: AppFactory) -> None:
    cases = [
        (form(api_key=""), 403),
        (form(api_key="tok-fire"), 403),
        (form(api_key="nonsense"), 403),
        (form(**{"attribute[grid_id]": "liuyue-02"}), 403),
        (form(service_code=""), 400),
        (form(service_code="burning_sofa"), 400),
        (form(lat=""), 400),
        (form(lat="22.50", long="114.20"), 400),
        (form(lat="north"), 400),
        (form(media_url="ftp://img.example.org/x.jpg"), 400),
        (form(description="d" * 2001), 400),
    ]
    async with intake_app(**OFF) as (_app, client):
        for fields, status in cases:
            response = await client.post("/open311/v2/requests.json", data=fields)
            assert response.status_code == status, (fields, response.text)
            [error] = response.json()
            assert set(error) == {"code", "description"}
            assert error["code"] == status
            xml = await client.post("/open311/v2/requests.xml", data=fields)
            assert xml.status_code == status
            root = ET.fromstring(xml.content)
            assert root.tag == "errors"
            assert root.findtext("error/code") == str(status)
            assert root.findtext("error/description")
        listed = (await client.get("/open311/v2/requests.json")).json()
        assert listed == []


async def test_get_requests_filters(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (_app, client):
        ids = {}
        for name, category, building in [
            ("rooftop", "locked_rooftop_door", "b1"),
            ("gas", "gas_leak", "b2"),
            ("on_site", "ebike_indoor_charging", "b3"),
        ]:
            body = report(
                category=category,
                rectified_on_site=name == "on_site",
                location={"building_id": f"ly01-{building}"},
            )
            response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
            assert response.status_code == 201
            ids[name] = response.json()["hazard_id"]

        async def listed(query: str) -> list[str]:
            response = await client.get(f"/open311/v2/requests.json{query}")
            assert response.status_code == 200, response.text
            return sorted(item["service_request_id"] for item in response.json())

        assert await listed("") == sorted(ids.values())
        assert await listed("?status=open") == sorted([ids["rooftop"], ids["gas"]])
        assert await listed("?status=closed") == [ids["on_site"]]
        assert await listed("?service_code=gas_leak,ebike_indoor_charging") == sorted(
            [ids["gas"], ids["on_site"]]
        )
        assert await listed(f"?service_request_id={ids['gas']},{ids['rooftop']}") == sorted(
            [ids["gas"], ids["rooftop"]]
        )
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert await listed(f"?start_date={tomorrow}") == []
        assert await listed(f"?start_date={yesterday}&end_date={tomorrow}") == sorted(ids.values())
        assert await listed(f"?end_date={yesterday}") == []
        [on_site] = (
            await client.get(f"/open311/v2/requests.json?service_request_id={ids['on_site']}")
        ).json()
        assert on_site["status"] == "closed"
        assert on_site["service_notice"] == "Rectified on site."

        xml = ET.fromstring((await client.get("/open311/v2/requests.xml?status=open")).content)
        assert xml.tag == "service_requests"
        assert sorted(r.findtext("service_request_id") or "" for r in xml.findall("request")) == sorted(
            [ids["rooftop"], ids["gas"]]
        )
        for bad in (
            "?status=pending",
            "?start_date=yesterday",
            "?service_request_id=42",
            "?service_code=nope",
        ):
            response = await client.get(f"/open311/v2/requests.json{bad}")
            assert response.status_code == 400, bad
            assert response.json()[0]["code"] == 400
        missing = await client.get(f"/open311/v2/requests/{uuid.uuid4()}.json")
        assert missing.status_code == 404
        assert missing.json()[0]["code"] == 404
