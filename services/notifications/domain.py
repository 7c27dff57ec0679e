"""Pure decisions of the notifications service: who must be told what, when to remind, how to say it.

No I/O here: events and time come in as values, notices, reminder plans and messages go out.
"""

from __future__ import annotations

import functools
import html
import ipaddress
import json
import random
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from shared import events as ev

Scope = Literal["department", "escalation", "contact"]
Channel = Literal["webhook", "email"]
Format = Literal["json", "wecom", "dingtalk"]
Language = Literal["zh", "en"]
ReminderKind = Literal["receipt", "rectification"]

CHANNELS: tuple[str, ...] = ("webhook", "email")
TRIGGERS: tuple[str, ...] = (
    "dispatched",
    "receipt_due_soon",
    "receipt_overdue",
    "escalated",
    "rectification_ordered",
    "rectification_due_soon",
    "rectification_overdue",
    "rework",
    "relapsed",
    "urged",
    "extension_decided",
)

# The event types this service reads: triggers, and what settles a pending reminder.
INTERESTED: frozenset[str] = frozenset(
    {
        ev.HazardDispatched.TYPE,
        ev.HazardAcknowledged.TYPE,
        ev.HazardReturned.TYPE,
        ev.HazardReceiptOverdue.TYPE,
        ev.HazardEscalated.TYPE,
        ev.HazardRectificationOrdered.TYPE,
        ev.HazardRectified.TYPE,
        ev.HazardRectificationOverdue.TYPE,
        ev.HazardClosed.TYPE,
        ev.HazardRelapsed.TYPE,
        ev.HazardUrged.TYPE,
        ev.HazardExtensionDecided.TYPE,
    }
)

# A namespace for the ids of reminders (uuid5 of the event they came from and their fraction).
_REMINDER_NS = uuid.UUID("6d1f7a52-9a56-4c53-9d0c-3f1b8f3c2a71")


