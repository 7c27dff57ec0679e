"""Routing rules one at a time (#18): add, change and remove with 422/409, applied by dispatch without
restart; and every admin answer matches its declared response model exactly (#15)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from services.admin import models
from tests.integration.admin.test_admin_api import OPERATOR, bearer, publish, query, within
from tests.integration.dispatch import dispatch_helpers
from tests.integration.reporting.reporting_helpers import running_app, settings_for
from tests.support.kafka_tools import wait_for

pytestmark = pytest.mark.integration

RULES = "/api/v1/admin/routing-rules"


def as_declared(model: type[BaseModel], answer: httpx.Response, *, exclude_none: bool = False) -> Any:
    """The answer read through its response model and written back: equal only if the fields match."""
    body = answer.json()
    assert model.model_validate(body).model_dump(mode="json", exclude_none=exclude_none) == body
    return body


def problems(answer: httpx.Response) -> dict[str, Any]:
    return {d["field"]: d for d in answer.json()["error"]["details"]}


async def test_rules_added_changed_and_removed_one_at_a_time_reach_dispatch(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    dispatch_start = dispatch_helpers.app_factory(db_url, kafka, topics)
    async with (
        running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, admin),
        dispatch_start() as (_dapp, dispatch),
    ):
        files = as_declared(models.RoutingRules, await admin.get(RULES, headers=OPERATOR), exclude_none=True)
        assert files["version"] == 0
        n = len(files["rules"])
        silian_gas = {
            "id": "r-silian-gas",
            "category": "gas_leak",
            "community_id": "silian",
            "department_id": "fire",
        }

        # Refused, nothing stored: names not in force (422, the field named), a taken id, conflicts (409).
        for body, status, code, field in [
            ({**silian_gas, "department_id": "nasa"}, 422, "validation_failed", "department_id"),
            ({**silian_gas, "category": "burning_sofa"}, 422, "validation_failed", "category"),
            ({**silian_gas, "community_id": "atlantis"}, 422, "validation_failed", "community_id"),
            ({**silian_gas, "grid_id": "huale-04"}, 422, "validation_failed", "grid_id"),
            ({**silian_gas, "position": n + 2}, 422, "validation_failed", "position"),
            ({**silian_gas, "id": "r-gas-leak"}, 409, "rule_exists", "id"),
            # Same category, place and department as r-gas-leak: one of the two would never be used.
            (
                {"id": "r-gas-again", "category": "gas_leak", "department_id": "gas"},
                409,
                "rule_conflict",
                "position",
            ),
            # An override placed after its generic rule is reached only when gas returns the hazard.
            ({**silian_gas, "position": n + 1}, 409, "rule_conflict", "position"),
        ]:
            answer = await admin.post(RULES + "/rules", json=body, headers=OPERATOR)
            assert (answer.status_code, answer.json()["error"]["code"]) == (status, code), (body, answer.text)
            assert field in problems(answer), answer.text
            assert answer.json()["error"]["message"]
        assert (
            problems(
                await admin.post(
                    RULES + "/rules", json={**silian_gas, "department_id": "nasa"}, headers=OPERATOR
                )
            )["department_id"]["value"]
            == "nasa"
        )
        malformed = await admin.post(
            RULES + "/rules", json={"id": "r-x", "category": "gas_leak"}, headers=OPERATOR
        )
        assert malformed.status_code == 422
        assert [tuple(r) for r in await query(db_url, "SELECT version FROM admin.state")] == [(0,)]

        # Added: placed before the generic gas rule (an override), version 1, in force here at once.
        added = await admin.post(RULES + "/rules", json=silian_gas, headers=OPERATOR)
        assert added.status_code == 201, added.text
        body = as_declared(models.RoutingRules, added, exclude_none=True)
        ids = [r["id"] for r in body["rules"]]
        assert body["version"] == 1
        assert ids.index("r-silian-gas") == ids.index("r-gas-leak") - 1
        assert body["rules"][ids.index("r-silian-gas")] == silian_gas
        assert (await admin.get(RULES, headers=OPERATOR)).json() == body

        async def dispatch_rule(rule_id: str) -> dict[str, Any] | None:
            answer = (await dispatch.get("/api/v1/routing-rules", headers=bearer("tok-operator"))).json()
            return next((r for r in answer["rules"] if r["id"] == rule_id), None)

        async def dispatch_has(rule_id: str, department: str | None) -> bool:
            rule = await dispatch_rule(rule_id)
            return (
                (rule is None)
                if department is None
                else (rule is not None and rule["department_id"] == department)
            )

        async def dispatched_to(hazard_id: uuid.UUID) -> tuple[str, str] | None:
            rows = await query(
                db_url,
                "SELECT department_id, rule_id FROM dispatch.dispatches WHERE hazard_id = :h",
                h=hazard_id,
            )
            return (rows[0].department_id, rows[0].rule_id) if rows else None

        async def route(event: Any) -> tuple[str, str]:
            await publish(kafka, topics, event)
            await wait_for(lambda: _is_some(dispatched_to(event.hazard_id)), timeout_s=60, interval_s=0.2)
            found = await dispatched_to(event.hazard_id)
            assert found is not None
            return found

        await within(lambda: dispatch_has("r-silian-gas", "fire"), 5)
        assert await route(dispatch_helpers.reported("gas_leak", grid_id="silian-01")) == (
            "fire",
            "r-silian-gas",
        )
        assert await route(dispatch_helpers.reported("gas_leak", grid_id="huale-01")) == ("gas", "r-gas-leak")

        # Changed: to police; dispatch follows within its poll; the earlier dispatch keeps its rule.
        change = {k: v for k, v in silian_gas.items() if k != "id"} | {"department_id": "police"}
        changed = await admin.put(RULES + "/rules/r-silian-gas", json=change, headers=OPERATOR)
        assert changed.status_code == 200, changed.text
        assert as_declared(models.RoutingRules, changed, exclude_none=True)["version"] == 2
        assert [r["id"] for r in changed.json()["rules"]] == ids
        missing = await admin.put(RULES + "/rules/r-nothing", json=change, headers=OPERATOR)
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
        moved_after = await admin.put(
            RULES + "/rules/r-silian-gas", json={**change, "position": n + 1}, headers=OPERATOR
        )
        assert (moved_after.status_code, moved_after.json()["error"]["code"]) == (409, "rule_conflict")
        await within(lambda: dispatch_has("r-silian-gas", "police"), 5)
        assert await route(dispatch_helpers.reported("gas_leak", grid_id="silian-02")) == (
            "police",
            "r-silian-gas",
        )

        # Removed: silian's gas leaks fall to the generic rule again.
        removed = await admin.delete(RULES + "/rules/r-silian-gas", headers=OPERATOR)
        assert removed.status_code == 200, removed.text
        assert as_declared(models.RoutingRules, removed, exclude_none=True)["rules"] == files["rules"]
        again = await admin.delete(RULES + "/rules/r-silian-gas", headers=OPERATOR)
        assert (again.status_code, again.json()["error"]["code"]) == (404, "not_found")
        await within(lambda: dispatch_has("r-silian-gas", None), 5)
        assert await route(dispatch_helpers.reported("gas_leak", grid_id="silian-03")) == (
            "gas",
            "r-gas-leak",
        )
        rows = {r.rule_id for r in await query(db_url, "SELECT rule_id FROM dispatch.dispatches")}
        assert rows == {"r-silian-gas", "r-gas-leak"}

        audit = as_declared(
            models.AuditList, await admin.get("/api/v1/admin/audit?entity=routing_rules", headers=OPERATOR)
        )["audit"]
        assert [(a["action"], a["entity_id"], a["actor"]) for a in audit] == [
            ("remove_rule", "3", "op-1"),
            ("change_rule", "2", "op-1"),
            ("add_rule", "1", "op-1"),
        ]
        assert audit[2]["before"] == files["rules"]
        assert audit[1]["after"][ids.index("r-silian-gas")]["department_id"] == "police"


async def _is_some(value: Any) -> bool:
    return (await value) is not None


async def test_every_admin_answer_matches_its_declared_model(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)) as (_, admin):
        made = await admin.post(
            "/api/v1/admin/principals",
            json={
                "principal": "bm-1",
                "role": "reporter",
                "grid_id": "liuyue-01",
                "reporter_type": "building_manager",
                "building_ids": ["b7"],
            },
            headers=OPERATOR,
        )
        assert made.status_code == 201, made.text
        as_declared(models.PrincipalWithToken, made)
        as_declared(
            models.PrincipalWithToken,
            await admin.post("/api/v1/admin/principals/bm-1/rotate", headers=OPERATOR),
        )
        as_declared(
            models.PrincipalView, await admin.post("/api/v1/admin/principals/bm-1/revoke", headers=OPERATOR)
        )
        listed = as_declared(
            models.PrincipalList, await admin.get("/api/v1/admin/principals", headers=OPERATOR)
        )
        assert {"bm-1", "op-1"} <= {p["principal"] for p in listed["principals"]}

        department = {
            "id": "hazmat",
            "name_en": "Hazmat",
            "name_zh": "危化品",
            "contacts": [{"name": "值班室"}],
        }
        created = await admin.post("/api/v1/admin/departments", json=department, headers=OPERATOR)
        assert as_declared(models.DepartmentView, created, exclude_none=True) == department
        renamed = await admin.put(
            "/api/v1/admin/departments/hazmat",
            json={
                "name_en": "Hazardous materials",
                "name_zh": "危化品",
                "contacts": [{"name": "值班室", "phone": "0755 1"}],
            },
            headers=OPERATOR,
        )
        as_declared(models.DepartmentView, renamed, exclude_none=True)
        departments = as_declared(
            models.DepartmentList,
            await admin.get("/api/v1/admin/departments", headers=OPERATOR),
            exclude_none=True,
        )
        assert {
            "id": "hazmat",
            "name_en": "Hazardous materials",
            "name_zh": "危化品",
            "contacts": [{"name": "值班室", "phone": "0755 1"}],
        } in departments["departments"]
        as_declared(
            models.DepartmentDeleted, await admin.delete("/api/v1/admin/departments/hazmat", headers=OPERATOR)
        )

        campaign = {
            "id": "c-model",
            "name_en": "Model",
            "name_zh": "模型",
            "starts_on": "2020-01-01",
            "ends_on": "2020-01-31",
            "categories": ["locked_rooftop_door"],
        }
        as_declared(
            models.CampaignView, await admin.post("/api/v1/admin/campaigns", json=campaign, headers=OPERATOR)
        )
        as_declared(
            models.CampaignView,
            await admin.patch(
                "/api/v1/admin/campaigns/c-model", json={"targets": {"found": 3}}, headers=OPERATOR
            ),
        )
        as_declared(models.CampaignList, await admin.get("/api/v1/admin/campaigns", headers=OPERATOR))
        as_declared(models.RoutingRules, await admin.get(RULES, headers=OPERATOR), exclude_none=True)
        audit = as_declared(models.AuditList, await admin.get("/api/v1/admin/audit", headers=OPERATOR))[
            "audit"
        ]
        assert len(audit) == 8
