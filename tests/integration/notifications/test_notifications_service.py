"""Notifications on the real database, broker, an SMTP server and a webhook receiver on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from shared.devstack.receivers import MailReceiver, WebhookReceiver
from tests.integration.notifications.notifications_helpers import (
    AppFactory,
    Hazard,
    auth,
    publish,
    subscribe,
)
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration

SECRET = "fire-hook-secret-0123456789"


def calls_to(hooks: WebhookReceiver, path: str) -> list[Any]:
    return [c for c in hooks.calls if c.path == path]


async def deliveries(client: httpx.AsyncClient, token: str = "tok-operator", **params: Any) -> list[Any]:
    response = await client.get("/api/v1/deliveries", params=params, headers=auth(token))
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["deliveries"]
    return found


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_trigger_reaches_each_subscription_exactly_once_even_replayed_and_restarted(
    notifications_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    smtp: MailReceiver,
    hooks: WebhookReceiver,
) -> None:
    hazard = Hazard()
    relapse = Hazard()
    events = [
        hazard.dispatched(),
        hazard.receipt_overdue(),
        hazard.escalated(1, "department"),
        hazard.escalated(2, "supervisor"),
        hazard.acknowledged(),
        hazard.rectification_ordered(),
        hazard.rectification_overdue(),
        hazard.rectification_ordered(round=2),
        relapse.relapsed("police"),
    ]
    async with notifications_app(group_id="notifications-first") as (_app, client):
        fire_hook = await subscribe(
            client,
            scope="department",
            scope_id="fire",
            channel="webhook",
            url=hooks.url("/fire"),
            secret=SECRET,
        )
        assert "secret" not in fire_hook
        assert fire_hook["signed"] is True
        fire_mail = await subscribe(
            client, scope="department", scope_id="fire", channel="email", address="duty@fire.example.org"
        )
        await subscribe(
            client,
            scope="department",
            scope_id="fire",
            channel="email",
            address="chief@fire.example.org",
            language="en",
        )
        await subscribe(
            client, scope="escalation", scope_id="supervisor", channel="webhook", url=hooks.url("/street")
        )
        await subscribe(
            client, scope="department", scope_id="police", channel="webhook", url=hooks.url("/police")
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *events)

        async def all_sent() -> bool:
            return len(hooks.calls) >= 8 and len(smtp.received) >= 12

        await wait_for(all_sent, timeout_s=60, interval_s=0.2)
        await asyncio.sleep(1.0)  # room for anything sent twice to show up

        fire_triggers = [c.json()["trigger"] for c in calls_to(hooks, "/fire")]
        assert Counter(fire_triggers) == Counter(
            [
                "dispatched",
                "receipt_overdue",
                "escalated",
                "rectification_ordered",
                "rectification_overdue",
                "rework",
            ]
        )
        assert [c.json()["facts"]["level"] for c in calls_to(hooks, "/street")] == [2]
        assert [c.json()["trigger"] for c in calls_to(hooks, "/police")] == ["relapsed"]
        assert len(hooks.calls) == 8
        # Signed with the subscription's secret; keyed by event and subscription.
        for call in calls_to(hooks, "/fire"):
            expected = "sha256=" + hmac.new(SECRET.encode(), call.body, hashlib.sha256).hexdigest()
            assert call.headers["x-hazard-signature"] == expected
            body = call.json()
            assert (
                call.headers["idempotency-key"] == f"{body['notification_id']}:{fire_hook['subscription_id']}"
            )
        assert "x-hazard-signature" not in calls_to(hooks, "/street")[0].headers

        by_address = Counter(r for mail in smtp.received for r in mail.recipients)
        assert by_address == {"duty@fire.example.org": 6, "chief@fire.example.org": 6}
        zh = next(m.message for m in smtp.received if m.recipients == ("duty@fire.example.org",))
        en = next(m.message for m in smtp.received if m.recipients == ("chief@fire.example.org",))
        assert zh.get_content_type() == "multipart/alternative"
        assert zh.get_body(("plain",)) is not None
        assert zh.get_body(("html",)) is not None
        assert "消防监督" in zh.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Fire Safety Supervision" in en.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert str(zh["Subject"]).startswith("[隐患督办]")
        assert str(en["Subject"]).startswith("[hazard-dispatch]")

        # The delivery log: a department sees its own, the operator everything.
        fire_log = await deliveries(client, "tok-fire")
        assert {d["department_id"] for d in fire_log} == {"fire"}
        assert len(fire_log) == 6 * 3 + 1  # three fire subscriptions, and the supervisor's escalation
        assert all(d["status"] == "sent" and d["attempts"] == 1 for d in fire_log)
        mail_log = [d for d in fire_log if d["subscription_id"] == fire_mail["subscription_id"]]
        assert len(mail_log) == 6
        # Asking for another department's log still shows only one's own.
        assert await deliveries(client, "tok-fire", department_id="police") == fire_log
        police_log = await deliveries(client, "tok-police")
        assert [d["trigger"] for d in police_log] == ["relapsed"]
        assert len(await deliveries(client)) == 20

        # The same events again, at new offsets (a relay republishing them): nothing more is sent.
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *events)
        await asyncio.sleep(3.0)
        assert len(hooks.calls) == 8
        assert len(smtp.received) == 12

    # A restart in a new consumer group reads the topic from the beginning: nothing is sent again.
    async with notifications_app(group_id="notifications-second") as (_app, client):

        async def all_seen_again() -> bool:
            response = await client.get("/metrics")
            return (
                'hazard_events_consumed_total{outcome="duplicate",service="notifications"}' in response.text
            )

        await wait_for(all_seen_again, timeout_s=60, interval_s=0.5)
        await asyncio.sleep(2.0)
        assert len(hooks.calls) == 8
        assert len(smtp.received) == 12
        assert len(await deliveries(client)) == 20


async def test_receipt_reminders_come_at_fractions_of_the_window_unless_acknowledged(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    # A 12 s receipt window: reminders at 50% (6 s) and 80% (9.6 s). The window starts once the
    # service runs and is subscribed, so its start-up and the first fetch after a quiet spell
    # (up to 2 s on the local broker, #20) fall inside the window, not before it.
    window = timedelta(seconds=12)
    async with notifications_app() as (_app, client):
        await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/fire")
        )
        now = datetime.now(UTC)
        late = Hazard(start=now)
        prompt = Hazard(start=now)
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            late.dispatched(receipt_in=window),
            prompt.dispatched(receipt_in=window),
            prompt.acknowledged(),
        )

        async def reminded_twice() -> bool:
            return sum(1 for c in hooks.calls if c.json()["trigger"] == "receipt_due_soon") >= 2

        await wait_for(reminded_twice, timeout_s=40, interval_s=0.1)
        await asyncio.sleep(
            max(0.0, (now + window + timedelta(seconds=1) - datetime.now(UTC)).total_seconds())
        )
        seen = sorted((c.json()["hazard_id"], c.json()["trigger"], c.at) for c in hooks.calls)
        assert [(h, t) for h, t, _ in seen] == sorted(
            [
                (str(late.hazard_id), "dispatched"),
                (str(late.hazard_id), "receipt_due_soon"),
                (str(late.hazard_id), "receipt_due_soon"),
                (str(prompt.hazard_id), "dispatched"),
            ]
        )
        reminders = [c for c in hooks.calls if c.json()["trigger"] == "receipt_due_soon"]
        fractions = sorted(c.json()["facts"]["fraction"] for c in reminders)
        assert fractions == [0.5, 0.8]
        # Each arrived no earlier than its fraction of the window (6 s and 9.6 s after dispatch).
        for call in reminders:
            due = now.timestamp() + window.total_seconds() * call.json()["facts"]["fraction"]
            assert call.at >= due - 0.05, (call.at, due)


async def test_failing_receiver_is_retried_then_reported_failed_without_slowing_others(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    failed_before = metric("hazard_notifications_deliveries_total", channel="webhook", result="failed")
    hazard = Hazard()
    async with notifications_app(delivery={"timeout_s": 1.0}) as (_app, client):
        broken = await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/status/500/fire")
        )
        refused = await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/status/404/fire")
        )
        await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/slow/30/fire")
        )
        await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/fire")
        )
        started = time.time()
        await publish(kafka.bootstrap_servers, topics["lifecycle"], hazard.dispatched())

        async def healthy_got_it() -> bool:
            return bool(calls_to(hooks, "/fire"))

        await wait_for(healthy_got_it, timeout_s=30, interval_s=0.05)

        async def broken_given_up() -> bool:
            log = await deliveries(client, status="failed")
            return any(d["subscription_id"] == broken["subscription_id"] for d in log)

        await wait_for(broken_given_up, timeout_s=30, interval_s=0.2)
        log = {d["subscription_id"]: d for d in await deliveries(client, "tok-fire")}
        attempts = calls_to(hooks, "/status/500/fire")
        assert len(attempts) >= 3
        assert len({c.headers["idempotency-key"] for c in attempts}) == 1
        assert [c.headers["x-hazard-attempt"] for c in attempts] == [
            str(i) for i in range(1, len(attempts) + 1)
        ]
        assert log[broken["subscription_id"]]["attempts"] == len(attempts)
        assert log[broken["subscription_id"]]["last_error"].startswith("HTTP 500")
        # A receiver that refuses the request itself (404) is not asked again.
        assert log[refused["subscription_id"]]["status"] == "failed"
        assert log[refused["subscription_id"]]["attempts"] == 1
        assert len(calls_to(hooks, "/status/404/fire")) == 1
        # The hung receiver held only its own delivery: the healthy one was served at once.
        assert calls_to(hooks, "/fire")[0].at - started < 5.0
        assert (
            metric("hazard_notifications_deliveries_total", channel="webhook", result="failed")
            >= failed_before + 2
        )


BAD_SUBSCRIPTIONS: list[tuple[dict[str, Any], str]] = [
    ({"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "ftp://example.org/x"}, "url"),
    ({"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "http://"}, "url"),
    ({"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "http://127.0.0.1:9/h"}, "url"),
    ({"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "http://10.1.2.3/h"}, "url"),
    (
        {"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "http://169.254.169.254/x"},
        "url",
    ),
    (
        {"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "http://localhost:80/h"},
        "url",
    ),
    ({"scope": "department", "scope_id": "fire", "channel": "webhook", "url": "http://[::1]/hook"}, "url"),
    ({"scope": "department", "scope_id": "fire", "channel": "email", "address": "not-an-address"}, "address"),
    (
        {"scope": "department", "scope_id": "fire", "channel": "email", "address": "a b@example.org"},
        "address",
    ),
    ({"scope": "department", "scope_id": "fire", "channel": "sms", "address": "13800000000"}, "channel"),
    (
        {"scope": "department", "scope_id": "nobody", "channel": "email", "address": "x@example.org"},
        "scope_id",
    ),
    (
        {"scope": "escalation", "scope_id": "mayor", "channel": "email", "address": "x@example.org"},
        "scope_id",
    ),
    (
        {
            "scope": "department",
            "scope_id": "fire",
            "channel": "webhook",
            "url": "https://example.org/h",
            "secret": "short",
        },
        "secret",
    ),
]


async def test_bad_subscriptions_are_refused_and_nothing_is_stored(
    notifications_app: AppFactory, hooks: WebhookReceiver
) -> None:
    async with notifications_app(delivery={"allow_private_targets": False}) as (_app, client):
        for body, field in BAD_SUBSCRIPTIONS:
            response = await client.post("/api/v1/subscriptions", json=body, headers=auth("tok-operator"))
            assert response.status_code == 422, (body, response.text)
            error = response.json()["error"]
            assert error["code"] == "invalid"
            assert any(d["field"] == field for d in error["details"]), (body, error)
        response = await client.post(
            "/api/v1/subscriptions",
            json={"scope": "department", "scope_id": "fire", "channel": "email", "address": "x@example.org"},
            headers=auth("tok-fire"),
        )
        assert response.status_code == 403
        listed = await client.get("/api/v1/subscriptions", headers=auth("tok-operator"))
        assert listed.json() == {"subscriptions": []}

        # A good one is listed without its secret, and deleted at runtime.
        created = await subscribe(
            client,
            scope="department",
            scope_id="fire",
            channel="webhook",
            url="https://8.8.8.8/hook",
            secret="a-good-long-secret-value",
        )
        listed = await client.get("/api/v1/subscriptions", headers=auth("tok-fire"))
        assert [s["subscription_id"] for s in listed.json()["subscriptions"]] == [created["subscription_id"]]
        assert "a-good-long-secret-value" not in listed.text
        response = await client.delete(
            f"/api/v1/subscriptions/{created['subscription_id']}", headers=auth("tok-operator")
        )
        assert response.status_code == 204
        response = await client.delete(
            f"/api/v1/subscriptions/{created['subscription_id']}", headers=auth("tok-operator")
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


async def test_a_sender_killed_mid_batch_loses_nothing_and_sends_nothing_twice_after_restart(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    from services.notifications import repository
    from services.notifications.sender import SenderLoop

    hazards = [Hazard() for _ in range(3)]
    dispatched = [h.dispatched() for h in hazards]
    group = "notifications-restarted"
    # The first process's own sender waits a minute between polls: the "killed" one below acts first.
    async with notifications_app(group_id=group, delivery={"poll_interval_s": 60.0, "lease_s": 1.0}) as (
        app,
        client,
    ):
        await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/fire")
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *dispatched)

        async def recorded() -> bool:
            return len(await deliveries(client)) == 3

        await wait_for(recorded, timeout_s=60, interval_s=0.2)
        doomed: SenderLoop = app.state.sender
        runtime = app.state.runtime
        async with runtime.sessions() as session, session.begin():
            claimed = await repository.NotificationsRepository(session).claim_deliveries(
                now=datetime.now(UTC), limit=10, per_target=10, in_flight={}, lease_s=1.0
            )
        assert len(claimed) == 3
        # It sends and records the first, then dies holding the other two.
        await doomed.deliver(claimed[0])
        assert len(calls_to(hooks, "/fire")) == 1

    # Restarted (same consumer group), and the events redelivered at new offsets as well.
    async with notifications_app(group_id=group) as (_app, client):
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *dispatched)

        async def all_sent() -> bool:
            return len(calls_to(hooks, "/fire")) >= 3

        await wait_for(all_sent, timeout_s=30, interval_s=0.1)
        await asyncio.sleep(2.0)
        received = Counter(c.json()["hazard_id"] for c in calls_to(hooks, "/fire"))
        assert received == {str(h.hazard_id): 1 for h in hazards}
        log = await deliveries(client)
        assert sorted(d["attempts"] for d in log) == [1, 2, 2]  # the two orphans: leased twice, sent once
        assert {d["status"] for d in log} == {"sent"}


async def test_deleting_a_subscription_stops_its_retries_and_keeps_its_log(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    hazard = Hazard()
    async with notifications_app(delivery={"retry_for_s": 600.0, "backoff_max_s": 0.1}) as (_app, client):
        broken = await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/status/503/x")
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], hazard.dispatched())

        async def retried() -> bool:
            return len(calls_to(hooks, "/status/503/x")) >= 2

        await wait_for(retried, timeout_s=60, interval_s=0.1)
        response = await client.delete(
            f"/api/v1/subscriptions/{broken['subscription_id']}", headers=auth("tok-operator")
        )
        assert response.status_code == 204
        await asyncio.sleep(0.5)  # an attempt in flight when it was deleted may still land
        attempts = len(calls_to(hooks, "/status/503/x"))
        await asyncio.sleep(1.5)
        assert len(calls_to(hooks, "/status/503/x")) == attempts
        [entry] = await deliveries(client, "tok-fire")
        assert entry["status"] == "cancelled"
        assert entry["last_error"] == "subscription deleted"
        assert (await client.get("/api/v1/subscriptions", headers=auth("tok-fire"))).json() == {
            "subscriptions": []
        }


async def notified_on_topic(kafka: Any, topic: str, *, expect: int) -> list[Any]:
    from shared.events import parse_event
    from tests.support.kafka_tools import read_topic

    found: list[Any] = []

    async def enough() -> bool:
        nonlocal found
        records = await read_topic(kafka.bootstrap_servers, topic, timeout_s=2)
        found = [e for e in (parse_event(r.value) for r in records) if e.TYPE == "hazard.notified"]
        return len(found) >= expect

    await wait_for(enough, timeout_s=60, interval_s=0.3)
    return found


async def test_each_delivery_outcome_is_published_once_for_the_timeline_without_secrets_or_paths(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    hazard = Hazard()
    async with notifications_app() as (_app, client):
        hook = await subscribe(
            client,
            scope="department",
            scope_id="fire",
            channel="webhook",
            url=hooks.url("/fire/robot?key=ROBOT-KEY-1234567890"),
            secret=SECRET,
        )
        mail = await subscribe(
            client, scope="department", scope_id="fire", channel="email", address="duty@fire.example.org"
        )
        broken = await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/status/503/fire")
        )
        dispatched = hazard.dispatched()
        await publish(kafka.bootstrap_servers, topics["lifecycle"], dispatched)
        found = await notified_on_topic(kafka, topics["lifecycle"], expect=3)
        await asyncio.sleep(1.0)  # nothing more comes
        again = await notified_on_topic(kafka, topics["lifecycle"], expect=3)
        assert len(again) == 3
        by_subscription = {str(e.payload.subscription_id): e for e in found}
        assert set(by_subscription) == {
            hook["subscription_id"],
            mail["subscription_id"],
            broken["subscription_id"],
        }
        port = hooks.url("/").split(":")[2].split("/")[0]
        ok = by_subscription[hook["subscription_id"]]
        assert (ok.payload.result, ok.payload.channel, ok.payload.recipient) == (
            "delivered",
            "webhook",
            f"127.0.0.1:{port}",
        )
        assert ok.hazard_id == hazard.hazard_id
        assert ok.causation_id == ok.payload.source_id == dispatched.event_id
        assert (ok.payload.trigger, ok.payload.department_id, ok.payload.attempts) == (
            "dispatched",
            "fire",
            1,
        )
        emailed = by_subscription[mail["subscription_id"]]
        assert (emailed.payload.result, emailed.payload.recipient) == ("delivered", "d***@fire.example.org")
        failed = by_subscription[broken["subscription_id"]]
        assert (failed.payload.result, failed.payload.error) == ("failed", "HTTP 503")
        assert failed.payload.attempts >= 2  # retried, then reported
        for event in found:
            text = event.model_dump_json()
            for hidden in ("ROBOT-KEY", SECRET, "/fire", "duty@"):
                assert hidden not in text


async def test_a_receiver_back_from_an_outage_gets_its_held_notices_at_once_not_after_each_backoff(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    from shared.devstack import free_port

    port = free_port()
    arrived: list[float] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                arrived.append(time.monotonic())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    hazards = [Hazard() for _ in range(4)]
    # Retries 15 to 30 s apart: without the release, the held notices would come that late.
    slow_retries = {"backoff_base_s": 30.0, "backoff_max_s": 60.0, "retry_for_s": 600.0}
    async with notifications_app(delivery=slow_retries) as (_app, client):
        await subscribe(
            client,
            scope="department",
            scope_id="fire",
            channel="webhook",
            url=f"http://127.0.0.1:{port}/fire",
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *(h.dispatched() for h in hazards[:3]))

        async def all_held() -> bool:
            log = await deliveries(client)
            return len(log) == 3 and all(d["status"] == "retrying" for d in log)

        await wait_for(all_held, timeout_s=60, interval_s=0.2)
        server = await asyncio.start_server(answer, "127.0.0.1", port)
        try:
            back = time.monotonic()
            await publish(kafka.bootstrap_servers, topics["lifecycle"], hazards[3].dispatched())

            async def all_sent() -> bool:
                log = await deliveries(client)
                return len(log) == 4 and all(d["status"] == "sent" for d in log)

            await wait_for(all_sent, timeout_s=12, interval_s=0.2)
            assert len(arrived) == 4
            assert max(arrived) - back < 10  # the shortest backoff held them 15 s
        finally:
            server.close()
