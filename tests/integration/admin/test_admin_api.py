"""Runtime administration against the real PostgreSQL and broker (#18).

The admin API is hosted by reporting; the other replicas (a second reporting, a dispatch, an intake)
apply each change from the admin schema without restart, within their 1 s poll.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import sqlalchemy as sa

from shared import events as ev
from shared.auth import hash_token
from shared.db import create_engine
from shared.events import dump_event
from shared.settings import DatabaseSettings
from tests.integration.dispatch import dispatch_helpers
from tests.integration.intake import intake_helpers
from tests.integration.reporting.reporting_helpers import running_app, settings_for
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration

OPERATOR = {"Authorization": "Bearer tok-operator"}
CITY = ZoneInfo("Asia/Shanghai")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def within(check: Callable[[], Awaitable[bool]], seconds: float) -> float:
    """Seconds until ``check`` holds; fails when it does not within ``seconds``."""
    started = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        await _sleep(0.05)


async def _sleep(s: float) -> None:
    import asyncio

    await asyncio.sleep(s)


async def status_is(client: httpx.AsyncClient, path: str, token: str, status: int) -> bool:
    return (await client.get(path, headers=bearer(token))).status_code == status


async def query(db_url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.text(sql), params)).all())
    finally:
        await engine.dispose()


async def test_tokens_created_rotated_and_revoked_take_effect_in_every_replica(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    settings = settings_for(db_url, kafka.bootstrap_servers, topics)
    dispatch_start = dispatch_helpers.app_factory(db_url, kafka, topics)
    async with (
        running_app(settings) as (_, admin),
        running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, other),
        dispatch_start() as (_, dispatch),
    ):
        created = await admin.post(
            "/api/v1/admin/principals", json={"principal": "sup-new", "role": "supervisor"}, headers=OPERATOR
        )
        assert created.status_code == 201, created.text
        token = created.json()["token"]
        assert created.json()["source"] == "database"
        report_path, dispatch_path = "/api/v1/reports/campaigns", "/api/v1/dispatches"
        # The host applies at once; the other replicas within their poll.
        assert await status_is(admin, report_path, token, 200)
        await within(lambda: status_is(other, report_path, token, 200), 5)
        await within(lambda: status_is(dispatch, dispatch_path, token, 200), 5)

        revoked = await admin.post("/api/v1/admin/principals/sup-new/revoke", headers=OPERATOR)
        assert revoked.status_code == 200, revoked.text
        assert revoked.json()["active"] is False
        assert await status_is(admin, report_path, token, 401)
        await within(lambda: status_is(other, report_path, token, 401), 5)
        await within(lambda: status_is(dispatch, dispatch_path, token, 401), 5)
        again = await admin.post("/api/v1/admin/principals/sup-new/revoke", headers=OPERATOR)
        assert (again.status_code, again.json()["error"]["code"]) == (409, "already_revoked")

        # A token from the file (the bootstrap) is revoked by its hash: the deny-list.
        assert await status_is(dispatch, dispatch_path, "tok-fire", 200)
        denied = await admin.post("/api/v1/admin/principals/dept-fire/revoke", headers=OPERATOR)
        assert denied.status_code == 200, denied.text
        await within(lambda: status_is(dispatch, dispatch_path, "tok-fire", 401), 5)
        assert await status_is(dispatch, dispatch_path, "tok-police", 200)

        # Rotation: the new token works everywhere, the old one nowhere.
        gas = await admin.post(
            "/api/v1/admin/principals",
            json={"principal": "dept-gas-2", "role": "department", "department_id": "gas"},
            headers=OPERATOR,
        )
        old = gas.json()["token"]
        await within(lambda: status_is(dispatch, dispatch_path, old, 200), 5)
        rotated = await admin.post("/api/v1/admin/principals/dept-gas-2/rotate", headers=OPERATOR)
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["token"]
        assert new != old
        await within(lambda: status_is(dispatch, dispatch_path, old, 401), 5)
        await within(lambda: status_is(dispatch, dispatch_path, new, 200), 5)

        listed = (await admin.get("/api/v1/admin/principals", headers=OPERATOR)).json()["principals"]
        by_id = {p["principal"]: p for p in listed}
        assert by_id["sup-new"]["active"] is False
        assert by_id["dept-fire"] == {**by_id["dept-fire"], "source": "file", "active": False}
        assert by_id["dept-gas-2"]["active"] is True
        assert by_id["op-1"]["active"] is True

        audit = (
            await admin.get("/api/v1/admin/audit?entity=principal&entity_id=sup-new", headers=OPERATOR)
        ).json()["audit"]
        assert [(a["action"], a["actor"]) for a in audit] == [("revoke", "op-1"), ("create", "op-1")]
        assert audit[1]["before"] is None
        assert audit[1]["after"]["role"] == "supervisor"
        assert audit[0]["before"]["active"] is True
        assert audit[0]["after"]["active"] is False
        rotate_audit = (
            await admin.get("/api/v1/admin/audit?entity=principal&entity_id=dept-gas-2", headers=OPERATOR)
        ).json()["audit"]
        assert [a["action"] for a in rotate_audit] == ["rotate", "create"]

    # Only hashes are stored; no plain token anywhere in the admin schema.
    rows = await query(
        db_url, "SELECT token_sha256, principal, revoked_at FROM admin.tokens ORDER BY created_at"
    )
    hashes = {r.token_sha256 for r in rows}
    assert {hash_token(token), hash_token(old), hash_token(new)} == hashes
    dump = json.dumps([list(map(str, r)) for r in await query(db_url, "SELECT * FROM admin.audit")])
    for plain in (token, old, new):
        assert plain not in dump
    denied_rows = await query(db_url, "SELECT token_sha256, principal FROM admin.denied_tokens")
    assert [(r.token_sha256, r.principal) for r in denied_rows] == [(hash_token("tok-fire"), "dept-fire")]


BAD_PRINCIPALS: list[tuple[dict[str, Any], int, str]] = [
    ({"role": "supervisor"}, 422, "principal"),
    ({"principal": "x y", "role": "supervisor"}, 422, "principal"),
    ({"principal": "p" * 101, "role": "supervisor"}, 422, "principal"),
    ({"principal": "a", "role": "king"}, 422, "role"),
    ({"principal": "a", "role": "supervisor", "extra": 1}, 422, "extra"),
    ({"principal": "a", "role": "reporter"}, 422, "grid_id"),
    ({"principal": "a", "role": "reporter", "grid_id": "nowhere-01"}, 422, "grid_id"),
    (
        {"principal": "a", "role": "reporter", "grid_id": "liuyue-01", "reporter_type": "building_manager"},
        422,
        "building_ids",
    ),
    (
        {"principal": "a", "role": "reporter", "grid_id": "liuyue-01", "reporter_type": "mayor"},
        422,
        "reporter_type",
    ),
    ({"principal": "a", "role": "department"}, 422, "department_id"),
    ({"principal": "a", "role": "department", "department_id": "nasa"}, 422, "department_id"),
    ({"principal": "a", "role": "supervisor", "department_id": "fire"}, 422, "department_id"),
    ({"principal": "sup-1", "role": "supervisor"}, 409, ""),
]


async def test_bad_or_breaking_changes_are_refused_and_store_nothing(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, client):
        for body, status, field in BAD_PRINCIPALS:
            answer = await client.post("/api/v1/admin/principals", json=body, headers=OPERATOR)
            assert answer.status_code == status, (body, answer.text)
            error = answer.json()["error"]
            assert error["code"]
            assert error["message"]
            if field:
                assert any(field in d["field"] for d in error["details"]), (body, error)
        not_json = await client.post(
            "/api/v1/admin/principals",
            content=b"{not json",
            headers={**OPERATOR, "Content-Type": "application/json"},
        )
        # Malformed JSON: 400 with the error shape, as every route of the project answers it.
        assert not_json.status_code == 400
        assert not_json.json()["error"]["code"]
        anonymous = await client.post(
            "/api/v1/admin/principals", json={"principal": "a", "role": "supervisor"}
        )
        assert anonymous.status_code == 401
        supervisor = await client.post(
            "/api/v1/admin/principals",
            json={"principal": "a", "role": "supervisor"},
            headers=bearer("tok-supervisor"),
        )
        assert (supervisor.status_code, supervisor.json()["error"]["code"]) == (403, "forbidden")
        self_revoke = await client.post("/api/v1/admin/principals/op-1/revoke", headers=OPERATOR)
        assert (self_revoke.status_code, self_revoke.json()["error"]["code"]) == (409, "self_revocation")
        unknown = await client.post("/api/v1/admin/principals/nobody/revoke", headers=OPERATOR)
        assert unknown.status_code == 404

        # Departments: a taken id, an unknown one, and one that routing still sends hazards to.
        taken = await client.post(
            "/api/v1/admin/departments",
            json={"id": "fire", "name_en": "Fire", "name_zh": "消防"},
            headers=OPERATOR,
        )
        assert (taken.status_code, taken.json()["error"]["code"]) == (409, "department_exists")
        assert (await client.delete("/api/v1/admin/departments/nasa", headers=OPERATOR)).status_code == 404
        routed = await client.delete("/api/v1/admin/departments/police", headers=OPERATOR)
        assert (routed.status_code, routed.json()["error"]["code"]) == (409, "department_in_routing")
        assert "r-public-security-hazard" in routed.json()["error"]["details"][0]["problem"]
        bad_contact = await client.put(
            "/api/v1/admin/departments/fire",
            json={"name_en": "Fire", "name_zh": "消防", "contacts": [{"name": "x", "phone": "call me"}]},
            headers=OPERATOR,
        )
        assert bad_contact.status_code == 422

        # Routing rules: malformed, repeated ids, pointing nowhere.
        rules = (await client.get("/api/v1/admin/routing-rules", headers=OPERATOR)).json()
        assert rules["version"] == 0
        for body, status, code in [
            ({"rules": []}, 422, "invalid"),
            ({"rules": [{"id": "r-x", "category": "gas_leak"}]}, 422, "validation_failed"),
            ({"rules": [rules["rules"][0], rules["rules"][0]]}, 422, "validation_failed"),
            ({"rules": [{**rules["rules"][0], "department_id": "nasa"}]}, 409, "rule_points_nowhere"),
            ({"rules": [{**rules["rules"][0], "grid_id": "nowhere-01"}]}, 409, "rule_points_nowhere"),
            (
                {
                    "rules": [
                        {
                            "id": "r-y",
                            "category": "gas_leak",
                            "community_id": "silian",
                            "grid_id": "huale-04",
                            "department_id": "gas",
                        }
                    ]
                },
                409,
                "rule_points_nowhere",
            ),
        ]:
            answer = await client.post("/api/v1/admin/routing-rules", json=body, headers=OPERATOR)
            assert answer.status_code == status, (body, answer.text)
            assert answer.json()["error"]["code"] in (code, "invalid", "validation_failed"), answer.text

        # Campaigns: a taken id, an unknown category, a window ending before it starts, unknown ones.
        spring = (await client.get("/api/v1/admin/campaigns", headers=OPERATOR)).json()["campaigns"][0]
        dup = await client.post("/api/v1/admin/campaigns", json=spring, headers=OPERATOR)
        assert (dup.status_code, dup.json()["error"]["code"]) == (409, "campaign_exists")
        for body in (
            {**spring, "id": "c-new", "categories": ["burning_sofa"]},
            {**spring, "id": "c-new", "ends_on": "2000-01-01"},
            {**spring, "id": "c-new", "targets": {"found": -1}},
        ):
            assert (
                await client.post("/api/v1/admin/campaigns", json=body, headers=OPERATOR)
            ).status_code == 422
        assert (
            await client.post("/api/v1/admin/campaigns/nope/end", json={}, headers=OPERATOR)
        ).status_code == 404
        ended = await client.post(f"/api/v1/admin/campaigns/{spring['id']}/end", json={}, headers=OPERATOR)
        # spring-fire-2026 ended on 2026-05-25: ending it again is refused.
        assert (ended.status_code, ended.json()["error"]["code"]) == (409, "campaign_ended")

    # Nothing was stored: no change, no audit row.
    assert [tuple(r) for r in await query(db_url, "SELECT version FROM admin.state")] == [(0,)]
    for table in ("audit", "tokens", "denied_tokens", "departments", "routing_versions", "campaigns"):
        assert (await query(db_url, f"SELECT count(*) FROM admin.{table}"))[0][0] == 0, table


async def publish(kafka: Any, topics: dict[str, str], *events: ev.AnyEvent) -> None:
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )


async def test_routing_change_applies_without_restart_and_old_dispatches_keep_their_rule(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    dispatch_start = dispatch_helpers.app_factory(db_url, kafka, topics)
    async with (
        running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, admin),
        dispatch_start() as (dapp, dispatch),
    ):
        created = await admin.post(
            "/api/v1/admin/departments",
            json={
                "id": "hazmat",
                "name_en": "Hazardous materials",
                "name_zh": "危化品",
                "contacts": [{"name": "值班室", "phone": "0755-1234"}],
            },
            headers=OPERATOR,
        )
        assert created.status_code == 201, created.text
        rules = (await admin.get("/api/v1/admin/routing-rules", headers=OPERATOR)).json()["rules"]
        to_hazmat = [{"id": "r-gas-leak-hazmat", "category": "gas_leak", "department_id": "hazmat"}, *rules]
        v1 = await admin.post("/api/v1/admin/routing-rules", json={"rules": to_hazmat}, headers=OPERATOR)
        assert (v1.status_code, v1.json()["version"]) == (201, 1), v1.text

        # Dispatch (another process's runtime) routes by the new rule within its poll.
        async def dispatch_sees(rule: str) -> bool:
            answer = (await dispatch.get("/api/v1/routing-rules", headers=bearer("tok-operator"))).json()
            return answer["rules"][0]["id"] == rule

        await within(lambda: dispatch_sees("r-gas-leak-hazmat"), 5)
        first = dispatch_helpers.reported("gas_leak")
        await publish(kafka, topics, first)

        async def dispatched(hazard_id: uuid.UUID) -> bool:
            n = await dispatch_helpers.scalar(
                dapp, "select count(*) from dispatch.dispatches where hazard_id = :h", h=hazard_id
            )
            return int(n) == 1

        await wait_for(lambda: dispatched(first.hazard_id), timeout_s=60, interval_s=0.2)
        # Reporting learns the hazard is with hazmat and open (dispatch's outbox -> the stream).
        await wait_for(
            lambda: _reporting_department(db_url, first.hazard_id, "hazmat"), timeout_s=60, interval_s=0.3
        )

        # Breaking changes are refused while the hazard is open with hazmat.
        in_use = await admin.delete("/api/v1/admin/departments/hazmat", headers=OPERATOR)
        assert (in_use.status_code, in_use.json()["error"]["code"]) == (409, "department_in_routing")
        v2 = await admin.post("/api/v1/admin/routing-rules", json={"rules": rules}, headers=OPERATOR)
        assert (v2.status_code, v2.json()["version"]) == (201, 2)
        still_open = await admin.delete("/api/v1/admin/departments/hazmat", headers=OPERATOR)
        assert (still_open.status_code, still_open.json()["error"]["code"]) == (
            409,
            "department_has_open_dispatches",
        )

        await within(lambda: dispatch_sees(rules[0]["id"]), 5)
        second = dispatch_helpers.reported("gas_leak")
        await publish(kafka, topics, second)
        await wait_for(lambda: dispatched(second.hazard_id), timeout_s=60, interval_s=0.2)
        rows = {
            r.hazard_id: (r.department_id, r.rule_id)
            for r in await query(db_url, "SELECT hazard_id, department_id, rule_id FROM dispatch.dispatches")
        }
        # The old dispatch keeps the rule it was made under; the new one follows version 2.
        assert rows[first.hazard_id] == ("hazmat", "r-gas-leak-hazmat")
        assert rows[second.hazard_id] == ("gas", "r-gas-leak")

        audit = (await admin.get("/api/v1/admin/audit?entity=routing_rules", headers=OPERATOR)).json()[
            "audit"
        ]
        assert [(a["entity_id"], a["action"]) for a in audit] == [("2", "new_version"), ("1", "new_version")]
        assert audit[1]["before"] == rules
        assert audit[1]["after"][0]["department_id"] == "hazmat"
        # A department nothing refers to is deleted, and gone for the other services too.
        spare = {"id": "spare", "name_en": "Spare", "name_zh": "备用"}
        assert (
            await admin.post("/api/v1/admin/departments", json=spare, headers=OPERATOR)
        ).status_code == 201
        await within(
            lambda: _dispatch_answers(dispatch, first.hazard_id, "spare", 409, "not_in_operator_queue"), 5
        )
        deleted = await admin.delete("/api/v1/admin/departments/spare", headers=OPERATOR)
        assert deleted.json() == {"id": "spare", "deleted": True}
        listed = (await admin.get("/api/v1/admin/departments", headers=OPERATOR)).json()["departments"]
        assert "spare" not in {d["id"] for d in listed}
        assert "hazmat" in {d["id"] for d in listed}
        await within(
            lambda: _dispatch_answers(dispatch, first.hazard_id, "spare", 422, "unknown_department"), 5
        )
        dept_audit = (await admin.get("/api/v1/admin/audit?entity=department", headers=OPERATOR)).json()[
            "audit"
        ]
        assert [(a["action"], a["entity_id"]) for a in dept_audit[:2]] == [
            ("delete", "spare"),
            ("create", "spare"),
        ]
        assert dept_audit[0]["before"]["name_zh"] == "备用"
        assert dept_audit[0]["after"] is None
        dept_audit = dept_audit[2:]
        assert dept_audit[0]["after"]["contacts"] == [{"name": "值班室", "phone": "0755-1234"}]


async def _dispatch_answers(
    client: httpx.AsyncClient, hazard_id: uuid.UUID, department: str, status: int, code: str
) -> bool:
    """An operator's assignment to the department, as dispatch (another runtime) answers it: 422
    unknown_department while it does not know the department, 409 (hazard not queued) once it does."""
    answer = await client.post(
        f"/api/v1/hazards/{hazard_id}/assign",
        json={"department_id": department, "reason": "try"},
        headers=bearer("tok-operator"),
    )
    return (answer.status_code, answer.json()["error"]["code"]) == (status, code)


async def _reporting_department(db_url: str, hazard_id: uuid.UUID, department: str) -> bool:
    rows = await query(
        db_url,
        "SELECT department_id FROM reporting.hazards WHERE hazard_id = :h AND closed_at IS NULL",
        h=hazard_id,
    )
    return bool(rows) and rows[0].department_id == department


async def test_an_ended_campaign_keeps_its_figures_and_counts_later_reports_late(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    today = datetime.now(UTC).astimezone(CITY).date()
    intake_start = intake_helpers.app_factory(db_url, kafka.bootstrap_servers, topics)
    async with (
        running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, admin),
        intake_start() as (intake_app, intake),
    ):
        campaign = {
            "id": "rooftops-late",
            "name_en": "Rooftops",
            "name_zh": "天台专项",
            "starts_on": (today - timedelta(days=10)).isoformat(),
            "ends_on": (today + timedelta(days=10)).isoformat(),
            "categories": ["locked_rooftop_door"],
            "targets": {"found": 5},
        }
        made = await admin.post("/api/v1/admin/campaigns", json=campaign, headers=OPERATOR)
        assert made.status_code == 201, made.text
        retarget = await admin.patch(
            "/api/v1/admin/campaigns/rooftops-late", json={"targets": {"found": 2}}, headers=OPERATOR
        )
        assert retarget.json()["targets"]["found"] == 2

        async def accepted(**overrides: Any) -> bool:
            body = intake_helpers.report(campaign_id="rooftops-late", **overrides)
            answer = await intake.post("/api/v1/hazards", json=body, headers=bearer("tok-gm1"))
            return answer.status_code in (200, 201, 202)

        # Intake (its own runtime) learns the new campaign within its poll.
        await within(accepted, 5)
        ended = await admin.post("/api/v1/admin/campaigns/rooftops-late/end", json={}, headers=OPERATOR)
        assert (ended.status_code, ended.json()["ends_on"]) == (200, today.isoformat()), ended.text
        await _sleep(2.5)  # every replica has applied the end by now (1 s poll)
        # Two days later (intake's injected clock): a report naming the ended campaign is accepted
        # (not campaign_not_active) and counted late to it.
        later = datetime.now(UTC) + timedelta(days=2)
        intake_app.state.intake.clock = lambda: later
        elsewhere = {"lat": intake_helpers.LAT + 0.002, "lon": intake_helpers.LON}  # not a duplicate
        assert await accepted(observed_at=(later - timedelta(minutes=5)).isoformat(), location=elsewhere)
        # Not begun yet is still refused.
        upcoming = {**campaign, "id": "rooftops-next", "starts_on": (today + timedelta(days=5)).isoformat()}
        assert (
            await admin.post("/api/v1/admin/campaigns", json=upcoming, headers=OPERATOR)
        ).status_code == 201
        await _sleep(2.5)
        early = await intake.post(
            "/api/v1/hazards",
            json=intake_helpers.report(
                campaign_id="rooftops-next", observed_at=(later - timedelta(minutes=5)).isoformat()
            ),
            headers=bearer("tok-gm1"),
        )
        assert (early.status_code, early.json()["error"]["code"]) == (422, "campaign_not_active"), early.text

        async def figures() -> dict[str, Any]:
            found = (await admin.get("/api/v1/reports/campaigns", headers=bearer("tok-supervisor"))).json()
            return next(c for c in found["campaigns"] if c["campaign_id"] == "rooftops-late")

        async def counted() -> bool:
            return (await figures())["late"] == 1

        await wait_for(counted, timeout_s=60, interval_s=0.3)
        final = await figures()
        assert (final["found"], final["late"]) == (1, 1)
        assert final["targets"]["found"] == 2
        audit = (
            await admin.get("/api/v1/admin/audit?entity=campaign&entity_id=rooftops-late", headers=OPERATOR)
        ).json()["audit"]
        assert [a["action"] for a in audit] == ["end", "change_targets", "create"]
        assert audit[0]["before"]["ends_on"] == campaign["ends_on"]
        assert audit[0]["after"]["ends_on"] == today.isoformat()
        assert audit[1]["before"]["targets"]["found"] == 5
        assert audit[1]["after"]["targets"]["found"] == 2


async def test_building_managers_and_hotline_operators_report_with_their_reporter_type(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    intake_start = intake_helpers.app_factory(db_url, kafka.bootstrap_servers, topics)
    async with (
        running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, admin),
        intake_start() as (intake_app, intake),
    ):
        manager = await admin.post(
            "/api/v1/admin/principals",
            json={
                "principal": "bm-liuyue-7",
                "role": "reporter",
                "grid_id": "liuyue-01",
                "reporter_type": "building_manager",
                "building_ids": ["b7"],
            },
            headers=OPERATOR,
        )
        hotline = await admin.post(
            "/api/v1/admin/principals",
            json={"principal": "hl-12345-01", "role": "reporter", "reporter_type": "hotline"},
            headers=OPERATOR,
        )
        assert (manager.status_code, hotline.status_code) == (201, 201), (manager.text, hotline.text)
        bm, hl = bearer(manager.json()["token"]), bearer(hotline.json()["token"])

        async def accepted(headers: dict[str, str], body: dict[str, Any]) -> httpx.Response:
            return await intake.post("/api/v1/hazards", json=body, headers=headers)

        async def known() -> bool:
            body = intake_helpers.report(location={"building_id": "b7"})
            return (await accepted(bm, body)).status_code in (200, 201, 202)

        await within(known, 5)
        other_building = await accepted(bm, intake_helpers.report(location={"building_id": "b9"}))
        assert (other_building.status_code, other_building.json()["error"]["code"]) == (
            403,
            "building_not_yours",
        )
        # The hotline operator reports on a resident's behalf in any grid of the street.
        elsewhere = intake_helpers.report(
            grid_id="liuyue-02", location={"lat": intake_helpers.LAT + 0.004, "lon": intake_helpers.LON}
        )
        on_behalf = await accepted(hl, elsewhere)
        assert on_behalf.status_code in (200, 201, 202), on_behalf.text
        events = await intake_helpers.outbox_events(intake_app)
        types = {
            e.payload.reporter_id: e.payload.reporter_type for e in events if isinstance(e, ev.HazardReported)
        }
        assert types == {"bm-liuyue-7": "building_manager", "hl-12345-01": "hotline"}
