"""Dispatch and tracking together on one topic: a receipt extension decided at dispatch lands on the
tracking case (deadline in force and original), then an urging and a progress note on the same timeline."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.integration.dispatch import dispatch_helpers
from tests.integration.dispatch.test_dispatch_api import publish, wait_rows
from tests.integration.tracking import tracking_helpers

pytestmark = pytest.mark.integration


async def _case_until(
    client: httpx.AsyncClient, hazard_id: str, done: Any, timeout_s: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        response = await client.get(
            f"/api/v1/hazards/{hazard_id}", headers=tracking_helpers.auth("tok-supervisor")
        )
        if response.status_code == 200:
            last = response.json()
            if done(last):
                return dict(last)
        await asyncio.sleep(0.2)
    raise AssertionError(f"the case did not get there in {timeout_s} s: {last}")


async def test_an_approved_receipt_extension_an_urging_and_a_note_reach_the_case(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    start_dispatch = dispatch_helpers.app_factory(db_url, kafka, topics)
    start_tracking = tracking_helpers.app_factory(db_url, kafka, topics)
    hazard = dispatch_helpers.reported("locked_rooftop_door")
    hazard_id = str(hazard.hazard_id)
    fire, supervisor = dispatch_helpers.auth("tok-fire"), dispatch_helpers.auth("tok-supervisor")
    async with start_dispatch() as (dispatch_app, dispatch), start_tracking() as (_tracking_app, tracking):
        await publish(kafka, topics, hazard)
        await wait_rows(
            dispatch_app, f"select count(*) from dispatch.dispatches where hazard_id = '{hazard_id}'", 1
        )
        [item] = (await dispatch.get("/api/v1/dispatches?status=pending", headers=fire)).json()["items"]
        original = datetime.fromisoformat(item["receipt_deadline"])
        wanted = original + timedelta(days=1)
        url = f"/api/v1/dispatches/{item['dispatch_id']}/extension"
        asked = await dispatch.post(
            url, json={"deadline": wanted.isoformat(), "reason": "班组外出"}, headers=fire
        )
        assert asked.status_code == 202, asked.text
        approved = await dispatch.post(f"{url}/approve", json={"note": "同意"}, headers=supervisor)
        assert approved.status_code == 200, approved.text

        case = await _case_until(
            tracking,
            hazard_id,
            lambda c: (c["extension_requests"]["receipt"] or {}).get("status") == "approved",
        )
        assert datetime.fromisoformat(case["deadlines"]["receipt"]) == wanted
        assert datetime.fromisoformat(case["deadlines"]["receipt_original"]) == original
        assert case["extension_requests"]["receipt"]["reason"] == "班组外出"
        assert case["extension_requests"]["receipt"]["decided_by"] == "sup-1"

        # Urged while awaiting receipt: the stage is receipt, the dispatch named.
        urged = await tracking.post(
            f"/api/v1/hazards/{hazard_id}/urgings",
            json={"note": "请尽快签收"},
            headers=tracking_helpers.auth("tok-supervisor"),
        )
        assert urged.status_code == 201, urged.text
        assert (urged.json()["stage"], urged.json()["dispatch_id"]) == ("receipt", item["dispatch_id"])

        acknowledged = await dispatch.post(
            f"/api/v1/dispatches/{item['dispatch_id']}/acknowledge", headers=fire
        )
        assert acknowledged.status_code == 200
        assert acknowledged.json()["on_time"] is True
        await _case_until(tracking, hazard_id, lambda c: c["state"] == "rectification_ordered")
        noted = await tracking.post(
            f"/api/v1/hazards/{hazard_id}/notes",
            json={"note": "已安排开锁"},
            headers=tracking_helpers.auth("tok-fire"),
        )
        assert noted.status_code == 201, noted.text
        case = await _case_until(tracking, hazard_id, lambda c: c["progress_notes"] == 1)
        types = [e["event_type"] for e in case["timeline"]]
        assert types == [
            "hazard.reported",
            "hazard.dispatched",
            "hazard.extension_requested",
            "hazard.extension_decided",
            "hazard.urged",
            "hazard.acknowledged",
            "hazard.rectification_ordered",
            "hazard.progress_noted",
        ]
        assert case["deadlines"]["receipt_overdue"] is False
        assert case["acknowledged_on_time"] is True
        uuid.UUID(case["timeline"][-1]["event_id"])
