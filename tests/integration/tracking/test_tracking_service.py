"""Tracking on the real database and broker: events in through the consumer, actions over HTTP, events out."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY

from services.tracking.timers import refresh_case_gauge, sweep_due_timers
from shared import events as ev
from shared.db import create_engine
from shared.events import parse_event
from shared.settings import DatabaseSettings
from tests.integration.tracking.tracking_helpers import (
    AppFactory,
    Hazard,
    auth,
    ordered_case,
    publish,
    wait_for_state,
)
from tests.support.kafka_tools import header, read_topic, wait_for

pytestmark = pytest.mark.integration


async def tracking_events(kafka: Any, topic: str, *, expect: int) -> list[Any]:
    records = await read_topic(kafka.bootstrap_servers, topic, expect=None, timeout_s=5)
    events = [parse_event(r.value) for r in records]
    own = [e for e in events if e.producer == "tracking"]
    if len(own) < expect:
        records = await read_topic(kafka.bootstrap_servers, topic, expect=len(events) + expect - len(own))
        own = [e for e in (parse_event(r.value) for r in records) if e.producer == "tracking"]
    return own


async def wait_for_tracking_events(kafka: Any, topic: str, count: int) -> list[Any]:
    found: list[Any] = []

    async def enough() -> bool:
        nonlocal found
        records = await read_topic(kafka.bootstrap_servers, topic, timeout_s=3)
        found = [e for e in (parse_event(r.value) for r in records) if e.producer == "tracking"]
        return len(found) >= count

    await wait_for(enough, timeout_s=60, interval_s=0.5)
    return found


async def test_case_lives_from_report_to_closure_with_rework_and_then_relapses(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    first = Hazard()
    async with tracking_app() as (app, client):
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            first.reported(),
            first.dispatched(),
            first.acknowledged(),
        )
        case = await wait_for_state(client, first.hazard_id, "rectification_ordered")
        assert case["department_id"] == "fire"
        assert case["rectification_round"] == 1
        assert case["deadlines"]["rectification"] is not None
        assert [e["event_type"] for e in case["timeline"]] == [
            "hazard.reported",
            "hazard.dispatched",
            "hazard.acknowledged",
            "hazard.rectification_ordered",
        ]
        assert [e["actor"] for e in case["timeline"]] == [
            "gm-liuyue-01",
            "system",
            "officer-fire",
            "tracking",
        ]

        url = f"/api/v1/hazards/{first.hazard_id}"
        evidence = {"note": "Padlock removed", "photos": ["https://img.example.org/door.jpg"]}
        response = await client.post(f"{url}/rectification", json=evidence, headers=auth("tok-fire"))
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "rectified"

        response = await client.post(
            f"{url}/verification", json={"passed": False, "note": "Locked again"}, headers=auth("tok-gm-01")
        )
        assert response.status_code == 200, response.text
        reworked = response.json()
        assert (reworked["state"], reworked["rectification_round"], reworked["rework_count"]) == (
            "rectification_ordered",
            2,
            1,
        )

        response = await client.post(f"{url}/rectification", json=evidence, headers=auth("tok-fire"))
        assert response.status_code == 200, response.text
        response = await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-01"))
        assert response.status_code == 200, response.text
        closed = response.json()
        assert closed["state"] == "closed"
        assert closed["closed"]["reason"] == "verified"
        assert closed["closed"]["department_id"] == "fire"
        assert closed["closed"]["by"] == "gm-liuyue-01"

        # The same hazard at the same building, reported again: a relapse of the closed case.
        second = Hazard(lat=22.6230, start=datetime.now(UTC))  # ~110 m away, but the same building
        await publish(kafka.bootstrap_servers, topics["lifecycle"], second.reported())
        again = await wait_for_state(client, second.hazard_id, "reported")

        async def linked() -> bool:
            response = await client.get(f"/api/v1/hazards/{second.hazard_id}", headers=auth("tok-supervisor"))
            return bool(response.json()["relapse_of"] == str(first.hazard_id))

        await wait_for(linked, timeout_s=30)
        original = (await client.get(url, headers=auth("tok-supervisor"))).json()
        assert original["relapsed_as"] == [str(second.hazard_id)]
        assert again["hazard_id"] == str(second.hazard_id)

        own = await wait_for_tracking_events(kafka, topics["lifecycle"], 8)
        assert Counter(e.TYPE for e in own) == {
            "hazard.rectification_ordered": 2,
            "hazard.rectified": 2,
            "hazard.verified": 2,
            "hazard.closed": 1,
            "hazard.relapsed": 1,
        }
        [relapse] = [e for e in own if e.TYPE == "hazard.relapsed"]
        assert relapse.hazard_id == second.hazard_id
        assert relapse.payload.original_hazard_id == first.hazard_id
        assert relapse.payload.original_department_id == "fire"
        assert relapse.payload.same_building is True
        assert relapse.payload.place_key == "building:B-12"
        assert 0 <= relapse.payload.days_since_closure < 1

        # Tracking's own events came back from the topic and were skipped, not applied twice or refused.
        async def settled() -> bool:
            async with app.state.runtime.sessions() as session:
                applied = (
                    await session.execute(
                        sa.text(
                            "select count(*) from tracking.inbox_batches, unnest(event_ids) as u(id)"
                            " where u.id = any(:ids)"
                        ),
                        {"ids": [e.event_id for e in own]},
                    )
                ).scalar_one()
            return int(applied) == len(own)

        await wait_for(settled, timeout_s=20)
        final = (await client.get(url, headers=auth("tok-supervisor"))).json()
        assert final["state"] == "closed"
        assert len(final["timeline"]) == 3 + 7
        dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=3)
        assert dead == []


async def test_only_the_holding_department_rectifies_and_only_the_grid_verifies(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (_app, client):
        hazard = await ordered_case(client, kafka, topics)
        url = f"/api/v1/hazards/{hazard.hazard_id}"
        evidence = {"note": "done", "photos": []}

        assert (await client.get(url)).status_code == 401
        assert (await client.get(url, headers=auth("tok-gm-02"))).status_code == 404
        assert (await client.get(url, headers=auth("tok-police"))).status_code == 404
        for token in ("tok-gm-01", "tok-fire", "tok-operator", "tok-supervisor"):
            assert (await client.get(url, headers=auth(token))).status_code == 200, token
        missing = await client.get(f"/api/v1/hazards/{uuid.uuid4()}", headers=auth("tok-supervisor"))
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"

        # Police may not see fire's case: acting on it is 404 like reading it (API.md).
        response = await client.post(f"{url}/rectification", json=evidence, headers=auth("tok-police"))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        response = await client.post(f"{url}/rectification", json=evidence, headers=auth("tok-gm-01"))
        assert response.status_code == 403

        response = await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-01"))
        assert response.status_code == 409
        assert response.json()["error"] == {
            "code": "invalid_state",
            "message": f"cannot verify hazard {hazard.hazard_id}: it is awaiting rectification "
            "(rectification_ordered); verification needs a rectified case",
            "details": [{"action": "verification"}],
        }

        bad = [
            {"note": "done", "photos": ["ftp://img.example.org/x.jpg"]},
            {"note": "done", "extra": 1},
            {"note": ""},
            {"note": "x" * 2001},
        ]
        for body in bad:
            response = await client.post(f"{url}/rectification", json=body, headers=auth("tok-fire"))
            assert response.status_code == 422, body
            assert response.json()["error"]["code"] == "invalid"

        response = await client.post(f"{url}/rectification", json=evidence, headers=auth("tok-fire"))
        assert response.status_code == 200
        response = await client.post(f"{url}/rectification", json=evidence, headers=auth("tok-fire"))
        assert response.status_code == 409
        assert "it is rectified, awaiting verification" in response.json()["error"]["message"]

        response = await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-02"))
        assert response.status_code == 404
        assert "liuyue-01" not in response.text
        response = await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-fire"))
        assert response.status_code == 403
        response = await client.post(f"{url}/verification", json={"passed": True}, headers=auth("tok-gm-01"))
        assert response.status_code == 200
        assert response.json()["state"] == "closed"

        hotspots = await client.get("/api/v1/hotspots", headers=auth("tok-supervisor"))
        assert hotspots.status_code == 200
        assert hotspots.json()["hotspots"] == []
        assert (await client.get("/api/v1/hotspots", headers=auth("tok-gm-01"))).status_code == 403


async def test_out_of_order_is_tolerated_and_a_misfit_goes_to_the_dead_letter_topic(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    async with tracking_app() as (_app, client):
        swapped = Hazard()
        reported, dispatched, acknowledged = swapped.reported(), swapped.dispatched(), swapped.acknowledged()
        await publish(kafka.bootstrap_servers, topics["lifecycle"], reported, acknowledged, dispatched)
        await publish(kafka.bootstrap_servers, topics["lifecycle"], acknowledged)  # and once more
        case = await wait_for_state(client, swapped.hazard_id, "rectification_ordered")
        assert [e["event_type"] for e in case["timeline"]] == [
            "hazard.reported",
            "hazard.dispatched",
            "hazard.acknowledged",
            "hazard.rectification_ordered",
        ]

        duplicate = Hazard()
        linked = ev.HazardDuplicateLinked(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            hazard_id=duplicate.hazard_id,
            producer="intake",
            payload=ev.HazardDuplicateLinkedPayload(
                original_hazard_id=swapped.hazard_id, distance_m=0.0, same_building=True
            ),
        )
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            duplicate.reported(duplicate_of=swapped.hazard_id),
            linked,
        )
        dup = await wait_for_state(client, duplicate.hazard_id, "duplicate")
        assert dup["duplicate_of"] == str(swapped.hazard_id)
        original = (
            await client.get(f"/api/v1/hazards/{swapped.hazard_id}", headers=auth("tok-supervisor"))
        ).json()
        assert original["duplicates"] == [str(duplicate.hazard_id)]

        on_site = Hazard(building_id="B-99")
        await publish(kafka.bootstrap_servers, topics["lifecycle"], on_site.reported(rectified_on_site=True))
        closed = await wait_for_state(client, on_site.hazard_id, "closed")
        assert closed["closed"]["reason"] == "rectified_on_site"

        # The same hazard comes back twice at that building: two relapses make it a hotspot.
        previous = on_site
        for _ in range(2):
            again = Hazard(building_id="B-99", lat=22.6250, start=datetime.now(UTC))
            await publish(
                kafka.bootstrap_servers, topics["lifecycle"], again.reported(rectified_on_site=True)
            )
            relapsed = await wait_for_state(client, again.hazard_id, "closed")
            assert relapsed["relapse_of"] == str(previous.hazard_id)
            previous = again
        assert relapsed["hotspot"] is True
        hotspots = (await client.get("/api/v1/hotspots", headers=auth("tok-operator"))).json()
        assert [(h["place_key"], h["relapses"], h["categories"]) for h in hotspots["hotspots"]] == [
            ("building:B-99", 2, ["locked_rooftop_door"])
        ]
        assert hotspots["hotspots"][0]["flagged_at"] is not None

        misfit = ev.HazardVerified(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            hazard_id=swapped.hazard_id,
            producer="test",
            payload=ev.HazardVerifiedPayload(passed=True, verified_by="someone"),
        )
        await publish(kafka.bootstrap_servers, topics["lifecycle"], misfit)
        dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], expect=1, timeout_s=60)
        assert len(dead) == 1
        assert header(dead[0], "event_id") == str(misfit.event_id)
        assert header(dead[0], "dlt_reason") == "rejected"
        assert header(dead[0], "dlt_error") == (
            f"cannot verify hazard {swapped.hazard_id}: it is awaiting rectification (rectification_ordered); "
            "verification needs a rectified case"
        )
        after = await wait_for_state(client, swapped.hazard_id, "rectification_ordered")
        assert len(after["timeline"]) == 4

        own = await wait_for_tracking_events(kafka, topics["lifecycle"], 6)
        assert Counter(e.TYPE for e in own) == {
            "hazard.rectification_ordered": 1,
            "hazard.closed": 3,
            "hazard.relapsed": 2,
        }
        assert [e.TYPE for e in own if e.hazard_id == swapped.hazard_id] == ["hazard.rectification_ordered"]


async def test_overdue_rectifications_fire_once_after_a_restart_with_racing_sweeps(
    tracking_app: AppFactory, kafka: Any, topics: dict[str, str], db_url: str
) -> None:
    others = [Hazard() for _ in range(5)]
    async with tracking_app() as (_app, client):
        hazard = await ordered_case(client, kafka, topics)
        await publish(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            *[e for h in others for e in (h.reported(), h.dispatched(), h.acknowledged())],
        )
        for other in others:
            await wait_for_state(client, other.hazard_id, "rectification_ordered")
    # Every deadline comes due 10 s from now (timers decide on the database's clock: the rows move, not
    # the clock). The timers are rows: a new process (here with a fresh consumer group, re-reading the
    # topic) fires them. Its own loop sweeps once at start (nothing due yet) and then waits a minute:
    # the test's sweeps race.
    engine = create_engine(DatabaseSettings(url=db_url))
    try:
        async with engine.begin() as conn:
            due = (
                (
                    await conn.execute(
                        sa.text(
                            "update tracking.rectification_timers set due_at = clock_timestamp() + interval '10 seconds' "
                            "returning due_at"
                        )
                    )
                )
                .scalars()
                .first()
            )
    finally:
        await engine.dispose()
    async with tracking_app(timers={"poll_interval_s": 60}) as (app, client):
        work, config = app.state.runtime.work, app.state.config

        async def sweep(batch_size: int = 200) -> int:
            return await sweep_due_timers(work, batch_size=batch_size, config=config)

        async with app.state.runtime.sessions() as session:
            now, unfired = (
                await session.execute(
                    sa.text(
                        "select clock_timestamp(), "
                        "(select count(*) from tracking.rectification_timers where fired_at is null)"
                    )
                )
            ).one()
        assert (now < due, unfired) == (True, 6), "started before the deadlines, nothing fired yet"
        await asyncio.sleep((due - now).total_seconds() + 0.5)
        overdue_before = REGISTRY.get_sample_value("hazard_tracking_rectification_overdue_total") or 0.0
        fired = await asyncio.gather(sweep(), sweep(batch_size=2), sweep(), sweep(batch_size=2))
        assert sum(fired) == 6, "every due timer fires exactly once, whichever sweep claims it"
        case = (
            await client.get(f"/api/v1/hazards/{hazard.hazard_id}", headers=auth("tok-supervisor"))
        ).json()
        assert case["deadlines"]["rectification_overdue"] is True
        response = await client.post(
            f"/api/v1/hazards/{hazard.hazard_id}/rectification",
            json={"note": "late"},
            headers=auth("tok-fire"),
        )
        assert response.status_code == 200
        assert response.json()["state"] == "rectified"
        assert await sweep() == 0
        own = await wait_for_tracking_events(kafka, topics["lifecycle"], 13)
        await refresh_case_gauge(work)
        metrics = (await client.get("/metrics")).text
        assert "hazard_tracking_rectification_overdue_total" in metrics
        overdue_after = REGISTRY.get_sample_value("hazard_tracking_rectification_overdue_total") or 0.0
        assert overdue_after - overdue_before == 6
        assert 'hazard_tracking_cases{state="rectified"} 1.0' in metrics
        assert 'hazard_tracking_cases{state="rectification_ordered"} 5.0' in metrics
        assert Counter(e.TYPE for e in own) == {
            "hazard.rectification_ordered": 6,
            "hazard.rectification_overdue": 6,
            "hazard.rectified": 1,
        }
        overdue = [e for e in own if e.TYPE == "hazard.rectification_overdue"]
        assert {e.hazard_id for e in overdue} == {hazard.hazard_id, *(h.hazard_id for h in others)}
        assert {(e.payload.department_id, e.payload.round) for e in overdue} == {("fire", 1)}
        async with app.state.runtime.sessions() as session:
            timers = (
                await session.execute(
                    sa.text(
                        "select fired_at is not null, cancelled_at is not null, count(*) "
                        "from tracking.rectification_timers group by 1, 2"
                    )
                )
            ).all()
        assert [tuple(t) for t in timers] == [(True, False, 6)]
