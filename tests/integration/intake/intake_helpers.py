"""Helpers of the intake integration tests: the service in-process, tokens and report bodies."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from fastapi import FastAPI

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared import events as ev
from shared.auth import hash_token
from shared.devstack.ports import free_port
from shared.reference import ReferenceData
from tests.support import apps
from tests.support.apps import running_app

TOKENS: dict[str, dict[str, Any]] = {
    "tok-gm1": {"principal": "gm-liuyue-01", "role": "reporter", "grid_id": "liuyue-01"},
    "tok-gm2": {"principal": "gm-liuyue-02", "role": "reporter", "grid_id": "liuyue-02"},
    # A building manager (楼栋长) of liuyue-01 (#18): reports carry reporter_type building_manager.
    "tok-bm1": {
        "principal": "bm-liuyue-01-7",
        "role": "reporter",
        "grid_id": "liuyue-01",
        "reporter_type": "building_manager",
    },
    "tok-fire": {"principal": "dept-fire", "role": "department", "department_id": "fire"},
    "tok-supervisor": {"principal": "sup-1", "role": "supervisor"},
}
# liuyue-01's centre, inside the street.
LAT, LON = 22.622, 114.16813


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a test token."""
    return {"Authorization": f"Bearer {token}"}


def report(**overrides: Any) -> dict[str, Any]:
    """A valid report body for grid liuyue-01 (fields may be overridden; location merges)."""
    location = {"lat": LAT, "lon": LON, "address": "Liuyue, building 7", "building_id": None}
    location.update(overrides.pop("location", {}))
    body: dict[str, Any] = {
        "report_id": str(uuid.uuid4()),
        "category": "locked_rooftop_door",
        "description": "Rooftop escape door padlocked",
        "location": location,
        "grid_id": "liuyue-01",
        "observed_at": (datetime.now(UTC) - timedelta(minutes=10)).isoformat(),
        "photos": ["https://img.example.org/a.jpg"],
    }
    body.update(overrides)
    return body


def settings_for(db_url: str, bootstrap: str, topics: dict[str, str], **extra: Any) -> IntakeSettings:
    """Intake settings pointing at the test's database, broker and topics."""
    data: dict[str, Any] = {
        "database": {"url": db_url, "pool_size": 20},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "lifecycle_topic": topics["lifecycle"],
            "dead_letter_topic": topics["dead_letter"],
            "idempotent_producer": False,
            "group_id": extra.pop("group_id", f"intake-{uuid.uuid4().hex[:8]}"),
            "batch_timeout_ms": 50,
            "reconnect_backoff_s": 0.5,
        },
        "http": {"port": 0},
        "auth": {"tokens": [{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]},
        "rate_limit": {"enabled": False},
    }
    data.update(extra)
    return IntakeSettings(**data)


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def app_factory(db_url: str, bootstrap: str, topics: dict[str, str]) -> AppFactory:
    """Start an intake app in-process (lifespan included) with an HTTP client."""

    @contextlib.asynccontextmanager
    async def start(
        reference: ReferenceData | None = None, broker: bool = True, **extra: Any
    ) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        # broker=False: a port where nothing listens (intake serves without it; tests start faster).
        servers = bootstrap if broker else f"127.0.0.1:{free_port()}"
        app = create_app(settings_for(db_url, servers, topics, **extra), reference=reference)
        async with running_app(app, name="intake", startup_timeout=60) as started:
            yield started

    return start


scalar = apps.scalar


async def outbox_events(app: FastAPI) -> list[ev.AnyEvent]:
    """The events waiting in intake's outbox, in order (when the relay is off)."""
    return await apps.outbox_events(app, "intake")
