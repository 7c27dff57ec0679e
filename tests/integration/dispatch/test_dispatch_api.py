"""The dispatch service end to end in-process: consume hazard.reported, inbox, acknowledge, return, reassign."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from shared import events as ev
from shared.events import dump_event
from tests.integration.dispatch.dispatch_helpers import AppFactory, auth, outbox_events, reported, scalar
from tests.support.kafka_tools import produce, read_topic, wait_for

pytestmark = pytest.mark.integration


async def publish(kafka: Any, topics: dict[str, str], *events: ev.AnyEvent) -> None:
    await produce(
        kafka.bootstrap_servers,
        topics["lifecycle"],
        [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
    )


async def wait_rows(app: Any, query: str, expected: int, timeout_s: float = 60) -> None:
    async def done() -> bool:
        return int(await scalar(app, query) or 0) >= expected

    await wait_for(done, timeout_s=timeout_s, interval_s=0.2)


async def test_reported_hazards_are_routed_and_the_inbox_is_per_department(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    rooftop = reported("locked_rooftop_door")
    security = reported("public_security_hazard")
    unroutable = reported("other")
    on_site = reported("locked_rooftop_door", rectified_on_site=True)
    duplicate = reported("locked_rooftop_door", duplicate_of=uuid.uuid4())
    async with dispatch_app() as (app, client):
        # The same event twice, and the same hazard again under a new event id: routed once.
        again = rooftop.model_copy(update={"event_id": uuid.uuid4()})
        await publish(kafka, topics, rooftop, rooftop, again, security, unroutable, on_site, duplicate)
        await wait_rows(app, "select count(*) from dispatch.hazards", 3)
        await wait_rows(app, "select count(*) from dispatch.inbox_batches, unnest(event_ids)", 6)
        assert await scalar(app, "select count(*) from dispatch.dispatches") == 2

        fire_inbox = (await client.get("/api/v1/dispatches?status=pending", headers=auth("tok-fire"))).json()
        assert [item["hazard_id"] for item in fire_inbox["items"]] == [str(rooftop.hazard_id)]
        item = fire_inbox["items"][0]
        assert item["department_id"] == "fire"
        assert item["rule_id"] == "r-locked-rooftop-door"
        assert item["deadline_rule"] == {"minutes": 120, "working_time": True}
        assert item["status"] == "pending"
        police_inbox = (await client.get("/api/v1/dispatches", headers=auth("tok-police"))).json()
        assert [i["hazard_id"] for i in police_inbox["items"]] == [str(security.hazard_id)]
        everything = (await client.get("/api/v1/dispatches", headers=auth("tok-supervisor"))).json()
        assert len(everything["items"]) == 2
        only_fire = (
            await client.get("/api/v1/dispatches?department_id=fire", headers=auth("tok-operator"))
        ).json()
        assert [i["department_id"] for i in only_fire["items"]] == ["fire"]

        queue = (await client.get("/api/v1/operator-queue", headers=auth("tok-operator"))).json()
        assert [(i["hazard_id"], i["reason"]) for i in queue["items"]] == [
            (str(unroutable.hazard_id), "no_rule")
        ]

        metrics = (await client.get("/metrics")).text
        assert (
            'hazard_dispatch_dispatches_total{category="locked_rooftop_door",department="fire",reason="routed"}'
            in metrics
        )
        assert 'hazard_dispatch_referred_to_operators_total{reason="no_rule"}' in metrics

        events = await read_topic(kafka.bootstrap_servers, topics["lifecycle"], expect=9)
        produced = [ev.parse_event(r.value) for r in events if ev.parse_event(r.value).producer == "dispatch"]
        assert sorted(e.TYPE for e in produced) == [
            "hazard.dispatched",
            "hazard.dispatched",
            "hazard.referred_to_operators",
        ]
        assert {e.causation_id for e in produced} == {
            rooftop.event_id,
            security.event_id,
            unroutable.event_id,
        }


async def test_one_department_never_sees_or_acts_on_anothers_dispatch(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    hazard = reported("locked_rooftop_door")
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        await publish(kafka, topics, hazard)
        await wait_rows(app, "select count(*) from dispatch.dispatches", 1)
        dispatch_id = await scalar(app, "select dispatch_id from dispatch.dispatches")
        url = f"/api/v1/dispatches/{dispatch_id}"

        assert (await client.get(url, headers=auth("tok-fire"))).status_code == 200
        hidden = await client.get(url, headers=auth("tok-police"))
        assert hidden.status_code == 404
        assert hidden.json()["error"]["code"] == "not_found"
        unknown = await client.get(f"/api/v1/dispatches/{uuid.uuid4()}", headers=auth("tok-police"))
        # Another department's dispatch looks exactly like an unknown one.
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == hidden.json()["error"]["code"]
        assert (await client.get("/api/v1/dispatches", headers=auth("tok-police"))).json()["items"] == []
        other_filter = await client.get("/api/v1/dispatches?department_id=fire", headers=auth("tok-police"))
        assert other_filter.status_code == 403

        # Acting on a dispatch the caller may not see is 404 as well (API.md), in the same words.
        acted = await client.post(url + "/acknowledge", headers=auth("tok-police"))
        assert (acted.status_code, acted.json()) == (404, hidden.json())
        assert (await client.post(url + "/acknowledge", headers=auth("tok-operator"))).status_code == 403
        assert (await client.post(url + "/acknowledge")).status_code == 401
        assert (await client.get("/api/v1/dispatches", headers=auth("tok-reporter"))).status_code == 403

        first = await client.post(url + "/acknowledge", headers=auth("tok-fire"))
        assert first.status_code == 200
        body = first.json()
        assert body["status"] == "acknowledged"
        assert body["on_time"] is True
        assert body["acknowledged_at"] is not None
        assert body["acknowledged_by"] == "dept-fire"
        second = await client.post(url + "/acknowledge", headers=auth("tok-fire"))
        assert second.status_code == 409
        assert second.json()["error"]["code"] == "already_acknowledged"
        # Acknowledgement stopped every step of the dispatch: none is due any more, none fired.
        assert (
            await scalar(app, "select count(*) from dispatch.dispatches where next_due_at is not null") == 0
        )
        assert await scalar(app, "select count(*) from dispatch.timers") == 0

        acked = [e for e in await outbox_events(app) if isinstance(e, ev.HazardAcknowledged)]
        assert len(acked) == 1
        assert acked[0].payload.on_time is True
        assert str(acked[0].payload.dispatch_id) == str(dispatch_id)


async def test_return_reroutes_then_all_returned_goes_to_operators_who_assign_it(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    hazard = reported("direct_vent_water_heater")
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        await publish(kafka, topics, hazard)
        await wait_rows(app, "select count(*) from dispatch.dispatches", 1)
        gas_dispatch = (await client.get("/api/v1/dispatches", headers=auth("tok-gas"))).json()["items"][0]

        no_reason = await client.post(
            f"/api/v1/dispatches/{gas_dispatch['dispatch_id']}/return", headers=auth("tok-gas"), json={}
        )
        assert no_reason.status_code == 422
        too_long = await client.post(
            f"/api/v1/dispatches/{gas_dispatch['dispatch_id']}/return",
            headers=auth("tok-gas"),
            json={"reason": "x" * 1001},
        )
        assert too_long.status_code == 422

        returned = await client.post(
            f"/api/v1/dispatches/{gas_dispatch['dispatch_id']}/return",
            headers=auth("tok-gas"),
            json={"reason": "No gas contract on file"},
        )
        assert returned.status_code == 200, returned.text
        assert returned.json()["dispatch"]["status"] == "returned"
        assert returned.json()["next"]["department_id"] == "fire"
        assert returned.json()["next"]["reason"] == "rerouted"
        fire_items = (await client.get("/api/v1/dispatches", headers=auth("tok-fire"))).json()["items"]
        assert [i["previous_dispatch_id"] for i in fire_items] == [gas_dispatch["dispatch_id"]]
        again = await client.post(
            f"/api/v1/dispatches/{gas_dispatch['dispatch_id']}/return",
            headers=auth("tok-gas"),
            json={"reason": "No gas contract on file"},
        )
        assert again.status_code == 409

        fire_returned = await client.post(
            f"/api/v1/dispatches/{fire_items[0]['dispatch_id']}/return",
            headers=auth("tok-fire"),
            json={"reason": "Not a fire matter"},
        )
        assert fire_returned.json()["next"] == {"operators_queue": True, "reason": "all_candidates_returned"}
        queue = (await client.get("/api/v1/operator-queue", headers=auth("tok-operator"))).json()["items"]
        assert [(i["hazard_id"], i["reason"]) for i in queue] == [
            (str(hazard.hazard_id), "all_candidates_returned")
        ]
        assert (
            await client.post(
                f"/api/v1/hazards/{hazard.hazard_id}/assign",
                headers=auth("tok-fire"),
                json={"department_id": "police", "reason": "Police handle it"},
            )
        ).status_code == 403
        unknown_department = await client.post(
            f"/api/v1/hazards/{hazard.hazard_id}/assign",
            headers=auth("tok-operator"),
            json={"department_id": "nasa", "reason": "Space"},
        )
        assert unknown_department.status_code == 422
        assigned = await client.post(
            f"/api/v1/hazards/{hazard.hazard_id}/assign",
            headers=auth("tok-operator"),
            json={"department_id": "urban_management", "reason": "Illegal installation"},
        )
        assert assigned.status_code == 200, assigned.text
        assert assigned.json()["next"]["department_id"] == "urban_management"
        assert (await client.get("/api/v1/operator-queue", headers=auth("tok-operator"))).json()[
            "items"
        ] == []
        twice = await client.post(
            f"/api/v1/hazards/{hazard.hazard_id}/assign",
            headers=auth("tok-operator"),
            json={"department_id": "roads", "reason": "Again"},
        )
        assert twice.status_code == 409

        types = [(e.TYPE, getattr(e.payload, "reason", None)) for e in await outbox_events(app)]
        assert types == [
            ("hazard.dispatched", "routed"),
            ("hazard.returned", "No gas contract on file"),
            ("hazard.dispatched", "rerouted"),
            ("hazard.returned", "Not a fire matter"),
            ("hazard.referred_to_operators", "all_candidates_returned"),
            ("hazard.dispatched", "reassigned"),
        ]
        active = await scalar(
            app,
            "select count(*) from dispatch.dispatches where hazard_id = :h and status in ('pending', 'acknowledged')",
            h=hazard.hazard_id,
        )
        assert active == 1


async def test_operator_reassigns_a_pending_dispatch(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    hazard = reported("locked_rooftop_door")
    async with dispatch_app(outbox={"enabled": False}) as (app, client):
        await publish(kafka, topics, hazard)
        await wait_rows(app, "select count(*) from dispatch.dispatches", 1)
        dispatch_id = await scalar(app, "select dispatch_id from dispatch.dispatches")
        url = f"/api/v1/dispatches/{dispatch_id}/reassign"
        body = {"department_id": "police", "reason": "Locked by tenants in a dispute"}
        assert (await client.post(url, headers=auth("tok-fire"), json=body)).status_code == 403
        same = await client.post(url, headers=auth("tok-operator"), json=body | {"department_id": "fire"})
        assert same.status_code == 409
        moved = await client.post(url, headers=auth("tok-operator"), json=body)
        assert moved.status_code == 200, moved.text
        assert moved.json()["next"]["department_id"] == "police"
        old = (await client.get(f"/api/v1/dispatches/{dispatch_id}", headers=auth("tok-supervisor"))).json()
        assert old["status"] == "superseded"
        new = (await client.get("/api/v1/dispatches", headers=auth("tok-police"))).json()["items"]
        assert [(i["status"], i["reason"], i["dispatched_by"], i["note"]) for i in new] == [
            ("pending", "reassigned", "op-1", "Locked by tenants in a dispute")
        ]
        # The superseded dispatch's timers are stopped; the fire department cannot act on it any more.
        assert (
            await client.post(f"/api/v1/dispatches/{dispatch_id}/acknowledge", headers=auth("tok-fire"))
        ).status_code == 409
        assert (
            await scalar(
                app,
                "select count(*) from dispatch.dispatches where dispatch_id = :d and next_due_at is not null",
                d=dispatch_id,
            )
            == 0
        )


async def test_routing_rules_are_served_to_operators_and_supervisors(dispatch_app: AppFactory) -> None:
    async with dispatch_app(outbox={"enabled": False}) as (_, client):
        rules = (await client.get("/api/v1/routing-rules", headers=auth("tok-operator"))).json()
        assert rules["rules"][0] == {
            "position": 1,
            "id": "r-silian-group-rental",
            "category": "group_rental_fire_hazard",
            "community_id": "silian",
            "grid_id": None,
            "department_id": "housing_rental",
        }
        assert rules["no_match"] == "operators"
        assert [s["level"] for s in rules["escalation"]] == [1, 2, 3]
        assert (await client.get("/api/v1/routing-rules", headers=auth("tok-supervisor"))).status_code == 200
        assert (await client.get("/api/v1/routing-rules", headers=auth("tok-fire"))).status_code == 403
