"""Pure decisions of intake: what a valid report is, open duplicates, events, and the Open311 status.

Nothing here does I/O or reads the clock: time and reference data come in as values.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, cast

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
)

from shared import events as ev
from shared.photos import MAX_PHOTOS, PhotoUrl
from shared.reference import OPERATORS_QUEUE, ReferenceData, haversine_m
from shared.text import Text

MAX_DESCRIPTION_CHARS = 2000
MAX_ADDRESS_CHARS = 300
Source = Literal["app", "batch", "open311"]

# Ids derived from a report id are stable across retries and replicas.
_EVENT_NAMESPACE = uuid.UUID("6f1c2d0e-5b8a-4f6e-9c1d-3a7b2e4f8d10")


ShortId = Annotated[str, Text(strip=True, min_length=1, max_length=64)]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LocationIn(_In):
    """Where the hazard is: WGS84 degrees, an address and optionally a building id."""

    lat: Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False)]
    lon: Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False)]
    address: Annotated[str, Text(strip=True, max_length=MAX_ADDRESS_CHARS)] = ""
    building_id: (
        Annotated[
            str, Text(strip=True, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
        ]
        | None
    ) = None


class ReportIn(_In):
    """One hazard report as a grid member's phone or a building manager sends it."""

    report_id: uuid.UUID
    category: ShortId
    description: Annotated[str, Text(strip=True, min_length=1, max_length=MAX_DESCRIPTION_CHARS)]
    location: LocationIn
    grid_id: ShortId
    observed_at: AwareDatetime
    photos: Annotated[tuple[PhotoUrl, ...], Field(max_length=MAX_PHOTOS)] = ()
    rectified_on_site: StrictBool = False
    campaign_id: ShortId | None = None
    urgency: Literal["normal", "urgent"] | None = None
    # A rectification notice handed out on the spot by the reporter (#18).
    notice_issued: StrictBool = False


# ---------------------------------------------------------------- validation against the reference


@dataclass(frozen=True, slots=True)
class Policy:
    """The tunable limits a report is checked against."""

    future_skew: timedelta = timedelta(minutes=5)
    max_age: timedelta = timedelta(days=30)
    duplicate_distance_m: float = 30.0


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a report is refused, in the API's error shape."""

    status: int
    code: str
    message: str
    details: tuple[dict[str, Any], ...] = ()

    def body(self) -> dict[str, Any]:
        """The ``{"code", "message", "details"}`` of the error."""
        return {"code": self.code, "message": self.message, "details": list(self.details)}


@dataclass(frozen=True, slots=True)
class _Problem:
    name: str
    code: str
    problem: str
    extra: dict[str, Any] = field(default_factory=dict)

    def detail(self) -> dict[str, Any]:
        return {"field": self.name, "code": self.code, "problem": self.problem, **self.extra}


def reporter_scope(principal: Any, report: ReportIn) -> tuple[str | None, Rejection | None]:
    """The grid a reporter may report for, or a 403 for a building that is not theirs (#18).

    A hotline (12345) operator reports on a resident's behalf anywhere in the street, so the report's
    grid is theirs; a building manager (楼栋长) reports for their own buildings only.
    """
    if getattr(principal, "reporter_type", None) == "hotline":
        return report.grid_id, None
    buildings = getattr(principal, "building_ids", ())
    if buildings and report.location.building_id not in buildings:
        return principal.grid_id, Rejection(
            403,
            "building_not_yours",
            f"You report for buildings {', '.join(buildings)}; not {report.location.building_id!r}.",
            (
                {
                    "field": "location.building_id",
                    "code": "building_not_yours",
                    "problem": "not the reporter's building",
                },
            ),
        )
    return principal.grid_id, None


