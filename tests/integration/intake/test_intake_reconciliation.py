"""Reconciliation: accepted reports no dispatch decision has reached are counted and listed for operators."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import events as ev
from shared.auth import hash_token
from shared.events import dump_event
from tests.integration.intake.intake_helpers import TOKENS, AppFactory, auth, report, scalar
from tests.integration.intake.test_intake_lifecycle import event_at
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration

WITH_OPERATOR = {
    "auth": {
        "tokens": [
            {"token_sha256": hash_token(t), **p}
            for t, p in {**TOKENS, "tok-op": {"principal": "operator-01", "role": "operator"}}.items()
        ]
    },
    "outbox": {"enabled": False},
    "reconciliation": {"undecided_after_s": 1.5, "check_interval_s": 0.2},
}


async def test_reports_without_a_dispatch_decision_after_the_threshold_are_listed_and_counted(
    intake_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with intake_app(**WITH_OPERATOR) as (app, client):

        async def post(body: dict[str, Any]) -> str:
            response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
            assert response.status_code == 201, response.text
            hazard_id: str = response.json()["hazard_id"]
            return hazard_id

        dispatched = await post(
            report(category="locked_rooftop_door", location={"building_id": "ly01-b0003"})
        )
        referred = await post(report(category="blocked_fire_passage", location={"building_id": "ly01-b0004"}))
        await post(
            report(category="blocked_fire_passage", location={"building_id": "ly01-b0004"})
        )  # duplicate
        await post(
            report(category="gas_leak", rectified_on_site=True, location={"building_id": "ly01-b0005"})
        )
        lost = await post(report(category="electrical_fire_hazard", location={"building_id": "ly01-b0006"}))

        decisions = [
            event_at(
                ev.HazardDispatched,
                dispatched,
                datetime.now(UTC),
                ev.HazardDispatchedPayload(
                    dispatch_id=uuid.uuid4(),
                    department_id="fire",
                    rule_id="r",
                    receipt_deadline=datetime.now(UTC) + timedelta(hours=2),
                    deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
                ),
            ),
            event_at(
                ev.HazardReferredToOperators,
                referred,
                datetime.now(UTC),
                ev.HazardReferredToOperatorsPayload(reason="no_rule"),
            ),
        ]
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in decisions],
        )

        async def applied() -> bool:
            return int(await scalar(app, "select count(*) from intake.inbox_batches, unnest(event_ids)")) >= 2

        await wait_for(applied, timeout_s=90, interval_s=0.2)

        async def listed() -> bool:
            answer = (await client.get("/api/v1/reconciliation/undecided", headers=auth("tok-op"))).json()
            return bool(answer["count"] == 1)

        await wait_for(listed, timeout_s=10, interval_s=0.2)
        answer = (await client.get("/api/v1/reconciliation/undecided", headers=auth("tok-op"))).json()
        assert answer["undecided_after_s"] == 1.5
        assert [item["hazard_id"] for item in answer["items"]] == [lost]
        assert answer["items"][0]["category"] == "electrical_fire_hazard"
        assert answer["items"][0]["age_s"] >= 1.5
        assert answer["oldest_age_s"] >= answer["items"][0]["age_s"] - 1

        async def gauge_set() -> bool:
            text = (await client.get("/metrics")).text
            return "hazard_intake_undecided_reports 1.0" in text

        await wait_for(gauge_set, timeout_s=10, interval_s=0.2)

        for token, status in (("tok-supervisor", 403), ("tok-gm1", 403), ("tok-fire", 403)):
            refused = await client.get("/api/v1/reconciliation/undecided", headers=auth(token))
            assert refused.status_code == status, token
        assert (await client.get("/api/v1/reconciliation/undecided")).status_code == 401
