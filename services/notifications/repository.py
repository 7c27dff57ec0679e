"""Queries of the notifications schema, behind :class:`NotificationsRepository` bound to one session.

The caller (a unit of work, :mod:`shared.uow`, or the sender's own transactions) owns the
transaction. The batch writes are one ``unnest`` statement per batch (prepared once).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications import domain
from services.notifications.tables import deliveries, reminders, subscriptions
from shared.db import array_param
from shared.idle import wake_on_commit

# Commits that add deliveries or reminders wake this process's sender and reminder loop (shared.idle).
DELIVERIES_WAKE = "notifications.deliveries"
# The same, heard by sender-only processes (NOTIFICATIONS__CONSUME=false, #16): a commit that adds
# deliveries notifies this channel (at commit, once per transaction whatever the number of calls).
DELIVERIES_CHANNEL = "hazard_notifications_deliveries"
_NOTIFY_DELIVERIES = sa.text(f"SELECT pg_notify('{DELIVERIES_CHANNEL}', '')")
REMINDERS_WAKE = "notifications.reminders"

s = subscriptions.c
d = deliveries.c
r = reminders.c


# ---------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class Subscription:
    """A subscription as stored (the secret stays encrypted)."""

    subscription_id: uuid.UUID
    scope: str
    scope_id: str
    channel: str
    target: str
    format: str
    language: str
    secret_encrypted: bytes | None
    description: str
    created_by: str
    created_at: datetime
    deleted_at: datetime | None


def _subscription(row: Any) -> Subscription:
    return Subscription(**{c.name: getattr(row, c.name) for c in subscriptions.columns})


# ---------------------------------------------------------------- administered escalation contacts

_ADMIN_PRESENT = sa.text("select to_regclass('admin.departments') is not null")
_ADMIN_CONTACTS = sa.text(
    "select id, contacts, deleted_at from admin.departments where id = any(:ids)"
).bindparams(sa.bindparam("ids", type_=pg.ARRAY(sa.Text)))


# ---------------------------------------------------------------- deliveries


# One statement whatever the number of rows (arrays, unnested): the same SQL every time, so it is
# prepared once; a multi-row VALUES list was compiled anew for each batch (a third of the CPU).
_ADD_DELIVERIES = sa.text(
    """
    insert into notifications.deliveries
        (event_id, subscription_id, hazard_id, department_id, trigger, channel, target, notice,
         status, next_attempt_at, event_at, created_at)
    select e, s, h, dep, trg, ch, tgt, n, 'pending', :now, ev_at, :now
    from unnest(:event_ids, :subscription_ids, :hazard_ids, :departments, :triggers, :channels,
                :targets, :notices, :event_ats) as x(e, s, h, dep, trg, ch, tgt, n, ev_at)
    on conflict on constraint deliveries_once_per_subscription do nothing
    returning delivery_id
    """
).bindparams(
    sa.bindparam("now", type_=sa.DateTime(timezone=True)),
    sa.bindparam("event_ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))),
    sa.bindparam("subscription_ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))),
    sa.bindparam("hazard_ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))),
    sa.bindparam("departments", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("triggers", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("channels", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("targets", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("notices", type_=pg.ARRAY(pg.JSONB)),
    sa.bindparam("event_ats", type_=pg.ARRAY(sa.DateTime(timezone=True))),
)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery leased to this process, with what sending it needs."""

    delivery_id: int
    event_id: uuid.UUID
    subscription: Subscription
    notice: dict[str, Any]
    channel: str
    target: str
    attempts: int
    event_at: datetime
    created_at: datetime
    last_error: str | None = None


