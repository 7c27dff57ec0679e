"""Open311 XML rendering: lists become repeated elements, None empty, booleans true/false."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from services.intake.open311 import to_xml


def test_lists_and_values_render_as_the_standard_shapes() -> None:
    doc = to_xml(
        "service_requests",
        [{"service_request_id": "1", "lat": 22.5, "agency_responsible": None, "flag": True}],
    )
    assert doc.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    root = ET.fromstring(doc)
    [request] = root.findall("request")
    assert [(c.tag, c.text) for c in request] == [
        ("service_request_id", "1"),
        ("lat", "22.5"),
        ("agency_responsible", None),
        ("flag", "true"),
    ]


def test_nested_attributes_and_values() -> None:
    root = ET.fromstring(
        to_xml(
            "service_definition",
            {"service_code": "x", "attributes": [{"code": "a", "values": [{"key": "k"}]}]},
        )
    )
    assert root.findtext("attributes/attribute/values/value/key") == "k"
    errors = ET.fromstring(to_xml("errors", [{"code": 400, "description": "bad <thing> & more"}]))
    assert errors.findtext("error/description") == "bad <thing> & more"