def check_report(
    report: ReportIn, *, reporter_grid: str | None, reference: ReferenceData, now: datetime, policy: Policy
) -> Rejection | None:
    """None when the report may be accepted; else the refusal (403 for another's grid, else 422)."""
    problems: list[_Problem] = []
    category_known = _known(reference.category, report.category)
    if not category_known:
        problems.append(
            _Problem(
                "category",
                "unknown_category",
                f"unknown category {report.category!r}",
                {"known": [c.code for c in reference.categories]},
            )
        )
    if not _known(reference.grid, report.grid_id):
        problems.append(
            _Problem(
                "grid_id",
                "unknown_grid",
                f"unknown grid {report.grid_id!r}",
                {"known": [g.id for g in reference.grids]},
            )
        )
    elif report.grid_id != reporter_grid:
        return Rejection(
            403,
            "grid_not_yours",
            f"You report for grid {reporter_grid!r}; grid {report.grid_id!r} belongs to another reporter.",
            ({"field": "grid_id", "code": "grid_not_yours", "problem": "not the reporter's grid"},),
        )
    if not reference.street_contains(report.location.lat, report.location.lon):
        problems.append(
            _Problem(
                "location",
                "outside_street",
                f"({report.location.lat}, {report.location.lon}) is outside {reference.street.name_en}",
            )
        )
    if report.observed_at > now + policy.future_skew:
        problems.append(
            _Problem(
                "observed_at",
                "observed_in_future",
                f"observed_at {report.observed_at.isoformat()} is in the future "
                f"(more than {int(policy.future_skew.total_seconds())} s ahead of the server clock)",
            )
        )
    elif report.observed_at < now - policy.max_age:
        problems.append(
            _Problem(
                "observed_at",
                "observed_too_long_ago",
                f"observed_at {report.observed_at.isoformat()} is more than "
                f"{policy.max_age.days} days ago; older reports are not accepted",
            )
        )
    if report.campaign_id is not None:
        known_campaigns = {c.id: c for c in reference.campaigns}
        campaign = known_campaigns.get(report.campaign_id)
        if campaign is None:
            problems.append(
                _Problem(
                    "campaign_id",
                    "unknown_campaign",
                    f"unknown campaign {report.campaign_id!r}",
                    {"known": list(known_campaigns)},
                )
            )
        elif category_known:
            on = local_date(report.observed_at, reference)
            if report.category not in campaign.categories:
                problems.append(
                    _Problem(
                        "campaign_id",
                        "campaign_not_for_category",
                        f"campaign {campaign.id!r} does not cover category {report.category!r}",
                        {"categories": list(campaign.categories)},
                    )
                )
            elif on < campaign.starts_on:
                # Not begun yet. A report observed after the campaign ended is accepted and counted
                # late to the campaign (reporting: the report day is after its last day, #18).
                problems.append(
                    _Problem(
                        "campaign_id",
                        "campaign_not_active",
                        f"campaign {campaign.id!r} runs {campaign.starts_on} to {campaign.ends_on}, "
                        f"not on {on}",
                    )
                )
    if not problems:
        return None
    code = problems[0].code if len(problems) == 1 else "invalid"
    message = "; ".join(p.problem for p in problems)
    return Rejection(422, code, message[0].upper() + message[1:] + ".", tuple(p.detail() for p in problems))


def _known(lookup: Any, key: str) -> bool:
    try:
        lookup(key)
    except LookupError:
        return False
    return True


def local_date(moment: datetime, reference: ReferenceData) -> Any:
    """The calendar date of a moment in the street's timezone."""
    return moment.astimezone(reference.calendar.zone).date()


def campaign_ids(report: ReportIn, reference: ReferenceData) -> tuple[str, ...]:
    """The campaign named by the report first, then every active campaign counting its category."""
    ids: list[str] = [report.campaign_id] if report.campaign_id else []
    for campaign in reference.campaigns_active(local_date(report.observed_at, reference), report.category):
        if campaign.id not in ids:
            ids.append(campaign.id)
    return tuple(ids)


def body_hash(report: ReportIn, *, reporter_id: str, server_stamped_time: bool = False) -> str:
    """A fingerprint of what was reported and by whom; the same report sent again hashes the same.

    ``server_stamped_time``: observed_at was set by the server (Open311 has no such field), so a
    retry carries another one and it is left out.
    """
    canonical = report.model_dump(mode="json")
    canonical["observed_at"] = None if server_stamped_time else report.observed_at.astimezone(UTC).isoformat()
    canonical["reporter_id"] = reporter_id
    if not report.notice_issued:  # a field added later (#18): absent, a stored report hashes as before
        del canonical["notice_issued"]
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


# ---------------------------------------------------------------- open duplicates


@dataclass(frozen=True, slots=True)
class OpenHazard:
    """An earlier hazard still open (an original, not itself a duplicate)."""

    hazard_id: uuid.UUID
    category: str
    building_id: str | None
    lat: float
    lon: float
    requested_at: datetime


@dataclass(frozen=True, slots=True)
class DuplicateMatch:
    """The open hazard a new report duplicates."""

    original_hazard_id: uuid.UUID
    distance_m: float
    same_building: bool


def bounding_box(lat: float, lon: float, distance_m: float) -> tuple[float, float, float, float]:
    """A lat/lon box (south, north, west, east) that contains every point within ``distance_m``."""
    import math

    d_lat = distance_m / 111_000.0 * 1.01
    d_lon = distance_m / (111_000.0 * max(0.01, math.cos(math.radians(lat)))) * 1.01
    return lat - d_lat, lat + d_lat, lon - d_lon, lon + d_lon


