"""Helpers of the dispatch integration tests: the service app in-process, tokens, reported events."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from services.dispatch import domain
from services.dispatch.app import create_app
from services.dispatch.repository import DispatchRepository
from services.dispatch.settings import DispatchSettings
from shared import events as ev
from shared.auth import hash_token
from shared.outbox import Outbox
from shared.reference import ReferenceData
from shared.uow import UnitOfWorkFactory
from tests.support import apps, factories
from tests.support.apps import running_app

TOKENS: dict[str, dict[str, Any]] = {
    "tok-fire": {"principal": "dept-fire", "role": "department", "department_id": "fire"},
    "tok-gas": {"principal": "dept-gas", "role": "department", "department_id": "gas"},
    "tok-police": {"principal": "dept-police", "role": "department", "department_id": "police"},
    "tok-operator": {"principal": "op-1", "role": "operator"},
    "tok-supervisor": {"principal": "sup-1", "role": "supervisor"},
    "tok-reporter": {"principal": "gm-1", "role": "reporter", "grid_id": "liuyue-01"},
}


def auth(token: str) -> dict[str, str]:
    """The Authorization header for a test token."""
    return {"Authorization": f"Bearer {token}"}


def reported(
    category: str = "locked_rooftop_door", grid_id: str = "liuyue-01", **overrides: Any
) -> ev.HazardReported:
    """A valid hazard.reported event for the reference street, accepted now."""
    return factories.reported_event(
        category=category, grid_id=grid_id, **{**factories.PLAIN_REPORT, **overrides}
    )


def settings_for(db_url: str, bootstrap: str, topics: dict[str, str], **extra: Any) -> DispatchSettings:
    """Dispatch settings pointing at the test's database, broker and topics."""
    data: dict[str, Any] = {
        "database": {"url": db_url, "pool_size": 20},
        "kafka": {
            "bootstrap_servers": bootstrap,
            "lifecycle_topic": topics["lifecycle"],
            "dead_letter_topic": topics["dead_letter"],
            "idempotent_producer": False,
            "group_id": extra.pop("group_id", f"dispatch-{uuid.uuid4().hex[:8]}"),
            "batch_timeout_ms": 50,
        },
        "http": {"port": 0},
        "auth": {"tokens": [{"token_sha256": hash_token(t), **p} for t, p in TOKENS.items()]},
    }
    for key, value in extra.items():
        data[key] = value
    return DispatchSettings(**data)


AppFactory = Callable[..., contextlib.AbstractAsyncContextManager[tuple[FastAPI, httpx.AsyncClient]]]


def app_factory(db_url: str, kafka: Any, topics: dict[str, str]) -> AppFactory:
    """Start a dispatch app in-process (lifespan included) with an HTTP client; several may run at once."""

    @contextlib.asynccontextmanager
    async def start(**extra: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
        app = create_app(settings_for(db_url, kafka.bootstrap_servers, topics, **extra))
        async with running_app(app, name="dispatch", startup_timeout=60) as started:
            yield started

    return start


def work_on(sessions: Any, outbox: Outbox) -> UnitOfWorkFactory[DispatchRepository]:
    """Units of work on the dispatch repository over the test's own sessions and outbox."""
    return UnitOfWorkFactory(sessions, outbox, DispatchRepository)


scalar = apps.scalar


async def outbox_events(app: FastAPI) -> list[ev.AnyEvent]:
    """The events waiting in dispatch's outbox, in order (when the relay is off)."""
    return await apps.outbox_events(app, "dispatch")


async def seed_due(
    sessions: Any, reference: ReferenceData, count: int, *, due_at: datetime
) -> list[uuid.UUID]:
    """`count` pending fire dispatches whose deadline and level-1 reminder are due at `due_at`."""
    new: list[domain.Dispatch] = []
    for _ in range(count):
        facts = domain.HazardFacts(
            hazard_id=uuid.uuid4(), category="locked_rooftop_door", community_id="liuyue", grid_id="liuyue-01"
        )
        outcome = domain.dispatch_to(
            reference,
            facts,
            department_id="fire",
            rule_id="r-locked-rooftop-door",
            now=due_at - timedelta(hours=3),
            reason="routed",
            causation_id=None,
        )
        new.extend(outcome.dispatches)
    ids = [x.dispatch_id for x in new]
    async with sessions() as session, session.begin():
        await DispatchRepository(session).add_dispatches(new, dispatched_by="system")
        await set_deadline(session, ids, due_at)
    return ids


async def set_deadline(session: Any, ids: list[uuid.UUID], due_at: Any) -> None:
    """Move these dispatches' receipt deadline, with their level-1 reminder, to `due_at` (their next step)."""
    await session.execute(MOVE_DEADLINE, {"ids": ids, "due": due_at})


MOVE_DEADLINE = sa.text(
    """
    update dispatch.dispatches
    set receipt_deadline = cast(:due as timestamptz), next_due_at = cast(:due as timestamptz),
        escalation = (
            select jsonb_agg(
                case when (s ->> 'level')::int = 1
                     then jsonb_set(s, '{due_at}', to_jsonb(cast(:due as timestamptz))) else s end
                order by (s ->> 'level')::int
            )
            from jsonb_array_elements(escalation) s
        )
    where dispatch_id = any(cast(:ids as uuid[]))
    """
)
"""A dispatch's receipt deadline and its level-1 reminder (due with it), moved in place (tests only)."""
