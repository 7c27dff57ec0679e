"""The circuit breaker per target: a dead receiver gets probes, not an attempt per notice; its backlog
drains once it answers, exactly once; what it held past the retry window fails visibly."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest

from services.notifications.repository import NotificationsRepository
from shared.devstack import free_port
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

# Retries 0.05 to 0.2 s apart (the helpers' settings): without the breaker, a dead receiver would
# be asked again for every held notice several times a second.
BREAKER = {"breaker_failures": 3, "breaker_probe_s": 0.5, "retry_for_s": 600.0}


async def deliveries(client: httpx.AsyncClient, **params: Any) -> list[Any]:
    response = await client.get(
        "/api/v1/deliveries", params={"limit": 200, **params}, headers=auth("tok-operator")
    )
    assert response.status_code == 200, response.text
    found: list[Any] = response.json()["deliveries"]
    return found


class Receiver:
    """A webhook receiver on a fixed port that can be started late; notes each call's idempotency key."""

    def __init__(self) -> None:
        self.port = free_port()
        self.keys: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/fire"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
                }
                await reader.readexactly(int(headers[b"content-length"]))
                self.keys.append(headers[b"idempotency-key"].decode())
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_dead_receiver_gets_probes_not_attempts_and_its_backlog_drains_once_when_back(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str], hooks: WebhookReceiver
) -> None:
    dead = Receiver()  # nothing listens yet: connection refused
    held = [Hazard() for _ in range(30)]
    async with notifications_app(delivery=BREAKER) as (_app, client):
        fire = await subscribe(client, scope="department", scope_id="fire", channel="webhook", url=dead.url)
        await subscribe(
            client, scope="department", scope_id="police", channel="webhook", url=hooks.url("/police")
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *(h.dispatched() for h in held))

        async def all_written() -> bool:
            return len(await deliveries(client, department_id="fire")) == len(held)

        await wait_for(all_written, timeout_s=60, interval_s=0.2)
        await asyncio.sleep(4.0)  # the outage goes on
        others = [Hazard() for _ in range(5)]
        published = time.time()
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *(h.dispatched("police") for h in others))

        async def others_served() -> bool:
            return len([c for c in hooks.calls if c.path == "/police"]) == len(others)

        await wait_for(others_served, timeout_s=10, interval_s=0.05)
        assert max(c.at for c in hooks.calls if c.path == "/police") - published < 3.0

        log = await deliveries(client, department_id="fire")
        assert {d["status"] for d in log} <= {"pending", "retrying"}
        attempts = sum(d["attempts"] for d in log)
        # Without the breaker: each of the 30 asked again every 0.05-0.2 s for 4 s and more (hundreds).
        # With it: the first claim's share (16), the failures racing the opening, one probe per 0.5 s.
        # (Measured without the breaker: over 1,000.)
        assert attempts <= 45, attempts

        await dead.start()
        try:
            back = time.monotonic()

            async def all_sent() -> bool:
                log = await deliveries(client, department_id="fire")
                return len(log) == len(held) and all(d["status"] == "sent" for d in log)

            await wait_for(all_sent, timeout_s=15, interval_s=0.1)
            assert time.monotonic() - back < 5.0  # a probe every 0.5 s, then the backlog at once
            counts = Counter(dead.keys)
            assert len(counts) == len(held)  # every held notice arrived ...
            assert max(counts.values()) == 1  # ... once
            assert {key.split(":")[1] for key in counts} == {fire["subscription_id"]}
        finally:
            dead.stop()


