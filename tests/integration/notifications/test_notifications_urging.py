"""Urgings (督办) reach the department and its escalation contacts, decided extensions the department:
exactly once per subscription, also when the events come again."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from shared import events as ev
from shared.devstack.receivers import MailReceiver, WebhookReceiver
from tests.integration.notifications.notifications_helpers import AppFactory, Hazard, publish, subscribe
from tests.integration.notifications.test_notifications_service import (
    calls_to,
    deliveries,
)
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration


def _urged(hazard: Hazard, department: str = "fire") -> ev.HazardUrged:
    return ev.HazardUrged(
        event_id=uuid.uuid4(),
        occurred_at=hazard.at,
        hazard_id=hazard.hazard_id,
        producer="tracking",
        payload=ev.HazardUrgedPayload(
            urging_id=uuid.uuid4(),
            department_id=department,
            dispatch_id=hazard.dispatch_id,
            stage="receipt",
            note="请今天内签收",
            urged_by="sup-1",
        ),
    )


def _extension(hazard: Hazard, *, decided: bool) -> ev.AnyEvent:
    original = hazard.at + timedelta(hours=2)
    common: dict[str, Any] = {
        "stage": "receipt",
        "dispatch_id": hazard.dispatch_id,
        "department_id": "fire",
        "original_deadline": original,
        "requested_deadline": original + timedelta(days=1),
    }
    meta: dict[str, Any] = {
        "event_id": uuid.uuid4(),
        "occurred_at": hazard.at,
        "hazard_id": hazard.hazard_id,
        "producer": "dispatch",
    }
    if decided:
        return ev.HazardExtensionDecided(
            **meta,
            payload=ev.HazardExtensionDecidedPayload(
                **common, approved=True, deadline=original + timedelta(days=1), note="同意", by="op-1"
            ),
        )
    return ev.HazardExtensionRequested(
        **meta, payload=ev.HazardExtensionRequestedPayload(**common, reason="crew away", by="officer-fire")
    )


async def test_urging_and_extension_decisions_are_delivered_once_to_the_right_people(
    notifications_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    smtp: MailReceiver,
    hooks: WebhookReceiver,
) -> None:
    hazard = Hazard()
    events = [
        hazard.dispatched(),
        _extension(hazard, decided=False),  # a request tells nobody
        _extension(hazard, decided=True),
        _urged(hazard),
    ]
    async with notifications_app() as (_app, client):
        await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/fire")
        )
        await subscribe(
            client, scope="department", scope_id="fire", channel="email", address="duty@fire.example.org"
        )
        await subscribe(
            client, scope="escalation", scope_id="supervisor", channel="webhook", url=hooks.url("/street")
        )
        await subscribe(
            client,
            scope="escalation",
            scope_id="district",
            channel="email",
            address="district@example.org",
            language="en",
        )
        await subscribe(
            client, scope="department", scope_id="police", channel="webhook", url=hooks.url("/police")
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *events)

        async def all_sent() -> bool:
            return len(hooks.calls) >= 4 and len(smtp.received) >= 4

        await wait_for(all_sent, timeout_s=60, interval_s=0.2)
        await asyncio.sleep(1.0)  # room for anything sent twice to show up

        assert Counter(c.json()["trigger"] for c in calls_to(hooks, "/fire")) == Counter(
            ["dispatched", "extension_decided", "urged"]
        )
        [street] = calls_to(hooks, "/street")
        assert street.json()["trigger"] == "urged"
        assert street.json()["facts"]["note"] == "请今天内签收"
        assert street.json()["audience"] == {"scope": "escalation", "id": "supervisor"}
        assert calls_to(hooks, "/police") == []
        decided = next(
            c.json() for c in calls_to(hooks, "/fire") if c.json()["trigger"] == "extension_decided"
        )
        assert decided["facts"]["approved"] is True
        assert decided["facts"]["stage"] == "receipt"
        assert decided["facts"]["deadline"] == (hazard.at + timedelta(hours=2, days=1)).isoformat()

        by_address = Counter(r for mail in smtp.received for r in mail.recipients)
        assert by_address == {"duty@fire.example.org": 3, "district@example.org": 1}
        zh = [m.message for m in smtp.received if m.recipients == ("duty@fire.example.org",)]
        subjects = sorted(str(m["Subject"]) for m in zh)
        assert "[隐患督办] 督办：请尽快办理该隐患" in subjects
        assert "[隐患督办] 延期申请已处理" in subjects
        urged_mail = next(m for m in zh if "督办：请尽快办理该隐患" in str(m["Subject"]))
        text = urged_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "请今天内签收" in text
        assert "督办人: sup-1" in text
        decided_mail = next(m for m in zh if "延期申请已处理" in str(m["Subject"]))
        assert "是否批准: 批准" in decided_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        [en] = [m.message for m in smtp.received if m.recipients == ("district@example.org",)]
        assert str(en["Subject"]) == "[hazard-dispatch] Urged: act on this hazard now"

        log = await deliveries(client)
        assert Counter(d["trigger"] for d in log) == {"dispatched": 2, "extension_decided": 2, "urged": 4}
        assert all(d["status"] == "sent" and d["attempts"] == 1 for d in log)

        # The same events again (a relay republishing them): nothing more is sent.
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *events)
        await asyncio.sleep(3.0)
        assert len(hooks.calls) == 4
        assert len(smtp.received) == 4
        assert len(await deliveries(client)) == 8
