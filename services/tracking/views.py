"""What tracking answers: the response models of its routes, and how a case becomes one.

Each model lists exactly the fields the route answers (same names, same nullability); times
and ids travel as the strings they always were (``datetime.isoformat()``, ``str(uuid)``), so
the answer's bytes do not move while the OpenAPI document now describes them.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, WithJsonSchema

from services.tracking import domain
from services.tracking.domain import Case, Entry
from shared import events as ev

Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
Id = Annotated[str, WithJsonSchema({"type": "string", "format": "uuid"})]


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class TimelineEntry(_View):
    """One event of the case's timeline, or a delivery record (``hazard.notified``) placed by time."""

    event_id: Id
    event_type: str
    occurred_at: Timestamp
    actor: str
    producer: str
    details: dict[str, Any]

    @classmethod
    def of_entry(cls, entry: Entry) -> TimelineEntry:
        event = entry.event
        return cls(
            event_id=str(event.event_id),
            event_type=event.TYPE,
            occurred_at=event.occurred_at.isoformat(),
            actor=domain.actor_of(event),
            producer=event.producer,
            details=event.payload.model_dump(mode="json"),  # type: ignore[attr-defined]
        )

    @classmethod
    def of_notification(cls, row: Any) -> TimelineEntry:
        return cls(
            event_id=str(row.event_id),
            event_type="hazard.notified",
            occurred_at=row.occurred_at.isoformat(),
            actor="notifications",
            producer="notifications",
            details=row.payload,
        )


class LocationView(_View):
    lat: float | None
    lon: float | None
    address: str | None
    building_id: str | None


class DeadlinesView(_View):
    receipt: Timestamp | None
    receipt_original: Timestamp | None
    receipt_overdue: bool
    rectification: Timestamp | None
    rectification_original: Timestamp | None
    rectification_overdue: bool


class ExtensionView(_View):
    """A deadline extension request (延期申请) and its decision, if any."""

    status: str
    requested_deadline: Timestamp
    previous_deadline: Timestamp | None
    reason: str
    requested_by: str
    requested_at: Timestamp
    decided_by: str | None
    decided_at: Timestamp | None
    note: str | None

    @classmethod
    def of(cls, request: domain.Extension | None) -> ExtensionView | None:
        if request is None:
            return None
        return cls(
            status=request.status,
            requested_deadline=request.requested_deadline.isoformat(),
            previous_deadline=_iso(request.previous_deadline),
            reason=request.reason,
            requested_by=request.requested_by,
            requested_at=request.requested_at.isoformat(),
            decided_by=request.decided_by,
            decided_at=_iso(request.decided_at),
            note=request.note,
        )


class ExtensionRequestsView(_View):
    receipt: ExtensionView | None
    rectification: ExtensionView | None


class ClosedView(_View):
    at: Timestamp | None
    by: str | None
    department_id: str | None
    reason: str | None


class CaseView(_View):
    """A case: state, holder, deadlines, links and timeline."""

    hazard_id: Id
    state: str
    state_description: str
    category: str | None
    grid_id: str | None
    community_id: str | None
    location: LocationView
    reporter_id: str | None
    reported_at: Timestamp | None
    rectified_on_site: bool
    department_id: str | None
    departments_involved: list[str]
    dispatch_id: Id | None
    deadlines: DeadlinesView
    extension_requests: ExtensionRequestsView
    urgings: int
    progress_notes: int
    acknowledged_at: Timestamp | None
    acknowledged_on_time: bool | None
    escalation_level: int
    rectification_round: int
    rework_count: int
    returns: int
    closed: ClosedView | None
    relapse_of: Id | None
    relapse_place_key: str | None
    relapsed_as: list[Id]
    duplicate_of: Id | None
    duplicates: list[Id]
    hotspot: bool
    timeline: list[TimelineEntry]