# Each target's earliest due deliveries (at most ``take`` of each), the busy targets left out: a
# target with a long backlog (a receiver back from an outage) is not scanned past by the others,
# and every target gets its share of each claim.
_CLAIM_SCAN = sa.text(
    """
    select x.delivery_id, x.target
    from (
        select distinct target from notifications.subscriptions
        where deleted_at is null and target <> all(:busy)
    ) t
    cross join lateral (
        select d.delivery_id, d.target, d.next_attempt_at
        from notifications.deliveries d
        where d.target = t.target and d.status in ('pending', 'retrying') and d.next_attempt_at <= :now
        order by d.next_attempt_at
        limit :take
        for update of d skip locked
    ) x
    order by x.next_attempt_at
    """
).bindparams(
    sa.bindparam("busy", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("now", type_=sa.DateTime(timezone=True)),
    sa.bindparam("take", type_=sa.Integer),
)


@dataclass(frozen=True)
class Attempted:
    """What one attempt came to, to be recorded."""

    delivery_id: int
    status: str
    next_attempt_at: datetime | None
    error: str | None
    now: datetime


_RECORD = sa.text(
    """
    update notifications.deliveries d
    set status = x.st, last_error = x.err, sent_at = coalesce(x.sent, d.sent_at),
        next_attempt_at = coalesce(x.nxt, d.next_attempt_at), leased_until = null
    from unnest(:ids, :statuses, :errors, :sents, :nexts) as x(id, st, err, sent, nxt)
    where d.delivery_id = x.id and d.status in ('pending', 'retrying')
    returning d.delivery_id
    """
).bindparams(
    sa.bindparam("ids", type_=pg.ARRAY(sa.BigInteger)),
    sa.bindparam("statuses", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("errors", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("sents", type_=pg.ARRAY(sa.DateTime(timezone=True))),
    sa.bindparam("nexts", type_=pg.ARRAY(sa.DateTime(timezone=True))),
)


# ---------------------------------------------------------------- reminders


_ADD_REMINDERS = sa.text(
    """
    insert into notifications.reminders
        (reminder_id, hazard_id, kind, department_id, fraction, deadline, due_at, status)
    select i, h, k, dep, f, dl, due, 'pending'
    from unnest(:ids, :hazard_ids, :kinds, :departments, :fractions, :deadlines, :dues)
        as x(i, h, k, dep, f, dl, due)
    on conflict do nothing
    """
).bindparams(
    sa.bindparam("ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))),
    sa.bindparam("hazard_ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))),
    sa.bindparam("kinds", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("departments", type_=pg.ARRAY(sa.Text)),
    sa.bindparam("fractions", type_=pg.ARRAY(sa.Float)),
    sa.bindparam("deadlines", type_=pg.ARRAY(sa.DateTime(timezone=True))),
    sa.bindparam("dues", type_=pg.ARRAY(sa.DateTime(timezone=True))),
)


# One statement whatever the number of pairs (arrays, unnested, joined through ``reminders_hazard``):
# prepared once, planned in constant time. A ``(hazard_id, kind) IN ((..), (..), ...)`` list was planned
# anew for each batch as an OR of one index probe per pair, and the planner's cost for that grows with
# the square of the list (a batch of 1,000 events: about 0.5 s of planning on the shared machine, 2,000:
# seconds): a consumer that fell behind got bigger batches, each slower than the last.
_CANCEL_REMINDERS = sa.text(
    """
    update notifications.reminders r
    set status = 'cancelled', settled_at = :now
    from (select distinct h, k from unnest(:hazard_ids, :kinds) as x(h, k)) x
    where r.hazard_id = x.h and r.kind = x.k and r.status = 'pending'
    """
).bindparams(
    sa.bindparam("now", type_=sa.DateTime(timezone=True)),
    sa.bindparam("hazard_ids", type_=pg.ARRAY(pg.UUID(as_uuid=True))),
    sa.bindparam("kinds", type_=pg.ARRAY(sa.Text)),
)


class NotificationsRepository:
    """The notifications schema, bound to one session; the caller (a unit of work) owns the transaction."""

    def __init__(self, session: AsyncSession, *, announce: bool = True) -> None:
        self.session = session
        # Whether a commit adding deliveries notifies DELIVERIES_CHANNEL: for senders in other
        # processes; a process that sends itself is woken by its own commit and skips the statement.
        self.announce = announce

    async def add_subscription(self, values: dict[str, Any]) -> None:
        """Insert a subscription."""
        await self.session.execute(sa.insert(subscriptions).values(**values))

    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        """A live (not deleted) subscription, or None."""
        row = (
            await self.session.execute(
                sa.select(subscriptions).where(s.subscription_id == subscription_id, s.deleted_at.is_(None))
            )
        ).one_or_none()
        return _subscription(row) if row is not None else None

    async def list_subscriptions(
        self, *, scope: str | None = None, scope_id: str | None = None
    ) -> list[Subscription]:
        """Live subscriptions, oldest first, optionally of one scope."""
        # The administered contacts' rows (scope "contact") are written from the admin table and shown there.
        query = (
            sa.select(subscriptions)
            .where(s.deleted_at.is_(None), s.scope != "contact")
            .order_by(s.created_at, s.subscription_id)
        )
        if scope is not None:
            query = query.where(s.scope == scope)
        if scope_id is not None:
            query = query.where(s.scope_id == scope_id)
        return [_subscription(row) for row in await self.session.execute(query)]

    async def delete_subscription(self, subscription_id: uuid.UUID, *, now: datetime) -> bool:
        """Retire a subscription and cancel what it still had to send; False when there was none."""
        deleted = await self.session.execute(
            sa.update(subscriptions)
            .where(s.subscription_id == subscription_id, s.deleted_at.is_(None))
            .values(deleted_at=now)
            .returning(s.subscription_id)
        )
        if deleted.scalar_one_or_none() is None:
            return False
        await self.session.execute(
            sa.update(deliveries)
            .where(d.subscription_id == subscription_id, d.status.in_(("pending", "retrying")))
            .values(status="cancelled", last_error="subscription deleted")
        )
        return True

    async def subscriptions_for(
        self, audiences: Iterable[domain.Audience]
    ) -> dict[domain.Audience, list[Subscription]]:
        """Live subscriptions of each audience."""
        wanted = set(audiences)
        if not wanted:
            return {}
        condition = sa.tuple_(s.scope, s.scope_id).in_([(a.scope, a.scope_id) for a in wanted])
        rows = await self.session.execute(sa.select(subscriptions).where(condition, s.deleted_at.is_(None)))
        found: dict[domain.Audience, list[Subscription]] = {a: [] for a in wanted}
        for row in rows:
            found[domain.Audience(row.scope, row.scope_id)].append(_subscription(row))
        return found

    async def administered_contacts(self, department_ids: Iterable[str]) -> dict[str, list[Any]]:
        """``admin.departments.contacts`` of these departments, read in the caller's transaction.

        A department with no administered row (only in the files) or deleted has none; so has every
        department of a database without the admin schema (a service migrated alone).
        """
        wanted = sorted(set(department_ids))
        found: dict[str, list[Any]] = {key: [] for key in wanted}
        if not wanted or not (await self.session.execute(_ADMIN_PRESENT)).scalar_one():
            return found
        for row in await self.session.execute(_ADMIN_CONTACTS, {"ids": wanted}):
            if row.deleted_at is None and isinstance(row.contacts, list):
                found[row.id] = list(row.contacts)
        return found

    async def sync_contact_subscriptions(
        self, department_id: str, contacts: Sequence[domain.Contact], *, now: datetime
    ) -> dict[uuid.UUID, Subscription]:
        """Make the department's ``contact`` subscriptions what the administration says; returns them by id.

        One row per (department, address), id derived from both: written again (undeleted) when a
        contact comes back, retired (its pending deliveries cancelled) when it is no longer administered.
        Rows are only written when something changed.
        """
        keep = sorted(c.subscription_id for c in contacts)
        for contact in sorted(contacts, key=lambda c: c.subscription_id):
            insert = pg.insert(subscriptions).values(
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
                created_at=now,
                deleted_at=None,
            )
            await self.session.execute(
                insert.on_conflict_do_update(
                    index_elements=[s.subscription_id],
                    set_={
                        "target": insert.excluded.target,
                        "description": insert.excluded.description,
                        "deleted_at": None,
                    },
                    where=sa.or_(
                        s.deleted_at.is_not(None),
                        s.target != insert.excluded.target,
                        s.description != insert.excluded.description,
                    ),
                )
            )
        retired = (
            (
                await self.session.execute(
                    sa.update(subscriptions)
                    .where(
                        s.scope == "contact",
                        s.scope_id == department_id,
                        s.deleted_at.is_(None),
                        s.subscription_id.not_in(keep) if keep else sa.true(),
                    )
                    .values(deleted_at=now)
                    .returning(s.subscription_id)
                )
            )
            .scalars()
            .all()
        )
        if retired:
            await self.session.execute(
                sa.update(deliveries)
                .where(d.subscription_id.in_(list(retired)), d.status.in_(("pending", "retrying")))
                .values(status="cancelled", last_error="escalation contact no longer administered")
            )
        if not keep:
            return {}
        rows = await self.session.execute(sa.select(subscriptions).where(s.subscription_id.in_(keep)))
        return {row.subscription_id: _subscription(row) for row in rows}

    async def add_deliveries(self, rows: Sequence[dict[str, Any]], *, now: datetime) -> int:
        """Insert pending deliveries, due ``now``; one already there for the same (event, subscription) is left alone.

        Each row: event_id, subscription_id, hazard_id, department_id, trigger, channel, target,
        notice (JSON), event_at.
        """
        if not rows:
            return 0
        wake_on_commit(self.session, DELIVERIES_WAKE)
        if self.announce:
            await self.session.execute(_NOTIFY_DELIVERIES)
        inserted = await self.session.execute(
            _ADD_DELIVERIES,
            {
                "now": now,
                "event_ids": [r["event_id"] for r in rows],
                "subscription_ids": [r["subscription_id"] for r in rows],
                "hazard_ids": [r["hazard_id"] for r in rows],
                "departments": [r["department_id"] for r in rows],
                "triggers": [r["trigger"] for r in rows],
                "channels": [r["channel"] for r in rows],
                "targets": [r["target"] for r in rows],
                "notices": [r["notice"] for r in rows],
                "event_ats": [r["event_at"] for r in rows],
            },
        )
        return len(inserted.scalars().all())

    async def claim_deliveries(
        self,
        *,
        now: datetime,
        limit: int,
        per_target: int,
        in_flight: dict[str, int],
        lease_s: float,
        limits: dict[str, int] | None = None,
    ) -> list[Claimed]:
        """Lease up to ``limit`` due deliveries, so that no target has more than ``per_target`` in flight.

        ``limits`` overrides ``per_target`` for some targets: 0 for a target whose circuit is open
        (none of its deliveries is claimed: they wait, due, and their time counts towards the retry
        window), 1 for its probe, more for one draining its backlog after an outage.
        Rows another sender holds are skipped (SKIP LOCKED); a leased row is due again when the lease
        runs out, so a sender that dies mid-send leaves its deliveries to be retried.
        """
        limits = limits or {}

        def cap(target: str) -> int:
            return limits.get(target, per_target)

        busy = sorted(
            {target for target, count in in_flight.items() if count >= cap(target)}
            | {target for target, n in limits.items() if n <= 0}
        )
        take = max([per_target, *limits.values()])
        scanned = await self.session.execute(_CLAIM_SCAN, {"now": now, "busy": busy, "take": take})
        chosen: list[int] = []
        taken: dict[str, int] = {}
        for delivery_id, target in scanned:
            room = cap(target) - in_flight.get(target, 0) - taken.get(target, 0)
            if room > 0 and len(chosen) < limit:
                chosen.append(delivery_id)
                taken[target] = taken.get(target, 0) + 1
        return await self._lease(chosen, now=now, lease_s=lease_s, attempt=True)

    async def _lease(
        self, chosen: Sequence[int], *, now: datetime, lease_s: float, attempt: bool
    ) -> list[Claimed]:
        """Lease the chosen (locked) deliveries; ``attempt``: count one more attempt."""
        if not chosen:
            return []
        until = now + timedelta(seconds=lease_s)
        values: dict[str, Any] = {"next_attempt_at": until, "leased_until": until}
        if attempt:
            values["attempts"] = d.attempts + 1
        leased = await self.session.execute(
            sa.update(deliveries)
            .where(d.delivery_id == sa.any_(array_param("chosen", d.delivery_id, chosen)))
            .values(**values)
            .returning(deliveries)
        )
        rows = leased.all()
        subs = {
            row.subscription_id: _subscription(row)
            for row in await self.session.execute(
                sa.select(subscriptions).where(
                    s.subscription_id
                    == sa.any_(array_param("subs", s.subscription_id, {r.subscription_id for r in rows}))
                )
            )
        }
        return [
            Claimed(
                delivery_id=row.delivery_id,
                event_id=row.event_id,
                subscription=subs[row.subscription_id],
                notice=row.notice,
                channel=row.channel,
                target=row.target,
                attempts=row.attempts,
                event_at=row.event_at,
                created_at=row.created_at,
                last_error=row.last_error,
            )
            for row in sorted(rows, key=lambda x: x.delivery_id)
        ]

    async def claim_expired(
        self,
        targets: Sequence[str],
        *,
        created_before: datetime,
        now: datetime,
        limit: int,
        lease_s: float,
    ) -> list[Claimed]:
        """Lease (without counting an attempt) deliveries of these targets older than the retry window.

        For targets whose circuit is open: their deliveries are not attempted, but one held past
        ``RETRY_FOR_S`` must still fail visibly; the caller records these as ``failed``.
        """
        if not targets or limit <= 0:
            return []
        due = await self.session.execute(
            sa.select(d.delivery_id)
            .where(
                d.target.in_(list(targets)),
                d.status.in_(("pending", "retrying")),
                d.created_at <= created_before,
                sa.or_(d.leased_until.is_(None), d.leased_until <= now),
            )
            .order_by(d.created_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return await self._lease(list(due.scalars().all()), now=now, lease_s=lease_s, attempt=False)

    async def oldest_held(self, targets: Sequence[str]) -> dict[str, datetime]:
        """When the oldest waiting (pending or retrying) delivery of each target was created; none: absent.

        Read once when a target's circuit opens (it has few waiting then), so that the look for
        deliveries past the retry window (``claim_expired``, which reads every held row) is made
        only once one can have aged past it, not every probe interval of a long outage.
        """
        if not targets:
            return {}
        rows = await self.session.execute(
            sa.select(d.target, sa.func.min(d.created_at))
            .where(
                d.target == sa.any_(array_param("targets", d.target, targets)),
                d.status.in_(("pending", "retrying")),
            )
            .group_by(d.target)
        )
        return {str(target): oldest for target, oldest in rows}

    async def release_held(self, targets: Sequence[str], *, now: datetime) -> int:
        """Make the waiting retries of targets that answer again due now; returns how many.

        A receiver back from an outage gets its backlog at once instead of when each delivery's
        backoff (up to ``BACKOFF_MAX_S``) runs out; deliveries a sender holds (leased) are left alone.
        """
        if not targets:
            return 0
        released = await self.session.execute(
            sa.update(deliveries)
            .where(
                d.target.in_(list(targets)),
                d.status == "retrying",
                d.next_attempt_at > now,
                sa.or_(d.leased_until.is_(None), d.leased_until <= now),
            )
            .values(next_attempt_at=now)
        )
        return int(released.rowcount or 0)  # type: ignore[attr-defined]

    async def record_attempts(self, results: Sequence[Attempted]) -> set[int]:
        """Write what several attempts came to in one statement; returns the deliveries it changed.

        A delivery no longer pending or retrying (cancelled, or already recorded by a sender whose
        lease ran out and whose copy was sent again) is left as it is, and not in the answer.
        """
        if not results:
            return set()
        changed = await self.session.execute(
            _RECORD,
            {
                "ids": [r.delivery_id for r in results],
                "statuses": [r.status for r in results],
                "errors": [r.error for r in results],
                "sents": [r.now if r.status == "sent" else None for r in results],
                "nexts": [r.next_attempt_at for r in results],
            },
        )
        return set(changed.scalars().all())

    async def list_deliveries(
        self,
        *,
        department_id: str | None,
        hazard_id: uuid.UUID | None,
        status: str | None,
        before: int | None,
        limit: int,
    ) -> list[Any]:
        """The delivery log, newest first."""
        query = sa.select(deliveries).order_by(d.delivery_id.desc()).limit(limit)
        if department_id is not None:
            query = query.where(d.department_id == department_id)
        if hazard_id is not None:
            query = query.where(d.hazard_id == hazard_id)
        if status is not None:
            query = query.where(d.status == status)
        if before is not None:
            query = query.where(d.delivery_id < before)
        return list((await self.session.execute(query)).all())

    async def count_by_status(self) -> dict[str, int]:
        """Deliveries by status."""
        rows = await self.session.execute(sa.select(d.status, sa.func.count()).group_by(d.status))
        return {str(status): int(count) for status, count in rows.all()}

    async def add_reminders(self, planned: Sequence[domain.Reminder]) -> None:
        """Write planned reminders (the same reminder twice is written once)."""
        if not planned:
            return
        wake_on_commit(self.session, REMINDERS_WAKE)
        await self.session.execute(
            _ADD_REMINDERS,
            {
                "ids": [x.reminder_id for x in planned],
                "hazard_ids": [x.hazard_id for x in planned],
                "kinds": [x.kind for x in planned],
                "departments": [x.department_id for x in planned],
                "fractions": [x.fraction for x in planned],
                "deadlines": [x.deadline for x in planned],
                "dues": [x.due_at for x in planned],
            },
        )

    async def cancel_reminders(self, pairs: Iterable[tuple[uuid.UUID, str]], *, now: datetime) -> None:
        """Cancel the pending reminders of these (hazard, kind) pairs."""
        wanted = sorted(set(pairs))
        if not wanted:
            return
        await self.session.execute(
            _CANCEL_REMINDERS,
            {"now": now, "hazard_ids": [h for h, _ in wanted], "kinds": [k for _, k in wanted]},
        )

    async def seconds_to_next_reminder(self, *, now: datetime) -> float | None:
        """Seconds from ``now`` until the earliest pending reminder falls due (None: there is none)."""
        value = (
            await self.session.execute(
                sa.select(sa.extract("epoch", sa.func.min(r.due_at) - now)).where(r.status == "pending")
            )
        ).scalar()
        return None if value is None else float(value)

    async def claim_due_reminders(self, *, now: datetime, limit: int) -> list[domain.Reminder]:
        """Lock and mark fired up to ``limit`` due reminders (SKIP LOCKED: safe with several replicas)."""
        due = (
            sa.select(r.reminder_id)
            .where(r.status == "pending", r.due_at <= now)
            .order_by(r.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        rows = await self.session.execute(
            sa.update(reminders)
            .where(r.reminder_id.in_(due))
            .values(status="fired", settled_at=now)
            .returning(reminders)
        )
        return [
            domain.Reminder(
                reminder_id=row.reminder_id,
                hazard_id=row.hazard_id,
                kind=row.kind,
                department_id=row.department_id,
                fraction=row.fraction,
                deadline=row.deadline,
                due_at=row.due_at,
            )
            for row in rows
        ]
