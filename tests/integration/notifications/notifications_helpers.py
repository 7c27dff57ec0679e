"""Helpers of the notifications integration tests: the app in-process, receivers, events to feed it."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from cryptography.fernet import Fernet
from fastapi import FastAPI

from services.notifications.app import create_app
from services.notifications.settings import NotificationsSettings
from shared import events as ev
from shared.auth import hash_token
from shared.events import dump_event
from tests.support.apps import running_app
from tests.support.kafka_tools import produce

TOKENS: dict[str, dict[str, Any]] = {
    "tok-fire": {"principal": "officer-fire", "role": "department", "department_id": "fire"},
    "tok-police": {"principal": "officer-police", "role": "department", "department_id": "police"},
    "tok-operator": {"principal": "op-1", "role": "operator"},
    "tok-supervisor": {"principal": "sup-1", "role": "supervisor"},
}
SECRET_KEY = Fernet.generate_key().decode()


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a test token."""
    return {"Authorization": f"Bearer {token}"}


def settings_for(
    db_url: str, bootstrap: str, topics: dict[str, str], *, smtp_port: int, group_id: str, **extra: Any
) -> NotificationsSettings:
    """Settings pointing at the test's database, broker, topics and SMTP server, with short retries."""
    data: dict[str, Any] = {
        "database": {"url": db_url, "pool_size": 10},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "lifecycle_topic": topics["lifecycle"],
            "dead_letter_topic": topics["dead_letter"],
            "idempotent_producer": False,
            "group_id": group_id,
            "batch_timeout_ms": 50,
            "retry_backoff_s": 0.01,
        },
        "http": {"port": 0},
        "auth": {"tokens": [{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]},
        "secret_key": SECRET_KEY,
        "smtp": {"host": "127.0.0.1", "port": smtp_port},
        "delivery": {
            "allow_private_targets": True,
            "poll_interval_s": 0.05,
            "timeout_s": 2.0,
            "backoff_base_s": 0.05,
            "backoff_max_s": 0.2,
            "retry_for_s": 1.5,
        },
        "reminders": {"poll_interval_s": 0.1},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return NotificationsSettings(**data)


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def app_factory(db_url: str, kafka: Any, topics: dict[str, str], *, smtp_port: int) -> AppFactory:
    """Start a notifications app in-process (lifespan included) with an HTTP client."""

    @contextlib.asynccontextmanager
    async def start(
        *, group_id: str | None = None, **extra: Any
    ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        settings = settings_for(
            db_url,
            kafka.bootstrap_servers,
            topics,
            smtp_port=smtp_port,
            group_id=group_id or f"notifications-{uuid.uuid4().hex[:8]}",
            **extra,
        )
        app = create_app(settings)
        async with running_app(app, name="notifications", startup_timeout=90) as started:
            yield started

    return start


class Hazard:
    """Builds the lifecycle events dispatch and tracking publish about one hazard."""

    def __init__(self, *, start: datetime | None = None) -> None:
        self.hazard_id = uuid.uuid4()
        self.dispatch_id = uuid.uuid4()
        self.at = start or datetime.now(UTC)

    def _event(self, cls: type[Any], payload: Any, producer: str, at: datetime | None = None) -> Any:
        return cls(
            event_id=uuid.uuid4(),
            occurred_at=at or self.at,
            hazard_id=self.hazard_id,
            producer=producer,
            payload=payload,
        )

    def dispatched(self, department: str = "fire", *, receipt_in: timedelta = timedelta(hours=2)) -> Any:
        return self._event(
            ev.HazardDispatched,
            ev.HazardDispatchedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                rule_id="r1",
                receipt_deadline=self.at + receipt_in,
                deadline_rule=ev.FrozenDeadlineRule(minutes=120, working_time=False),
            ),
            "dispatch",
        )

    def acknowledged(self, department: str = "fire") -> Any:
        return self._event(
            ev.HazardAcknowledged,
            ev.HazardAcknowledgedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                acknowledged_at=self.at,
                receipt_deadline=self.at + timedelta(hours=2),
                on_time=True,
                acknowledged_by=f"officer-{department}",
            ),
            "dispatch",
        )

    def receipt_overdue(self, department: str = "fire") -> Any:
        return self._event(
            ev.HazardReceiptOverdue,
            ev.HazardReceiptOverduePayload(
                dispatch_id=self.dispatch_id, department_id=department, receipt_deadline=self.at
            ),
            "dispatch",
        )

    def escalated(self, level: int, target: str, department: str = "fire") -> Any:
        return self._event(
            ev.HazardEscalated,
            ev.HazardEscalatedPayload(
                dispatch_id=self.dispatch_id,
                department_id=department,
                level=level,
                target=target,
                receipt_deadline=self.at,
            ),
            "dispatch",
        )

    def rectification_ordered(self, department: str = "fire", *, round: int = 1) -> Any:
        return self._event(
            ev.HazardRectificationOrdered,
            ev.HazardRectificationOrderedPayload(
                department_id=department,
                deadline=self.at + timedelta(days=3),
                deadline_rule=ev.FrozenDeadlineRule(minutes=4320, working_time=False),
                round=round,
            ),
            "tracking",
        )

    def rectification_overdue(self, department: str = "fire") -> Any:
        return self._event(
            ev.HazardRectificationOverdue,
            ev.HazardRectificationOverduePayload(department_id=department, deadline=self.at),
            "tracking",
        )

    def relapsed(self, original_department: str | None) -> Any:
        return self._event(
            ev.HazardRelapsed,
            ev.HazardRelapsedPayload(
                original_hazard_id=uuid.uuid4(),
                original_department_id=original_department,
                original_closed_at=self.at - timedelta(days=10),
                days_since_closure=10.0,
                same_building=True,
                distance_m=3.0,
                place_key="building:B-12",
            ),
            "tracking",
        )


async def publish(bootstrap: str, topic: str, *events: ev.AnyEvent) -> None:
    """Put events on the lifecycle topic, keyed by hazard, as the producing services do."""
    await produce(bootstrap, topic, [(str(e.hazard_id).encode(), dump_event(e)) for e in events])


async def subscribe(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """Create a subscription as the operator; fails the test unless it is stored."""
    response = await client.post("/api/v1/subscriptions", json=body, headers=auth("tok-operator"))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result
