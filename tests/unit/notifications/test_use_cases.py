"""Notifications use cases on a fake unit of work: no database, no broker, milliseconds per test.

The fake repository (tests/support/fakes/notifications.py) keeps the real one's answers; what SQL,
locks and the sender decide is the integration tests' business.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet

from services.notifications import service
from services.notifications.repository import Subscription
from shared import events as ev
from shared.domain_errors import DomainError
from shared.errors import status_of
from shared.reference import ReferenceData, load_reference_data
from tests.support.factories import T0, make_event
from tests.support.fake_uow import FakeWork
from tests.support.fakes.notifications import FakeNotificationsRepository

NOTIFIER = service.Notifier(fractions=(0.5, 0.8), escalation_targets=())


@pytest.fixture(scope="module")
def reference() -> ReferenceData:
    return load_reference_data()


@dataclass
class Desk:
    """A fake unit-of-work factory on an in-memory notifications schema, and what subscribing needs."""

    work: FakeWork[FakeNotificationsRepository]
    repo: FakeNotificationsRepository
    reference: ReferenceData
    secrets: service.Secrets

    async def run(self, use_case: Any, *args: Any, **kwargs: Any) -> Any:
        async with self.work() as uow:
            return await use_case(uow, *args, **kwargs)

    async def subscribe(self, scope_id: str = "fire", **fields: Any) -> Subscription:
        new = {
            "scope": "department",
            "scope_id": scope_id,
            "channel": "email",
            "url": None,
            "address": f"duty-{uuid.uuid4().hex[:8]}@{scope_id}.example.org",
            "format": "json",
            "language": "zh",
            "secret": None,
            "description": "duty desk",
        } | fields
        sub: Subscription = await self.run(
            service.subscribe,
            service.NewSubscription(**new),
            reference=self.reference,
            allow_private=True,
            secrets=self.secrets,
            created_by="op-1",
        )
        return sub

    async def apply(self, *events: ev.AnyEvent) -> None:
        await self.run(service.apply_events, list(events), notifier=NOTIFIER)


@pytest.fixture
def desk(reference: ReferenceData) -> Desk:
    repo = FakeNotificationsRepository()
    return Desk(FakeWork(repo, now=T0), repo, reference, service.Secrets(Fernet.generate_key().decode()))


def _refusal(exc: pytest.ExceptionInfo[DomainError]) -> tuple[int, str]:
    return status_of(exc.value), exc.value.code


async def test_subscribe_stores_the_subscription_on_the_unit_of_works_clock(desk: Desk) -> None:
    sub = await desk.subscribe(
        channel="webhook",
        url="https://hooks.example.org/fire",
        address=None,
        secret="a-signing-secret-0123456789",
    )
    assert sub.created_at == T0
    assert sub.created_by == "op-1"
    assert sub.target == "https://hooks.example.org/fire"
    assert sub.secret_encrypted is not None
    assert desk.secrets.open(sub.secret_encrypted) == b"a-signing-secret-0123456789"
    listed = await desk.run(service.list_subscriptions, scope="department", scope_id="fire")
    assert [s.subscription_id for s in listed] == [sub.subscription_id]
    assert await desk.run(service.list_subscriptions, scope="department", scope_id="police") == []
    assert desk.work.commits == 3
    assert desk.work.published == []


async def test_a_subscription_to_an_unknown_department_is_refused_and_not_stored(desk: Desk) -> None:
    with pytest.raises(service.SubscriptionRefused) as refused:
        await desk.subscribe(scope_id="no-such-department")
    assert _refusal(refused) == (422, "invalid")
    assert refused.value.details == [
        {"field": "scope_id", "problem": "no department 'no-such-department' in the reference data"}
    ]
    assert desk.repo.subscriptions == {}
    assert desk.work.rollbacks == 1


async def test_unsubscribe_retires_it_and_cancels_what_it_still_had_to_send(desk: Desk) -> None:
    gone, kept = await desk.subscribe(), await desk.subscribe()
    await desk.apply(make_event("hazard.dispatched"))
    desk.work.advance(timedelta(minutes=1))
    await desk.run(service.unsubscribe, gone.subscription_id)
    assert desk.repo.subscriptions[gone.subscription_id].deleted_at == T0 + timedelta(minutes=1)
    listed = await desk.run(service.list_subscriptions, scope=None, scope_id=None)
    assert [s.subscription_id for s in listed] == [kept.subscription_id]
    statuses = {x.subscription_id: (x.status, x.last_error) for x in desk.repo.deliveries}
    assert statuses == {
        gone.subscription_id: ("cancelled", "subscription deleted"),
        kept.subscription_id: ("pending", None),
    }


async def test_unsubscribing_a_subscription_that_is_not_there_is_not_found(desk: Desk) -> None:
    other = await desk.subscribe()
    retired = await desk.subscribe()
    await desk.run(service.unsubscribe, retired.subscription_id)
    for unknown in (uuid.uuid4(), retired.subscription_id):
        with pytest.raises(service.SubscriptionNotFound) as missing:
            await desk.run(service.unsubscribe, unknown)
        assert _refusal(missing) == (404, "not_found")
    # Another operator's subscription is left as it was.
    assert await desk.repo.get_subscription(other.subscription_id) == other


async def test_a_dispatched_event_makes_one_delivery_per_subscription_of_its_department(desk: Desk) -> None:
    fire = [await desk.subscribe("fire"), await desk.subscribe("fire")]
    await desk.subscribe("police")
    event = make_event("hazard.dispatched")
    await desk.apply(event)
    assert sorted((x.event_id, x.subscription_id) for x in desk.repo.deliveries) == sorted(
        (event.event_id, sub.subscription_id) for sub in fire
    )
    assert {(x.trigger, x.department_id, x.status, x.created_at) for x in desk.repo.deliveries} == {
        ("dispatched", "fire", "pending", T0)
    }
    # Its receipt window is watched: reminders at half and four fifths of it.
    assert sorted(r.reminder.fraction for r in desk.repo.reminders.values()) == [0.5, 0.8]


async def test_a_replayed_event_makes_no_delivery_twice(desk: Desk) -> None:
    sub = await desk.subscribe("fire")
    event = make_event("hazard.dispatched")
    await desk.apply(event)
    await desk.apply(event)
    await desk.apply(event, event)
    assert [(x.event_id, x.subscription_id) for x in desk.repo.deliveries] == [
        (event.event_id, sub.subscription_id)
    ]
    assert len(desk.repo.reminders) == 2


async def test_due_reminders_fire_once_into_deliveries_and_acknowledging_cancels_the_rest(desk: Desk) -> None:
    sub = await desk.subscribe("fire")
    dispatched = make_event("hazard.dispatched")
    await desk.apply(dispatched)
    assert await desk.run(service.fire_due_reminders, limit=10) == 0
    desk.work.advance(timedelta(hours=2))  # half of the four-hour receipt window
    assert await desk.run(service.fire_due_reminders, limit=10) == 1
    assert await desk.run(service.fire_due_reminders, limit=10) == 0
    reminded = [x for x in desk.repo.deliveries if x.trigger == "receipt_due_soon"]
    assert [(x.subscription_id, x.hazard_id) for x in reminded] == [
        (sub.subscription_id, dispatched.hazard_id)
    ]
    await desk.apply(make_event("hazard.acknowledged", hazard_id=dispatched.hazard_id))
    desk.work.advance(timedelta(hours=2))
    assert await desk.run(service.fire_due_reminders, limit=10) == 0
    assert sorted(r.status for r in desk.repo.reminders.values()) == ["cancelled", "fired"]


async def test_an_urging_reaches_the_departments_administered_contacts(desk: Desk) -> None:
    desk.repo.admin_contacts["fire"] = [
        {"name": "Chief Wang", "email": "wang@fire.example.org"},
        {"name": "Phone only", "phone": "13800000000"},
    ]
    urged = make_event("hazard.urged")
    await desk.apply(urged)
    assert [(x.trigger, x.channel, x.target) for x in desk.repo.deliveries] == [
        ("urged", "email", "wang@fire.example.org")
    ]
    # The contact is no longer administered: its subscription is retired on the next notice.
    desk.repo.admin_contacts["fire"] = []
    await desk.apply(make_event("hazard.urged", hazard_id=urged.hazard_id))
    assert len(desk.repo.deliveries) == 1
    assert [s.deleted_at for s in desk.repo.subscriptions.values()] == [T0]
