"""Urging (督办), rectification deadline extensions (延期申请) and progress notes on a real case."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from shared import events as ev
from tests.integration.tracking.tracking_helpers import (
    AppFactory,
    Hazard,
    auth,
    ordered_case,
    publish,
    wait_for_state,
)

pytestmark = pytest.mark.integration


async def _timeline_types(client: Any, hazard_id: uuid.UUID) -> list[str]:
    case = (await client.get(f"/api/v1/hazards/{hazard_id}", headers=auth("tok-supervisor"))).json()
    return [entry["event_type"] for entry in case["timeline"]]


async def _awaiting(client: Any, token: str) -> set[str]:
    """The cases whose rectification extension awaits a decision, as the operator's page lists them."""
    response = await client.get("/api/v1/hazards?extension_request=awaiting_approval", headers=auth(token))
    assert response.status_code == 200, response.text
    return {item["hazard_id"] for item in response.json()["items"]}


async def _timer_due(app: FastAPI, hazard_id: uuid.UUID) -> Any:
    async with app.state.runtime.sessions() as session:
        return (
            await session.execute(
                sa.text(
                    "select due_at from tracking.rectification_timers "
                    "where hazard_id = :h and fired_at is null and cancelled_at is null"
                ),
                {"h": hazard_id},
            )
        ).scalar_one()