async def test_notices_held_by_an_open_circuit_past_the_retry_window_fail_visibly(
    notifications_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    dead = Receiver()  # never started
    held = [Hazard() for _ in range(40)]
    async with notifications_app(delivery={**BREAKER, "retry_for_s": 3.0}) as (_app, client):
        await subscribe(client, scope="department", scope_id="fire", channel="webhook", url=dead.url)
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *(h.dispatched() for h in held))

        async def all_failed() -> bool:
            log = await deliveries(client, department_id="fire")
            return len(log) == len(held) and all(d["status"] == "failed" for d in log)

        await wait_for(all_failed, timeout_s=30, interval_s=0.2)
        log = await deliveries(client, department_id="fire")
        never_tried = [d for d in log if d["attempts"] == 0]
        # The circuit opened after the first failures: many were never attempted, yet none is left hanging.
        assert never_tried
        assert all(d["last_error"].startswith("circuit open, not attempted") for d in never_tried)
        # ... with what the receiver last answered (here: the refused connection).
        assert not any(d["last_error"].endswith("last error: ?") for d in never_tried)


async def test_a_long_outage_does_not_make_the_sender_read_the_held_rows_nor_delay_another_target(
    notifications_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    hooks: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every claim transaction of the sender runs between the others' sends: a look over all the held
    # rows of the dead target every probe interval (56 ms for 45,000) delayed them for nothing while
    # none of those rows could be past the retry window. Spied on, with the real database and broker.
    looks: list[list[str]] = []
    oldest_reads: list[list[str]] = []
    claim_expired = NotificationsRepository.claim_expired
    oldest_held = NotificationsRepository.oldest_held

    async def spy_claim_expired(self: NotificationsRepository, targets: Any, **kw: Any) -> Any:
        looks.append(list(targets))
        return await claim_expired(self, targets, **kw)

    async def spy_oldest_held(self: NotificationsRepository, targets: Any) -> Any:
        oldest_reads.append(list(targets))
        return await oldest_held(self, targets)

    monkeypatch.setattr(NotificationsRepository, "claim_expired", spy_claim_expired)
    monkeypatch.setattr(NotificationsRepository, "oldest_held", spy_oldest_held)
    dead = Receiver()  # never started: connection refused
    path = f"/police-{uuid.uuid4().hex[:8]}"  # the receiver is the session's: only this test's calls
    held = [Hazard() for _ in range(60)]
    async with notifications_app(delivery=BREAKER) as (_app, client):
        await subscribe(client, scope="department", scope_id="fire", channel="webhook", url=dead.url)
        await subscribe(client, scope="department", scope_id="police", channel="webhook", url=hooks.url(path))
        await publish(kafka.bootstrap_servers, topics["lifecycle"], *(h.dispatched() for h in held))

        async def all_written() -> bool:
            return len(await deliveries(client, department_id="fire")) == len(held)

        await wait_for(all_written, timeout_s=60, interval_s=0.2)
        # Ten probe intervals of outage, the other target's notices arriving through it.
        others: list[Hazard] = []
        for _ in range(10):
            batch = [Hazard() for _ in range(5)]
            others += batch
            await publish(
                kafka.bootstrap_servers, topics["lifecycle"], *(h.dispatched("police") for h in batch)
            )
            await asyncio.sleep(0.5)

        async def others_served() -> bool:
            return len({c.headers.get("idempotency-key") for c in hooks.calls if c.path == path}) == len(
                others
            )

        await wait_for(others_served, timeout_s=30, interval_s=0.05)
        police = await deliveries(client, department_id="police")
        assert len(police) == len(others)
        assert {d["status"] for d in police} == {"sent"}
        assert {d["attempts"] for d in police} == {1}  # none waited for a retry
        keys = Counter(c.headers.get("idempotency-key") for c in hooks.calls if c.path == path)
        assert max(keys.values()) == 1
        fire = await deliveries(client, department_id="fire")
        assert {d["status"] for d in fire} <= {"pending", "retrying"}  # still held, none failed
    fire_looks = [t for t in looks if dead.url in t]
    # Its oldest waiting notice read when the circuit opened; none could expire within 600 s: no look.
    assert [t for t in oldest_reads if dead.url in t], oldest_reads
    assert len([t for t in oldest_reads if dead.url in t]) <= 2, oldest_reads
    assert fire_looks == []