def find_open_duplicate(
    report: ReportIn, candidates: Iterable[OpenHazard], *, distance_m: float
) -> DuplicateMatch | None:
    """The open hazard this report repeats: same category and same building, else the nearest within range.

    An on-site fix is a new, already rectified hazard, never a duplicate.
    """
    if report.rectified_on_site:
        return None
    best: tuple[int, float, datetime, OpenHazard] | None = None
    lat, lon, building = report.location.lat, report.location.lon, report.location.building_id
    south, north, west, east = bounding_box(lat, lon, distance_m)
    for candidate in candidates:
        if candidate.category != report.category:
            continue
        same_building = building is not None and candidate.building_id == building
        # The box test is cheap and rules out nearly everything before the great-circle distance.
        if not same_building and not (south <= candidate.lat <= north and west <= candidate.lon <= east):
            continue
        distance = haversine_m(lat, lon, candidate.lat, candidate.lon)
        if not same_building and distance > distance_m:
            continue
        key = (0 if same_building else 1, distance, candidate.requested_at, candidate)
        if best is None or key[:3] < best[:3]:
            best = key
    if best is None:
        return None
    return DuplicateMatch(best[3].hazard_id, round(best[1], 1), best[0] == 0)


# ---------------------------------------------------------------- events


def reported_event_id(report_id: uuid.UUID) -> uuid.UUID:
    """The event id of a report's hazard.reported (stable, so a replay can never mint a second one)."""
    return uuid.uuid5(_EVENT_NAMESPACE, f"{report_id}/reported")


def reported_events(
    *,
    hazard_id: uuid.UUID,
    report: ReportIn,
    reporter_id: str,
    reference: ReferenceData,
    accepted_at: datetime,
    source: Source,
    campaigns: Sequence[str],
    duplicate: DuplicateMatch | None,
    reporter_type: str | None = None,
) -> list[ev.AnyEvent]:
    """hazard.reported, and hazard.duplicate_linked when the report repeats an open hazard."""
    reported_id = reported_event_id(report.report_id)
    payload = ev.HazardReportedPayload(
        report_id=report.report_id,
        category=report.category,
        description=report.description,
        location=ev.Location(
            lat=report.location.lat,
            lon=report.location.lon,
            address=report.location.address,
            building_id=report.location.building_id,
        ),
        grid_id=report.grid_id,
        community_id=reference.grid(report.grid_id).community_id,
        street_id=reference.street.id,
        reporter_id=reporter_id,
        observed_at=report.observed_at,
        accepted_at=accepted_at,
        photos=tuple(report.photos),
        rectified_on_site=report.rectified_on_site,
        campaign_ids=tuple(campaigns),
        urgency=report.urgency,
        source=source,
        duplicate_of=duplicate.original_hazard_id if duplicate else None,
        reporter_type=cast(ev.ReporterType, reporter_type or "grid_member"),
        notice_issued=report.notice_issued,
    )
    events: list[ev.AnyEvent] = [
        ev.HazardReported(
            event_id=reported_id,
            occurred_at=accepted_at,
            hazard_id=hazard_id,
            producer="intake",
            payload=payload,
        )
    ]
    if duplicate is not None:
        events.append(
            ev.HazardDuplicateLinked(
                event_id=uuid.uuid5(_EVENT_NAMESPACE, f"{report.report_id}/duplicate_linked"),
                occurred_at=accepted_at,
                hazard_id=hazard_id,
                producer="intake",
                causation_id=reported_id,
                payload=ev.HazardDuplicateLinkedPayload(
                    original_hazard_id=duplicate.original_hazard_id,
                    distance_m=duplicate.distance_m,
                    same_building=duplicate.same_building,
                ),
            )
        )
    return events


@dataclass(frozen=True, slots=True)
class Unlinked:
    """A report whose duplicate link was undone: it was observed after its original had been closed."""

    hazard_id: uuid.UUID
    report_id: uuid.UUID
    original_hazard_id: uuid.UUID
    original_closed_at: datetime
    observed_at: datetime
    category: str
    community_id: str
    grid_id: str
    urgency: str | None


def unlinked_event(unlinked: Unlinked, *, now: datetime) -> ev.HazardDuplicateUnlinked:
    """hazard.duplicate_unlinked for a report observed after its original's closure (id stable per report)."""
    return ev.HazardDuplicateUnlinked(
        event_id=uuid.uuid5(_EVENT_NAMESPACE, f"{unlinked.report_id}/duplicate_unlinked"),
        occurred_at=now,
        hazard_id=unlinked.hazard_id,
        producer="intake",
        causation_id=reported_event_id(unlinked.report_id),
        payload=ev.HazardDuplicateUnlinkedPayload(
            original_hazard_id=unlinked.original_hazard_id,
            original_closed_at=unlinked.original_closed_at,
            observed_at=unlinked.observed_at,
            category=unlinked.category,
            community_id=unlinked.community_id,
            grid_id=unlinked.grid_id,
            urgency=unlinked.urgency,
        ),
    )


