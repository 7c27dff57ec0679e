"""Open duplicates, on-site fixes, and the Open311 view kept current from lifecycle events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from shared import events as ev
from shared.events import dump_event
from shared.reference import load_reference_data
from tests.integration.intake.intake_helpers import LAT, AppFactory, auth, outbox_events, report, scalar
from tests.support.kafka_tools import produce, wait_for

pytestmark = pytest.mark.integration

OFF: dict[str, Any] = {"outbox": {"enabled": False}, "broker": False}
FIRE = load_reference_data().department("fire").name_en


async def post(client: Any, body: dict[str, Any], token: str = "tok-gm1") -> dict[str, Any]:
    response = await client.post("/api/v1/hazards", json=body, headers=auth(token))
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_open_duplicates_are_linked_by_building_or_distance(intake_app: AppFactory) -> None:
    async with intake_app(**OFF) as (app, client):
        original = await post(client, report(location={"building_id": "ly01-b0001"}))
        # Same category, same building (even 200 m away): linked.
        same_building = await post(
            client, report(location={"building_id": "ly01-b0001", "lat": LAT + 0.0018})
        )
        # Same category, ~20 m away, no building id: linked.
        near = await post(client, report(location={"lat": LAT + 0.00018}))
        # Same category, ~100 m away: a new hazard.
        far = await post(client, report(location={"lat": LAT + 0.0009}))
        # Another category at the same building: a new hazard.
        other = await post(
            client, report(category="ebike_indoor_charging", location={"building_id": "ly01-b0001"})
        )
        # Fixed on the spot at the same building: recorded, closed, never a duplicate.
        on_site = await post(client, report(rectified_on_site=True, location={"building_id": "ly01-b0001"}))

        assert original["duplicate_of"] is None
        assert same_building["duplicate_of"] == original["hazard_id"]
        assert near["duplicate_of"] == original["hazard_id"]
        assert far["duplicate_of"] is None
        assert other["duplicate_of"] is None
        assert on_site["duplicate_of"] is None
        assert on_site["status"] == "closed"

        events = await outbox_events(app)
        linked = [e for e in events if isinstance(e, ev.HazardDuplicateLinked)]
        assert [
            (str(e.hazard_id), str(e.payload.original_hazard_id), e.payload.same_building) for e in linked
        ] == [
            (same_building["hazard_id"], original["hazard_id"], True),
            (near["hazard_id"], original["hazard_id"], False),
        ]
        assert 15 < linked[1].payload.distance_m < 25
        reported = {str(e.hazard_id): e for e in events if isinstance(e, ev.HazardReported)}
        assert str(reported[near["hazard_id"]].payload.duplicate_of) == original["hazard_id"]
        assert reported[on_site["hazard_id"]].payload.rectified_on_site is True
        # The linked event is caused by the report's own hazard.reported.
        assert linked[0].causation_id == reported[same_building["hazard_id"]].event_id


def event_at(cls: Any, hazard_id: str, at: datetime, payload: Any) -> ev.AnyEvent:
    return cls(  # type: ignore[no-any-return]
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=uuid.UUID(hazard_id),
        producer="test",
        payload=payload,
    )


async def test_the_open311_view_follows_the_lifecycle_even_out_of_order(
    intake_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    rule = ev.FrozenDeadlineRule(minutes=120, working_time=True)
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with intake_app(outbox={"enabled": False}) as (app, client):
        a = await post(client, report(location={"building_id": "ly01-b0002"}))
        dup = await post(client, report(location={"building_id": "ly01-b0002"}))
        assert dup["duplicate_of"] == a["hazard_id"]
        h = a["hazard_id"]
        receipt = t0 + timedelta(hours=2)
        fix_by = t0 + timedelta(days=3)
        dispatched = event_at(
            ev.HazardDispatched,
            h,
            t0 + timedelta(minutes=1),
            ev.HazardDispatchedPayload(
                dispatch_id=uuid.uuid4(),
                department_id="fire",
                rule_id="r",
                receipt_deadline=receipt,
                deadline_rule=rule,
            ),
        )
        acknowledged = event_at(
            ev.HazardAcknowledged,
            h,
            t0 + timedelta(minutes=2),
            ev.HazardAcknowledgedPayload(
                dispatch_id=dispatched.payload.dispatch_id,  # type: ignore[attr-defined]
                department_id="fire",
                acknowledged_at=t0 + timedelta(minutes=2),
                receipt_deadline=receipt,
                on_time=True,
                acknowledged_by="dept-fire",
            ),
        )
        ordered = event_at(
            ev.HazardRectificationOrdered,
            h,
            t0 + timedelta(minutes=3),
            ev.HazardRectificationOrderedPayload(department_id="fire", deadline=fix_by, deadline_rule=rule),
        )
        rectified = event_at(
            ev.HazardRectified,
            h,
            t0 + timedelta(minutes=4),
            ev.HazardRectifiedPayload(department_id="fire", rectified_by="dept-fire"),
        )
        closed = event_at(
            ev.HazardClosed,
            h,
            t0 + timedelta(minutes=5),
            ev.HazardClosedPayload(reason="verified", department_id="fire", closed_by="gm-liuyue-01"),
        )

        async def send(*events: ev.AnyEvent) -> None:
            await produce(
                kafka.bootstrap_servers,
                topics["lifecycle"],
                [(str(e.hazard_id).encode(), dump_event(e)) for e in events],
            )

        async def applied(n: int) -> None:
            async def done() -> bool:
                return (
                    int(await scalar(app, "select count(*) from intake.inbox_batches, unnest(event_ids)"))
                    >= n
                )

            await wait_for(done, timeout_s=90, interval_s=0.2)

        async def view(hazard_id: str) -> dict[str, Any]:
            response = await client.get(f"/open311/v2/requests/{hazard_id}.json")
            assert response.status_code == 200
            [item] = response.json()
            return item  # type: ignore[no-any-return]

        # Dispatched, then the rectification order, then a late acknowledgement (older than the order).
        await send(dispatched, ordered, acknowledged)
        await applied(3)
        current = await view(h)
        assert current["status"] == "open"
        assert current["agency_responsible"] == FIRE
        assert current["status_notes"].startswith("Rectification ordered")
        assert current["expected_datetime"] == fix_by.isoformat()
        assert current["updated_datetime"] == ordered.occurred_at.isoformat()

        # Closed arrives before the rectification it follows: closed stays closed.
        await send(closed, rectified)
        await applied(5)
        current = await view(h)
        assert current["status"] == "closed"
        assert current["status_notes"] == "Closed (verified rectification)."
        assert current["expected_datetime"] is None
        assert current["updated_datetime"] == closed.occurred_at.isoformat()
        # A late dispatch (a duplicate delivery under a new id) never reopens it.
        await send(dispatched.model_copy(update={"event_id": uuid.uuid4()}))
        await applied(6)
        assert (await view(h))["status"] == "closed"
        # The report linked to it as a duplicate is settled with it.
        linked = await view(dup["hazard_id"])
        assert linked["status"] == "closed"
        assert a["hazard_id"] in linked["service_notice"]

        # Now closed, the place has no open hazard: a new report there is a new hazard.
        again = await post(client, report(location={"building_id": "ly01-b0002"}))
        assert again["duplicate_of"] is None


async def test_an_on_site_fix_is_not_rewritten_by_its_closure(
    intake_app: AppFactory, kafka: Any, topics: dict[str, str]
) -> None:
    """Tracking closes a fix on the spot; intake closed the report when it accepted it, so the row stays as written (#20)."""
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with intake_app(outbox={"enabled": False}) as (app, client):
        fixed = await post(client, report(rectified_on_site=True, location={"building_id": "ly01-b0003"}))
        other = await post(client, report(location={"building_id": "ly01-b0004"}))
        assert fixed["status"] == "closed"

        async def row(hazard_id: str) -> Any:
            async with app.state.runtime.sessions() as session:
                return (
                    await session.execute(
                        sa.text(
                            "select xmin::text as version, status, status_notes, closed_at, updated_datetime, "
                            "last_event_at from intake.reports where hazard_id = :h"
                        ),
                        {"h": uuid.UUID(hazard_id)},
                    )
                ).one()

        before = await row(fixed["hazard_id"])
        on_site = event_at(
            ev.HazardClosed,
            fixed["hazard_id"],
            t0 + timedelta(seconds=1),
            ev.HazardClosedPayload(reason="rectified_on_site", closed_by="tracking"),
        )
        # In the same batch, another hazard's verified closure still closes it.
        verified = event_at(
            ev.HazardClosed,
            other["hazard_id"],
            t0 + timedelta(seconds=2),
            ev.HazardClosedPayload(reason="verified", department_id="fire", closed_by="gm-liuyue-01"),
        )
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in (on_site, verified)],
        )

        async def applied() -> bool:
            ids = await scalar(app, "select array_agg(u) from intake.inbox_batches, unnest(event_ids) as u")
            return {on_site.event_id, verified.event_id} <= set(ids or [])

        await wait_for(applied, timeout_s=90, interval_s=0.2)
        after = await row(fixed["hazard_id"])
        # Not rewritten: the same row version, as intake wrote it at acceptance.
        assert after == before
        assert after.status == "closed"
        assert after.status_notes == "Rectified on site after the reporter's persuasion."
        assert after.last_event_at is None
        closed = await row(other["hazard_id"])
        assert closed.status == "closed"
        assert closed.status_notes == "Closed (verified rectification)."
        assert closed.closed_at == verified.occurred_at
