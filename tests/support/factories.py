"""Builders of valid sample events, one per type, for tests and benchmarks."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import events as ev

T0 = datetime(2026, 4, 7, 9, 30, tzinfo=UTC)
FROZEN = ev.FrozenDeadlineRule(minutes=240, working_time=True)


def reported_payload(**overrides: Any) -> ev.HazardReportedPayload:
    """A valid hazard.reported payload at liuyue-01."""
    data: dict[str, Any] = {
        "report_id": uuid.UUID(int=1),
        "category": "rooftop_door_locked",
        "description": "Rooftop door locked with a padlock, building 12",
        "location": ev.Location(lat=22.66, lon=113.82, address="Liuyue Rd 12", building_id="B-12"),
        "grid_id": "liuyue-01",
        "community_id": "liuyue",
        "street_id": "fuyong",
        "reporter_id": "gm-liuyue-01",
        "observed_at": T0 - timedelta(minutes=20),
        "accepted_at": T0,
        "photos": ("https://img.example.org/1.jpg",),
    }
    data.update(overrides)
    return ev.HazardReportedPayload(**data)


PLAIN_REPORT: dict[str, Any] = {
    "description": "test hazard",
    "location": ev.Location(lat=22.65, lon=114.2),
    "street_id": "henggang",
    "reporter_id": "gm-1",
    "photos": (),
}
"""Payload fields of a bare report (no photos, no building): routing looks at the category and the grid."""


def reported_event(
    *,
    at: datetime | None = None,
    hazard_id: uuid.UUID | None = None,
    grid_id: str = "liuyue-01",
    causation_id: uuid.UUID | None = None,
    **payload: Any,
) -> ev.HazardReported:
    """A hazard.reported event with fresh ids, accepted ``at`` (now by default), in ``grid_id``.

    The community follows from the grid's name; any payload field can be overridden.
    """
    at = at or datetime.now(UTC)
    fields: dict[str, Any] = {
        "report_id": uuid.uuid4(),
        "grid_id": grid_id,
        "community_id": grid_id.rsplit("-", 1)[0],
        "observed_at": at,
        "accepted_at": at,
        **payload,
    }
    return ev.HazardReported(
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=hazard_id or uuid.uuid4(),
        producer="intake",
        causation_id=causation_id,
        payload=reported_payload(**fields),
    )


def sample_payloads(dispatch_id: uuid.UUID, hazard_id: uuid.UUID) -> dict[str, Any]:
    """One valid payload for every event type."""
    deadline = T0 + timedelta(hours=4)
    return {
        "hazard.reported": reported_payload(),
        "hazard.duplicate_linked": ev.HazardDuplicateLinkedPayload(
            original_hazard_id=uuid.UUID(int=99), distance_m=12.5, same_building=False
        ),
        "hazard.duplicate_unlinked": ev.HazardDuplicateUnlinkedPayload(
            original_hazard_id=uuid.UUID(int=99),
            original_closed_at=T0,
            observed_at=T0,
            category="locked_rooftop_door",
            community_id="liuyue",
            grid_id="liuyue-01",
        ),
        "hazard.dispatched": ev.HazardDispatchedPayload(
            dispatch_id=dispatch_id,
            department_id="fire",
            rule_id="r-rooftop",
            receipt_deadline=deadline,
            deadline_rule=FROZEN,
        ),
        "hazard.referred_to_operators": ev.HazardReferredToOperatorsPayload(reason="no_rule"),
        "hazard.acknowledged": ev.HazardAcknowledgedPayload(
            dispatch_id=dispatch_id,
            department_id="fire",
            acknowledged_at=T0 + timedelta(hours=1),
            receipt_deadline=deadline,
            on_time=True,
            acknowledged_by="dept-fire",
        ),
        "hazard.returned": ev.HazardReturnedPayload(
            dispatch_id=dispatch_id, department_id="fire", reason="Not a fire hazard", returned_by="dept-fire"
        ),
        "hazard.receipt_overdue": ev.HazardReceiptOverduePayload(
            dispatch_id=dispatch_id, department_id="fire", receipt_deadline=deadline
        ),
        "hazard.escalated": ev.HazardEscalatedPayload(
            dispatch_id=dispatch_id,
            department_id="fire",
            level=2,
            target="supervisor",
            receipt_deadline=deadline,
        ),
        "hazard.rectification_ordered": ev.HazardRectificationOrderedPayload(
            department_id="fire", deadline=T0 + timedelta(days=5), deadline_rule=FROZEN
        ),
        "hazard.rectified": ev.HazardRectifiedPayload(
            department_id="fire",
            note="Padlock removed",
            photos=("https://img.example.org/2.jpg",),
            rectified_by="dept-fire",
        ),
        "hazard.rectification_overdue": ev.HazardRectificationOverduePayload(
            department_id="fire", deadline=T0 + timedelta(days=5)
        ),
        "hazard.verified": ev.HazardVerifiedPayload(
            passed=True, note="Door open", verified_by="gm-liuyue-01"
        ),
        "hazard.closed": ev.HazardClosedPayload(
            reason="verified", department_id="fire", closed_by="gm-liuyue-01"
        ),
        "hazard.relapsed": ev.HazardRelapsedPayload(
            original_hazard_id=uuid.UUID(int=98),
            original_department_id="fire",
            original_closed_at=T0 - timedelta(days=10),
            days_since_closure=10.0,
            same_building=True,
            distance_m=0.0,
            place_key="building:B-12",
        ),
        "hazard.urged": ev.HazardUrgedPayload(
            urging_id=uuid.UUID(int=55),
            department_id="fire",
            dispatch_id=dispatch_id,
            stage="receipt",
            note="请尽快接收",
            urged_by="supervisor-01",
        ),
        "hazard.extension_requested": ev.HazardExtensionRequestedPayload(
            stage="receipt",
            dispatch_id=dispatch_id,
            department_id="fire",
            original_deadline=deadline,
            current_deadline=deadline,
            requested_deadline=deadline + timedelta(days=1),
            reason="Inspector on leave",
            by="dept-fire",
        ),
        "hazard.extension_decided": ev.HazardExtensionDecidedPayload(
            stage="receipt",
            dispatch_id=dispatch_id,
            department_id="fire",
            original_deadline=deadline,
            requested_deadline=deadline + timedelta(days=1),
            approved=True,
            deadline=deadline + timedelta(days=1),
            note="OK",
            by="operator-01",
        ),
        "hazard.progress_noted": ev.HazardProgressNotedPayload(
            department_id="fire",
            note="Contractor booked",
            photos=("https://img.example.org/3.jpg",),
            noted_by="dept-fire",
        ),
        "hazard.notified": ev.HazardNotifiedPayload(
            source_id=uuid.UUID(int=99),
            trigger="dispatched",
            department_id="fire",
            audience_scope="department",
            audience_id="fire",
            subscription_id=uuid.UUID(int=100),
            channel="webhook",
            recipient="hooks.example.org",
            result="delivered",
            attempts=1,
        ),
        "hazard.imported": ev.HazardImportedPayload(
            record_id="2025-FY-000123",
            import_id=uuid.UUID(int=0x18),
            category="locked_rooftop_door",
            location=ev.Location(lat=22.66, lon=113.82, address="Liuyue Rd 12", building_id="B-12"),
            grid_id="liuyue-01",
            community_id="liuyue",
            street_id="fuyong",
            observed_at=T0 - timedelta(days=400),
            department_id="fire",
            dispatch_id=dispatch_id,
            dispatched_at=T0 - timedelta(days=400),
            acknowledged_at=T0 - timedelta(days=400) + timedelta(hours=1),
            receipt_deadline=T0 - timedelta(days=400) + timedelta(hours=2),
            rectified_at=T0 - timedelta(days=395),
            closed_at=T0 - timedelta(days=394),
        ),
    }


def make_event(
    event_type: str, *, hazard_id: uuid.UUID | None = None, **payload_overrides: Any
) -> ev.AnyEvent:
    """A valid event of the given type (payload fields may be overridden)."""
    hazard_id = hazard_id or uuid.uuid4()
    payload = sample_payloads(uuid.UUID(int=7), hazard_id)[event_type]
    if payload_overrides:
        payload = payload.model_copy(update=payload_overrides)
    cls = ev.EVENT_TYPES[event_type]
    producer = {
        "hazard.reported": "intake",
        "hazard.duplicate_linked": "intake",
        "hazard.duplicate_unlinked": "intake",
        "hazard.urged": "tracking",
        "hazard.progress_noted": "tracking",
        "hazard.imported": "intake",
    }.get(
        event_type,
        "tracking"
        if "rectif" in event_type or event_type in {"hazard.verified", "hazard.closed", "hazard.relapsed"}
        else "notifications"
        if event_type == "hazard.notified"
        else "dispatch",
    )
    fields = {"event_id": uuid.uuid4(), "occurred_at": T0, "hazard_id": hazard_id, "producer": producer}
    return cls.model_validate({**fields, "payload": payload})