def initial_view(
    report: ReportIn, duplicate: DuplicateMatch | None
) -> tuple[Literal["open", "closed"], str, str | None]:
    """The Open311 status, status notes and service notice of a report as it is accepted."""
    if report.rectified_on_site:
        return "closed", "Rectified on site after the reporter's persuasion.", None
    if duplicate is not None:
        notice = f"Linked to open request {duplicate.original_hazard_id} as a duplicate."
        return "open", notice, notice
    return "open", "Reported; awaiting dispatch.", None


# ---------------------------------------------------------------- the Open311 view from lifecycle events


@dataclass(frozen=True, slots=True)
class StatusChange:
    """What one lifecycle event changes in a hazard's Open311 view."""

    notes: str
    agency: str | None = None
    """None: leave the agency as it is."""
    expected: datetime | None = None
    clear_expected: bool = False
    closes: bool = False
    yields_tie: bool = False
    """True: an event already applied with the same ``occurred_at`` stays (it is this one's effect)."""


def _department_name(reference: ReferenceData, department_id: str | None) -> str | None:
    if department_id is None:
        return None
    if department_id == OPERATORS_QUEUE:
        return "Grid management center dispatch desk"
    try:
        return reference.department(department_id).name_en
    except LookupError:
        return department_id


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def status_change(event: ev.AnyEvent, *, reference: ReferenceData) -> StatusChange | None:
    """The change an event makes to the Open311 view of its hazard (None: no change)."""
    if isinstance(event, ev.HazardDispatched):
        p = event.payload
        name = _department_name(reference, p.department_id)
        return StatusChange(
            notes=f"Dispatched to {name}; receipt due by {_at(p.receipt_deadline)}.",
            agency=name,
            expected=p.receipt_deadline,
        )
    if isinstance(event, ev.HazardReferredToOperators):
        return StatusChange(
            notes="Referred to the dispatch desk's operators to choose the department.",
            agency=_department_name(reference, OPERATORS_QUEUE),
            clear_expected=True,
        )
    if isinstance(event, ev.HazardAcknowledged):
        a = event.payload
        name = _department_name(reference, a.department_id)
        timing = "on time" if a.on_time else "late"
        return StatusChange(notes=f"Receipt acknowledged by {name} ({timing}).", agency=name)
    if isinstance(event, ev.HazardReturned):
        r = event.payload
        name = _department_name(reference, r.department_id)
        # Dispatch stamps a return and the rerouting or referral it causes with one instant: whichever
        # arrives first, the effect's notes are the ones that stay.
        return StatusChange(
            notes=f"Returned by {name}; being routed again.", clear_expected=True, yields_tie=True
        )
    if isinstance(event, ev.HazardRectificationOrdered):
        o = event.payload
        name = _department_name(reference, o.department_id)
        rework = "" if o.round == 1 else f" (rework, round {o.round})"
        return StatusChange(
            notes=f"Rectification ordered{rework}; due by {_at(o.deadline)}.",
            agency=name,
            expected=o.deadline,
        )
    if isinstance(event, ev.HazardRectified):
        name = _department_name(reference, event.payload.department_id)
        return StatusChange(
            notes=f"Rectified by {name}; awaiting the reporter's verification.",
            agency=name,
            clear_expected=True,
        )
    if isinstance(event, ev.HazardVerified):
        v = event.payload
        if v.passed:
            return StatusChange(notes="Rectification verified on a return visit.")
        return StatusChange(notes="Verification failed; the rectification must be reworked.")
    if isinstance(event, ev.HazardClosed):
        c = event.payload
        if c.reason == "rectified_on_site":
            # Intake closed the report itself when it accepted it (initial_view: status, closing
            # time and notes), and it is never the original of a duplicate (only open reports
            # are): tracking's closure changes nothing the view needs. Applying it would rewrite
            # the row for the wording of its notes alone, a row per on-site fix (#20).
            return None
        return StatusChange(
            notes="Closed (verified rectification).",
            agency=_department_name(reference, c.department_id),
            clear_expected=True,
            closes=True,
        )
    if isinstance(event, ev.HazardRelapsed):
        rl = event.payload
        return StatusChange(
            notes=f"Relapse of request {rl.original_hazard_id}, closed "
            f"{rl.days_since_closure:.0f} days before this report."
        )
    return None