def case_view(
    case: Case,
    entries: Sequence[Entry],
    *,
    duplicates: Sequence[uuid.UUID],
    relapses: Sequence[uuid.UUID],
    hotspot: bool,
    notifications: Sequence[Any] = (),
) -> CaseView:
    """The answer for a case; delivery records are placed by time among its events."""
    timeline = [TimelineEntry.of_entry(entry) for entry in entries]
    told = [TimelineEntry.of_notification(row) for row in notifications]
    return CaseView(
        hazard_id=str(case.hazard_id),
        state=case.state,
        state_description=domain.STATE_DESCRIPTIONS[case.state],
        category=case.category,
        grid_id=case.grid_id,
        community_id=case.community_id,
        location=LocationView(lat=case.lat, lon=case.lon, address=case.address, building_id=case.building_id),
        reporter_id=case.reporter_id,
        reported_at=_iso(case.reported_at),
        rectified_on_site=case.rectified_on_site,
        department_id=case.department_id,
        departments_involved=list(case.departments_involved),
        dispatch_id=str(case.dispatch_id) if case.dispatch_id else None,
        deadlines=DeadlinesView(
            receipt=_iso(case.receipt_deadline),
            # As first frozen; differs from `receipt` once an extension was approved.
            receipt_original=_iso(case.original_receipt_deadline or case.receipt_deadline),
            receipt_overdue=case.receipt_overdue,
            rectification=_iso(case.rectification_deadline),
            rectification_original=_iso(case.original_rectification_deadline or case.rectification_deadline),
            rectification_overdue=case.rectification_overdue,
        ),
        extension_requests=ExtensionRequestsView(
            receipt=ExtensionView.of(case.receipt_extension),
            rectification=ExtensionView.of(case.rectification_extension),
        ),
        urgings=case.urgings,
        progress_notes=case.progress_notes,
        acknowledged_at=_iso(case.acknowledged_at),
        acknowledged_on_time=case.acknowledged_on_time,
        escalation_level=case.escalation_level,
        rectification_round=case.round,
        rework_count=case.rework_count,
        returns=case.returns,
        closed=ClosedView(
            at=_iso(case.closed_at),
            by=case.closed_by,
            department_id=case.closed_department_id,
            reason=case.close_reason,
        )
        if case.closed_at
        else None,
        relapse_of=str(case.relapse_of) if case.relapse_of else None,
        relapse_place_key=case.relapse_place_key,
        relapsed_as=[str(h) for h in relapses],
        duplicate_of=str(case.duplicate_of) if case.duplicate_of else None,
        duplicates=[str(h) for h in duplicates],
        hotspot=hotspot,
        timeline=_merge_told(timeline, told) if told else timeline,
    )


def _merge_told(timeline: list[TimelineEntry], told: list[TimelineEntry]) -> list[TimelineEntry]:
    """Delivery records placed by time among the events, the events' own order untouched."""
    merged: list[TimelineEntry] = []
    waiting = list(told)
    for entry in timeline:
        at = datetime.fromisoformat(entry.occurred_at)
        while waiting and datetime.fromisoformat(waiting[0].occurred_at) < at:
            merged.append(waiting.pop(0))
        merged.append(entry)
    return merged + waiting


class CaseSummary(_View):
    """A case in a list (the timeline and links are in the case itself)."""

    hazard_id: Id
    state: str
    category: str | None
    grid_id: str | None
    community_id: str | None
    building_id: str | None
    reporter_id: str | None
    reported_at: Timestamp | None
    rectified_on_site: bool
    department_id: str | None
    dispatch_id: Id | None
    receipt_deadline: Timestamp | None
    rectification_round: int
    rectification_deadline: Timestamp | None
    rectification_overdue: bool
    rework_count: int
    closed_at: Timestamp | None

    @classmethod
    def of_row(cls, row: Any) -> CaseSummary:
        return cls(
            hazard_id=str(row.hazard_id),
            state=row.state,
            category=row.category,
            grid_id=row.grid_id,
            community_id=row.community_id,
            building_id=row.building_id,
            reporter_id=row.reporter_id,
            reported_at=_iso(row.reported_at),
            rectified_on_site=row.rectified_on_site,
            department_id=row.department_id,
            dispatch_id=str(row.dispatch_id) if row.dispatch_id else None,
            receipt_deadline=_iso(row.receipt_deadline),
            rectification_round=row.round,
            rectification_deadline=_iso(row.rectification_deadline),
            rectification_overdue=row.rectification_overdue,
            rework_count=row.rework_count,
            closed_at=_iso(row.closed_at),
        )


class CaseList(_View):
    """A page of cases; ``next_offset`` is null on the last page."""

    items: list[CaseSummary]
    limit: int
    offset: int
    next_offset: int | None


class UrgingView(_View):
    """An urging (督办) as recorded."""

    id: Id
    hazard_id: Id
    department_id: str
    dispatch_id: Id | None
    stage: str
    note: str
    urged_by: str
    urged_at: Timestamp

    @classmethod
    def of(cls, event: ev.HazardUrged) -> UrgingView:
        p = event.payload
        return cls(
            id=str(p.urging_id),
            hazard_id=str(event.hazard_id),
            department_id=p.department_id,
            dispatch_id=str(p.dispatch_id) if p.dispatch_id else None,
            stage=p.stage,
            note=p.note,
            urged_by=p.urged_by,
            urged_at=event.occurred_at.isoformat(),
        )


class NoteView(_View):
    """A progress note as recorded."""

    id: Id
    hazard_id: Id
    department_id: str
    note: str
    photos: list[str]
    noted_by: str
    noted_at: Timestamp

    @classmethod
    def of(cls, event: ev.HazardProgressNoted) -> NoteView:
        p = event.payload
        return cls(
            id=str(event.event_id),
            hazard_id=str(event.hazard_id),
            department_id=p.department_id,
            note=p.note,
            photos=list(p.photos),
            noted_by=p.noted_by,
            noted_at=event.occurred_at.isoformat(),
        )


class HotspotView(_View):
    place_key: str
    relapses: int
    categories: list[str]
    community_id: str | None
    grid_id: str | None
    first_relapse_at: Timestamp
    last_relapse_at: Timestamp
    last_hazard_id: Id
    flagged_at: Timestamp | None


class HotspotList(_View):
    """Places with at least ``min_relapses`` relapses, most first."""

    min_relapses: int
    hotspots: list[HotspotView]
