"""Open311 service discovery (``/open311/discovery.json`` and ``.xml``) as the standard describes it.

The standard (wiki.open311.org/Service_Discovery): every field is required: ``changeset``,
``contact``, ``key_service`` and ``endpoints``, each endpoint with ``specification``, ``url``,
``changeset``, ``type`` (production or test) and ``formats`` (MIME types); JSON and XML both.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

import pytest

from tests.integration.intake.intake_helpers import AppFactory

pytestmark = pytest.mark.integration

OFF = {"outbox": {"enabled": False}, "broker": False}
GEOREPORT_V2 = "http://wiki.open311.org/GeoReport_v2"


def _sortable(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


async def test_discovery_json_lists_the_georeport_v2_endpoint(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (_app, client):
        response = await client.get("/open311/discovery.json")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("application/json")
        document = response.json()
        # The endpoint's own URL answers the service list.
        [endpoint] = document["endpoints"]
        services = await client.get(endpoint["url"] + "/services.json")
    assert set(document) == {"changeset", "contact", "key_service", "endpoints"}
    assert document["contact"]
    assert document["key_service"]
    _sortable(document["changeset"])
    assert endpoint["specification"] == GEOREPORT_V2
    assert endpoint["url"] == "http://intake/open311/v2"
    assert endpoint["type"] == "production"
    assert endpoint["formats"] == ["text/xml", "application/json"]
    assert _sortable(endpoint["changeset"]) <= _sortable(document["changeset"])
    assert services.status_code == 200


async def test_discovery_xml_has_the_same_fields_in_the_standards_shape(intake_app: AppFactory) -> None:
    extra = {
        "open311": {
            "discovery": {
                "public_url": "https://open311.example.gov/open311/v2",
                "endpoint_type": "test",
                "contact": "Call the city's hazard desk: +86 755 0000 0000",
                "key_service": "Ask your street office for a reporter token.",
            }
        }
    }
    async with intake_app(**OFF, **extra) as (_app, client):
        response = await client.get("/open311/discovery.xml")
        as_json = (await client.get("/open311/discovery.json")).json()
        unknown = await client.get("/open311/discovery.yaml")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/xml")
    assert response.content.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(response.content)
    assert root.tag == "discovery"
    assert [child.tag for child in root] == ["changeset", "contact", "key_service", "endpoints"]
    assert root.findtext("contact") == "Call the city's hazard desk: +86 755 0000 0000"
    assert root.findtext("key_service") == "Ask your street office for a reporter token."
    [endpoint] = root.findall("endpoints/endpoint")
    assert endpoint.findtext("specification") == GEOREPORT_V2
    assert endpoint.findtext("url") == "https://open311.example.gov/open311/v2"
    assert endpoint.findtext("type") == "test"
    assert [f.text for f in endpoint.findall("formats/format")] == ["text/xml", "application/json"]
    assert root.findtext("changeset") == as_json["changeset"]
    assert as_json["endpoints"][0]["url"] == "https://open311.example.gov/open311/v2"
    assert unknown.status_code == 404