async def test_urging_notes_and_an_approved_extension_on_the_timeline(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (app, client):
        hazard = await ordered_case(client, kafka, topics)
        url = f"/api/v1/hazards/{hazard.hazard_id}"

        # Urging: operators and supervisors only; the case's holder is told in the event.
        for token, status in (("tok-fire", 403), ("tok-gm-01", 403), ("tok-police", 403)):
            response = await client.post(f"{url}/urgings", json={"note": "快"}, headers=auth(token))
            assert response.status_code == status, (token, response.text)
        for body in ({"note": ""}, {"note": "x" * 2001}, {}, {"note": "ok", "extra": 1}):
            response = await client.post(f"{url}/urgings", json=body, headers=auth("tok-supervisor"))
            assert response.status_code == 422, body
        missing = await client.post(
            f"/api/v1/hazards/{uuid.uuid4()}/urgings", json={"note": "?"}, headers=auth("tok-supervisor")
        )
        assert missing.status_code == 404
        urged = await client.post(
            f"{url}/urgings", json={"note": "请本周内整改"}, headers=auth("tok-supervisor")
        )
        assert urged.status_code == 201, urged.text
        urging = urged.json()
        assert {k: urging[k] for k in ("hazard_id", "department_id", "stage", "note", "urged_by")} == {
            "hazard_id": str(hazard.hazard_id),
            "department_id": "fire",
            "stage": "rectification",
            "note": "请本周内整改",
            "urged_by": "sup-1",
        }
        uuid.UUID(urging["id"])
        datetime.fromisoformat(urging["urged_at"])

        # Progress notes: the holding department only.
        note = {"note": "已联系物业，周三开锁", "photos": ["https://img.example.org/p1.jpg"]}
        assert (await client.post(f"{url}/notes", json=note, headers=auth("tok-police"))).status_code == 404
        assert (await client.post(f"{url}/notes", json=note, headers=auth("tok-operator"))).status_code == 403
        bad = await client.post(
            f"{url}/notes",
            json={"note": "x", "photos": ["ftp://x.example.org/a.jpg"]},
            headers=auth("tok-fire"),
        )
        assert bad.status_code == 422
        noted = await client.post(f"{url}/notes", json=note, headers=auth("tok-fire"))
        assert noted.status_code == 201, noted.text
        assert noted.json()["photos"] == note["photos"]
        assert noted.json()["noted_by"] == "officer-fire"

        case = (await client.get(url, headers=auth("tok-fire"))).json()
        assert (case["urgings"], case["progress_notes"]) == (1, 1)
        old = datetime.fromisoformat(case["deadlines"]["rectification"])
        assert case["deadlines"]["rectification_original"] == case["deadlines"]["rectification"]
        assert case["extension_requests"] == {"receipt": None, "rectification": None}

        # Extensions: bad dates and wrong callers store nothing.
        before = await _timeline_types(client, hazard.hazard_id)
        ext = f"{url}/rectification/extension"
        wanted = old + timedelta(days=3)
        refused_inputs = [
            ({"deadline": (old - timedelta(hours=1)).isoformat(), "reason": "earlier"}, "tok-fire", 422),
            ({"deadline": (old + timedelta(days=31)).isoformat(), "reason": "far off"}, "tok-fire", 422),
            ({"deadline": "soon", "reason": "bad date"}, "tok-fire", 422),
            ({"deadline": wanted.isoformat(), "reason": "no"}, "tok-fire", 422),
            ({"deadline": wanted.isoformat(), "reason": "not mine"}, "tok-police", 404),
            ({"deadline": wanted.isoformat(), "reason": "operator"}, "tok-operator", 403),
        ]
        for body, token, status in refused_inputs:
            response = await client.post(ext, json=body, headers=auth(token))
            assert response.status_code == status, (body, token, response.text)
            assert set(response.json()["error"]) >= {"code", "message"}
        assert (await client.post(f"{ext}/approve", headers=auth("tok-operator"))).status_code == 409
        assert await _timeline_types(client, hazard.hazard_id) == before
        assert str(hazard.hazard_id) not in await _awaiting(client, "tok-operator")
        bad_filter = await client.get("/api/v1/hazards?extension_request=maybe", headers=auth("tok-operator"))
        assert bad_filter.status_code == 422

        asked = await client.post(
            ext, json={"deadline": wanted.isoformat(), "reason": "等待配件到货"}, headers=auth("tok-fire")
        )
        assert asked.status_code == 202, asked.text
        pending = asked.json()
        assert pending["extension_requests"]["rectification"]["status"] == "awaiting_approval"
        assert datetime.fromisoformat(pending["deadlines"]["rectification"]) == old
        again = await client.post(
            ext, json={"deadline": wanted.isoformat(), "reason": "again please"}, headers=auth("tok-fire")
        )
        assert again.status_code == 409
        assert (await client.post(f"{ext}/approve", headers=auth("tok-fire"))).status_code == 403
        # Listed for the operators and for the department holding it, not for another department.
        assert str(hazard.hazard_id) in await _awaiting(client, "tok-operator")
        assert str(hazard.hazard_id) in await _awaiting(client, "tok-fire")
        assert str(hazard.hazard_id) not in await _awaiting(client, "tok-police")

        approved = await client.post(
            f"{ext}/approve", json={"note": "同意延期"}, headers=auth("tok-supervisor")
        )
        assert approved.status_code == 200, approved.text
        assert str(hazard.hazard_id) not in await _awaiting(client, "tok-operator")
        shown = approved.json()
        assert datetime.fromisoformat(shown["deadlines"]["rectification"]) == wanted
        assert datetime.fromisoformat(shown["deadlines"]["rectification_original"]) == old
        decision = shown["extension_requests"]["rectification"]
        assert (decision["status"], decision["decided_by"], decision["note"]) == (
            "approved",
            "sup-1",
            "同意延期",
        )
        assert decision["reason"] == "等待配件到货"
        assert await _timer_due(app, hazard.hazard_id) == wanted
        assert (await client.post(f"{ext}/refuse", headers=auth("tok-operator"))).status_code == 409
        timeline = shown["timeline"]
        decided = [e for e in timeline if e["event_type"] == "hazard.extension_decided"]
        assert len(decided) == 1
        assert decided[0]["details"]["approved"] is True
        assert datetime.fromisoformat(decided[0]["details"]["original_deadline"]) == old
        assert datetime.fromisoformat(decided[0]["details"]["deadline"]) == wanted
        assert [e["event_type"] for e in timeline].count("hazard.urged") == 1
        assert [e["event_type"] for e in timeline].count("hazard.progress_noted") == 1

        # A closed case: no urging, no note, no extension (409, nothing stored).
        assert (
            await client.post(f"{url}/rectification", json={"note": "done"}, headers=auth("tok-fire"))
        ).status_code == 200
        assert (
            await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-01"))
        ).status_code == 200
        closed_before = await _timeline_types(client, hazard.hazard_id)
        for path, body, token in (
            ("urgings", {"note": "still?"}, "tok-operator"),
            ("notes", {"note": "after closure"}, "tok-fire"),
            ("rectification/extension", {"deadline": wanted.isoformat(), "reason": "late"}, "tok-fire"),
        ):
            response = await client.post(f"{url}/{path}", json=body, headers=auth(token))
            assert response.status_code == 409, (path, response.text)
            assert response.json()["error"]["code"] == "invalid_state"
        assert await _timeline_types(client, hazard.hazard_id) == closed_before


async def test_a_dispatch_awaiting_receipt_is_urged_and_dispatchs_extension_events_show_on_the_case(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (_app, client):
        hazard = Hazard()
        dispatched = hazard.dispatched()
        await publish(kafka.bootstrap_servers, topics["lifecycle"], hazard.reported(), dispatched)
        await wait_for_state(client, hazard.hazard_id, "dispatched")
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        urged = await client.post(f"{url}/urgings", json={"note": "请立即签收"}, headers=auth("tok-operator"))
        assert urged.status_code == 201, urged.text
        assert (urged.json()["stage"], urged.json()["dispatch_id"]) == ("receipt", str(hazard.dispatch_id))

        original = dispatched.payload.receipt_deadline
        extended = original + timedelta(days=1)
        common = {"stage": "receipt", "dispatch_id": hazard.dispatch_id, "department_id": "fire"}
        requested = ev.HazardExtensionRequested(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            hazard_id=hazard.hazard_id,
            producer="dispatch",
            payload=ev.HazardExtensionRequestedPayload(
                **common,
                original_deadline=original,
                current_deadline=original,
                requested_deadline=extended,
                reason="crew away",
                by="officer-fire",
            ),
        )
        decided = ev.HazardExtensionDecided(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC) + timedelta(seconds=1),
            hazard_id=hazard.hazard_id,
            producer="dispatch",
            payload=ev.HazardExtensionDecidedPayload(
                **common,
                original_deadline=original,
                requested_deadline=extended,
                approved=True,
                deadline=extended,
                by="op-1",
            ),
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], requested, decided)
        for _ in range(300):
            case = (await client.get(url, headers=auth("tok-fire"))).json()
            if "hazard.extension_decided" in [e["event_type"] for e in case["timeline"]]:
                break
            await asyncio.sleep(0.2)
        assert datetime.fromisoformat(case["deadlines"]["receipt"]) == extended
        assert datetime.fromisoformat(case["deadlines"]["receipt_original"]) == original
        assert case["extension_requests"]["receipt"]["status"] == "approved"
        assert case["extension_requests"]["receipt"]["reason"] == "crew away"
        assert case["urgings"] == 1


