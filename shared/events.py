"""The hazard lifecycle event contracts: one envelope, one typed payload per event type.

Every event on the lifecycle topic is one of the classes below, told apart by
``event_type``. ``schema_version`` is part of the contract: a new incompatible
payload gets a new version (and a new class); consumers parse with
:func:`parse_event`, which refuses unknown types and versions.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

ReporterType = Literal["grid_member", "building_manager", "cadre_visit", "hotline", "resident"]
"""Who reports a hazard: 网格员, 楼栋长, 干部走访 (a cadre's visit), 12345 热线 (hotline), 居民 (resident)."""
Producer = Literal["intake", "dispatch", "tracking", "reporting", "notifications", "test"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- payload parts


class Location(_Model):
    """Where a hazard is."""

    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]
    address: Annotated[str, Field(max_length=300)] = ""
    building_id: Annotated[str, Field(max_length=64)] | None = None


class FrozenDeadlineRule(_Model):
    """A deadline rule as it stood when a dispatch or order was made."""

    minutes: Annotated[int, Field(ge=0)]
    working_time: bool


# ---------------------------------------------------------------- payloads


class HazardReportedPayload(_Model):
    report_id: uuid.UUID
    category: str
    description: str
    location: Location
    grid_id: str
    community_id: str
    street_id: str
    reporter_id: str
    observed_at: AwareDatetime
    accepted_at: AwareDatetime
    photos: tuple[str, ...] = ()
    rectified_on_site: bool = False
    campaign_ids: tuple[str, ...] = ()
    urgency: str | None = None
    source: Literal["app", "batch", "open311"] = "app"
    duplicate_of: uuid.UUID | None = None
    # Who reported (#18): the reporter's kind, from the principal (runtime administration); a hotline
    # (12345) operator reports on a resident's behalf. Older events are grid members'.
    reporter_type: ReporterType = "grid_member"
    # A rectification notice (整改通知书) handed out on the spot by the reporter (#18): a notice of
    # its own kind, counted with the departments' orders in "notices issued".
    notice_issued: bool = False


class HazardDuplicateLinkedPayload(_Model):
    original_hazard_id: uuid.UUID
    distance_m: float
    same_building: bool


class HazardDuplicateUnlinkedPayload(_Model):
    """A report linked as a duplicate of a hazard that was closed before the report was observed.

    Intake links a report to an open original; when it learns afterwards that the original had
    been closed before the report was observed, it undoes the link: the report is a hazard of its
    own again, to be dispatched (a possible relapse of the closed original). The routing facts
    travel here because dispatch keeps none of a duplicate.
    """

    original_hazard_id: uuid.UUID
    original_closed_at: AwareDatetime
    observed_at: AwareDatetime
    category: str
    community_id: str
    grid_id: str
    urgency: str | None = None
    reason: Literal["observed_after_original_closed"] = "observed_after_original_closed"


class HazardDispatchedPayload(_Model):
    dispatch_id: uuid.UUID
    department_id: str
    rule_id: str | None
    receipt_deadline: AwareDatetime
    deadline_rule: FrozenDeadlineRule
    reason: Literal["routed", "rerouted", "reassigned"] = "routed"
    previous_dispatch_id: uuid.UUID | None = None
    dispatched_by: str = "system"


class HazardReferredToOperatorsPayload(_Model):
    reason: Literal["no_rule", "all_candidates_returned"]
    excluded_departments: tuple[str, ...] = ()
    previous_dispatch_id: uuid.UUID | None = None


class HazardAcknowledgedPayload(_Model):
    dispatch_id: uuid.UUID
    department_id: str
    acknowledged_at: AwareDatetime
    receipt_deadline: AwareDatetime
    on_time: bool
    acknowledged_by: str


class HazardReturnedPayload(_Model):
    dispatch_id: uuid.UUID
    department_id: str
    reason: str
    returned_by: str
    # A return after the department acknowledged receipt (退单 after 签收); the receipt stays on record.
    after_receipt: bool = False
    acknowledged_at: AwareDatetime | None = None
    approved_by: str | None = None
    """The operator who approved a return after receipt (approval mode), else None."""


class HazardReceiptOverduePayload(_Model):
    dispatch_id: uuid.UUID
    department_id: str
    receipt_deadline: AwareDatetime


class HazardEscalatedPayload(_Model):
    dispatch_id: uuid.UUID
    department_id: str
    level: Annotated[int, Field(ge=1)]
    target: str
    receipt_deadline: AwareDatetime


class HazardRectificationOrderedPayload(_Model):
    department_id: str
    deadline: AwareDatetime
    deadline_rule: FrozenDeadlineRule
    round: Annotated[int, Field(ge=1)] = 1


class HazardRectifiedPayload(_Model):
    department_id: str
    note: str = ""
    photos: tuple[str, ...] = ()
    rectified_by: str
    round: Annotated[int, Field(ge=1)] = 1
    on_site: bool = False


class HazardRectificationOverduePayload(_Model):
    department_id: str
    deadline: AwareDatetime
    round: Annotated[int, Field(ge=1)] = 1


class HazardVerifiedPayload(_Model):
    passed: bool
    note: str = ""
    photos: tuple[str, ...] = ()
    verified_by: str
    round: Annotated[int, Field(ge=1)] = 1


class HazardClosedPayload(_Model):
    reason: Literal["verified", "rectified_on_site"]
    department_id: str | None = None
    closed_by: str


class HazardRelapsedPayload(_Model):
    original_hazard_id: uuid.UUID
    original_department_id: str | None
    original_closed_at: AwareDatetime
    days_since_closure: Annotated[float, Field(ge=0)]
    same_building: bool
    distance_m: float
    place_key: str


class HazardUrgedPayload(_Model):
    """A supervisor's or operator's urging (督办) of an open dispatch or rectification."""

    urging_id: uuid.UUID
    department_id: str
    dispatch_id: uuid.UUID | None = None
    stage: Literal["receipt", "rectification"]
    note: str
    urged_by: str


class HazardExtensionRequestedPayload(_Model):
    """A department asks to move a receipt or rectification deadline (延期申请)."""

    stage: Literal["receipt", "rectification"]
    dispatch_id: uuid.UUID | None = None
    department_id: str
    original_deadline: AwareDatetime
    """The deadline as first frozen (before any extension)."""
    current_deadline: AwareDatetime | None = None
    """The deadline in force when the request was made."""
    requested_deadline: AwareDatetime
    reason: str
    by: str
    round: Annotated[int, Field(ge=1)] | None = None


class HazardExtensionDecidedPayload(_Model):
    """An operator or supervisor approves or refuses a deadline extension; ``deadline`` is in force after."""

    stage: Literal["receipt", "rectification"]
    dispatch_id: uuid.UUID | None = None
    department_id: str
    original_deadline: AwareDatetime
    requested_deadline: AwareDatetime
    approved: bool
    deadline: AwareDatetime
    note: str = ""
    by: str
    round: Annotated[int, Field(ge=1)] | None = None


class HazardProgressNotedPayload(_Model):
    """A progress note (进展) the department holding the case adds."""

    department_id: str
    note: str
    photos: tuple[str, ...] = ()
    noted_by: str


class HazardNotifiedPayload(_Model):
    """Who was told what, when, by which channel, with what result (never a secret or a full URL)."""

    # The lifecycle event or reminder the notice was about, and what it said (dispatched,
    # receipt_due_soon, receipt_overdue, escalated, ...).
    source_id: uuid.UUID
    trigger: str
    department_id: str
    audience_scope: Literal["department", "escalation"]
    audience_id: str
    subscription_id: uuid.UUID
    channel: Literal["webhook", "email"]
    # The webhook's host (no path, query or key) or the e-mail address masked (d***@fire.example.org).
    recipient: str
    result: Literal["delivered", "failed"]
    attempts: Annotated[int, Field(ge=1)]
    # A failure's kind (HTTP 503, ConnectionRefused, timeout...), never the receiver's answer.
    error: str | None = None


class HazardImportedPayload(_Model):
    """A past record loaded by an operator (history import, #18 item 2): the report and its outcome.

    A historical hazard is never dispatched, notified or escalated. Reporting applies this event
    (as the report and the outcome dates it states); tracking keeps a closed one only so that a new
    report at its place within the relapse window is detected as its relapse; every other consumer
    ignores the type.
    """

    record_id: Annotated[str, Field(min_length=1, max_length=64)]
    import_id: uuid.UUID
    category: str
    location: Location
    grid_id: str
    community_id: str
    street_id: str
    observed_at: AwareDatetime
    reporter_type: ReporterType = "grid_member"
    source: Annotated[str, Field(max_length=32)] = "import"
    campaign_ids: tuple[str, ...] = ()
    notice_issued: bool = False
    department_id: str | None = None
    dispatch_id: uuid.UUID | None = None
    """The past dispatch's id (derived by the importer from the hazard id) when it was dispatched."""
    dispatched_at: AwareDatetime | None = None
    acknowledged_at: AwareDatetime | None = None
    receipt_deadline: AwareDatetime | None = None
    rectified_at: AwareDatetime | None = None
    closed_at: AwareDatetime | None = None
    relapse_of: uuid.UUID | None = None
    """The hazard (an imported record's id) this one is a relapse of."""
    relapse_of_record_id: Annotated[str, Field(max_length=64)] | None = None


# ---------------------------------------------------------------- envelopes


class _Envelope(_Model):
    event_id: uuid.UUID
    schema_version: Literal[1] = 1
    occurred_at: AwareDatetime
    hazard_id: uuid.UUID
    producer: Producer
    causation_id: uuid.UUID | None = None

    TYPE: ClassVar[str]


class HazardReported(_Envelope):
    TYPE: ClassVar[str] = "hazard.reported"
    event_type: Literal["hazard.reported"] = "hazard.reported"
    payload: HazardReportedPayload


class HazardDuplicateLinked(_Envelope):
    TYPE: ClassVar[str] = "hazard.duplicate_linked"
    event_type: Literal["hazard.duplicate_linked"] = "hazard.duplicate_linked"
    payload: HazardDuplicateLinkedPayload


class HazardDuplicateUnlinked(_Envelope):
    TYPE: ClassVar[str] = "hazard.duplicate_unlinked"
    event_type: Literal["hazard.duplicate_unlinked"] = "hazard.duplicate_unlinked"
    payload: HazardDuplicateUnlinkedPayload


class HazardDispatched(_Envelope):
    TYPE: ClassVar[str] = "hazard.dispatched"
    event_type: Literal["hazard.dispatched"] = "hazard.dispatched"
    payload: HazardDispatchedPayload


class HazardReferredToOperators(_Envelope):
    TYPE: ClassVar[str] = "hazard.referred_to_operators"
    event_type: Literal["hazard.referred_to_operators"] = "hazard.referred_to_operators"
    payload: HazardReferredToOperatorsPayload


class HazardAcknowledged(_Envelope):
    TYPE: ClassVar[str] = "hazard.acknowledged"
    event_type: Literal["hazard.acknowledged"] = "hazard.acknowledged"
    payload: HazardAcknowledgedPayload


class HazardReturned(_Envelope):
    TYPE: ClassVar[str] = "hazard.returned"
    event_type: Literal["hazard.returned"] = "hazard.returned"
    payload: HazardReturnedPayload


class HazardReceiptOverdue(_Envelope):
    TYPE: ClassVar[str] = "hazard.receipt_overdue"
    event_type: Literal["hazard.receipt_overdue"] = "hazard.receipt_overdue"
    payload: HazardReceiptOverduePayload


class HazardEscalated(_Envelope):
    TYPE: ClassVar[str] = "hazard.escalated"
    event_type: Literal["hazard.escalated"] = "hazard.escalated"
    payload: HazardEscalatedPayload


class HazardRectificationOrdered(_Envelope):
    TYPE: ClassVar[str] = "hazard.rectification_ordered"
    event_type: Literal["hazard.rectification_ordered"] = "hazard.rectification_ordered"
    payload: HazardRectificationOrderedPayload


class HazardRectified(_Envelope):
    TYPE: ClassVar[str] = "hazard.rectified"
    event_type: Literal["hazard.rectified"] = "hazard.rectified"
    payload: HazardRectifiedPayload


class HazardRectificationOverdue(_Envelope):
    TYPE: ClassVar[str] = "hazard.rectification_overdue"
    event_type: Literal["hazard.rectification_overdue"] = "hazard.rectification_overdue"
    payload: HazardRectificationOverduePayload


class HazardVerified(_Envelope):
    TYPE: ClassVar[str] = "hazard.verified"
    event_type: Literal["hazard.verified"] = "hazard.verified"
    payload: HazardVerifiedPayload


class HazardClosed(_Envelope):
    TYPE: ClassVar[str] = "hazard.closed"
    event_type: Literal["hazard.closed"] = "hazard.closed"
    payload: HazardClosedPayload


class HazardRelapsed(_Envelope):
    TYPE: ClassVar[str] = "hazard.relapsed"
    event_type: Literal["hazard.relapsed"] = "hazard.relapsed"
    payload: HazardRelapsedPayload


class HazardUrged(_Envelope):
    TYPE: ClassVar[str] = "hazard.urged"
    event_type: Literal["hazard.urged"] = "hazard.urged"
    payload: HazardUrgedPayload


class HazardExtensionRequested(_Envelope):
    TYPE: ClassVar[str] = "hazard.extension_requested"
    event_type: Literal["hazard.extension_requested"] = "hazard.extension_requested"
    payload: HazardExtensionRequestedPayload


class HazardExtensionDecided(_Envelope):
    TYPE: ClassVar[str] = "hazard.extension_decided"
    event_type: Literal["hazard.extension_decided"] = "hazard.extension_decided"
    payload: HazardExtensionDecidedPayload


class HazardProgressNoted(_Envelope):
    TYPE: ClassVar[str] = "hazard.progress_noted"
    event_type: Literal["hazard.progress_noted"] = "hazard.progress_noted"
    payload: HazardProgressNotedPayload


class HazardNotified(_Envelope):
    TYPE: ClassVar[str] = "hazard.notified"
    event_type: Literal["hazard.notified"] = "hazard.notified"
    payload: HazardNotifiedPayload


class HazardImported(_Envelope):
    TYPE: ClassVar[str] = "hazard.imported"
    event_type: Literal["hazard.imported"] = "hazard.imported"
    payload: HazardImportedPayload


LifecycleEvent = Annotated[
    Union[  # noqa: UP007 - a discriminated union reads better spelled out
        HazardReported,
        HazardDuplicateLinked,
        HazardDuplicateUnlinked,
        HazardDispatched,
        HazardReferredToOperators,
        HazardAcknowledged,
        HazardReturned,
        HazardReceiptOverdue,
        HazardEscalated,
        HazardRectificationOrdered,
        HazardRectified,
        HazardRectificationOverdue,
        HazardVerified,
        HazardClosed,
        HazardRelapsed,
        HazardUrged,
        HazardExtensionRequested,
        HazardExtensionDecided,
        HazardProgressNoted,
        HazardNotified,
        HazardImported,
    ],
    Field(discriminator="event_type"),
]

EVENT_TYPES: dict[str, type[_Envelope]] = {
    cls.TYPE: cls
    for cls in (
        HazardReported,
        HazardDuplicateLinked,
        HazardDuplicateUnlinked,
        HazardDispatched,
        HazardReferredToOperators,
        HazardAcknowledged,
        HazardReturned,
        HazardReceiptOverdue,
        HazardEscalated,
        HazardRectificationOrdered,
        HazardRectified,
        HazardRectificationOverdue,
        HazardVerified,
        HazardClosed,
        HazardRelapsed,
        HazardUrged,
        HazardExtensionRequested,
        HazardExtensionDecided,
        HazardProgressNoted,
        HazardNotified,
        HazardImported,
    )
}

_ADAPTER: TypeAdapter[LifecycleEvent] = TypeAdapter(LifecycleEvent)


def parse_event(raw: bytes | str) -> LifecycleEvent:
    """Parse one event from JSON; raises pydantic.ValidationError when it is not a known event."""
    return _ADAPTER.validate_json(raw)


def parse_event_obj(obj: dict[str, Any]) -> LifecycleEvent:
    """Parse one event from an already decoded JSON object."""
    return _ADAPTER.validate_python(obj)


def dump_event(event: _Envelope) -> bytes:
    """Serialise an event to the JSON bytes put on the wire."""
    return event.model_dump_json().encode()


def new_event_id() -> uuid.UUID:
    """A new event id (UUIDv4)."""
    return uuid.uuid4()


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (for edges only; domain code takes time as a value)."""
    return datetime.now(UTC)


AnyEvent = _Envelope
"""Base class of every event, for type hints."""
