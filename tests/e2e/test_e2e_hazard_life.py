"""A hazard's whole life through intake, dispatch and tracking, as real processes on the real database and broker.

report (intake) → dispatch → acknowledge (dispatch) → rectify → verify(fail) → rectify → verify(pass)
→ closed (tracking); then a new report at the same building relapses, linked to the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.auth import hash_token
from shared.events import parse_event
from shared.roles import role_url
from tests.support import processes
from tests.support.kafka_tools import read_topic

pytestmark = pytest.mark.integration

SERVICES = ("intake", "dispatch", "tracking")
TOKENS: dict[str, dict[str, Any]] = {
    "e2e-reporter": {"principal": "gm-liuyue-01", "role": "reporter", "grid_id": "liuyue-01"},
    "e2e-fire": {"principal": "dept-fire", "role": "department", "department_id": "fire"},
    "e2e-supervisor": {"principal": "supervisor-01", "role": "supervisor"},
}
BUILDING = f"E2E-{uuid.uuid4().hex[:6]}"
WHERE = {"lat": 22.62200, "lon": 114.16813, "address": "Liuyue Rd 12", "building_id": BUILDING}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _env(
    service: str, db_url: str, bootstrap: str, topics: dict[str, str], port: int, tokens: Path
) -> dict[str, str]:
    return processes.service_env(
        service,
        db_url,
        bootstrap,
        topics,
        port,
        KAFKA__GROUP_ID=f"e2e-{service}-{uuid.uuid4().hex[:8]}",
        AUTH__TOKENS_FILE=str(tokens),
    )


@pytest.fixture
def system(db_url: str, kafka: Any, topics: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """Intake, dispatch and tracking as processes sharing one database (each in its own schema, as its role)."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump([{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]))

    def env_for(service: str, port: int) -> dict[str, str]:
        # Each service as its own least-privileged database role (shared.roles).
        return _env(service, role_url(db_url, service), kafka.bootstrap_servers, topics, port, tokens)

    with processes.running_services(SERVICES, env_for, tmp_path) as urls:
        yield urls


