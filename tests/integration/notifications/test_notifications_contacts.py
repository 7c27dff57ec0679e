"""Escalation contacts administered at runtime (#18, the admin API on reporting) are told by notifications:
an escalation to level N e-mails the department's contacts named for that level, exactly once, without
restart; a contact changed or removed in administration is told accordingly from the next event on."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from services.notifications.api import DeliveryView, SubscriptionList, SubscriptionView
from shared import events as ev
from shared.devstack.receivers import MailReceiver, WebhookReceiver
from tests.integration.notifications.notifications_helpers import AppFactory, Hazard, auth, publish
from tests.integration.notifications.test_notifications_service import (
    deliveries,
)
from tests.integration.reporting.reporting_helpers import running_app, settings_for
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration

OPERATOR = auth("tok-operator")
CHIEF = "chief.wang@fire.example.org"
DEPUTY = "deputy.li@fire.example.org"


async def _administer_contacts(admin: httpx.AsyncClient, contacts: list[dict[str, Any]]) -> None:
    listed = (await admin.get("/api/v1/admin/departments", headers=OPERATOR)).json()["departments"]
    fire = next(d for d in listed if d["id"] == "fire")
    answer = await admin.put(
        "/api/v1/admin/departments/fire",
        json={"name_en": fire["name_en"], "name_zh": fire["name_zh"], "contacts": contacts},
        headers=OPERATOR,
    )
    assert answer.status_code == 200, answer.text


def _mails_to(receiver: MailReceiver) -> Counter[str]:
    return Counter(r for mail in receiver.received for r in mail.recipients)


async def test_an_administered_contact_is_told_of_its_levels_escalations_once_without_restart(
    db_url: str,
    kafka: Any,
    topics: dict[str, str],
    notifications_app: AppFactory,
    smtp: MailReceiver,
    hooks: WebhookReceiver,
) -> None:
    first, second = Hazard(), Hazard()
    async with (
        running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, admin),
        notifications_app() as (_app, client),
    ):
        # Administered while notifications runs: the chief for level 2 only, the deputy for every
        # level, and one with a telephone alone (no channel for it here: not told, no error).
        await _administer_contacts(
            admin,
            [
                {"name": "王队长", "email": CHIEF, "levels": [2]},
                {"name": "李副队长", "email": DEPUTY},
                {"name": "值班室", "phone": "0571-12345"},
            ],
        )
        refused = await admin.put(
            "/api/v1/admin/departments/fire",
            json={"name_en": "x", "name_zh": "x", "contacts": [{"name": "n", "email": CHIEF, "levels": [9]}]},
            headers=OPERATOR,
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "contacts.0.levels"

        events = [first.escalated(1, "department"), first.escalated(2, "supervisor")]
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *events)
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *events)  # replayed: nothing twice

        async def told() -> bool:
            return sum(_mails_to(smtp).values()) >= 3

        await wait_for(told, timeout_s=60, interval_s=0.2)
        await asyncio.sleep(1.0)  # room for anything sent twice to show up
        assert _mails_to(smtp) == Counter({CHIEF: 1, DEPUTY: 2})
        chief_mail = next(m.message for m in smtp.received if m.recipients == (CHIEF,))
        assert "隐患超时未接收已升级" in str(chief_mail["Subject"])
        assert "督办级别: 2" in chief_mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]

        logged = await deliveries(client, hazard_id=str(first.hazard_id))
        assert Counter((d["target"], d["status"]) for d in logged) == Counter(
            {(CHIEF, "sent"): 1, (DEPUTY, "sent"): 2}
        )
        assert {d["trigger"] for d in logged} == {"escalated"}
        # The declared response models describe exactly what the routes answer (names, nullability).
        for answer in logged:
            assert set(answer) == set(DeliveryView.model_fields)
            assert DeliveryView.model_validate(answer).model_dump() == answer
        assert any(d["sent_at"] is not None and d["next_attempt_at"] is None for d in logged)
        created = await client.post(
            "/api/v1/subscriptions",
            json={
                "scope": "escalation",
                "scope_id": "district",
                "channel": "email",
                "address": "d@example.org",
            },
            headers=OPERATOR,
        )
        assert created.status_code == 201, created.text
        assert set(created.json()) == set(SubscriptionView.model_fields)
        assert SubscriptionView.model_validate(created.json()).model_dump() == created.json()
        assert created.json()["url"] is None
        # Contacts are shown in administration, not among the operators' subscriptions.
        listed = (await client.get("/api/v1/subscriptions", headers=OPERATOR)).json()["subscriptions"]
        assert [s["address"] for s in listed] == ["d@example.org"]
        assert (
            SubscriptionList.model_validate({"subscriptions": listed}).model_dump()["subscriptions"] == listed
        )

        # Changed in administration: the deputy goes, the chief now also for level 3; an urging
        # reaches every contact whatever its levels.
        await _administer_contacts(admin, [{"name": "王队长", "email": CHIEF, "levels": [2, 3]}])
        urged = ev.HazardUrged(
            event_id=uuid.uuid4(),
            occurred_at=second.at,
            hazard_id=second.hazard_id,
            producer="tracking",
            payload=ev.HazardUrgedPayload(
                urging_id=second.dispatch_id,
                department_id="fire",
                dispatch_id=second.dispatch_id,
                stage="receipt",
                note="请今天内签收",
                urged_by="sup-1",
            ),
        )
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            second.escalated(1, "department"),
            second.escalated(3, "district"),
            urged,
        )

        async def told_again() -> bool:
            return sum(_mails_to(smtp).values()) >= 7

        await wait_for(told_again, timeout_s=60, interval_s=0.2)
        await asyncio.sleep(1.0)
        # The district's own subscription (scope escalation) is told of level 3 and of the urging, as before.
        assert _mails_to(smtp) == Counter({CHIEF: 3, DEPUTY: 2, "d@example.org": 2})
        logged = await deliveries(client, hazard_id=str(second.hazard_id))
        assert Counter((d["target"], d["trigger"]) for d in logged) == Counter(
            {
                (CHIEF, "escalated"): 1,
                (CHIEF, "urged"): 1,
                ("d@example.org", "escalated"): 1,
                ("d@example.org", "urged"): 1,
            }
        )
