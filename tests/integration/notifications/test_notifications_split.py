"""The sender in a process of its own (#16): ``SEND=false`` consumes, ``CONSUME=false`` sends."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from services.notifications.repository import DELIVERIES_CHANNEL
from shared.devstack.receivers import WebhookReceiver
from tests.integration.notifications.notifications_helpers import (
    AppFactory,
    Hazard,
    auth,
    publish,
    subscribe,
)
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration


async def _log(client: httpx.AsyncClient) -> list[Any]:
    response = await client.get("/api/v1/deliveries", headers=auth("tok-operator"))
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["deliveries"]
    return found


async def test_a_sender_apart_from_the_consumer_delivers_each_notice_once_and_retries_the_failures(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    hazards = [Hazard() for _ in range(6)]
    async with (
        notifications_app(send=False) as (consumer_app, client),
        notifications_app(consume=False) as (sender_app, _),
    ):
        # Each process runs only its part: the consumer reads the topic, the sender's loop is elsewhere.
        assert consumer_app.state.runtime.consumer is not None
        assert sender_app.state.runtime.consumer is None
        await subscribe(
            client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/fire")
        )
        # A receiver that always fails: its retries (and giving up after RETRY_FOR_S) are the sender's too.
        await subscribe(
            client,
            scope="department",
            scope_id="police",
            channel="webhook",
            url=hooks.url("/status/503/police"),
        )
        failing = Hazard()
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            *(h.dispatched() for h in hazards),
            failing.dispatched("police"),
        )

        async def all_settled() -> bool:
            log = await _log(client)
            return len(log) == len(hazards) + 1 and all(d["status"] in ("sent", "failed") for d in log)

        await wait_for(all_settled, timeout_s=60, interval_s=0.2)
        await asyncio.sleep(1.0)  # room for anything sent twice to show up

        received = [c.json()["hazard_id"] for c in hooks.calls if c.path == "/fire"]
        assert sorted(received) == sorted(str(h.hazard_id) for h in hazards)
        log = await _log(client)
        sent = [d for d in log if d["department_id"] == "fire"]
        assert [(d["status"], d["attempts"]) for d in sent] == [("sent", 1)] * len(hazards)
        (gave_up,) = [d for d in log if d["department_id"] == "police"]
        assert gave_up["status"] == "failed"
        assert gave_up["attempts"] >= 2
        assert gave_up["attempts"] == len([c for c in hooks.calls if c.path == "/status/503/police"])


async def test_a_consumer_apart_from_the_sender_announces_new_deliveries_by_notify(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver, db_url: str
) -> None:
    """A sender of its own hears the consumer's commits instead of waiting for its idle poll."""
    heard = asyncio.Event()
    dsn = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    listener = await asyncpg.connect(dsn)
    try:
        await listener.add_listener(DELIVERIES_CHANNEL, lambda *_: heard.set())
        async with notifications_app(send=False) as (_app, client):
            await subscribe(
                client, scope="department", scope_id="fire", channel="webhook", url=hooks.url("/fire")
            )
            assert not heard.is_set(), "a subscription is no delivery"
            await publish(kafka.bootstrap_servers, topics["lifecycle"], Hazard().dispatched())
            await asyncio.wait_for(heard.wait(), timeout=60)
            log = await _log(client)
            assert [d["status"] for d in log] == ["pending"], "announced, and left to the sender apart"
    finally:
        await listener.close()