def _poll(check: Callable[[], Any], what: str, timeout_s: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def _report(client: httpx.Client, url: str) -> str:
    body = {
        "report_id": str(uuid.uuid4()),
        "category": "locked_rooftop_door",
        "description": "Rooftop escape door padlocked",
        "location": WHERE,
        "grid_id": "liuyue-01",
        "observed_at": datetime.now(UTC).isoformat(),
        "photos": ["https://img.example.org/door.jpg"],
    }
    response = client.post(f"{url}/api/v1/hazards", json=body, headers=_auth("e2e-reporter"))
    assert response.status_code == 201, response.text
    assert response.json()["duplicate_of"] is None
    return str(response.json()["hazard_id"])


def _case(client: httpx.Client, url: str, hazard_id: str) -> dict[str, Any]:
    response = client.get(f"{url}/api/v1/hazards/{hazard_id}", headers=_auth("e2e-supervisor"))
    return dict(response.json()) if response.status_code == 200 else {}


def _wait_state(client: httpx.Client, url: str, hazard_id: str, state: str) -> dict[str, Any]:
    return dict(
        _poll(
            lambda: (case := _case(client, url, hazard_id)) and case.get("state") == state and case,
            f"hazard {hazard_id} in tracking state {state}",
        )
    )


def test_hazard_lives_through_intake_dispatch_and_tracking_and_relapses(
    system: dict[str, str], kafka: Any, topics: dict[str, str]
) -> None:
    intake, dispatch, tracking = system["intake"], system["dispatch"], system["tracking"]
    with httpx.Client(timeout=30) as client:
        first = _report(client, intake)

        def pending_dispatch() -> str | None:
            response = client.get(
                f"{dispatch}/api/v1/dispatches", params={"status": "pending"}, headers=_auth("e2e-fire")
            )
            assert response.status_code == 200, response.text
            mine = [d for d in response.json()["items"] if d["hazard_id"] == first]
            return str(mine[0]["dispatch_id"]) if mine else None

        dispatch_id = _poll(pending_dispatch, "dispatch of the report to fire")
        ack = client.post(
            f"{dispatch}/api/v1/dispatches/{dispatch_id}/acknowledge", headers=_auth("e2e-fire")
        )
        assert ack.status_code == 200, ack.text
        assert ack.json()["on_time"] is True

        case = _wait_state(client, tracking, first, "rectification_ordered")
        assert (case["department_id"], case["rectification_round"]) == ("fire", 1)
        assert case["dispatch_id"] == dispatch_id

        hazard_url = f"{tracking}/api/v1/hazards/{first}"
        evidence = {"note": "Padlock removed", "photos": ["https://img.example.org/open.jpg"]}
        response = client.post(f"{hazard_url}/rectification", json=evidence, headers=_auth("e2e-fire"))
        assert response.status_code == 200, response.text
        response = client.post(
            f"{hazard_url}/verification",
            json={"passed": False, "note": "Locked again"},
            headers=_auth("e2e-reporter"),
        )
        assert response.status_code == 200, response.text
        assert (response.json()["state"], response.json()["rectification_round"]) == (
            "rectification_ordered",
            2,
        )
        response = client.post(f"{hazard_url}/rectification", json=evidence, headers=_auth("e2e-fire"))
        assert response.status_code == 200, response.text
        response = client.post(
            f"{hazard_url}/verification", json={"passed": True}, headers=_auth("e2e-reporter")
        )
        assert response.status_code == 200, response.text
        closed = response.json()
        assert closed["state"] == "closed"
        assert closed["rework_count"] == 1
        assert closed["closed"]["reason"] == "verified"

        # Intake learns of the closure from the stream; until then a new report would be an open duplicate.
        def intake_sees_closed() -> bool:
            response = client.get(f"{intake}/open311/v2/requests/{first}.json")
            return response.status_code == 200 and response.json()[0]["status"] == "closed"

        _poll(intake_sees_closed, "intake's view of the first hazard closed")

        second = _report(client, intake)
        relapse = _poll(
            lambda: (case := _case(client, tracking, second)) and case.get("relapse_of") == first and case,
            "the new report linked as a relapse of the first",
        )
        assert relapse["relapse_place_key"] == f"building:{BUILDING}"
        assert _case(client, tracking, first)["relapsed_as"] == [second]

    expected_life = [
        "hazard.reported",
        "hazard.dispatched",
        "hazard.acknowledged",
        "hazard.rectification_ordered",
        "hazard.rectified",
        "hazard.verified",
        "hazard.rectification_ordered",
        "hazard.rectified",
        "hazard.verified",
        "hazard.closed",
    ]

    def published() -> list[Any] | None:
        records = read_and_parse(kafka.bootstrap_servers, topics["lifecycle"])
        life = [e.TYPE for e in records if str(e.hazard_id) == first]
        relapses = [e for e in records if e.TYPE == "hazard.relapsed"]
        return records if len(life) >= len(expected_life) and relapses else None

    records = _poll(published, "every event of the story on the lifecycle topic")
    assert [e.TYPE for e in records if str(e.hazard_id) == first] == expected_life
    [relapsed] = [e for e in records if e.TYPE == "hazard.relapsed"]
    assert str(relapsed.hazard_id) == second
    assert str(relapsed.payload.original_hazard_id) == first
    assert relapsed.payload.original_department_id == "fire"
    assert relapsed.payload.same_building is True


def read_and_parse(bootstrap: str, topic: str) -> list[Any]:
    """Every event on the topic, in per-partition order (one hazard is one partition)."""
    with contextlib.closing(asyncio.new_event_loop()) as loop:
        records = loop.run_until_complete(read_topic(bootstrap, topic, timeout_s=5))
    return [parse_event(r.value) for r in records]
