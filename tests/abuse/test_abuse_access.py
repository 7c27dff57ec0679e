"""Unauthorised and cross-department access: refused with the right status, nothing of another's leaks.

Two real hazards go through the system (a locked rooftop door in liuyue-01, routed to fire;
a public security hazard in silian-03, routed to police). Then callers try what they must
not: no or bad tokens everywhere, the police reading or acting on fire's dispatch and case,
a reporter of another grid reading or verifying, reporters and departments reading the
supervisors' reports. Contract (API.md): 401 without a valid token; an object the caller may
not see is 404 for reads and actions alike, naming nobody; 403 for a wrong role.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from bench.loadgen import building
from shared import events as ev
from tests.abuse.checks import error_shape_problem
from tests.support.oracles import read_lifecycle
from tests.support.system import SERVICES, System

pytestmark = pytest.mark.integration

OPERATIONAL = {"/healthz", "/readyz", "/metrics", "/asyncapi.json", "/asyncapi"}


def reported_event(system: System, *, grid: str, category: str, rng: random.Random) -> ev.HazardReported:
    """A valid ``hazard.reported`` for a new hazard (as intake would publish it)."""
    now = ev.utcnow()
    place = building(system.reference, grid, rng.randrange(9000, 9999))
    return ev.HazardReported(
        event_id=uuid.uuid4(),
        occurred_at=now,
        hazard_id=uuid.uuid4(),
        producer="test",
        payload=ev.HazardReportedPayload(
            report_id=uuid.uuid4(),
            category=category,
            description="Access test hazard",
            location=ev.Location(
                lat=place.lat, lon=place.lon, address=place.address, building_id=place.building_id
            ),
            grid_id=grid,
            community_id=system.reference.community_of_grid(grid).id,
            street_id=system.reference.street.id,
            reporter_id=f"gm-{grid}-1",
            observed_at=now,
            accepted_at=now,
        ),
    )


async def publish(system: System, events: list[ev.HazardReported]) -> None:
    """Put events on the lifecycle topic."""
    producer = AIOKafkaProducer(bootstrap_servers=system.bootstrap_servers, request_timeout_ms=40_000)
    await producer.start()
    try:
        for event in events:
            await producer.send_and_wait(
                system.lifecycle_topic, ev.dump_event(event), key=str(event.hazard_id).encode()
            )
    finally:
        await producer.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def hazards(system: System) -> dict[str, dict[str, str]]:
    """A fire hazard in liuyue-01 and a police hazard in silian-03, dispatched and with a case in tracking."""
    rng = random.Random(42)
    fire = reported_event(system, grid="liuyue-01", category="locked_rooftop_door", rng=rng)
    police = reported_event(system, grid="silian-03", category="public_security_hazard", rng=rng)
    await publish(system, [fire, police])
    wanted = {str(fire.hazard_id): "fire", str(police.hazard_id): "police"}
    deadline = time.monotonic() + 90
    found: dict[str, dict[str, str]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        while time.monotonic() < deadline and len(found) < 2:
            facts = await read_lifecycle(system.bootstrap_servers, system.lifecycle_topic)
            for dispatch_id, (hazard, _ts) in facts.dispatch_hazard.items():
                if hazard in wanted:
                    found[wanted[hazard]] = {"hazard_id": hazard, "dispatch_id": dispatch_id}
            if len(found) == 2:
                cases = [
                    await client.get(
                        f"{system.url('tracking')}/api/v1/hazards/{h['hazard_id']}",
                        headers=system.headers("supervisor"),
                    )
                    for h in found.values()
                ]
                if all(c.status_code == 200 and c.json()["dispatch_id"] for c in cases):
                    return found
                found = {}
            await asyncio.sleep(1)
    raise AssertionError(f"the two hazards were not dispatched and tracked in time: {found}")


def _operations(system: System, service: str) -> list[tuple[str, str]]:
    spec = httpx.get(system.url(service) + "/openapi.json", timeout=10).json()
    operations = []
    for path, methods in spec["paths"].items():
        for method in methods:
            if method in ("get", "post", "put", "patch", "delete"):
                operations.append((method.upper(), path))
    return operations


def _concrete(path: str) -> str:
    """Fill path parameters with a well-formed id."""
    out = []
    for part in path.split("/"):
        out.append(str(uuid.uuid4()) if part.startswith("{") else part)
    return "/".join(out)


def _assert_error(response: httpx.Response, status: int | set[int]) -> None:
    allowed = {status} if isinstance(status, int) else status
    assert response.status_code in allowed, (
        response.request.method,
        response.request.url,
        response.status_code,
        response.text[:300],
    )
    problem = error_shape_problem(
        response.status_code, response.headers.get("content-type", ""), response.content
    )
    assert problem is None, problem


@pytest.mark.parametrize("service", SERVICES)
def test_every_api_route_refuses_missing_bad_and_non_bearer_tokens(system: System, service: str) -> None:
    guarded = [(m, p) for m, p in _operations(system, service) if p.startswith("/api/")]
    assert guarded or service == "intake", f"{service} has no /api/ routes"
    for method, path in guarded:
        url = system.url(service) + _concrete(path)
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": "Basic dXNlcjpwYXNz"},
            {"Authorization": "Bearer"},
        ):
            response = httpx.request(
                method, url, headers=headers, json={} if method == "POST" else None, timeout=10
            )
            _assert_error(response, 401)
            assert response.json()["error"]["code"] == "unauthenticated"
            assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_a_department_sees_and_touches_only_its_own_dispatches(
    system: System, hazards: dict[str, Any]
) -> None:
    base = system.url("dispatch")
    fire_dispatch = hazards["fire"]["dispatch_id"]
    police = system.headers("department", department_id="police")
    fire = system.headers("department", department_id="fire")
    listing = httpx.get(f"{base}/api/v1/dispatches", params={"limit": 500}, headers=police, timeout=10).json()
    assert {d["department_id"] for d in listing["items"]} <= {"police"}
    assert fire_dispatch not in {d["dispatch_id"] for d in listing["items"]}
    own = httpx.get(f"{base}/api/v1/dispatches", params={"limit": 500}, headers=fire, timeout=10).json()
    assert fire_dispatch in {d["dispatch_id"] for d in own["items"]}
    _assert_error(
        httpx.get(f"{base}/api/v1/dispatches", params={"department_id": "fire"}, headers=police, timeout=10),
        403,
    )
    _assert_error(httpx.get(f"{base}/api/v1/dispatches/{fire_dispatch}", headers=police, timeout=10), 404)
    acknowledged = httpx.post(
        f"{base}/api/v1/dispatches/{fire_dispatch}/acknowledge", headers=police, timeout=10
    )
    _assert_error(acknowledged, 404)
    returned = httpx.post(
        f"{base}/api/v1/dispatches/{fire_dispatch}/return",
        json={"reason": "not ours"},
        headers=police,
        timeout=10,
    )
    _assert_error(returned, 404)
    assert "fire" not in acknowledged.text + returned.text
    _assert_error(
        httpx.post(
            f"{base}/api/v1/dispatches/{fire_dispatch}/reassign",
            json={"department_id": "police", "reason": "grab it"},
            headers=fire,
            timeout=10,
        ),
        403,
    )
    for role in ("reporter", "supervisor"):
        _assert_error(
            httpx.post(
                f"{base}/api/v1/dispatches/{fire_dispatch}/acknowledge",
                headers=system.headers(role),
                timeout=10,
            ),
            403,
        )
    still = httpx.get(f"{base}/api/v1/dispatches/{fire_dispatch}", headers=fire, timeout=10).json()
    assert still["status"] == "pending", "nobody else changed fire's dispatch"


def test_cases_are_hidden_from_other_departments_and_grids(system: System, hazards: dict[str, Any]) -> None:
    base = system.url("tracking")
    hazard = hazards["fire"]["hazard_id"]
    police = system.headers("department", department_id="police")
    other_grid = system.headers("reporter", grid_id="silian-03")
    own_grid = system.headers("reporter", grid_id="liuyue-01")
    _assert_error(httpx.get(f"{base}/api/v1/hazards/{hazard}", headers=police, timeout=10), 404)
    _assert_error(httpx.get(f"{base}/api/v1/hazards/{hazard}", headers=other_grid, timeout=10), 404)
    assert httpx.get(f"{base}/api/v1/hazards/{hazard}", headers=own_grid, timeout=10).status_code == 200
    body = {"note": "done", "photos": []}
    rectified = httpx.post(
        f"{base}/api/v1/hazards/{hazard}/rectification", json=body, headers=police, timeout=10
    )
    _assert_error(rectified, 404)
    verified = httpx.post(
        f"{base}/api/v1/hazards/{hazard}/verification",
        json={"passed": True, "note": "", "photos": []},
        headers=other_grid,
        timeout=10,
    )
    _assert_error(verified, 404)
    for hidden in (rectified, verified):
        assert "fire" not in hidden.text, hidden.text
        assert "liuyue-01" not in hidden.text, hidden.text
    case = httpx.get(
        f"{base}/api/v1/hazards/{hazard}", headers=system.headers("supervisor"), timeout=10
    ).json()
    assert case["state"] == "dispatched", "nobody else moved the case"


def test_reports_are_for_supervisors_and_operators_only(system: System) -> None:
    base = system.url("reporting")
    # /api/v1/whoami is every signed-in person's (the people's pages ask who they are); the rest,
    # figures and runtime administration, are not for reporters and departments.
    paths = [
        p
        for m, p in _operations(system, "reporting")
        if m == "GET" and p.startswith("/api/") and p != "/api/v1/whoami"
    ]
    assert any(p.startswith("/api/v1/reports/") for p in paths)
    assert any(p.startswith("/api/v1/admin/") for p in paths)
    for path in paths:
        for role in ("reporter", "department"):
            _assert_error(httpx.get(base + _concrete(path), headers=system.headers(role), timeout=10), 403)
    for role in ("reporter", "department"):
        me = httpx.get(f"{base}/api/v1/whoami", headers=system.headers(role), timeout=10)
        assert me.status_code == 200, me.text
        assert me.json()["role"] == role
    _assert_error(httpx.get(f"{base}/api/v1/whoami", timeout=10), 401)
    assert (
        httpx.get(
            f"{base}/api/v1/reports/summary", headers=system.headers("supervisor"), timeout=10
        ).status_code
        == 200
    )
