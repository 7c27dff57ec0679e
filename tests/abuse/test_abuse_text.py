"""The JSON escapes ``\\u0000`` and ``\\ud800`` in every text field of every write route, on real objects.

Each body is otherwise valid and aimed at an object the caller may act on (a pending dispatch of
its department, a case awaiting its rectification or verification, a hazard in the operators'
queue), so without the shared text type the value reached PostgreSQL and the answer was 500. Now
every such field is a 422 (Open311: 400) in the error shape, the object is untouched, and the
same body without the bad character then succeeds. A POST route added without a row here fails
the coverage check.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.abuse.checks import error_shape_problem
from tests.abuse.test_abuse_access import publish, reported_event
from tests.support.oracles import read_lifecycle
from tests.support.system import SERVICES, System

pytestmark = pytest.mark.integration

BAD = {"NUL": "\x00", "surrogate": "\ud800"}


def escaped(body: Any) -> bytes:
    """JSON with ``\\uXXXX`` escapes, as client libraries send these characters."""
    content = json.dumps(body).encode()
    assert b"\\u0000" in content or b"\\ud800" in content
    return content


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def objects(system: System) -> dict[str, str]:
    """A fire hazard (dispatched, then acknowledged by fire: awaiting rectification), two police
    hazards (pending dispatches: one to return, one to reassign) and an unroutable hazard (in the
    operators' queue)."""
    rng = random.Random(7)
    fire = reported_event(system, grid="liuyue-01", category="locked_rooftop_door", rng=rng)
    police = reported_event(system, grid="silian-03", category="public_security_hazard", rng=rng)
    police2 = reported_event(system, grid="silian-02", category="public_security_hazard", rng=rng)
    other = reported_event(system, grid="liuyue-01", category="other", rng=rng)
    await publish(system, [fire, police, police2, other])
    wanted = {str(fire.hazard_id): "fire", str(police.hazard_id): "police", str(police2.hazard_id): "police2"}
    found: dict[str, str] = {"queued": str(other.hazard_id)}
    deadline = time.monotonic() + 90
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline and not all(name in found for name in wanted.values()):
            facts = await read_lifecycle(system.bootstrap_servers, system.lifecycle_topic)
            for dispatch_id, (hazard, _ts) in facts.dispatch_hazard.items():
                if hazard in wanted:
                    found[wanted[hazard]] = dispatch_id
                    found[f"{wanted[hazard]}_hazard"] = hazard
            await asyncio.sleep(1)
        assert all(name in found for name in wanted.values()), found
        fire_ack = await client.post(
            f"{system.url('dispatch')}/api/v1/dispatches/{found['fire']}/acknowledge",
            headers=system.headers("department", department_id="fire"),
        )
        assert fire_ack.status_code == 200, fire_ack.text
        case_url = f"{system.url('tracking')}/api/v1/hazards/{found['fire_hazard']}"
        while time.monotonic() < deadline:
            case = await client.get(case_url, headers=system.headers("supervisor"))
            if case.status_code == 200 and case.json()["state"] == "rectification_ordered":
                return found
            await asyncio.sleep(0.5)
    raise AssertionError(f"the fire case did not reach rectification_ordered: {found}")


def _check_refused(response: httpx.Response, what: str, *, status: int = 422) -> None:
    assert response.status_code == status, (what, response.status_code, response.text[:300])
    problem = error_shape_problem(
        response.status_code,
        response.headers.get("content-type", ""),
        response.content,
        open311=response.request.url.path.startswith("/open311"),
    )
    assert problem is None, (what, problem)


# (service, path template, role and scope, body with every text field, the fields to spoil)
Write = tuple[str, str, dict[str, str], Callable[[System], Any], list[tuple[str, ...]]]


def _report(system: System) -> dict[str, Any]:
    grid = system.reference.grid("liuyue-01")
    return {
        "report_id": str(uuid.uuid4()),
        "category": "locked_rooftop_door",
        "description": "Rooftop door padlocked",
        "location": {
            "lat": grid.center.lat,
            "lon": grid.center.lon,
            "address": "Liuyue 7",
            "building_id": "b7",
        },
        "grid_id": "liuyue-01",
        "observed_at": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "photos": ["https://img.example.org/a.jpg"],
        "campaign_id": None,
    }


REPORT_FIELDS = [
    ("description",),
    ("category",),
    ("grid_id",),
    ("location", "address"),
    ("location", "building_id"),
    ("photos", "0"),
    ("campaign_id",),
]
WRITES: dict[tuple[str, str], Write] = {
    ("intake", "/api/v1/hazards"): (
        "intake",
        "/api/v1/hazards",
        {"role": "reporter", "grid_id": "liuyue-01"},
        _report,
        REPORT_FIELDS,
    ),
    ("intake", "/api/v1/hazards/batch"): (
        "intake",
        "/api/v1/hazards/batch",
        {"role": "reporter", "grid_id": "liuyue-01"},
        lambda s: {"reports": [_report(s)]},
        [("reports", "0", *f) for f in REPORT_FIELDS],
    ),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/return"): (
        "dispatch",
        "/api/v1/dispatches/{police}/return",
        {"role": "department", "department_id": "police"},
        lambda s: {"reason": "Not a police matter"},
        [("reason",)],
    ),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/reassign"): (
        "dispatch",
        "/api/v1/dispatches/{police2}/reassign",
        {"role": "operator"},
        lambda s: {"department_id": "fire", "reason": "Fire exits involved"},
        [("department_id",), ("reason",)],
    ),
    ("dispatch", "/api/v1/hazards/{hazard_id}/assign"): (
        "dispatch",
        "/api/v1/hazards/{queued}/assign",
        {"role": "operator"},
        lambda s: {"department_id": "urban_management", "reason": "Illegal build"},
        [("department_id",), ("reason",)],
    ),
    # Before the rectification and verification rows below: the fire case still awaits rectification.
    ("tracking", "/api/v1/hazards/{hazard_id}/urgings"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/urgings",
        {"role": "supervisor"},
        lambda s: {"note": "Please rectify this week"},
        [("note",)],
    ),
    ("tracking", "/api/v1/hazards/{hazard_id}/notes"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/notes",
        {"role": "department", "department_id": "fire"},
        lambda s: {"note": "Locksmith booked", "photos": ["https://img.example.org/note.jpg"]},
        [("note",), ("photos", "0")],
    ),
    ("tracking", "/api/v1/hazards/{hazard_id}/rectification/extension"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/rectification/extension",
        {"role": "department", "department_id": "fire"},
        lambda s: {
            "deadline": (datetime.now(UTC) + timedelta(days=20)).isoformat(),
            "reason": "Parts on order",
        },
        [("reason",)],
    ),
    ("tracking", "/api/v1/hazards/{hazard_id}/rectification/extension/approve"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/rectification/extension/approve",
        {"role": "operator"},
        lambda s: {"note": "Agreed"},
        [("note",)],
    ),
    ("tracking", "/api/v1/hazards/{hazard_id}/rectification/extension/refuse"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/rectification/extension/refuse",
        {"role": "supervisor"},
        lambda s: {"note": "Not agreed"},
        [("note",)],
    ),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/extension"): (
        "dispatch",
        "/api/v1/dispatches/{fire}/extension",
        {"role": "department", "department_id": "fire"},
        lambda s: {"deadline": (datetime.now(UTC) + timedelta(days=2)).isoformat(), "reason": "Crew away"},
        [("reason",)],
    ),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/extension/approve"): (
        "dispatch",
        "/api/v1/dispatches/{fire}/extension/approve",
        {"role": "operator"},
        lambda s: {"note": "Agreed"},
        [("note",)],
    ),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/extension/refuse"): (
        "dispatch",
        "/api/v1/dispatches/{fire}/extension/refuse",
        {"role": "supervisor"},
        lambda s: {"note": "Not agreed"},
        [("note",)],
    ),
    ("tracking", "/api/v1/hazards/{hazard_id}/rectification"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/rectification",
        {"role": "department", "department_id": "fire"},
        lambda s: {"note": "Padlock removed", "photos": ["https://img.example.org/fixed.jpg"]},
        [("note",), ("photos", "0")],
    ),
    ("tracking", "/api/v1/hazards/{hazard_id}/verification"): (
        "tracking",
        "/api/v1/hazards/{fire_hazard}/verification",
        {"role": "reporter", "grid_id": "liuyue-01"},
        lambda s: {"passed": True, "note": "Door opens", "photos": ["https://img.example.org/ok.jpg"]},
        [("note",), ("photos", "0")],
    ),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/return/refuse"): (
        "dispatch",
        "/api/v1/dispatches/{fire}/return/refuse",
        {"role": "operator"},
        lambda s: {"reason": "Rooftop doors are fire's"},
        [("reason",)],
    ),
    # Runtime administration (#18), hosted by reporting; each clean body creates something new.
    ("reporting", "/api/v1/admin/principals"): (
        "reporting",
        "/api/v1/admin/principals",
        {"role": "operator"},
        lambda s: {
            "principal": f"bm-{uuid.uuid4().hex[:8]}",
            "role": "reporter",
            "grid_id": "liuyue-01",
            "reporter_type": "building_manager",
            "building_ids": ["b7"],
        },
        [("principal",), ("grid_id",), ("building_ids", "0")],
    ),
    ("reporting", "/api/v1/admin/departments"): (
        "reporting",
        "/api/v1/admin/departments",
        {"role": "operator"},
        lambda s: {
            "id": f"d_{uuid.uuid4().hex[:8]}",
            "name_en": "Hazmat",
            "name_zh": "危化品",
            "contacts": [{"name": "值班室", "phone": "0755 1234"}],
        },
        [("id",), ("name_en",), ("name_zh",), ("contacts", "0", "name"), ("contacts", "0", "phone")],
    ),
    ("reporting", "/api/v1/admin/routing-rules"): (
        "reporting",
        "/api/v1/admin/routing-rules",
        {"role": "operator"},
        # The rules in force again (a new version that routes as before: the other tests are unaffected).
        lambda s: {"rules": [r.model_dump(exclude_none=True) for r in s.reference.routing_rules]},
        [("rules", "0", "id"), ("rules", "0", "category"), ("rules", "0", "department_id")],
    ),
    ("reporting", "/api/v1/admin/routing-rules/rules"): (
        "reporting",
        "/api/v1/admin/routing-rules/rules",
        {"role": "operator"},
        # An override that routes as the generic rule does (roads): the other tests are unaffected.
        lambda s: {
            "id": f"r-{uuid.uuid4().hex[:8]}",
            "category": "road_hazard",
            "community_id": "liuyue",
            "grid_id": "liuyue-09",
            "department_id": "roads",
        },
        [("id",), ("category",), ("community_id",), ("grid_id",), ("department_id",)],
    ),
    ("reporting", "/api/v1/admin/campaigns"): (
        "reporting",
        "/api/v1/admin/campaigns",
        {"role": "operator"},
        lambda s: {
            "id": f"c-{uuid.uuid4().hex[:8]}",
            "name_en": "Test campaign",
            "name_zh": "测试专项",
            "starts_on": "2020-01-01",
            "ends_on": "2020-01-31",
            "categories": ["locked_rooftop_door"],
        },
        [("id",), ("name_en",), ("name_zh",), ("categories", "0")],
    ),
    ("reporting", "/api/v1/admin/campaigns/{campaign_id}/end"): (
        "reporting",
        "/api/v1/admin/campaigns/spring-fire-2026/end",
        {"role": "operator"},
        lambda s: {"ends_on": None},
        [],
    ),
}
# Routes whose clean body meets a state refusal here, not a success: the text passed validation and
# the domain answered (no return awaits the operator's decision on fire's acknowledged dispatch).
CLEAN_REFUSAL = {
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/return/refuse"): (409, "no_return_request"),
    # Fire's dispatch is acknowledged: no receipt deadline is left to extend or decide on.
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/extension"): (409, "already_acknowledged"),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/extension/approve"): (409, "no_extension_request"),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/extension/refuse"): (409, "no_extension_request"),
    # The rectification extension was requested and approved by the rows before it: none awaits.
    ("tracking", "/api/v1/hazards/{hazard_id}/rectification/extension/refuse"): (409, "invalid_state"),
    # The packaged spring campaign ended on 2026-05-25: ending it again is refused.
    ("reporting", "/api/v1/admin/campaigns/{campaign_id}/end"): (409, "campaign_ended"),
}
# Routes that take no body: nothing to spoil.
NO_BODY = {
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/acknowledge"),
    ("dispatch", "/api/v1/dispatches/{dispatch_id}/return/approve"),
    ("reporting", "/api/v1/admin/principals/{principal}/rotate"),
    ("reporting", "/api/v1/admin/principals/{principal}/revoke"),
}
# Routes that take a multipart upload, no JSON: their only form field besides the file is a UUID
# (tests/integration/intake/test_intake_photos.py tries them with bad input).
# The history import (#18) takes a CSV/xlsx file whose cells are checked row by row, NUL and
# surrogates included (tests/unit/intake/test_history_parse.py, tests/e2e/test_e2e_history_import.py).
MULTIPART = {("intake", "/api/v1/photos"), ("intake", "/api/v1/imports")}
OPEN311_FIELDS = ["description", "address_string", "attribute[building_id]", "media_url", "service_code"]


