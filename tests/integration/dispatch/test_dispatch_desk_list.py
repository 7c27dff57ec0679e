"""The department desk's list carries what the grid member reported, in one query (#17, dispatch_0006).

Dispatch keeps the report's description, address, building, reporter and photo URLs from
``hazard.reported`` beside the hazard, so each dispatch of the list (and one dispatch, and the answer
of an acknowledgement) shows them; a hazard unlinked from a duplicate carries none (``report`` null).
The browser pages on reporting's origin may call the API (CORS for the configured origins only).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared import events as ev
from shared.events import dump_event
from tests.integration.dispatch.dispatch_helpers import AppFactory, auth, reported, scalar
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration

PHOTO = "http://127.0.0.1:8101/api/v1/photos/6b0c3f7e-5f0b-4f55-8d1e-2a1f3c4d5e6f"


async def test_the_desk_list_shows_the_report_and_only_the_departments_own(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    base = reported("locked_rooftop_door")
    rooftop = base.model_copy(
        update={
            "payload": base.payload.model_copy(
                update={
                    "description": "天台逃生门被铁链锁死",
                    "location": ev.Location(
                        lat=22.622, lon=114.168, address="六约路12号", building_id="LY-12"
                    ),
                    "photos": (PHOTO,),
                }
            )
        }
    )
    police = reported("public_security_hazard")
    now = datetime.now(UTC)
    unlinked = ev.HazardDuplicateUnlinked(
        event_id=uuid.uuid4(),
        occurred_at=now,
        hazard_id=uuid.uuid4(),
        producer="intake",
        payload=ev.HazardDuplicateUnlinkedPayload(
            original_hazard_id=uuid.uuid4(),
            original_closed_at=now,
            observed_at=now,
            category="blocked_fire_passage",
            community_id="liuyue",
            grid_id="liuyue-01",
        ),
    )
    async with dispatch_app() as (app, client):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in (rooftop, police, unlinked)],
        )

        async def routed() -> bool:
            return int(await scalar(app, "select count(*) from dispatch.dispatches") or 0) >= 3

        await wait_for(routed, timeout_s=60, interval_s=0.2)
        inbox = (await client.get("/api/v1/dispatches?status=pending", headers=auth("tok-fire"))).json()
        by_hazard = {i["hazard_id"]: i for i in inbox["items"]}
        assert set(by_hazard) == {str(rooftop.hazard_id), str(unlinked.hazard_id)}
        assert by_hazard[str(rooftop.hazard_id)]["report"] == {
            "description": "天台逃生门被铁链锁死",
            "address": "六约路12号",
            "building_id": "LY-12",
            "reporter_id": "gm-1",
            "photos": [PHOTO],
        }
        assert by_hazard[str(unlinked.hazard_id)]["report"] is None

        dispatch_id = by_hazard[str(rooftop.hazard_id)]["dispatch_id"]
        one = (await client.get(f"/api/v1/dispatches/{dispatch_id}", headers=auth("tok-fire"))).json()
        assert one["report"]["description"] == "天台逃生门被铁链锁死"
        # Another department's dispatch is unknown to the desk, report and all.
        other = await client.get(f"/api/v1/dispatches/{dispatch_id}", headers=auth("tok-police"))
        assert other.status_code == 404
        assert "天台" not in other.text
        acknowledged = await client.post(
            f"/api/v1/dispatches/{dispatch_id}/acknowledge", headers=auth("tok-fire")
        )
        assert acknowledged.status_code == 200
        assert acknowledged.json()["report"]["photos"] == [PHOTO]


async def test_cors_allows_the_configured_page_origin_only(dispatch_app: AppFactory) -> None:
    page = "http://pages.example.org"
    async with dispatch_app(http={"port": 0, "cors_origins": [page]}) as (_app, client):
        preflight = await client.options(
            "/api/v1/dispatches",
            headers={
                "Origin": page,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == page
        answer = await client.get("/api/v1/dispatches", headers={**auth("tok-fire"), "Origin": page})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == page
        # A refusal carries the header too, so the page can read the error shape.
        refused = await client.get("/api/v1/dispatches", headers={"Origin": page})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == page
        elsewhere = await client.options(
            "/api/v1/dispatches",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert elsewhere.status_code == 400
        assert "access-control-allow-origin" not in elsewhere.headers
