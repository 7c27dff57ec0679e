"""Deadline verdicts come from the database's clock: a dispatch process whose own clock is off changes none.

Each test skews the process's clock by an hour (ahead and behind) around deadlines half an
hour away on the database's clock, so the local clock would get every verdict wrong.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from services.dispatch import tables, timers
from shared.db import create_engine, create_session_factory
from shared.events import dump_event
from shared.outbox import Outbox
from shared.reference import load_reference_data
from shared.settings import DatabaseSettings
from tests.integration.dispatch.dispatch_helpers import AppFactory, auth, reported, seed_due, work_on
from tests.support.clock import skew_process_clock
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration
SKEWS = [pytest.param(timedelta(hours=1), id="ahead"), pytest.param(timedelta(hours=-1), id="behind")]
HALF_HOUR = timedelta(minutes=30)


async def _database_now(sessions: Any) -> datetime:
    async with sessions() as session:
        now: datetime = (await session.execute(sa.text("select clock_timestamp()"))).scalar_one()
        return now


@pytest.mark.parametrize("skew", SKEWS)
async def test_a_timer_pass_on_a_skewed_clock_fires_what_the_database_says_is_due(
    db_url: str, monkeypatch: pytest.MonkeyPatch, skew: timedelta
) -> None:
    engine = create_engine(DatabaseSettings(url=db_url))
    sessions = create_session_factory(engine)
    reference = load_reference_data()
    try:
        now = await _database_now(sessions)
        past = await seed_due(sessions, reference, 4, due_at=now - HALF_HOUR)
        await seed_due(sessions, reference, 3, due_at=now + HALF_HOUR)
        skew_process_clock(monkeypatch, skew)
        work = work_on(sessions, Outbox(tables.outbox, default_topic="clock"))
        while await timers.fire_due(work, batch_size=1000):
            pass
        await timers.Gauges(work).refresh()
        async with sessions() as session:
            overdue = dict(
                (
                    await session.execute(
                        sa.text(
                            "select dispatch_id, overdue_at from dispatch.dispatches where overdue_at is not null"
                        )
                    )
                ).all()
            )
        after = await _database_now(sessions)
    finally:
        await engine.dispose()
    # Exactly the dispatches past their deadline by the database, stamped on its clock.
    assert set(overdue) == set(past)
    assert all(now <= stamp <= after for stamp in overdue.values()), (now, overdue, after)
    assert REGISTRY.get_sample_value("hazard_dispatch_pending", {"department": "fire"}) == 7
    assert REGISTRY.get_sample_value("hazard_dispatch_overdue", {"department": "fire"}) == 4


@pytest.mark.parametrize("skew", SKEWS)
async def test_acknowledgements_and_the_inbox_on_a_skewed_clock_get_the_database_verdict(
    dispatch_app: AppFactory, monkeypatch: pytest.MonkeyPatch, skew: timedelta
) -> None:
    reference = load_reference_data()
    async with dispatch_app(timers={"enabled": False}) as (app, client):
        sessions = app.state.runtime.sessions
        now = await _database_now(sessions)
        (ahead,) = await seed_due(sessions, reference, 1, due_at=now + HALF_HOUR)
        (behind,) = await seed_due(sessions, reference, 1, due_at=now - HALF_HOUR)
        skew_process_clock(monkeypatch, skew)
        fire = auth("tok-fire")

        shown = {
            item["dispatch_id"]: item["overdue"]
            for item in (await client.get("/api/v1/dispatches", headers=fire)).json()["items"]
        }
        assert shown == {str(ahead): False, str(behind): True}
        listed = (await client.get("/api/v1/dispatches?status=overdue", headers=fire)).json()["items"]
        assert [item["dispatch_id"] for item in listed] == [str(behind)]
        assert (await client.get(f"/api/v1/dispatches/{ahead}", headers=fire)).json()["overdue"] is False

        on_time = await client.post(f"/api/v1/dispatches/{ahead}/acknowledge", headers=fire)
        late = await client.post(f"/api/v1/dispatches/{behind}/acknowledge", headers=fire)
        after = await _database_now(sessions)
    assert on_time.status_code == 200, on_time.text
    assert (on_time.json()["on_time"], on_time.json()["overdue"]) == (True, False)
    assert late.status_code == 200, late.text
    assert (late.json()["on_time"], late.json()["overdue"]) == (False, True)
    for answer in (on_time, late):
        stamped = datetime.fromisoformat(answer.json()["acknowledged_at"])
        assert now <= stamped <= after, (now, stamped, after)


@pytest.mark.parametrize("skew", SKEWS)
async def test_a_hazard_routed_on_a_skewed_clock_gets_its_deadline_from_the_database_clock(
    dispatch_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    skew: timedelta,
) -> None:
    hazard = reported("locked_rooftop_door")
    async with dispatch_app(timers={"enabled": False}) as (app, _client):
        sessions = app.state.runtime.sessions
        before = await _database_now(sessions)
        skew_process_clock(monkeypatch, skew)
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(hazard.hazard_id).encode(), dump_event(hazard))],
        )

        async def routed() -> Any:
            async with sessions() as session:
                return (
                    await session.execute(
                        sa.select(tables.dispatches).where(tables.dispatches.c.hazard_id == hazard.hazard_id)
                    )
                ).first()

        await wait_for(routed, timeout_s=60)
        row = await routed()
        after = await _database_now(sessions)
    # Dispatched (and its deadline counted from) the database's now, not the process's.
    assert before <= row.created_at <= after, (before, row.created_at, after)
