"""Helpers of the reporting integration tests: the app in-process, tokens, waiting for the projection."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import strategies as st

from services.reporting.app import create_app
from services.reporting.settings import ReportingSettings
from shared.auth import hash_token
from shared.db import create_engine
from shared.settings import DatabaseSettings
from tests.support import apps
from tests.support.kafka_tools import wait_for

SUPERVISOR = "tok-supervisor"
TOKENS: dict[str, dict[str, Any]] = {
    SUPERVISOR: {"principal": "sup-1", "role": "supervisor"},
    "tok-operator": {"principal": "op-1", "role": "operator"},
    "tok-fire": {"principal": "dept-fire", "role": "department", "department_id": "fire"},
}


def auth(token: str = SUPERVISOR) -> dict[str, str]:
    """The Authorization header of a token."""
    return {"Authorization": f"Bearer {token}"}


def settings_for(db_url: str, bootstrap: str, topics: dict[str, str]) -> ReportingSettings:
    """Reporting settings pointing at the test's database, broker and topics."""
    return ReportingSettings(
        database={"url": db_url},  # type: ignore[arg-type]
        kafka={  # type: ignore[arg-type]
            "bootstrap_servers": bootstrap,
            "lifecycle_topic": topics["lifecycle"],
            "dead_letter_topic": topics["dead_letter"],
            "idempotent_producer": False,
            "group_id": f"reporting-{uuid.uuid4().hex[:8]}",
            "batch_timeout_ms": 50,
        },
        http={"port": 0},  # type: ignore[arg-type]
        auth={"tokens": [{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]},  # type: ignore[arg-type]
        # Answers include everything applied so far: the tests compare them at once.
        projection={"rollup_refresh_s": 0.5, "metrics_refresh_s": 1.0, "max_staleness_s": 0},  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running_app(settings: ReportingSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The reporting app with its lifespan (broker, consumer, loops) and an in-process HTTP client."""
    app = create_app(settings)
    async with apps.running_app(app, name="reporting", startup_timeout=90) as started:
        yield started


async def wait_applied(db_url: str, expected: int, *, timeout_s: float = 120.0) -> None:
    """Wait until the reporting inbox holds ``expected`` applied event ids."""
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:

        async def done() -> bool:
            async with engine.connect() as conn:
                n = (
                    await conn.execute(
                        sa.text(
                            "SELECT coalesce(sum(cardinality(event_ids)), 0) FROM reporting.inbox_batches"
                        )
                    )
                ).scalar_one()
            return int(n) >= expected

        await wait_for(done, timeout_s=timeout_s, interval_s=0.3)
    finally:
        await engine.dispose()


def shuffled_batches(draw: Any, events: list[Any], *, max_cuts: int) -> tuple[list[list[Any]], list[bool]]:
    """For a hypothesis ``@composite``: ``events`` in a drawn order, cut into drawn batches, each
    drawn to be followed by a rollup refresh or not."""
    order = draw(st.permutations(range(len(events))))
    shuffled = [events[i] for i in order]
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=max_cuts))))
    batches = [
        shuffled[a:b] for a, b in zip([0, *cuts], [*cuts, len(shuffled)], strict=True) if shuffled[a:b]
    ]
    refreshed = draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    return batches, refreshed
