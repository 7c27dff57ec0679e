"""Helpers of the tracking integration tests: the app in-process, tokens, and lifecycle events to feed it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.tracking.app import create_app
from services.tracking.settings import TrackingSettings
from shared import events as ev
from shared.auth import hash_token
from shared.events import dump_event
from tests.support.apps import running_app
from tests.support.kafka_tools import produce

TOKENS: dict[str, dict[str, Any]] = {
    "tok-fire": {"principal": "officer-fire", "role": "department", "department_id": "fire"},
    "tok-police": {"principal": "officer-police", "role": "department", "department_id": "police"},
    "tok-gm-01": {"principal": "gm-liuyue-01", "role": "reporter", "grid_id": "liuyue-01"},
    "tok-gm-02": {"principal": "gm-liuyue-02", "role": "reporter", "grid_id": "liuyue-02"},
    "tok-operator": {"principal": "op-1", "role": "operator"},
    "tok-supervisor": {"principal": "sup-1", "role": "supervisor"},
}


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a test token."""
    return {"Authorization": f"Bearer {token}"}


def settings_for(db_url: str, bootstrap: str, topics: dict[str, str], **extra: Any) -> TrackingSettings:
    """Tracking settings pointing at the test's database, broker and topics."""
    data: dict[str, Any] = {
        "database": {"url": db_url, "pool_size": 10},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "lifecycle_topic": topics["lifecycle"],
            "dead_letter_topic": topics["dead_letter"],
            "idempotent_producer": False,
            "group_id": f"tracking-{uuid.uuid4().hex[:8]}",
            "batch_timeout_ms": 50,
            "retry_backoff_s": 0.01,
        },
        "http": {"port": 0},
        "auth": {"tokens": [{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]},
    }
    data.update(extra)
    return TrackingSettings(**data)


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def app_factory(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    """Start a tracking app in-process (lifespan included) with an HTTP client."""

    @contextlib.asynccontextmanager
    async def start(**extra: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(settings_for(db_url, kafka.bootstrap_servers, topics, **extra))
        async with running_app(app, name="tracking", startup_timeout=90) as started:
            yield started

    return start


class Hazard:
    """Builds the lifecycle events other services publish about one hazard, a minute apart."""

    def __init__(
        self,
        *,
        building_id: str | None = "B-12",
        lat: float = 22.62200,
        lon: float = 114.16813,
        category: str = "locked_rooftop_door",
        grid_id: str = "liuyue-01",
        start: datetime | None = None,
    ) -> None:
        self.hazard_id = uuid.uuid4()
        self.dispatch_id = uuid.uuid4()
        self.building_id = building_id
        self.lat, self.lon = lat, lon
        self.category = category
        self.grid_id = grid_id
        self.at = start or datetime.now(UTC) - timedelta(minutes=30)

    def _tick(self) -> datetime:
        self.at += timedelta(minutes=1)
        return self.at

    def _envelope(self, cls: type[Any], payload: Any, producer: str) -> Any:
        return cls(
            event_id=uuid.uuid4(),
            occurred_at=self._tick(),
            hazard_id=self.hazard_id,
            producer=producer,
            payload=payload,
        )

    def reported(self, **overrides: Any) -> ev.HazardReported:
        at = self.at
        data: dict[str, Any] = {
            "report_id": uuid.uuid4(),
            "category": self.category,
            "description": "Rooftop door padlocked",
            "location": ev.Location(
                lat=self.lat, lon=self.lon, address="Liuyue Rd 12", building_id=self.building_id
            ),
            "grid_id": self.grid_id,
            "community_id": self.grid_id.rsplit("-", 1)[0],
            "street_id": "henggang",
            "reporter_id": "gm-liuyue-01",
            "observed_at": at,
            "accepted_at": at,
        }
        data.update(overrides)
        return ev.HazardReported(
            event_id=uuid.uuid4(),
            occurred_at=at,
            hazard_id=self.hazard_id,
            producer="intake",
            payload=ev.HazardReportedPayload(**data),
        )

    def dispatched(self, department: str = "fire") -> ev.HazardDispatched:
        return self._envelope(
            ev.HazardDispatched,
            ev.HazardDispatchedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                rule_id="r1",
                receipt_deadline=self.at + timedelta(hours=2),
                deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=True),
            ),
            "dispatch",
        )

    def acknowledged(self, department: str = "fire") -> ev.HazardAcknowledged:
        at = self._tick()
        return ev.HazardAcknowledged(
            event_id=uuid.uuid4(),
            occurred_at=at,
            hazard_id=self.hazard_id,
            producer="dispatch",
            payload=ev.HazardAcknowledgedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                acknowledged_at=at,
                receipt_deadline=at + timedelta(hours=1),
                on_time=True,
                acknowledged_by=f"officer-{department}",
            ),
        )


async def publish(bootstrap: str, topic: str, *events: ev.AnyEvent) -> None:
    """Put events on the lifecycle topic, keyed by hazard, as the producing services do."""
    await produce(bootstrap, topic, [(str(e.hazard_id).encode(), dump_event(e)) for e in events])


async def wait_for_state(
    client: httpx.AsyncClient, hazard_id: uuid.UUID, state: str, *, timeout_s: float = 60.0
) -> dict[str, Any]:
    """Poll the case until it reaches ``state`` (as the supervisor); returns the case."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        response = await client.get(f"/api/v1/hazards/{hazard_id}", headers=auth("tok-supervisor"))
        last = response.json()
        if response.status_code == 200 and last["state"] == state:
            return dict(last)
        await asyncio.sleep(0.2)
    raise AssertionError(f"hazard {hazard_id} did not reach {state} within {timeout_s} s; last: {last}")


async def ordered_case(client: httpx.AsyncClient, kafka: Any, topics: dict[str, str]) -> Hazard:
    """A fire hazard in liuyue-01, dispatched and acknowledged: awaiting rectification."""
    hazard = Hazard()
    await publish(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        hazard.reported(),
        hazard.dispatched(),
        hazard.acknowledged(),
    )
    await wait_for_state(client, hazard.hazard_id, "rectification_ordered")
    return hazard
