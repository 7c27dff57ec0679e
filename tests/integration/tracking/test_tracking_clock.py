"""Rectification deadlines and overdue verdicts come from the database's clock, not the process's.

Each test skews the tracking process's clock by an hour (ahead and behind); the database's is right.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from services.tracking.timers import sweep_due_timers
from tests.integration.tracking.tracking_helpers import (
    AppFactory,
    Hazard,
    auth,
    publish,
    wait_for_state,
)
from tests.support.clock import skew_process_clock

pytestmark = pytest.mark.integration
SKEWS = [pytest.param(timedelta(hours=1), id="ahead"), pytest.param(timedelta(hours=-1), id="behind")]


async def _database_now(app: Any) -> datetime:
    async with app.state.runtime.sessions() as session:
        now: datetime = (await session.execute(sa.text("select clock_timestamp()"))).scalar_one()
        return now


async def _ordered(client: Any, kafka: Any, topics: dict[str, str], *hazards: Hazard) -> None:
    await publish(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        *[e for h in hazards for e in (h.reported(), h.dispatched(), h.acknowledged())],
    )
    for hazard in hazards:
        await wait_for_state(client, hazard.hazard_id, "rectification_ordered")


@pytest.mark.parametrize("skew", SKEWS)
async def test_a_sweep_on_a_skewed_clock_fires_what_the_database_says_is_due(
    tracking_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    skew: timedelta,
) -> None:
    late, early = Hazard(), Hazard()
    # The loop sweeps once at start (nothing due) and then waits: the test's sweep is the only one.
    async with tracking_app(timers={"poll_interval_s": 60}) as (app, client):
        await _ordered(client, kafka, topics, late, early)
        async with app.state.runtime.sessions() as session, session.begin():
            for hazard, offset in ((late, "- interval '30 minutes'"), (early, "+ interval '30 minutes'")):
                await session.execute(
                    sa.text(
                        f"update tracking.rectification_timers set due_at = clock_timestamp() {offset} "
                        "where hazard_id = :h"
                    ),
                    {"h": hazard.hazard_id},
                )
        before = await _database_now(app)
        skew_process_clock(monkeypatch, skew)
        fired = await sweep_due_timers(app.state.runtime.work, batch_size=200, config=app.state.config)
        after = await _database_now(app)
        async with app.state.runtime.sessions() as session:
            stamps = dict(
                (
                    await session.execute(
                        sa.text(
                            "select hazard_id, fired_at from tracking.rectification_timers where fired_at is not null"
                        )
                    )
                ).all()
            )
        overdue = (
            await client.get(f"/api/v1/hazards/{late.hazard_id}", headers=auth("tok-supervisor"))
        ).json()
        waiting = (
            await client.get(f"/api/v1/hazards/{early.hazard_id}", headers=auth("tok-supervisor"))
        ).json()
    assert fired == 1
    assert list(stamps) == [late.hazard_id]
    assert before <= stamps[late.hazard_id] <= after, (before, stamps, after)
    assert overdue["deadlines"]["rectification_overdue"] is True
    assert waiting["deadlines"]["rectification_overdue"] is False


@pytest.mark.parametrize("skew", SKEWS)
async def test_orders_rectification_and_rework_on_a_skewed_clock_are_stamped_on_the_database_clock(
    tracking_app: AppFactory,
    kafka: Any,
    topics: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    skew: timedelta,
) -> None:
    hazard = Hazard()
    async with tracking_app() as (app, client):
        before = await _database_now(app)
        skew_process_clock(monkeypatch, skew)
        # Ordered by the consumer, rectified and failed verification over HTTP, ordered again.
        await _ordered(client, kafka, topics, hazard)
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        rectified = await client.post(
            f"{url}/rectification", json={"note": "Unlocked"}, headers=auth("tok-fire")
        )
        assert rectified.status_code == 200, rectified.text
        failed = await client.post(
            f"{url}/verification", json={"passed": False, "note": "Locked again"}, headers=auth("tok-gm-01")
        )
        assert failed.status_code == 200, failed.text
        case = await wait_for_state(client, hazard.hazard_id, "rectification_ordered")
        after = await _database_now(app)
    own = [e for e in case["timeline"] if e["producer"] == "tracking"]
    assert [e["event_type"] for e in own] == [
        "hazard.rectification_ordered",
        "hazard.rectified",
        "hazard.verified",
        "hazard.rectification_ordered",
    ]
    for entry in own:
        stamped = datetime.fromisoformat(entry["occurred_at"])
        assert before <= stamped <= after, (entry["event_type"], before, stamped, after)
    # The rework's deadline is counted from its order, on the database's clock.
    rework = own[-1]
    assert datetime.fromisoformat(rework["details"]["deadline"]) > datetime.fromisoformat(
        rework["occurred_at"]
    )
    assert case["deadlines"]["rectification_overdue"] is False
