"""An in-memory :class:`~services.notifications.repository.NotificationsRepository` for use-case tests.

Same method names and answers as the real repository, on lists and dictionaries: one delivery
per (event or reminder, subscription) (the ``deliveries_once_per_subscription`` constraint), a
reminder written once per id, pending reminders claimed in due order. The sender's claims and
records (leases, SKIP LOCKED) are not here: they are the integration tests' business.

    repo = FakeNotificationsRepository()
    work = FakeWork(repo, now=T0)
    async with work() as uow:
        await service.apply_events(uow, events, notifier=service.Notifier())
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from services.notifications import domain
from services.notifications.repository import Subscription


@dataclass
class FakeDelivery:
    """A delivery row (the columns the delivery log answers)."""

    delivery_id: int
    event_id: uuid.UUID
    subscription_id: uuid.UUID
    hazard_id: uuid.UUID
    department_id: str
    trigger: str
    channel: str
    target: str
    notice: dict[str, Any]
    event_at: datetime
    created_at: datetime
    next_attempt_at: datetime
    status: str = "pending"
    attempts: int = 0
    sent_at: datetime | None = None
    last_error: str | None = None


@dataclass
class FakeReminder:
    """A reminder row."""

    reminder: domain.Reminder
    status: str = "pending"
    settled_at: datetime | None = None


@dataclass
class FakeNotificationsRepository:
    """The notifications schema in memory (and the admin table's contacts, by department)."""

    subscriptions: dict[uuid.UUID, Subscription] = field(default_factory=dict)
    deliveries: list[FakeDelivery] = field(default_factory=list)
    reminders: dict[uuid.UUID, FakeReminder] = field(default_factory=dict)
    admin_contacts: dict[str, list[Any]] = field(default_factory=dict)

    # ------------------------------------------------------------ subscriptions

    async def add_subscription(self, values: dict[str, Any]) -> None:
        self.subscriptions[values["subscription_id"]] = Subscription(**values)

    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        sub = self.subscriptions.get(subscription_id)
        return sub if sub is not None and sub.deleted_at is None else None

    async def list_subscriptions(
        self, *, scope: str | None = None, scope_id: str | None = None
    ) -> list[Subscription]:
        live = [
            sub
            for sub in self.subscriptions.values()
            if sub.deleted_at is None
            and sub.scope != "contact"
            and (scope is None or sub.scope == scope)
            and (scope_id is None or sub.scope_id == scope_id)
        ]
        return sorted(live, key=lambda sub: (sub.created_at, sub.subscription_id))

    async def delete_subscription(self, subscription_id: uuid.UUID, *, now: datetime) -> bool:
        if await self.get_subscription(subscription_id) is None:
            return False
        self.subscriptions[subscription_id] = replace(self.subscriptions[subscription_id], deleted_at=now)
        self._cancel_deliveries({subscription_id}, "subscription deleted")
        return True

    async def subscriptions_for(
        self, audiences: Iterable[domain.Audience]
    ) -> dict[domain.Audience, list[Subscription]]:
        wanted = set(audiences)
        found: dict[domain.Audience, list[Subscription]] = {a: [] for a in wanted}
        for sub in self.subscriptions.values():
            audience = domain.Audience(sub.scope, sub.scope_id)  # type: ignore[arg-type]
            if sub.deleted_at is None and audience in wanted:
                found[audience].append(sub)
        return found

    # ------------------------------------------------------------ administered escalation contacts

    async def administered_contacts(self, department_ids: Iterable[str]) -> dict[str, list[Any]]:
        return {key: list(self.admin_contacts.get(key, [])) for key in sorted(set(department_ids))}

    async def sync_contact_subscriptions(
        self, department_id: str, contacts: Sequence[domain.Contact], *, now: datetime
    ) -> dict[uuid.UUID, Subscription]:
        keep = {c.subscription_id for c in contacts}
        for contact in contacts:
            old = self.subscriptions.get(contact.subscription_id)
            self.subscriptions[contact.subscription_id] = Subscription(
                subscription_id=contact.subscription_id,
                scope="contact",
                scope_id=department_id,
                channel="email",
                target=contact.email,
                format="json",
                language="zh",
                secret_encrypted=None,
                description=contact.name,
                created_by="admin",
                created_at=old.created_at if old is not None else now,
                deleted_at=None,
            )
        retired = {
            sub.subscription_id
            for sub in self.subscriptions.values()
            if sub.scope == "contact"
            and sub.scope_id == department_id
            and sub.deleted_at is None
            and sub.subscription_id not in keep
        }
        for subscription_id in retired:
            self.subscriptions[subscription_id] = replace(self.subscriptions[subscription_id], deleted_at=now)
        self._cancel_deliveries(retired, "escalation contact no longer administered")
        return {key: self.subscriptions[key] for key in keep}

    # ------------------------------------------------------------ deliveries

    async def add_deliveries(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> int:
        seen = {(x.event_id, x.subscription_id) for x in self.deliveries}
        added = 0
        for row in rows:
            key = (row["event_id"], row["subscription_id"])
            if key in seen:
                continue
            seen.add(key)
            added += 1
            self.deliveries.append(
                FakeDelivery(
                    delivery_id=len(self.deliveries) + 1,
                    event_id=row["event_id"],
                    subscription_id=row["subscription_id"],
                    hazard_id=row["hazard_id"],
                    department_id=row["department_id"],
                    trigger=row["trigger"],
                    channel=row["channel"],
                    target=row["target"],
                    notice=row["notice"],
                    event_at=row["event_at"],
                    created_at=now,
                    next_attempt_at=now,
                )
            )
        return added

    async def list_deliveries(
        self,
        *,
        department_id: str | None,
        hazard_id: uuid.UUID | None,
        status: str | None,
        before: int | None,
        limit: int,
    ) -> list[Any]:
        found = [
            x
            for x in reversed(self.deliveries)
            if (department_id is None or x.department_id == department_id)
            and (hazard_id is None or x.hazard_id == hazard_id)
            and (status is None or x.status == status)
            and (before is None or x.delivery_id < before)
        ]
        return list(found[:limit])

    async def count_by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for x in self.deliveries:
            counts[x.status] = counts.get(x.status, 0) + 1
        return counts

    def _cancel_deliveries(self, subscription_ids: set[uuid.UUID], why: str) -> None:
        for x in self.deliveries:
            if x.subscription_id in subscription_ids and x.status in ("pending", "retrying"):
                x.status, x.last_error = "cancelled", why

    # ------------------------------------------------------------ reminders

    async def add_reminders(self, planned: Sequence[domain.Reminder]) -> None:
        for reminder in planned:
            self.reminders.setdefault(reminder.reminder_id, FakeReminder(reminder))

    async def cancel_reminders(self, pairs: Iterable[tuple[uuid.UUID, str]], *, now: datetime) -> None:
        wanted = set(pairs)
        for row in self.reminders.values():
            if row.status == "pending" and (row.reminder.hazard_id, row.reminder.kind) in wanted:
                row.status, row.settled_at = "cancelled", now

    async def seconds_to_next_reminder(self, *, now: datetime) -> float | None:
        due = [row.reminder.due_at for row in self.reminders.values() if row.status == "pending"]
        return None if not due else (min(due) - now).total_seconds()

    async def claim_due_reminders(self, *, now: datetime, limit: int) -> list[domain.Reminder]:
        due = sorted(
            (
                row
                for row in self.reminders.values()
                if row.status == "pending" and row.reminder.due_at <= now
            ),
            key=lambda row: row.reminder.due_at,
        )[:limit]
        for row in due:
            row.status, row.settled_at = "fired", now
        return [row.reminder for row in due]
