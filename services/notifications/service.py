"""Units of work of the notifications service: turn events and due reminders into deliveries.

Each function runs inside the caller's transaction (the consumer's batch, a reminder sweep, an API
request) and leaves committing to it. Deliveries are keyed by (event or reminder, subscription):
written in the same transaction as the inbox row, so a redelivered or replayed event adds nothing.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import domain, repository
from shared import events as ev
from shared.domain_errors import InvalidError, NotFoundError
from shared.reference import ReferenceData

Resolver = Callable[[str, int], Awaitable[list[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """The IP addresses a host name resolves to (the system resolver, off the event loop)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


@dataclass(frozen=True)
class Notifier:
    """What the units of work need besides a session."""

    fractions: tuple[float, ...] = (0.5, 0.8)
    escalation_targets: tuple[str, ...] = ()
    """The escalation chain's targets besides the department (an urging reaches their contacts too)."""


def _delivery_rows(
    notices: Sequence[domain.Notice], found: dict[domain.Audience, list[repository.Subscription]]
) -> list[dict[str, Any]]:
    rows = []
    for notice in notices:
        for sub in found.get(notice.audience, ()):
            rows.append(
                {
                    "event_id": notice.source_id,
                    "subscription_id": sub.subscription_id,
                    "hazard_id": notice.hazard_id,
                    "department_id": notice.department_id,
                    "trigger": notice.trigger,
                    "channel": sub.channel,
                    "target": sub.target,
                    "notice": notice.as_json(),
                    "event_at": notice.occurred_at,
                }
            )
    return rows


async def _contact_rows(
    session: AsyncSession, notices: Sequence[domain.Notice], *, now: datetime
) -> list[dict[str, Any]]:
    """Delivery rows of notices to departments' administered escalation contacts (#18).

    The contacts are read from the admin table in this transaction, so a contact administered a
    moment ago is told without restart or poll; each becomes (or stays) a ``contact`` subscription,
    so its deliveries are keyed (event, subscription) and sent, retried and recorded like any other.
    An escalation reaches the contacts named for its level (or for every level); an urging, all.
    """
    if not notices:
        return []
    administered = await repository.administered_contacts(session, {n.audience.scope_id for n in notices})
    contacts: dict[str, list[domain.Contact]] = {}
    subs: dict[uuid.UUID, repository.Subscription] = {}
    for department_id, raw in administered.items():
        contacts[department_id] = domain.contacts_from_admin(department_id, raw)
        subs |= await repository.sync_contact_subscriptions(
            session, department_id, contacts[department_id], now=now
        )
    rows = []
    for notice in notices:
        level = domain.contact_level(notice)
        told = [subs[c.subscription_id] for c in contacts[notice.audience.scope_id] if c.told_at(level)]
        rows.extend(_delivery_rows([notice], {notice.audience: told}))
    return rows


async def add_notices(session: AsyncSession, notices: Sequence[domain.Notice], *, now: datetime) -> int:
    """One delivery per notice and live subscription of its audience; returns how many are new."""
    if not notices:
        return 0
    to_contacts = [n for n in notices if n.audience.scope == "contact"]
    others = [n for n in notices if n.audience.scope != "contact"]
    found = await repository.subscriptions_for(session, {n.audience for n in others})
    rows = _delivery_rows(others, found) + await _contact_rows(session, to_contacts, now=now)
    return await repository.add_deliveries(session, rows, now=now)


async def apply_events(
    session: AsyncSession, events: Sequence[ev.AnyEvent], *, now: datetime, notifier: Notifier
) -> None:
    """Apply a batch of new events: settle reminders, plan new ones, and record the deliveries due."""
    plan = domain.plan_batch(
        events, fractions=notifier.fractions, now=now, escalation_targets=notifier.escalation_targets
    )
    await repository.cancel_reminders(session, plan.cancel, now=now)
    await repository.add_reminders(session, plan.reminders)
    await add_notices(session, plan.notices, now=now)


async def fire_due_reminders(session: AsyncSession, *, now: datetime, limit: int) -> int:
    """Fire up to ``limit`` due reminders into deliveries; returns how many fired."""
    due = await repository.claim_due_reminders(session, now=now, limit=limit)
    await add_notices(session, [domain.reminder_notice(x) for x in due], now=now)
    return len(due)


# ---------------------------------------------------------------- subscriptions


class SubscriptionRefused(InvalidError):  # noqa: N818 - reads as what happened
    """A subscription that cannot be stored (422 ``invalid``), the field and the problem named."""

    @classmethod
    def of(cls, field: str, problem: str) -> SubscriptionRefused:
        """The refusal of one field."""
        return cls("The subscription cannot be stored.", details=[{"field": field, "problem": problem}])