@dataclass(frozen=True, slots=True)
class Audience:
    """Whose subscriptions receive a notice: a department's, an escalation target's contacts, or a
    department's escalation contacts as administered (scope ``contact``, ``scope_id`` the department)."""

    scope: Scope
    scope_id: str


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing to tell an audience; ``source_id`` (an event or reminder id) keys its deliveries."""

    source_id: uuid.UUID
    trigger: str
    hazard_id: uuid.UUID
    department_id: str
    audience: Audience
    occurred_at: datetime
    facts: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """What a delivery row stores (and a webhook receives, with the subscription's fields)."""
        return {
            "notification_id": str(self.source_id),
            "trigger": self.trigger,
            "hazard_id": str(self.hazard_id),
            "department_id": self.department_id,
            "audience": {"scope": self.audience.scope, "id": self.audience.scope_id},
            "occurred_at": self.occurred_at.isoformat(),
            "facts": self.facts,
        }


@dataclass(frozen=True, slots=True)
class Reminder:
    """A reminder (催办) due at a fraction of a deadline window, unless the department acts first."""

    reminder_id: uuid.UUID
    hazard_id: uuid.UUID
    kind: ReminderKind
    department_id: str
    fraction: float
    deadline: datetime
    due_at: datetime


@dataclass
class Plan:
    """What a batch of events asks for: notices, reminders to write, pending reminders to cancel."""

    notices: list[Notice] = field(default_factory=list)
    reminders: list[Reminder] = field(default_factory=list)
    cancel: set[tuple[uuid.UUID, ReminderKind]] = field(default_factory=set)


def _department(department_id: str) -> Audience:
    return Audience("department", department_id)


def _notice(event: ev.AnyEvent, trigger: str, department_id: str, audience: Audience, **facts: Any) -> Notice:
    return Notice(
        source_id=event.event_id,
        trigger=trigger,
        hazard_id=event.hazard_id,
        department_id=department_id,
        audience=audience,
        occurred_at=event.occurred_at,
        facts={"event_type": event.TYPE, **facts},
    )


def notices_for(event: ev.AnyEvent, *, escalation_targets: Sequence[str] = ()) -> list[Notice]:
    """The notices one lifecycle event calls for (none for most).

    ``escalation_targets``: the escalation chain's targets besides the department itself, whose
    contacts an urging (督办) reaches too.
    """
    match event:
        case ev.HazardUrged(payload=p):
            facts = {
                "stage": p.stage,
                "note": p.note,
                "urged_by": p.urged_by,
                **({"dispatch_id": str(p.dispatch_id)} if p.dispatch_id else {}),
            }
            audiences = [
                _department(p.department_id),
                *(Audience("escalation", target) for target in dict.fromkeys(escalation_targets)),
                Audience("contact", p.department_id),
            ]
            return [_notice(event, "urged", p.department_id, audience, **facts) for audience in audiences]
        case ev.HazardExtensionDecided(payload=p):
            return [
                _notice(
                    event,
                    "extension_decided",
                    p.department_id,
                    _department(p.department_id),
                    stage=p.stage,
                    approved=p.approved,
                    deadline=p.deadline.isoformat(),
                    original_deadline=p.original_deadline.isoformat(),
                    requested_deadline=p.requested_deadline.isoformat(),
                    decided_by=p.by,
                    note=p.note,
                    **({"dispatch_id": str(p.dispatch_id)} if p.dispatch_id else {}),
                )
            ]
        case ev.HazardDispatched(payload=p):
            return [
                _notice(
                    event,
                    "dispatched",
                    p.department_id,
                    _department(p.department_id),
                    dispatch_id=str(p.dispatch_id),
                    receipt_deadline=p.receipt_deadline.isoformat(),
                    reason=p.reason,
                )
            ]
        case ev.HazardReceiptOverdue(payload=p):
            return [
                _notice(
                    event,
                    "receipt_overdue",
                    p.department_id,
                    _department(p.department_id),
                    dispatch_id=str(p.dispatch_id),
                    receipt_deadline=p.receipt_deadline.isoformat(),
                )
            ]
        case ev.HazardEscalated(payload=p):
            audience = (
                _department(p.department_id) if p.target == "department" else Audience("escalation", p.target)
            )
            # The level's target's subscribers, and the department's administered escalation contacts
            # (those of them named for this level: the service picks them by the fact ``level``).
            return [
                _notice(
                    event,
                    "escalated",
                    p.department_id,
                    each,
                    dispatch_id=str(p.dispatch_id),
                    level=p.level,
                    target=p.target,
                    receipt_deadline=p.receipt_deadline.isoformat(),
                )
                for each in (audience, Audience("contact", p.department_id))
            ]
        case ev.HazardRectificationOrdered(payload=p):
            # A later round is ordered only when a verification failed: rework.
            trigger = "rectification_ordered" if p.round == 1 else "rework"
            return [
                _notice(
                    event,
                    trigger,
                    p.department_id,
                    _department(p.department_id),
                    deadline=p.deadline.isoformat(),
                    round=p.round,
                )
            ]
        case ev.HazardRectificationOverdue(payload=p):
            return [
                _notice(
                    event,
                    "rectification_overdue",
                    p.department_id,
                    _department(p.department_id),
                    deadline=p.deadline.isoformat(),
                    round=p.round,
                )
            ]
        case ev.HazardRelapsed(payload=p) if p.original_department_id is not None:
            return [
                _notice(
                    event,
                    "relapsed",
                    p.original_department_id,
                    _department(p.original_department_id),
                    original_hazard_id=str(p.original_hazard_id),
                    days_since_closure=round(p.days_since_closure, 1),
                    same_building=p.same_building,
                )
            ]
    return []


def reminder_plan(
    *,
    source_id: uuid.UUID,
    hazard_id: uuid.UUID,
    kind: ReminderKind,
    department_id: str,
    start: datetime,
    deadline: datetime,
    fractions: Sequence[float],
    now: datetime,
) -> list[Reminder]:
    """Reminders at each fraction of the window from ``start`` to ``deadline`` (none once it has passed)."""
    if deadline <= now or deadline <= start:
        return []
    window = deadline - start
    return [
        Reminder(
            reminder_id=uuid.uuid5(_REMINDER_NS, f"{source_id}:{fraction}"),
            hazard_id=hazard_id,
            kind=kind,
            department_id=department_id,
            fraction=fraction,
            deadline=deadline,
            due_at=start + window * fraction,
        )
        for fraction in sorted(set(fractions))
    ]


# Events after which a pending reminder of that kind no longer has a reason to be sent.
_SETTLES: dict[str, ReminderKind] = {
    ev.HazardDispatched.TYPE: "receipt",  # a reassignment: the previous dispatch's reminders go
    ev.HazardAcknowledged.TYPE: "receipt",
    ev.HazardReturned.TYPE: "receipt",
    ev.HazardReceiptOverdue.TYPE: "receipt",
    ev.HazardRectificationOrdered.TYPE: "rectification",  # a new round replaces the last
    ev.HazardRectified.TYPE: "rectification",
    ev.HazardRectificationOverdue.TYPE: "rectification",
}


def plan_batch(
    events: Iterable[ev.AnyEvent],
    *,
    fractions: Sequence[float],
    now: datetime,
    escalation_targets: Sequence[str] = (),
) -> Plan:
    """Fold a batch of events, in order, into notices, reminders to write and reminders to cancel.

    ``cancel`` names (hazard, kind) pairs whose reminders written *before* this batch are cancelled;
    reminders planned and settled within the batch are simply not written.
    """
    plan = Plan()
    # Reminders planned in this batch, by (hazard, kind): settling one is a lookup, not a scan.
    pending: dict[tuple[uuid.UUID, ReminderKind], dict[uuid.UUID, Reminder]] = {}
    for event in events:
        plan.notices.extend(notices_for(event, escalation_targets=escalation_targets))
        settles = _SETTLES.get(event.TYPE)
        if isinstance(event, ev.HazardExtensionDecided) and event.payload.approved:
            # The deadline moved: the reminders of the old window go, new ones follow the new deadline.
            settles = event.payload.stage
        if isinstance(event, ev.HazardClosed):
            settles_kinds: tuple[ReminderKind, ...] = ("receipt", "rectification")
        else:
            settles_kinds = (settles,) if settles is not None else ()
        for kind in settles_kinds:
            plan.cancel.add((event.hazard_id, kind))
            pending.pop((event.hazard_id, kind), None)
        window: tuple[ReminderKind, str, datetime] | None
        match event:
            case ev.HazardDispatched(payload=p):
                window = ("receipt", p.department_id, p.receipt_deadline)
            case ev.HazardRectificationOrdered(payload=p):
                window = ("rectification", p.department_id, p.deadline)
            case ev.HazardExtensionDecided(payload=p) if p.approved:
                window = (p.stage, p.department_id, p.deadline)
            case _:
                window = None
        if window is not None:
            kind, department_id, deadline = window
            found = reminder_plan(
                source_id=event.event_id,
                hazard_id=event.hazard_id,
                kind=kind,
                department_id=department_id,
                start=event.occurred_at,
                deadline=deadline,
                fractions=fractions,
                now=now,
            )
            planned = pending.setdefault((event.hazard_id, kind), {})
            planned.update((r.reminder_id, r) for r in found)
    plan.reminders = [r for planned in pending.values() for r in planned.values()]
    return plan


def reminder_notice(reminder: Reminder) -> Notice:
    """The notice a reminder sends when it comes due."""
    return Notice(
        source_id=reminder.reminder_id,
        trigger=f"{reminder.kind}_due_soon",
        hazard_id=reminder.hazard_id,
        department_id=reminder.department_id,
        audience=_department(reminder.department_id),
        occurred_at=reminder.due_at,
        facts={"deadline": reminder.deadline.isoformat(), "fraction": reminder.fraction},
    )


# ---------------------------------------------------------------- administered escalation contacts

_CONTACT_NS = uuid.UUID("0f6a3a8e-7c0b-4f7e-9a53-5d2f8e1c4b90")


@dataclass(frozen=True, slots=True)
class Contact:
    """A department's escalation contact as administered (#18), reachable by e-mail."""

    department_id: str
    name: str
    email: str
    # The escalation levels at which the contact is told; None: every level.
    levels: tuple[int, ...] | None = None

    @property
    def subscription_id(self) -> uuid.UUID:
        """The id of its subscription row: the same for the same department and address, whoever writes it."""
        return uuid.uuid5(_CONTACT_NS, f"{self.department_id}:{self.email.lower()}")

    def told_at(self, level: int | None) -> bool:
        """Whether a notice (an escalation to ``level``, or None: an urging) reaches this contact."""
        return level is None or self.levels is None or level in self.levels


def contacts_from_admin(department_id: str, raw: Iterable[Any]) -> list[Contact]:
    """A department's administered contacts that can be told (an acceptable e-mail address), one per address.

    ``raw``: ``admin.departments.contacts`` (``[{name, phone?, email?, levels?}]``). A contact with a
    phone alone is left out: this service has no telephone or SMS channel.
    """
    found: dict[str, Contact] = {}
    for item in raw:
        if not isinstance(item, dict) or not item.get("email"):
            continue
        try:
            email = check_email_address(str(item["email"]))
        except InvalidSubscription:
            continue
        levels = item.get("levels")
        found.setdefault(
            email.lower(),
            Contact(
                department_id=department_id,
                name=str(item.get("name") or ""),
                email=email,
                levels=None if levels is None else tuple(sorted({int(x) for x in levels})),
            ),
        )
    return list(found.values())


def contact_level(notice: Notice) -> int | None:
    """The escalation level a notice to contacts is about (None for an urging: every contact)."""
    level = notice.facts.get("level") if notice.trigger == "escalated" else None
    return int(level) if level is not None else None


# ---------------------------------------------------------------- the delivery record (hazard.notified)

_NOTIFIED_NS = uuid.UUID("b3c4f2e0-51a7-4d1e-9f55-2f0f0c6b8e19")


def recipient_shown(channel: str, target: str) -> str:
    """What the timeline says of a recipient: a webhook's host (never its path, query or key), an address masked."""
    if channel == "webhook":
        parts = urlsplit(target)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    local, _, domain_part = target.rpartition("@")
    return f"{local[:1]}***@{domain_part}" if local else "***"


def error_kind(error: str | None) -> str | None:
    """A failure's kind for the timeline: ``HTTP 503``, an exception's name, never the receiver's words."""
    if not error:
        return None
    if error.startswith("HTTP "):
        return error[:8]
    if error.startswith("no answer within"):
        return "timeout"
    if error.startswith("circuit open"):
        # Held by the sender's breaker past the retry window, not attempted: the target's last failure.
        last = error.partition("last error: ")[2]
        return error_kind(last) if last and not last.startswith("circuit open") else "circuit open"
    head = error.split(":", 1)[0].strip()
    return head[:60] if head.isidentifier() else "error"


def notified_event(
    *,
    notice: dict[str, Any],
    source_id: uuid.UUID,
    subscription_id: uuid.UUID,
    channel: str,
    target: str,
    status: str,
    attempts: int,
    error: str | None,
    at: datetime,
) -> ev.HazardNotified:
    """The record of one delivery's outcome (sent or failed for good), for the hazard's timeline.

    Its id is derived from (notice, subscription): the same delivery is recorded once, whoever
    sends it and however often the event that caused it is replayed.
    """
    audience = notice.get("audience") or {}
    return ev.HazardNotified(
        event_id=uuid.uuid5(_NOTIFIED_NS, f"{source_id}:{subscription_id}"),
        occurred_at=at,
        hazard_id=uuid.UUID(str(notice["hazard_id"])),
        producer="notifications",
        causation_id=source_id,
        payload=ev.HazardNotifiedPayload(
            source_id=source_id,
            trigger=str(notice["trigger"]),
            department_id=str(notice["department_id"]),
            # An administered contact is told as one of its department's escalation contacts.
            audience_scope="escalation"
            if audience.get("scope") in ("escalation", "contact")
            else "department",
            audience_id=str(audience.get("id") or notice["department_id"]),
            subscription_id=subscription_id,
            channel="email" if channel == "email" else "webhook",
            recipient=recipient_shown(channel, target),
            result="delivered" if status == "sent" else "failed",
            attempts=max(1, attempts),
            error=None if status == "sent" else error_kind(error),
        ),
    )


# ---------------------------------------------------------------- retries


def retry_delay_s(attempts: int, *, base_s: float, max_s: float, rand: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [base/2, min(max, base * 2**(attempts-1))]."""
    ceiling = min(max_s, base_s * 2 ** min(max(attempts, 1) - 1, 30))
    floor = min(base_s / 2, ceiling)
    return (rand or random).uniform(floor, ceiling)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt to deliver came to."""

    ok: bool
    error: str | None = None
    # False: retrying cannot help (the receiver refused the request itself).
    retryable: bool = True


def after_attempt(
    outcome: Outcome,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    base_s: float,
    max_s: float,
    retry_for_s: float,
    rand: random.Random | None = None,
) -> tuple[str, datetime | None]:
    """The delivery's next status and, when retrying, when to try again."""
    if outcome.ok:
        return "sent", None
    if not outcome.retryable:
        return "failed", None
    delay = retry_delay_s(attempts, base_s=base_s, max_s=max_s, rand=rand)
    next_at = now + timedelta(seconds=delay)
    if (next_at - created_at).total_seconds() > retry_for_s:
        return "failed", None
    return "retrying", next_at


# ---------------------------------------------------------------- subscription input


class InvalidSubscription(ValueError):  # noqa: N818 - reads as what is wrong
    """A subscription that cannot be stored; ``field`` names what was wrong."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


def check_webhook_url(url: str) -> tuple[str, int]:
    """The host and port of an acceptable webhook URL (http or https, a host, no credentials)."""
    checked = _checked_webhook_url(url)
    if isinstance(checked, str):
        raise InvalidSubscription("url", checked)
    return checked


_SPACE = re.compile(r"\s")


@functools.lru_cache(maxsize=4096)
def _checked_webhook_url(url: str) -> tuple[str, int] | str:
    # Checked again before every send (a subscription's URL is a few strings used thousands of
    # times): parsing and the per-character space test were 0.2 ms of the sender's CPU per delivery.
    # The answer depends on the string alone; a refusal is cached as its reason.
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return "a webhook URL must start with http:// or https://"
    if not parts.hostname:
        return "a webhook URL needs a host"
    if parts.username or parts.password:
        return "credentials in the URL are not accepted; use the signing secret"
    if _SPACE.search(url):
        return "a URL has no spaces"
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def is_public_address(address: str) -> bool:
    """Whether an IP address is a public, unicast one (not loopback, private, link-local, reserved...)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_email_address(address: str) -> str:
    """An acceptable e-mail address (local@domain, no spaces, no display name), as given."""
    local, at, domain = address.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or "." not in domain.strip(".")
        or any(c.isspace() or c in '<>,;"()[]\\' for c in address)
        or len(address) > 254
        or domain.startswith(".")
        or domain.endswith(".")
    ):
        raise InvalidSubscription("address", "not an e-mail address (expected name@example.org)")
    return address


# ---------------------------------------------------------------- rendering

_TITLES: dict[str, dict[Language, str]] = {
    "dispatched": {"zh": "派单：新的隐患需要您接收", "en": "Dispatched: a new hazard for you to acknowledge"},
    "receipt_due_soon": {"zh": "催办：隐患接收期限将至", "en": "Reminder: the receipt deadline is near"},
    "receipt_overdue": {
        "zh": "超时：隐患未按期接收",
        "en": "Overdue: the hazard was not acknowledged in time",
    },
    "escalated": {"zh": "督办：隐患超时未接收已升级", "en": "Escalated: an overdue hazard reached you"},
    "rectification_ordered": {"zh": "整改通知：请按期整改", "en": "Rectification ordered"},
    "rectification_due_soon": {
        "zh": "催办：整改期限将至",
        "en": "Reminder: the rectification deadline is near",
    },
    "rectification_overdue": {"zh": "超时：整改未按期完成", "en": "Overdue: rectification not done in time"},
    "rework": {"zh": "复查未通过：请重新整改", "en": "Verification failed: rectify again"},
    "relapsed": {"zh": "回潮：已办结的隐患再次出现", "en": "Relapse: a closed hazard came back"},
    "urged": {"zh": "督办：请尽快办理该隐患", "en": "Urged: act on this hazard now"},
    "extension_decided": {"zh": "延期申请已处理", "en": "Your deadline extension request was decided"},
}

_FACT_LABELS: dict[str, dict[Language, str]] = {
    "receipt_deadline": {"zh": "接收期限", "en": "Receipt deadline"},
    "deadline": {"zh": "期限", "en": "Deadline"},
    "level": {"zh": "督办级别", "en": "Escalation level"},
    "target": {"zh": "督办对象", "en": "Escalated to"},
    "round": {"zh": "整改轮次", "en": "Round"},
    "original_hazard_id": {"zh": "原隐患", "en": "Original hazard"},
    "days_since_closure": {"zh": "办结后天数", "en": "Days since closure"},
    "reason": {"zh": "派单原因", "en": "Reason"},
    "stage": {"zh": "环节", "en": "Stage"},
    "approved": {"zh": "是否批准", "en": "Approved"},
    "original_deadline": {"zh": "原期限", "en": "Original deadline"},
    "requested_deadline": {"zh": "申请期限", "en": "Requested deadline"},
    "decided_by": {"zh": "审批人", "en": "Decided by"},
    "urged_by": {"zh": "督办人", "en": "Urged by"},
    "note": {"zh": "说明", "en": "Note"},
}


_FACT_VALUES: dict[tuple[str, str], dict[Language, str]] = {
    ("approved", "True"): {"zh": "批准", "en": "approved"},
    ("approved", "False"): {"zh": "不批准", "en": "refused"},
    ("stage", "receipt"): {"zh": "接收", "en": "receipt"},
    ("stage", "rectification"): {"zh": "整改", "en": "rectification"},
}


@dataclass(frozen=True, slots=True)
class Message:
    """A notice as one subscription receives it."""

    subject: str
    text: str
    html: str
    body: dict[str, Any]

    def body_bytes(self) -> bytes:
        """The webhook body exactly as signed and sent."""
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


def render(
    notice: dict[str, Any],
    *,
    language: Language,
    department_name: str,
    subscription_id: uuid.UUID,
    fmt: Format = "json",
) -> Message:
    """A stored notice in the subscription's language and webhook format (plain text, HTML and JSON)."""
    trigger = str(notice["trigger"])
    title = _TITLES.get(trigger, {"zh": trigger, "en": trigger})[language]
    hazard_label = "隐患" if language == "zh" else "Hazard"
    department_label = "部门" if language == "zh" else "Department"
    lines = [(hazard_label, str(notice["hazard_id"])), (department_label, department_name)]
    facts: dict[str, Any] = notice.get("facts", {})
    for key, labels in _FACT_LABELS.items():
        if key in facts and facts[key] != "":
            value = _FACT_VALUES.get((key, str(facts[key])), {}).get(language, str(facts[key]))
            lines.append((labels[language], value))
    subject = f"[{'隐患督办' if language == 'zh' else 'hazard-dispatch'}] {title}"
    text = "\n".join([title, "", *(f"{k}: {v}" for k, v in lines)]) + "\n"
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in lines)
    body_html = (
        f'<html><body><h2>{html.escape(title)}</h2><table border="0" cellpadding="4">{rows}</table>'
        "</body></html>"
    )
    if fmt == "wecom":
        body: dict[str, Any] = {"msgtype": "text", "text": {"content": text}}
    elif fmt == "dingtalk":
        markdown = "\n\n".join([f"#### {title}", *(f"- **{k}**: {v}" for k, v in lines)])
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": markdown}}
    else:
        body = {**notice, "subscription_id": str(subscription_id), "title": title, "language": language}
    return Message(subject=subject, text=text, html=body_html, body=body)
