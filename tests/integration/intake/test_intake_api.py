"""Intake over HTTP against a real PostgreSQL and broker: accept, validate, idempotency, batches."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared import events as ev
from tests.integration.intake.intake_helpers import (
    LAT,
    LON,
    AppFactory,
    auth,
    outbox_events,
    report,
    scalar,
)

pytestmark = pytest.mark.integration

# No relay, no broker: these tests read the outbox itself.
OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}


async def test_a_report_is_committed_with_its_event_before_the_201(intake_app: AppFactory) -> None:
    body = report(location={"building_id": "ly01-b0007"}, urgency="urgent")
    async with intake_app(**OFF) as (app, client):
        response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
        assert response.status_code == 201, response.text
        result = response.json()
        hazard_id = result["hazard_id"]
        assert result == {
            "hazard_id": hazard_id,
            "report_id": body["report_id"],
            "status": "open",
            "duplicate_of": None,
        }
        assert (
            await scalar(
                app, "select count(*) from intake.reports where hazard_id = :h", h=uuid.UUID(hazard_id)
            )
            == 1
        )
        [event] = await outbox_events(app)
        assert isinstance(event, ev.HazardReported)
        assert str(event.hazard_id) == hazard_id
        p = event.payload
        assert str(p.report_id) == body["report_id"]
        assert (p.category, p.grid_id, p.community_id, p.street_id) == (
            "locked_rooftop_door",
            "liuyue-01",
            "liuyue",
            "henggang",
        )
        assert p.reporter_id == "gm-liuyue-01"
        assert p.location == ev.Location(
            lat=LAT, lon=LON, address="Liuyue, building 7", building_id="ly01-b0007"
        )
        assert p.photos == ("https://img.example.org/a.jpg",)
        assert p.urgency == "urgent"
        assert p.source == "app"
        assert p.rectified_on_site is False
        assert p.duplicate_of is None


async def test_a_building_managers_report_with_a_notice_issued_on_the_spot(intake_app: AppFactory) -> None:
    body = report(notice_issued=True)
    async with intake_app(**OFF) as (app, client):
        response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-bm1"))
        assert response.status_code == 201, response.text
        [event] = await outbox_events(app)
        assert isinstance(event, ev.HazardReported)
        assert (event.payload.reporter_id, event.payload.reporter_type) == (
            "bm-liuyue-01-7",
            "building_manager",
        )
        assert event.payload.notice_issued is True
        again = await client.post("/api/v1/hazards", json=body, headers=auth("tok-bm1"))
        assert again.status_code == 200
        # The same report_id without the notice is another report: refused, nothing stored.
        changed = await client.post(
            "/api/v1/hazards", json=dict(body, notice_issued=False), headers=auth("tok-bm1")
        )
        assert changed.status_code == 409
        assert changed.json()["error"]["code"] == "report_id_conflict"
        assert len(await outbox_events(app)) == 1
        plain = await client.post(
            "/api/v1/hazards", json=report(category="ebike_indoor_charging"), headers=auth("tok-gm1")
        )
        assert plain.status_code == 201
        events = [e for e in await outbox_events(app) if isinstance(e, ev.HazardReported)]
        assert [(e.payload.reporter_type, e.payload.notice_issued) for e in events] == [
            ("building_manager", True),
            ("grid_member", False),
        ]


async def test_the_same_report_again_returns_the_same_hazard_and_no_second_event(
    intake_app: AppFactory,
) -> None:
    body = report()
    async with intake_app(**OFF) as (app, client):
        first = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
        # A retry after a lost response: same id, same body (the timestamp written another way).
        again = dict(
            body,
            observed_at=datetime.fromisoformat(body["observed_at"])
            .astimezone(__import__("zoneinfo").ZoneInfo("Asia/Shanghai"))
            .isoformat(),
        )
        second = await client.post("/api/v1/hazards", json=again, headers=auth("tok-gm1"))
        assert first.status_code == 201
        assert second.status_code == 200
        assert second.json() == first.json()
        assert len(await outbox_events(app)) == 1
    # ... and across a restart (a new process, the same database).
    async with intake_app(**OFF) as (app, client):
        third = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
        assert third.status_code == 200
        assert third.json()["hazard_id"] == first.json()["hazard_id"]
        assert await scalar(app, "select count(*) from intake.reports") == 1


async def test_a_different_body_under_a_used_report_id_is_409(intake_app: AppFactory) -> None:
    body = report()
    async with intake_app(**OFF) as (app, client):
        assert (await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))).status_code == 201
        changed = dict(body, description="Something else entirely")
        conflict = await client.post("/api/v1/hazards", json=changed, headers=auth("tok-gm1"))
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "report_id_conflict"
        assert body["report_id"] in conflict.json()["error"]["message"]
        # Another reporter reusing the id is a conflict too, never a replay of someone else's hazard.
        other = dict(body, grid_id="liuyue-02")
        other_reply = await client.post("/api/v1/hazards", json=other, headers=auth("tok-gm2"))
        assert other_reply.status_code == 409
        assert len(await outbox_events(app)) == 1


async def test_concurrent_requests_with_one_report_id_make_exactly_one_hazard(intake_app: AppFactory) -> None:
    body = report()
    # Two replicas on the same database, several identical requests in flight on each.
    async with intake_app(**OFF) as (app, client), intake_app(**OFF) as (_app2, client2):
        responses = await asyncio.gather(
            *[
                c.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
                for c in (client, client2)
                for _ in range(4)
            ]
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200] * 7 + [201]
        assert len({r.json()["hazard_id"] for r in responses}) == 1
        assert await scalar(app, "select count(*) from intake.reports") == 1
        assert [e.TYPE for e in await outbox_events(app)] == ["hazard.reported"]


async def test_concurrent_batches_sharing_report_ids_make_each_hazard_once(intake_app: AppFactory) -> None:
    bodies = [report(description=f"hazard {i}") for i in range(40)]
    async with intake_app(**OFF) as (app, client), intake_app(**OFF) as (_app2, client2):
        replies = await asyncio.gather(
            client.post("/api/v1/hazards/batch", json={"reports": bodies}, headers=auth("tok-gm1")),
            client2.post("/api/v1/hazards/batch", json={"reports": bodies[::-1]}, headers=auth("tok-gm1")),
        )
        assert [r.status_code for r in replies] == [200, 200]
        first, second = (r.json()["results"] for r in replies)
        assert [x["index"] for x in first] == list(range(40))
        assert [x["report_id"] for x in first] == [b["report_id"] for b in bodies]
        by_report = {x["report_id"]: x["hazard_id"] for x in first}
        assert {x["report_id"]: x["hazard_id"] for x in second} == by_report
        assert replies[0].json()["accepted"] + replies[1].json()["accepted"] == 40
        assert await scalar(app, "select count(*) from intake.reports") == 40
        events = await outbox_events(app)
        assert len({e.hazard_id for e in events if isinstance(e, ev.HazardReported)}) == 40
        # All at one place: the first is the original, the other 39 are linked to it.
        assert sum(isinstance(e, ev.HazardDuplicateLinked) for e in events) == 39
        assert len(events) == 79


LONG = "x" * 2001


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"category": "burning_sofa"}, "unknown_category", "category"),
    ({"grid_id": "nowhere-99"}, "unknown_grid", "grid_id"),
    ({"location": {"lat": 22.50, "lon": 114.20}}, "outside_street", "location"),
    ({"location": {"lat": 91.0}}, "invalid", "location.lat"),
    ({"location": {"lon": "east"}}, "invalid", "location.lon"),
    ({"location": {"address": "a" * 301}}, "invalid", "location.address"),
    ({"location": {"building_id": "bad id with spaces"}}, "invalid", "location.building_id"),
    ({"location": {"floor": 3}}, "invalid", "location.floor"),
    ({"observed_at": "FUTURE"}, "observed_in_future", "observed_at"),
    ({"observed_at": "OLD"}, "observed_too_long_ago", "observed_at"),
    ({"observed_at": "2026-11-01T10:00:00"}, "invalid", "observed_at"),
    ({"description": LONG}, "invalid", "description"),
    ({"description": "   "}, "invalid", "description"),
    ({"photos": [f"https://img.example.org/{i}.jpg" for i in range(11)]}, "invalid", "photos"),
    ({"photos": ["ftp://img.example.org/a.jpg"]}, "invalid", "photos.0"),
    ({"photos": ["javascript:alert(1)"]}, "invalid", "photos.0"),
    ({"photos": ["https://img.example.org/" + "a" * 2048]}, "invalid", "photos.0"),
    ({"photos": ["/relative/a.jpg"]}, "invalid", "photos.0"),
    ({"rectified_on_site": "yes"}, "invalid", "rectified_on_site"),
    ({"urgency": "very"}, "invalid", "urgency"),
    ({"notice_issued": "yes"}, "invalid", "notice_issued"),
    ({"report_id": "not-a-uuid"}, "invalid", "report_id"),
    ({"reporter_id": "someone-else"}, "invalid", "reporter_id"),
    ({"campaign_id": "no-such-campaign"}, "unknown_campaign", "campaign_id"),
    ({"campaign_id": "test-gas-campaign"}, "campaign_not_for_category", "campaign_id"),
    # Not begun yet (an ended campaign accepts reports, counted late: tests/integration/admin).
    ({"campaign_id": "test-future-campaign"}, "campaign_not_active", "campaign_id"),
    ({"category": None}, "invalid", "category"),
]


async def test_invalid_reports_are_refused_with_the_field_at_fault(
    intake_app: AppFactory, test_reference: Any
) -> None:
    now = datetime.now(UTC)
    async with intake_app(reference=test_reference, **OFF) as (app, client):
        for change, code, field in INVALID:
            if change.get("observed_at") == "FUTURE":
                change = {"observed_at": (now + timedelta(minutes=30)).isoformat()}
            if change.get("observed_at") == "OLD":
                change = {"observed_at": (now - timedelta(days=31)).isoformat()}
            body = report(**change)
            if change.get("category", "") is None:
                del body["category"]
            response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
            assert response.status_code == 422, (change, response.text)
            error = response.json()["error"]
            assert error["code"] == code, (change, error)
            assert field in [d["field"] for d in error["details"]], (change, error)
            if code == "unknown_category":
                [detail] = error["details"]
                assert "locked_rooftop_door" in detail["known"]
                assert "burning_sofa" in error["message"]
            if code == "unknown_grid":
                assert "liuyue-01" in error["details"][0]["known"]
        assert await scalar(app, "select count(*) from intake.reports") == 0
        assert await outbox_events(app) == []
        # The same report with a campaign that is running for its category is accepted.
        ok = await client.post(
            "/api/v1/hazards", json=report(campaign_id="test-rooftop-campaign"), headers=auth("tok-gm1")
        )
        assert ok.status_code == 201, ok.text
        [event] = await outbox_events(app)
        assert isinstance(event, ev.HazardReported)
        assert event.payload.campaign_ids == ("test-rooftop-campaign",)


async def test_a_report_within_the_clock_skew_and_the_age_limit_is_accepted(intake_app: AppFactory) -> None:
    now = datetime.now(UTC)
    async with intake_app(**OFF) as (_app, client):
        ahead = report(observed_at=(now + timedelta(minutes=4)).isoformat())
        old = report(observed_at=(now - timedelta(days=29)).isoformat())
        for body in (ahead, old):
            assert (
                await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
            ).status_code == 201


async def test_who_may_report_where(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (app, client):
        body = report()
        assert (await client.post("/api/v1/hazards", json=body)).status_code == 401
        bad = await client.post("/api/v1/hazards", json=body, headers=auth("not-a-token"))
        assert bad.status_code == 401
        assert bad.json()["error"]["code"] == "unauthenticated"
        for token in ("tok-fire", "tok-supervisor"):
            refused = await client.post("/api/v1/hazards", json=body, headers=auth(token))
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "forbidden"
        # A reporter of liuyue-02 may not report in liuyue-01.
        other_grid = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm2"))
        assert other_grid.status_code == 403
        assert other_grid.json()["error"]["code"] == "grid_not_yours"
        assert "liuyue-02" in other_grid.json()["error"]["message"]
        assert await scalar(app, "select count(*) from intake.reports") == 0


async def test_bodies_over_the_limits_are_refused_before_parsing(intake_app: AppFactory) -> None:
    async with intake_app(
        http={"port": 0, "max_body_bytes": 4096}, limits={"batch_max_body_bytes": 65536}, **OFF
    ) as (
        app,
        client,
    ):
        padded = report(description="y" * 1500, location={"address": "z" * 300})
        big = b'{"pad": "' + b"x" * 5000 + b'"}'
        response = await client.post(
            "/api/v1/hazards", content=big, headers={**auth("tok-gm1"), "content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "payload_too_large"
        # The batch endpoint reads larger bodies: 10 reports of ~2 KB each pass.
        batch = {"reports": [dict(padded, report_id=str(uuid.uuid4())) for _ in range(10)]}
        ok = await client.post("/api/v1/hazards/batch", json=batch, headers=auth("tok-gm1"))
        assert ok.status_code == 200, ok.text
        assert ok.json()["accepted"] == 10
        huge = {"reports": [dict(padded, report_id=str(uuid.uuid4())) for _ in range(40)]}
        too_big = await client.post("/api/v1/hazards/batch", json=huge, headers=auth("tok-gm1"))
        assert too_big.status_code == 413
        assert await scalar(app, "select count(*) from intake.reports") == 10
        malformed = await client.post(
            "/api/v1/hazards",
            content=b"{not json",
            headers={**auth("tok-gm1"), "content-type": "application/json"},
        )
        assert malformed.status_code == 400
        assert malformed.json()["error"]["code"] == "malformed_json"


async def test_a_batch_accepts_the_valid_items_and_says_what_became_of_each(intake_app: AppFactory) -> None:
    ok1 = report(description="first")
    ok2 = report(description="second", category="ebike_indoor_charging")
    repeated = dict(ok1)
    clash = dict(ok1, description="not the same")
    items = [
        ok1,
        {"report_id": str(uuid.uuid4()), "category": "locked_rooftop_door"},
        report(grid_id="liuyue-02"),
        report(category="burning_sofa"),
        ok2,
        repeated,
        clash,
        "not an object",
    ]
    async with intake_app(**OFF) as (app, client):
        response = await client.post(
            "/api/v1/hazards/batch", json={"reports": items}, headers=auth("tok-gm1")
        )
        assert response.status_code == 200, response.text
        body = response.json()
        results = body["results"]
        assert [r["index"] for r in results] == list(range(len(items)))
        assert [r["outcome"] for r in results] == [
            "created",
            "rejected",
            "rejected",
            "rejected",
            "created",
            "replayed",
            "rejected",
            "rejected",
        ]
        assert [r["http_status"] for r in results] == [201, 422, 403, 422, 201, 200, 409, 422]
        assert [r.get("error", {}).get("code") for r in results] == [
            None,
            "invalid",
            "grid_not_yours",
            "unknown_category",
            None,
            None,
            "report_id_conflict",
            "invalid",
        ]
        missing = {d["field"] for d in results[1]["error"]["details"]}
        assert {"description", "location", "grid_id", "observed_at"} <= missing
        assert results[5]["hazard_id"] == results[0]["hazard_id"]
        assert (body["accepted"], body["replayed"], body["rejected"]) == (2, 1, 5)
        events = await outbox_events(app)
        assert sorted(str(e.hazard_id) for e in events) == sorted(
            [results[0]["hazard_id"], results[4]["hazard_id"]]
        )
        assert {e.payload.source for e in events if isinstance(e, ev.HazardReported)} == {"batch"}
        # The whole batch again: everything valid is a replay now, the rest still refused.
        again = await client.post("/api/v1/hazards/batch", json={"reports": items}, headers=auth("tok-gm1"))
        assert [r["outcome"] for r in again.json()["results"]][:6] == [
            "replayed",
            "rejected",
            "rejected",
            "rejected",
            "replayed",
            "replayed",
        ]
        assert len(await outbox_events(app)) == 2


async def test_batch_size_is_limited(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (app, client):
        items = [report() for _ in range(501)]
        response = await client.post(
            "/api/v1/hazards/batch", json={"reports": items}, headers=auth("tok-gm1")
        )
        assert response.status_code == 422
        assert response.json()["error"]["code"] == "batch_too_large"
        empty = await client.post("/api/v1/hazards/batch", json={"reports": []}, headers=auth("tok-gm1"))
        assert empty.status_code == 422
        extra = await client.post(
            "/api/v1/hazards/batch", json={"reports": [report()], "device": "x"}, headers=auth("tok-gm1")
        )
        assert extra.status_code == 422
        assert await scalar(app, "select count(*) from intake.reports") == 0
        full = await client.post(
            "/api/v1/hazards/batch", json={"reports": items[:500]}, headers=auth("tok-gm1")
        )
        assert full.status_code == 200
        assert full.json()["accepted"] == 500
        assert await scalar(app, "select count(*) from intake.reports") == 500
        assert (
            await scalar(
                app, "select count(*) from intake.outbox where headers->>'event_type' = 'hazard.reported'"
            )
            == 500
        )


async def test_reporters_over_the_rate_limit_get_429_with_retry_after(intake_app: AppFactory) -> None:
    async with intake_app(rate_limit={"enabled": True, "requests_per_s": 0.1, "burst": 2}, **OFF) as (
        _app,
        client,
    ):
        codes = [
            (await client.post("/api/v1/hazards", json=report(), headers=auth("tok-gm1"))).status_code
            for _ in range(2)
        ]
        assert codes == [201, 201]
        limited = await client.post("/api/v1/hazards", json=report(), headers=auth("tok-gm1"))
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 10
        limited_batch = await client.post(
            "/api/v1/hazards/batch", json={"reports": [report()]}, headers=auth("tok-gm1")
        )
        assert limited_batch.status_code == 429
        # Another reporter has a bucket of their own.
        other = await client.post(
            "/api/v1/hazards", json=report(grid_id="liuyue-02"), headers=auth("tok-gm2")
        )
        assert other.status_code == 201