async def test_the_rectification_timer_fires_at_the_approved_deadline_only(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app(timers={"poll_interval_s": 0.2}) as (app, client):
        hazard = Hazard(start=datetime.now(UTC) - timedelta(minutes=10))
        old = datetime.now(UTC) + timedelta(seconds=4)
        order = ev.HazardRectificationOrdered(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC) - timedelta(minutes=1),
            hazard_id=hazard.hazard_id,
            producer="test",
            payload=ev.HazardRectificationOrderedPayload(
                department_id="fire",
                deadline=old,
                deadline_rule=ev.FrozenDeadlineRule(minutes=1, working_time=False),
            ),
        )
        await publish(
            kafka.bootstrap_servers, topics["lifecycle"], hazard.reported(), hazard.dispatched(), order
        )
        await wait_for_state(client, hazard.hazard_id, "rectification_ordered")
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        new = old + timedelta(seconds=4)
        asked = await client.post(
            f"{url}/rectification/extension",
            json={"deadline": new.isoformat(), "reason": "parts arrive later"},
            headers=auth("tok-fire"),
        )
        assert asked.status_code == 202, asked.text
        approved = await client.post(f"{url}/rectification/extension/approve", headers=auth("tok-operator"))
        assert approved.status_code == 200, approved.text
        assert await _timer_due(app, hazard.hazard_id) == new

        await asyncio.sleep(max(0.0, (old - datetime.now(UTC)).total_seconds()) + 1.5)
        case = (await client.get(url, headers=auth("tok-supervisor"))).json()
        assert case["deadlines"]["rectification_overdue"] is False
        assert "hazard.rectification_overdue" not in [e["event_type"] for e in case["timeline"]]

        await asyncio.sleep(max(0.0, (new - datetime.now(UTC)).total_seconds()) + 2.0)
        case = (await client.get(url, headers=auth("tok-supervisor"))).json()
        assert case["deadlines"]["rectification_overdue"] is True
        overdue = [e for e in case["timeline"] if e["event_type"] == "hazard.rectification_overdue"]
        assert len(overdue) == 1
        assert datetime.fromisoformat(overdue[0]["details"]["deadline"]) == new
