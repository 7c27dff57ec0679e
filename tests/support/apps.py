"""The one way tests run a service's app in-process: its lifespan, and an HTTP client on it.

Every service's test helpers build settings their own way, then hand the app here, so what
"running" means (broker, consumer, relay and loops started by the lifespan; the client
talking ASGI, no port) is written once.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import sqlalchemy as sa
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from shared import events as ev


@contextlib.asynccontextmanager
async def running_app(
    app: FastAPI, *, name: str, startup_timeout: float = 90, shutdown_timeout: float = 60
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Start ``app`` (lifespan included) and yield it with a client whose base URL is ``http://<name>``."""
    async with LifespanManager(
        app, startup_timeout=startup_timeout, shutdown_timeout=shutdown_timeout
    ) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{name}") as client:
            yield app, client


async def scalar(app: FastAPI, query: str, **params: Any) -> Any:
    """One value from the service's database."""
    async with app.state.runtime.sessions() as session:
        return (await session.execute(sa.text(query), params)).scalar()


async def outbox_events(app: FastAPI, schema: str) -> list[ev.AnyEvent]:
    """The events waiting in a service's outbox, in order (when its relay is off)."""
    async with app.state.runtime.sessions() as session:
        rows = await session.execute(sa.text(f"select value from {schema}.outbox order by id"))
        return [ev.parse_event(row[0]) for row in rows]