def spoil(body: Any, path: tuple[str, ...], bad: str) -> Any:
    """A copy of ``body`` with ``bad`` inside the string at ``path``."""
    copy = json.loads(json.dumps(body))
    parent = copy
    for key in path[:-1]:
        parent = parent[int(key)] if isinstance(parent, list) else parent[key]
    last: Any = int(path[-1]) if isinstance(parent, list) else path[-1]
    value = parent[last] if parent[last] is not None else "test"
    parent[last] = value[:3] + bad + value[3:]
    return copy


def test_every_write_route_is_covered(system: System) -> None:
    posts = set()
    for service in SERVICES:
        spec = httpx.get(system.url(service) + "/openapi.json", timeout=10).json()
        for path, methods in spec["paths"].items():
            if "post" in methods and not path.startswith("/open311/"):
                posts.add((service, path))
                if (service, path) in NO_BODY:
                    assert "requestBody" not in methods["post"], path
                if (service, path) in MULTIPART:
                    assert set(methods["post"]["requestBody"]["content"]) == {"multipart/form-data"}, path
    assert posts == set(WRITES) | NO_BODY | MULTIPART


@pytest.mark.parametrize("route", list(WRITES), ids=[f"{s}:{p}" for s, p in WRITES])
def test_nul_and_surrogate_escapes_in_every_text_field_are_refused_then_the_clean_body_works(
    system: System, objects: dict[str, str], route: tuple[str, str]
) -> None:
    service, template, who, make, fields = WRITES[route]
    url = system.url(service) + template.format(**objects)
    role = who["role"]
    headers = {**system.headers(role, **{k: v for k, v in who.items() if k != "role"})}
    body = make(system)
    with httpx.Client(timeout=30) as client:
        if route[1].endswith("/verification"):
            rectified = client.post(
                url.replace("/verification", "/rectification"),
                json={"note": "Padlock removed", "photos": []},
                headers=system.headers("department", department_id="fire"),
            )
            assert rectified.status_code in (200, 409), rectified.text
        for field in fields:
            for name, bad in BAD.items():
                response = client.post(
                    url,
                    content=escaped(spoil(body, field, bad)),
                    headers={**headers, "content-type": "application/json"},
                )
                what = f"POST {template} with {name} in {'.'.join(field)}"
                if route[1] == "/api/v1/hazards/batch":
                    # The batch answers 200 with the item refused on its own.
                    assert response.status_code == 200, (what, response.text[:300])
                    [item] = response.json()["results"]
                    assert (item["outcome"], item["http_status"]) == ("rejected", 422), (what, item)
                else:
                    _check_refused(response, what)
        clean = client.post(url, json=body, headers=headers)
        if route in CLEAN_REFUSAL:
            status, code = CLEAN_REFUSAL[route]
            assert (clean.status_code, clean.json()["error"]["code"]) == (status, code), clean.text[:300]
        else:
            assert clean.status_code in (200, 201, 202), (template, clean.status_code, clean.text[:300])


def test_open311_form_fields_with_nul_are_400(system: System) -> None:
    grid = system.reference.grid("liuyue-01")
    token = system.headers("reporter", grid_id="liuyue-01")["Authorization"].removeprefix("Bearer ")
    form = {
        "api_key": token,
        "service_code": "blocked_fire_passage",
        "lat": str(grid.center.lat),
        "long": str(grid.center.lon),
        "address_string": "Liuyue 9",
        "attribute[building_id]": "b9",
        "description": "Stairwell blocked",
        "media_url": "https://img.example.org/b.jpg",
    }
    url = system.url("intake") + "/open311/v2/requests.json"
    with httpx.Client(timeout=30) as client:
        for name in OPEN311_FIELDS:
            response = client.post(url, data={**form, name: form[name][:3] + "\x00" + form[name][3:]})
            _check_refused(response, f"Open311 POST with NUL in {name}", status=400)
        clean = client.post(url, data=form)
        assert clean.status_code == 201, clean.text
