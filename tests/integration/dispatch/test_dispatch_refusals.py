"""Refusals of dispatch's actions: another department's dispatch is 404 like an unknown one; bad text is 422.

API.md: an object the caller may not see is 404 for reads and actions alike, and the answer never
names who holds it; 403 only for a visible object the caller may not act on, or a wrong role.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from shared import events as ev
from shared.events import dump_event
from tests.integration.dispatch.dispatch_helpers import AppFactory, auth, reported, scalar
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration


async def dispatched(app: Any, kafka: Any, topics: dict[str, str], *events: ev.HazardReported) -> list[str]:
    """Publish reports and wait until each is dispatched; their dispatch ids in the order given."""
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )

    async def done() -> bool:
        return int(await scalar(app, "select count(*) from dispatch.dispatches") or 0) >= len(events)

    await wait_for(done, timeout_s=60, interval_s=0.2)
    return [
        str(
            await scalar(
                app, "select dispatch_id from dispatch.dispatches where hazard_id = :h", h=e.hazard_id
            )
        )
        for e in events
    ]


async def test_acting_on_another_departments_dispatch_is_404_like_an_unknown_one(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        [dispatch_id] = await dispatched(app, kafka, topics, reported("locked_rooftop_door"))
        url = f"/api/v1/dispatches/{dispatch_id}"
        unknown = f"/api/v1/dispatches/{uuid.uuid4()}"
        reason = {"reason": "Not a police matter"}
        for action, body in (("acknowledge", None), ("return", reason)):
            hidden = await client.post(f"{url}/{action}", json=body, headers=auth("tok-police"))
            missing = await client.post(f"{unknown}/{action}", json=body, headers=auth("tok-police"))
            assert (hidden.status_code, missing.status_code) == (404, 404), (action, hidden.text)
            assert hidden.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
            assert "fire" not in hidden.text
        # Wrong roles stay 403: the operator may not acknowledge, a department may not reassign.
        assert (await client.post(f"{url}/acknowledge", headers=auth("tok-operator"))).status_code == 403
        grab = {"department_id": "police", "reason": "grab it"}
        assert (
            await client.post(f"{url}/reassign", json=grab, headers=auth("tok-police"))
        ).status_code == 403
        # Nothing moved: fire still acknowledges its dispatch.
        own = await client.post(f"{url}/acknowledge", headers=auth("tok-fire"))
        assert own.status_code == 200, own.text


@pytest.mark.parametrize(
    ("action", "token", "body"),
    [
        ("return", "tok-fire", {"reason": "Not\x00ours"}),
        ("return", "tok-fire", {"reason": "Not \ud800 ours"}),
        ("reassign", "tok-operator", {"department_id": "police", "reason": "Tenants\x00dispute"}),
        ("reassign", "tok-operator", {"department_id": "police\x00", "reason": "Tenants dispute"}),
    ],
)
async def test_nul_or_surrogates_in_a_reason_are_422_and_the_dispatch_is_untouched(
    dispatch_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    action: str,
    token: str,
    body: dict[str, Any],
) -> None:
    content = json.dumps(body).encode()  # JSON escapes: \u0000, \ud800
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        [dispatch_id] = await dispatched(app, kafka, topics, reported("locked_rooftop_door"))
        url = f"/api/v1/dispatches/{dispatch_id}/{action}"
        response = await client.post(
            url, content=content, headers={**auth(token), "content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert [d["field"] for d in error["details"]] == [
            next(k for k, v in body.items() if not v.isprintable())
        ]
        status = await scalar(
            app, "select status from dispatch.dispatches where dispatch_id = :d", d=dispatch_id
        )
        assert status == "pending"


async def test_nul_in_the_reason_of_an_assignment_from_the_queue_is_422(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    unroutable = reported("other")
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(unroutable.hazard_id).encode(), dump_event(unroutable))],
        )

        async def queued() -> bool:
            return int(await scalar(app, "select count(*) from dispatch.hazards") or 0) == 1

        await wait_for(queued, timeout_s=60, interval_s=0.2)
        body = json.dumps({"department_id": "urban_management", "reason": "Illegal\x00build"}).encode()
        response = await client.post(
            f"/api/v1/hazards/{unroutable.hazard_id}/assign",
            content=body,
            headers={**auth("tok-operator"), "content-type": "application/json"},
        )
        assert response.status_code == 422, response.text
        assert [d["field"] for d in response.json()["error"]["details"]] == ["reason"]
        assert await scalar(app, "select count(*) from dispatch.dispatches") == 0
