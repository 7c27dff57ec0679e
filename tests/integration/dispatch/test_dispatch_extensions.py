"""Receipt deadline extensions (延期申请): request, approve, refuse; bad dates, roles; the timers follow."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI

from services.dispatch.repository import escalation_of
from shared import events as ev
from tests.integration.dispatch.dispatch_helpers import (
    AppFactory,
    auth,
    outbox_events,
    reported,
    scalar,
    set_deadline,
)
from tests.integration.dispatch.test_dispatch_api import publish, wait_rows

pytestmark = pytest.mark.integration


async def _dispatched(app: FastAPI, client: Any, kafka: Any, topics: dict[str, str]) -> dict[str, Any]:
    hazard = reported("locked_rooftop_door")
    await publish(kafka, topics, hazard)
    await wait_rows(
        app, f"select count(*) from dispatch.dispatches where hazard_id = '{hazard.hazard_id}'", 1
    )
    listed = (await client.get("/api/v1/dispatches?status=pending", headers=auth("tok-fire"))).json()
    [item] = [i for i in listed["items"] if i["hazard_id"] == str(hazard.hazard_id)]
    return dict(item)


def _iso(value: datetime) -> str:
    return value.isoformat()


async def _extension_events(app: FastAPI, dispatch_id: str) -> list[ev.AnyEvent]:
    return [
        e
        for e in await outbox_events(app)
        if isinstance(e, ev.HazardExtensionRequested | ev.HazardExtensionDecided)
        and str(e.payload.dispatch_id) == dispatch_id
    ]


async def test_a_department_requests_and_a_supervisor_approves_the_deadline_moves_and_history_keeps_both(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app() as (app, client):
        item = await _dispatched(app, client, kafka, topics)
        dispatch_id = item["dispatch_id"]
        original = datetime.fromisoformat(item["receipt_deadline"])
        assert item["original_receipt_deadline"] == item["receipt_deadline"]
        assert item["extension_request"] is None
        wanted = original + timedelta(days=2)
        url = f"/api/v1/dispatches/{dispatch_id}/extension"

        asked = await client.post(
            url, json={"deadline": _iso(wanted), "reason": "需要协调物业"}, headers=auth("tok-fire")
        )
        assert asked.status_code == 202, asked.text
        body = asked.json()
        assert body["extension_request"]["status"] == "awaiting_approval"
        assert datetime.fromisoformat(body["extension_request"]["requested_deadline"]) == wanted
        assert datetime.fromisoformat(body["receipt_deadline"]) == original  # moves only on approval

        # One open request at a time.
        again = await client.post(
            url, json={"deadline": _iso(wanted), "reason": "again please"}, headers=auth("tok-fire")
        )
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "extension_awaiting_approval"

        awaiting = (
            await client.get(
                "/api/v1/dispatches?extension_request=awaiting_approval", headers=auth("tok-operator")
            )
        ).json()
        assert [i["dispatch_id"] for i in awaiting["items"]] == [dispatch_id]

        approved = await client.post(f"{url}/approve", json={"note": "同意"}, headers=auth("tok-supervisor"))
        assert approved.status_code == 200, approved.text
        shown = approved.json()
        assert datetime.fromisoformat(shown["receipt_deadline"]) == wanted
        assert datetime.fromisoformat(shown["original_receipt_deadline"]) == original
        assert shown["extension_request"]["status"] == "approved"
        assert shown["extension_request"]["decided_by"] == "sup-1"
        assert shown["extension_request"]["note"] == "同意"

        # Every unfired step follows the new deadline: the next one is due at it exactly, and the
        # escalation steps count from it (level 1 with it, 2 and 3 hours later).
        due = await scalar(
            app,
            "select next_due_at from dispatch.dispatches where dispatch_id = :d",
            d=uuid.UUID(dispatch_id),
        )
        assert due == wanted
        steps = await scalar(
            app, "select escalation from dispatch.dispatches where dispatch_id = :d", d=uuid.UUID(dispatch_id)
        )
        assert [(s.level, s.due_at) for s in escalation_of(steps)] == [
            (1, wanted),
            (2, wanted + timedelta(hours=2)),
            (3, wanted + timedelta(hours=24)),
        ]

        requested, decided = await _extension_events(app, dispatch_id)
        assert isinstance(requested, ev.HazardExtensionRequested)
        assert (requested.payload.stage, requested.payload.department_id) == ("receipt", "fire")
        assert requested.payload.original_deadline == original
        assert requested.payload.requested_deadline == wanted
        assert requested.payload.reason == "需要协调物业"
        assert isinstance(decided, ev.HazardExtensionDecided)
        assert decided.payload.approved is True
        assert decided.payload.deadline == wanted
        assert decided.payload.original_deadline == original
        assert decided.payload.by == "sup-1"

        # Nothing awaits now: a second decision is 409.
        late = await client.post(f"{url}/refuse", headers=auth("tok-operator"))
        assert late.status_code == 409
        assert late.json()["error"]["code"] == "no_extension_request"

        # A second extension counts from the deadline in force and keeps the first original deadline.
        second = await client.post(
            url,
            json={"deadline": _iso(wanted + timedelta(hours=1)), "reason": "one more hour"},
            headers=auth("tok-fire"),
        )
        assert second.status_code == 202, second.text
        refused = await client.post(f"{url}/refuse", json={"note": "不同意"}, headers=auth("tok-operator"))
        assert refused.status_code == 200, refused.text
        assert datetime.fromisoformat(refused.json()["receipt_deadline"]) == wanted
        assert datetime.fromisoformat(refused.json()["original_receipt_deadline"]) == original
        assert refused.json()["extension_request"]["status"] == "refused"
        *_, refusal = await _extension_events(app, dispatch_id)
        assert isinstance(refusal, ev.HazardExtensionDecided)
        assert (refusal.payload.approved, refusal.payload.deadline) == (False, wanted)
        assert refusal.payload.original_deadline == original


async def test_bad_dates_wrong_roles_and_other_departments_store_nothing(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app() as (app, client):
        item = await _dispatched(app, client, kafka, topics)
        dispatch_id = item["dispatch_id"]
        deadline = datetime.fromisoformat(item["receipt_deadline"])
        url = f"/api/v1/dispatches/{dispatch_id}/extension"
        cases = [
            ({"deadline": _iso(deadline - timedelta(hours=1)), "reason": "earlier?"}, "tok-fire", 422),
            ({"deadline": _iso(deadline), "reason": "the same"}, "tok-fire", 422),
            ({"deadline": _iso(deadline + timedelta(days=31)), "reason": "far away"}, "tok-fire", 422),
            ({"deadline": "next tuesday", "reason": "not a date"}, "tok-fire", 422),
            ({"deadline": "2030-01-01T00:00:00", "reason": "no timezone"}, "tok-fire", 422),
            ({"deadline": _iso(deadline + timedelta(days=1))}, "tok-fire", 422),
            ({"deadline": _iso(deadline + timedelta(days=1)), "reason": "x" * 1001}, "tok-fire", 422),
            ({"deadline": _iso(deadline + timedelta(days=1)), "reason": "not mine"}, "tok-gas", 404),
            ({"deadline": _iso(deadline + timedelta(days=1)), "reason": "operator?"}, "tok-operator", 403),
        ]
        for body, token, status in cases:
            response = await client.post(url, json=body, headers=auth(token))
            assert response.status_code == status, (body, token, response.text)
            assert set(response.json()["error"]) >= {"code", "message"}
        invalid = await client.post(
            url,
            json={"deadline": _iso(deadline - timedelta(hours=1)), "reason": "earlier?"},
            headers=auth("tok-fire"),
        )
        assert invalid.json()["error"]["code"] == "invalid_deadline"
        unknown = await client.post(
            f"/api/v1/dispatches/{uuid.uuid4()}/extension",
            json={"deadline": _iso(deadline + timedelta(days=1)), "reason": "who?"},
            headers=auth("tok-fire"),
        )
        assert unknown.status_code == 404
        for token, status in (("tok-fire", 403), ("tok-reporter", 403), ("tok-operator", 409)):
            decided = await client.post(f"{url}/approve", headers=auth(token))
            assert decided.status_code == status, (token, decided.text)
        stored = await scalar(
            app,
            "select extension_status from dispatch.dispatches where dispatch_id = :d",
            d=uuid.UUID(dispatch_id),
        )
        assert stored is None
        assert await _extension_events(app, dispatch_id) == []

        # Once acknowledged, there is no receipt deadline left to extend.
        ack = await client.post(f"/api/v1/dispatches/{dispatch_id}/acknowledge", headers=auth("tok-fire"))
        assert ack.status_code == 200
        closed = await client.post(
            url,
            json={"deadline": _iso(deadline + timedelta(days=1)), "reason": "too late"},
            headers=auth("tok-fire"),
        )
        assert closed.status_code == 409
        assert closed.json()["error"]["code"] == "already_acknowledged"


async def test_the_receipt_timer_fires_at_the_approved_deadline_only(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with dispatch_app() as (app, client):
        item = await _dispatched(app, client, kafka, topics)
        dispatch_id = item["dispatch_id"]
        old = datetime.now(UTC) + timedelta(seconds=3)
        async with app.state.runtime.sessions() as session, session.begin():
            await set_deadline(session, [uuid.UUID(dispatch_id)], old)
        new = old + timedelta(seconds=4)
        url = f"/api/v1/dispatches/{dispatch_id}/extension"
        asked = await client.post(
            url, json={"deadline": _iso(new), "reason": "crew away"}, headers=auth("tok-fire")
        )
        assert asked.status_code == 202, asked.text
        approved = await client.post(f"{url}/approve", headers=auth("tok-operator"))
        assert approved.status_code == 200, approved.text

        async def fired() -> list[tuple[str, Any]]:
            return [
                (e.TYPE, getattr(e.payload, "level", 0))
                for e in await outbox_events(app)
                if isinstance(e, ev.HazardReceiptOverdue | ev.HazardEscalated)
                and str(e.payload.dispatch_id) == dispatch_id
            ]

        # Past the old deadline (the timer loop polls every 0.2 s): nothing fired, not overdue.
        await asyncio.sleep(max(0.0, (old - datetime.now(UTC)).total_seconds()) + 1.5)
        assert await fired() == []
        shown = (await client.get(f"/api/v1/dispatches/{dispatch_id}", headers=auth("tok-fire"))).json()
        assert shown["overdue"] is False
        assert shown["overdue_at"] is None

        # Past the new one: the overdue and the level-1 step (due at the deadline) fire, once each.
        await asyncio.sleep(max(0.0, (new - datetime.now(UTC)).total_seconds()) + 1.5)
        assert sorted(await fired()) == [("hazard.escalated", 1), ("hazard.receipt_overdue", 0)]
        overdue = [
            e
            for e in await outbox_events(app)
            if isinstance(e, ev.HazardReceiptOverdue) and str(e.payload.dispatch_id) == dispatch_id
        ]
        assert overdue[0].payload.receipt_deadline == new
        # An extension cannot be requested once the deadline has passed.
        after = await client.post(
            url,
            json={"deadline": _iso(new + timedelta(hours=1)), "reason": "too late now"},
            headers=auth("tok-fire"),
        )
        assert after.status_code == 409
        assert after.json()["error"]["code"] == "deadline_passed"