class SubscriptionNotFound(NotFoundError):  # noqa: N818 - reads as what happened
    """No live subscription of that id (404 ``not_found``)."""


class Secrets:
    """Encrypts webhook signing secrets for storage and decrypts them to sign (Fernet: AES + HMAC)."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def seal(self, secret: str) -> bytes:
        """The stored form of a secret."""
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> bytes:
        """The secret, to sign with."""
        return self._fernet.decrypt(sealed)


class TargetUnresolved(domain.InvalidSubscription):
    """The webhook's host does not resolve (now): refused when subscribing, retried when sending."""


async def check_webhook_target(url: str, *, allow_private: bool, resolve: Resolver = resolve_host) -> None:
    """Refuse a webhook URL that is malformed or (unless allowed) reaches a non-public address."""
    host, port = domain.check_webhook_url(url)
    if allow_private:
        return
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise TargetUnresolved("url", f"the host {host!r} does not resolve: {exc}") from None
    private = [a for a in addresses if not domain.is_public_address(a)]
    if not addresses or private:
        raise domain.InvalidSubscription(
            "url",
            f"the host {host!r} resolves to a loopback, private or reserved address "
            f"({', '.join(private) or 'none'}); only public addresses are accepted",
        )


async def create_subscription(
    session: AsyncSession,
    *,
    scope: str,
    scope_id: str,
    channel: str,
    target: str,
    fmt: str,
    language: str,
    secret: str | None,
    description: str,
    created_by: str,
    now: datetime,
    secrets: Secrets,
) -> repository.Subscription:
    """Store a checked subscription (its secret encrypted); returns it as stored."""
    values = {
        "subscription_id": uuid.uuid4(),
        "scope": scope,
        "scope_id": scope_id,
        "channel": channel,
        "target": target,
        "format": fmt,
        "language": language,
        "secret_encrypted": secrets.seal(secret) if secret else None,
        "description": description,
        "created_by": created_by,
        "created_at": now,
        "deleted_at": None,
    }
    await repository.add_subscription(session, values)
    return repository.Subscription(**values)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NewSubscription:
    """What an operator asks for (already well formed): who is told, by which channel, how."""

    scope: str
    scope_id: str
    channel: str
    url: str | None
    address: str | None
    format: str
    language: str
    secret: str | None
    description: str


async def checked_target(
    new: NewSubscription, *, reference: ReferenceData, allow_private: bool, resolve: Resolver = resolve_host
) -> str:
    """The subscription's target (URL or address) once every rule holds; :class:`SubscriptionRefused` otherwise."""
    if new.scope == "department":
        if new.scope_id not in {d.id for d in reference.departments}:
            raise SubscriptionRefused.of("scope_id", f"no department {new.scope_id!r} in the reference data")
    else:
        targets = sorted({step.target for step in reference.escalation_steps if step.target != "department"})
        if new.scope_id not in targets:
            raise SubscriptionRefused.of("scope_id", f"not an escalation target; known: {', '.join(targets)}")
    try:
        if new.channel == "webhook":
            if new.url is None or new.address is not None:
                raise domain.InvalidSubscription("url", "a webhook subscription takes a url and no address")
            await check_webhook_target(new.url, allow_private=allow_private, resolve=resolve)
            return new.url
        if new.address is None or new.url is not None:
            raise domain.InvalidSubscription("address", "an e-mail subscription takes an address and no url")
        if new.secret is not None or new.format != "json":
            raise domain.InvalidSubscription("channel", "secret and format apply to webhooks only")
        return domain.check_email_address(new.address)
    except domain.InvalidSubscription as exc:
        raise SubscriptionRefused.of(exc.field, exc.problem) from None


async def subscribe(
    session: AsyncSession,
    new: NewSubscription,
    *,
    reference: ReferenceData,
    allow_private: bool,
    secrets: Secrets,
    created_by: str,
    now: datetime,
) -> repository.Subscription:
    """Check and store a subscription; it takes effect for the next event, without restart."""
    target = await checked_target(new, reference=reference, allow_private=allow_private)
    return await create_subscription(
        session,
        scope=new.scope,
        scope_id=new.scope_id,
        channel=new.channel,
        target=target,
        fmt=new.format,
        language=new.language,
        secret=new.secret,
        description=new.description,
        created_by=created_by,
        now=now,
        secrets=secrets,
    )


async def unsubscribe(session: AsyncSession, subscription_id: uuid.UUID, *, now: datetime) -> None:
    """Retire a subscription (what it still had to send is cancelled, its log stays)."""
    if not await repository.delete_subscription(session, subscription_id, now=now):
        raise SubscriptionNotFound(f"No subscription {subscription_id}.")
