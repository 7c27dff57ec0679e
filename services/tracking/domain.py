"""The case of one hazard, derived from its timeline: pure state machine, commands, reactions, relapse.

How a case stays right when events arrive late, early or twice
--------------------------------------------------------------
The case is never updated in place. Every accepted event is stored as a
timeline entry, and the case is *recomputed* by folding the whole timeline in
causal order: an event never before its cause (``causation_id``), else
``occurred_at`` order (ties: the natural lifecycle order of the event types,
then arrival order). Producers stamp an event and its consequences with one
instant, so timestamps alone put a rerouting before the return that caused it. An ``acknowledged`` that arrives before its ``dispatched``
therefore yields the same case as the two in order, and an event applied twice
is the same entry (the inbox and the timeline's unique event id drop the copy).

The fold is lenient for what other services report (intake and dispatch are
the truth about reports, dispatches, receipts and returns): such events are
always recorded; once a case is rectified, closed or a duplicate they no
longer move its state. Tracking's own event types arriving from the stream
(written by anyone but this service's own transaction) are checked against the
case as it stood at their place in the timeline and refused when they do not
fit (a rectification of a closed case). Commands from people (rectify, verify)
are checked strictly against the current case.

What tracking does in reply (order a rectification after an acknowledgement,
close after a passed verification, order the next round after a failed one,
close an on-site rectification at once) is computed by :func:`react` from the
derived case, not from the arriving event, so a late or repeated event never
issues a second order. Own events are stamped ``now``, or a microsecond after
the latest entry when that is not earlier, so a reply always sorts after its cause.

Decisions worth knowing
-----------------------
* A report rectified on site is closed at once with ``hazard.closed`` (reason
  ``rectified_on_site``, no department) and no ``hazard.rectified``: that event
  needs the department that did the work, and there is none. Counters of on-site
  fixes count closures by reason (or ``reported.rectified_on_site``).
* A duplicate (``duplicate_of`` on the report, or ``hazard.duplicate_linked``) is
  recorded and linked to its original, never a case of its own: no relapse, no order.
  ``hazard.duplicate_unlinked`` (intake learnt that the original had been closed before
  the report was observed) undoes the link: the case awaits dispatch, and relapse is
  detected for its report then, exactly as for a new one.
* Rectification rounds count failed verifications: round 1 after receipt, round
  n+1 after the n-th failed verification (the rework count). A reassignment after
  an order issues a new order for the new department in the same round.
* Relapse: a new report of the same category, in the same building or within the
  relapse distance (default: the reference ``duplicate_distance_m``), seen within
  the category's ``relapse_window_days`` after a case there was closed, relapses the
  most recently closed one. "Seen" is the report's ``observed_at``: an offline report
  observed before the closure is no relapse. A place (building, else a ~11 m cell of
  the original case) with ``hotspot_min_relapses`` relapses is a hotspot.
"""

from __future__ import annotations

import dataclasses
import heapq
import operator
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from shared import events as ev
from shared.reference import ReferenceData, add_deadline, haversine_m

State = Literal[
    "new",
    "reported",
    "referred_to_operators",
    "dispatched",
    "acknowledged",
    "rectification_ordered",
    "rectified",
    "verification_failed",
    "verified",
    "closed",
    "duplicate",
]
STATES: Final[tuple[State, ...]] = (
    "new",
    "reported",
    "referred_to_operators",
    "dispatched",
    "acknowledged",
    "rectification_ordered",
    "rectified",
    "verification_failed",
    "verified",
    "closed",
    "duplicate",
)

STATE_DESCRIPTIONS: Final[dict[str, str]] = {
    "new": "known only from events that came before its report",
    "reported": "awaiting dispatch",
    "referred_to_operators": "with the dispatch operators",
    "dispatched": "awaiting receipt by the department",
    "acknowledged": "acknowledged, rectification not yet ordered",
    "rectification_ordered": "awaiting rectification",
    "rectified": "rectified, awaiting verification",
    "verification_failed": "failed verification, awaiting a new rectification order",
    "verified": "verified, awaiting closure",
    "closed": "closed",
    "duplicate": "a duplicate of another hazard",
}

TRACKING_TYPES: Final = frozenset(
    {
        ev.HazardRectificationOrdered.TYPE,
        ev.HazardRectified.TYPE,
        ev.HazardRectificationOverdue.TYPE,
        ev.HazardVerified.TYPE,
        ev.HazardClosed.TYPE,
        ev.HazardRelapsed.TYPE,
        ev.HazardUrged.TYPE,
        ev.HazardProgressNoted.TYPE,
    }
)
"""Event types this service publishes; from anyone else they are checked before they are recorded.

(Extension events are published by dispatch too, for receipt deadlines: recorded from anyone.)"""

_TICK: Final = timedelta(microseconds=1)
_SETTLED: Final = frozenset({"rectified", "verification_failed", "verified", "closed", "duplicate"})
_BEFORE_RECEIPT: Final = frozenset({"new", "reported", "referred_to_operators", "dispatched"})

# Tie-break for events stamped with the same instant: the order a hazard's life goes through.
_RANK: Final[dict[str, int]] = {
    ev.HazardReported.TYPE: 0,
    ev.HazardDuplicateLinked.TYPE: 1,
    ev.HazardDuplicateUnlinked.TYPE: 1,
    ev.HazardRelapsed.TYPE: 1,
    ev.HazardReferredToOperators.TYPE: 2,
    ev.HazardDispatched.TYPE: 2,
    ev.HazardReceiptOverdue.TYPE: 3,
    ev.HazardEscalated.TYPE: 3,
    ev.HazardReturned.TYPE: 3,
    ev.HazardAcknowledged.TYPE: 3,
    ev.HazardRectificationOrdered.TYPE: 4,
    ev.HazardRectificationOverdue.TYPE: 5,
    ev.HazardRectified.TYPE: 5,
    ev.HazardVerified.TYPE: 6,
    ev.HazardClosed.TYPE: 7,
}


class TransitionRefused(Exception):  # noqa: N818 - the name the team agreed on
    """A command or event does not fit the case's state; the message says why, for a person."""


class NotPermitted(Exception):  # noqa: N818 - reads as what happened
    """The caller may not act on this case (not the holding department, not the reporting grid)."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One event of a case's timeline; ``seq`` is its arrival order (a tie-break only)."""

    seq: int
    event: ev.AnyEvent

    @property
    def sort_key(self) -> tuple[datetime, int, int]:
        """Occurred-at first, then lifecycle order, then arrival."""
        return (self.event.occurred_at, _RANK.get(self.event.TYPE, 9), self.seq)


ExtensionStatus = Literal["awaiting_approval", "approved", "refused"]
DEFAULT_EXTENSION_LIMIT: Final = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class Extension:
    """The latest deadline extension request (延期申请) of a stage of the case, and its decision."""

    stage: Literal["receipt", "rectification"]
    status: ExtensionStatus
    requested_deadline: datetime
    previous_deadline: datetime | None
    reason: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None
    note: str | None = None


class ExtensionDateRefused(ValueError):  # noqa: N818 - reads as what happened
    """A requested deadline not after the one in force, or too far beyond it (the API answers 422)."""


@dataclass(frozen=True, slots=True)
class Case:
    """Everything tracking knows about one hazard, derived from its timeline."""

    hazard_id: uuid.UUID
    state: State = "new"
    category: str | None = None
    grid_id: str | None = None
    community_id: str | None = None
    building_id: str | None = None
    address: str | None = None
    lat: float | None = None
    lon: float | None = None
    reporter_id: str | None = None
    reported_at: datetime | None = None
    observed_at: datetime | None = None
    rectified_on_site: bool = False
    department_id: str | None = None
    departments_involved: tuple[str, ...] = ()
    dispatch_id: uuid.UUID | None = None
    receipt_deadline: datetime | None = None
    acknowledged_at: datetime | None = None
    acknowledged_on_time: bool | None = None
    receipt_overdue: bool = False
    escalation_level: int = 0
    returns: int = 0
    round: int = 0
    order_event_id: uuid.UUID | None = None
    rectification_deadline: datetime | None = None
    rectification_overdue: bool = False
    rectified_at: datetime | None = None
    rectified_by: str | None = None
    verified_by: str | None = None
    rework_count: int = 0
    closed_at: datetime | None = None
    closed_by: str | None = None
    closed_department_id: str | None = None
    close_reason: str | None = None
    relapse_of: uuid.UUID | None = None
    relapse_place_key: str | None = None
    duplicate_of: uuid.UUID | None = None
    original_receipt_deadline: datetime | None = None
    receipt_extension: Extension | None = None
    original_rectification_deadline: datetime | None = None
    rectification_extension: Extension | None = None
    urgings: int = 0
    progress_notes: int = 0
    last_event_id: uuid.UUID | None = None
    last_occurred_at: datetime | None = None

    @property
    def place_key(self) -> str | None:
        """Where the hazard is, as a key for relapse counting: its building, else a ~11 m cell."""
        return place_key(building_id=self.building_id, lat=self.lat, lon=self.lon)


def place_key(*, building_id: str | None, lat: float | None, lon: float | None) -> str | None:
    """``building:<id>`` when the building is known, else ``point:<lat>,<lon>`` rounded to 4 decimals."""
    if building_id:
        return f"building:{building_id}"
    if lat is None or lon is None:
        return None
    return f"point:{lat:.4f},{lon:.4f}"


# ---------------------------------------------------------------------------- the fold


def ordered(entries: Iterable[Entry]) -> list[Entry]:
    """Entries in causal order: never an event before its cause, else by occurred-at, lifecycle, arrival.

    Producers stamp an event and what it causes with one instant (a return and the rerouting or
    referral it leads to), and services' clocks differ; so the causation links decide first, and
    the timestamps only order events that neither caused the other. This is the order of the fold
    and of every view of the history.
    """
    items = sorted(entries, key=lambda entry: entry.sort_key)
    position = {entry.event.event_id: n for n, entry in enumerate(items)}
    effects: dict[int, list[int]] = {}
    waiting: set[int] = set()
    for n, entry in enumerate(items):
        cause = position.get(entry.event.causation_id) if entry.event.causation_id is not None else None
        if cause is not None and cause != n:
            effects.setdefault(cause, []).append(n)
            waiting.add(n)
    if not waiting:
        return items
    # Kahn's algorithm, taking the earliest ready entry each time (items are already in key order).
    ready = [n for n in range(len(items)) if n not in waiting]
    heapq.heapify(ready)
    out: list[Entry] = []
    while ready:
        n = heapq.heappop(ready)
        out.append(items[n])
        for effect in effects.get(n, ()):
            waiting.discard(effect)
            heapq.heappush(ready, effect)
    # A causation cycle cannot be produced; should one arrive, its entries keep their key order.
    placed = {entry.event.event_id for entry in out}
    out.extend(entry for entry in items if entry.event.event_id not in placed)
    return out


def build_case(hazard_id: uuid.UUID, entries: Iterable[Entry]) -> Case:
    """The case derived from its timeline, whatever order the entries arrived in."""
    case = Case(hazard_id=hazard_id)
    for entry in ordered(entries):
        case = apply_event(case, entry.event)
    return case


def _involve(case: Case, department_id: str | None) -> tuple[str, ...]:
    if department_id is None or department_id in case.departments_involved:
        return case.departments_involved
    return (*case.departments_involved, department_id)


def apply_event(case: Case, event: ev.AnyEvent) -> Case:
    """One step of the fold: the case after ``event`` (lenient: never refuses)."""
    return _replaced(case, _changes(case, event), event.event_id, event.occurred_at)


_CASE_FIELDS: Final = tuple(f.name for f in dataclasses.fields(Case))
_CASE_POSITION: Final = {name: n for n, name in enumerate(_CASE_FIELDS)}
_LAST_EVENT_ID: Final = _CASE_POSITION["last_event_id"]
_LAST_OCCURRED_AT: Final = _CASE_POSITION["last_occurred_at"]
_case_values: Final = operator.attrgetter(*_CASE_FIELDS)


def _replaced(case: Case, changes: dict[str, Any], event_id: uuid.UUID, occurred_at: datetime) -> Case:
    """``dataclasses.replace(case, last_event_id=..., last_occurred_at=..., **changes)``, at half its cost.

    The fold makes a new case per event, and ``dataclasses.replace`` looks up each of the case's
    45 fields by name before calling ``__init__`` by keyword: it was the largest single item of
    tracking's CPU per event (``bench.profile_statements --python``). Here one ``attrgetter``
    reads every field at once and ``__init__`` takes them by position.
    """
    values = list(_case_values(case))
    for name, value in changes.items():
        values[_CASE_POSITION[name]] = value
    values[_LAST_EVENT_ID] = event_id
    values[_LAST_OCCURRED_AT] = occurred_at
    return Case(*values)


def _changes(case: Case, event: ev.AnyEvent) -> dict[str, Any]:
    """What ``event`` changes in ``case``, as field values."""
    base: dict[str, Any]
    match event:
        case ev.HazardReported(payload=p):
            state: State = case.state
            if p.duplicate_of is not None or case.duplicate_of is not None:
                state = "duplicate"
            elif case.state == "new":
                state = "reported"
            return {
                "state": state,
                "category": p.category,
                "grid_id": p.grid_id,
                "community_id": p.community_id,
                "building_id": p.location.building_id,
                "address": p.location.address,
                "lat": p.location.lat,
                "lon": p.location.lon,
                "reporter_id": p.reporter_id,
                "reported_at": p.accepted_at,
                "observed_at": p.observed_at,
                "rectified_on_site": p.rectified_on_site,
                "duplicate_of": p.duplicate_of or case.duplicate_of,
            }
        case ev.HazardDuplicateLinked(payload=p):
            return {
                "duplicate_of": p.original_hazard_id,
                "state": case.state if case.state in {"closed", "rectified"} else "duplicate",
            }
        case ev.HazardDuplicateUnlinked():
            # Observed after the original's closure: a hazard of its own again (a possible relapse).
            return {"duplicate_of": None, "state": "reported" if case.state == "duplicate" else case.state}
        case ev.HazardDispatched(payload=p):
            base = {"departments_involved": _involve(case, p.department_id)}
            if case.state in _SETTLED:
                return base
            return base | {
                "state": "dispatched",
                "department_id": p.department_id,
                "dispatch_id": p.dispatch_id,
                "receipt_deadline": p.receipt_deadline,
                "original_receipt_deadline": None,
                "receipt_extension": None,
                "receipt_overdue": False,
                "acknowledged_at": None,
                "acknowledged_on_time": None,
                "order_event_id": None,
                "rectification_deadline": None,
                "rectification_overdue": False,
            }
        case ev.HazardReferredToOperators():
            if case.state in _SETTLED or case.state in {"acknowledged", "rectification_ordered"}:
                return {}
            return {"state": "referred_to_operators", "department_id": None, "dispatch_id": None}
        case ev.HazardAcknowledged(payload=p):
            base = {"departments_involved": _involve(case, p.department_id)}
            stale = case.dispatch_id is not None and case.dispatch_id != p.dispatch_id
            if case.state not in _BEFORE_RECEIPT or stale:
                return base
            return base | {
                "state": "acknowledged",
                "department_id": p.department_id,
                "dispatch_id": p.dispatch_id,
                "receipt_deadline": p.receipt_deadline,
                "acknowledged_at": p.acknowledged_at,
                "acknowledged_on_time": p.on_time,
            }
        case ev.HazardReturned(payload=p):
            base = {"returns": case.returns + 1, "departments_involved": _involve(case, p.department_id)}
            stale = case.dispatch_id is not None and case.dispatch_id != p.dispatch_id
            if case.state in _SETTLED or stale:
                return base
            # Also after receipt (退单 after 签收): the returning department's order lapses with it.
            return base | {
                "state": "reported",
                "department_id": None,
                "dispatch_id": None,
                "receipt_deadline": None,
                "order_event_id": None,
                "rectification_deadline": None,
                "rectification_overdue": False,
            }
        case ev.HazardReceiptOverdue(payload=p):
            if case.dispatch_id not in (None, p.dispatch_id):
                return {}
            return {"receipt_overdue": True}
        case ev.HazardEscalated(payload=p):
            return {"escalation_level": max(case.escalation_level, p.level)}
        case ev.HazardRectificationOrdered(payload=p):
            base = {"departments_involved": _involve(case, p.department_id)}
            if case.state in {"closed", "duplicate"}:
                return base
            return base | {
                "state": "rectification_ordered",
                "department_id": p.department_id,
                "round": p.round,
                "order_event_id": event.event_id,
                "rectification_deadline": p.deadline,
                "original_rectification_deadline": None,
                "rectification_extension": None,
                "rectification_overdue": False,
            }
        case ev.HazardRectificationOverdue(payload=p):
            if case.state == "rectification_ordered" and case.round == p.round:
                return {"rectification_overdue": True}
            return {}
        case ev.HazardRectified(payload=p):
            if case.state in {"closed", "duplicate"}:
                return {}
            return {
                "state": "rectified",
                "round": max(case.round, p.round),
                "rectified_at": event.occurred_at,
                "rectified_by": p.rectified_by,
                "order_event_id": None,
            }
        case ev.HazardVerified(payload=p):
            if case.state in {"closed", "duplicate"}:
                return {}
            if p.passed:
                return {"state": "verified", "verified_by": p.verified_by}
            return {
                "state": "verification_failed",
                "verified_by": p.verified_by,
                "rework_count": case.rework_count + 1,
            }
        case ev.HazardClosed(payload=p):
            return {
                "state": "closed",
                "closed_at": event.occurred_at,
                "closed_by": p.closed_by,
                "closed_department_id": p.department_id,
                "close_reason": p.reason,
                "order_event_id": None,
            }
        case ev.HazardRelapsed(payload=p):
            return {"relapse_of": p.original_hazard_id, "relapse_place_key": p.place_key}
        case ev.HazardUrged():
            return {"urgings": case.urgings + 1}
        case ev.HazardProgressNoted():
            return {"progress_notes": case.progress_notes + 1}
        case ev.HazardExtensionRequested(payload=p):
            return _extension_requested(case, event, p)
        case ev.HazardExtensionDecided(payload=p):
            return _extension_decided(case, event, p)
    return {}


def _applies(case: Case, stage: str, dispatch_id: uuid.UUID | None, round_: int | None) -> bool:
    """Whether an extension event concerns the deadline the case holds now (not a stale dispatch or round)."""
    if stage == "receipt":
        return dispatch_id is not None and dispatch_id == case.dispatch_id
    return case.state == "rectification_ordered" and (round_ is None or round_ == case.round)


def _extension_requested(
    case: Case, event: ev.AnyEvent, p: ev.HazardExtensionRequestedPayload
) -> dict[str, Any]:
    if not _applies(case, p.stage, p.dispatch_id, p.round):
        return {}
    request = Extension(
        stage=p.stage,
        status="awaiting_approval",
        requested_deadline=p.requested_deadline,
        previous_deadline=p.current_deadline,
        reason=p.reason,
        requested_by=p.by,
        requested_at=event.occurred_at,
    )
    return {f"{p.stage}_extension": request}


def _extension_decided(case: Case, event: ev.AnyEvent, p: ev.HazardExtensionDecidedPayload) -> dict[str, Any]:
    if not _applies(case, p.stage, p.dispatch_id, p.round):
        return {}
    current = case.receipt_extension if p.stage == "receipt" else case.rectification_extension
    decided = Extension(
        stage=p.stage,
        status="approved" if p.approved else "refused",
        requested_deadline=p.requested_deadline,
        previous_deadline=current.previous_deadline if current else None,
        reason=current.reason if current else "",
        requested_by=current.requested_by if current else "",
        requested_at=current.requested_at if current else event.occurred_at,
        decided_by=p.by,
        decided_at=event.occurred_at,
        note=p.note or None,
    )
    changes: dict[str, Any] = {f"{p.stage}_extension": decided}
    if p.approved:
        changes[f"{p.stage}_deadline"] = p.deadline
        changes[f"original_{p.stage}_deadline"] = p.original_deadline
    return changes


# ---------------------------------------------------------------------------- checks


def refusal(case: Case, event: ev.AnyEvent) -> str | None:
    """Why a tracking-type event from the stream does not fit ``case`` (the case before it), or None."""
    name = f"hazard {event.hazard_id}"
    where = f"it is {STATE_DESCRIPTIONS[case.state]} ({case.state})"
    match event:
        case ev.HazardRectificationOrdered():
            if case.state in {"closed", "duplicate", "new"}:
                return f"cannot order rectification of {name}: {where}"
        case ev.HazardRectified():
            if case.state != "rectification_ordered":
                return f"cannot mark {name} rectified: {where}; rectification needs a case awaiting rectification"
        case ev.HazardVerified():
            if case.state != "rectified":
                return f"cannot verify {name}: {where}; verification needs a rectified case"
        case ev.HazardClosed():
            if case.state in {"closed", "duplicate"}:
                return f"cannot close {name}: {where}"
        case ev.HazardRectificationOverdue(payload=p):
            if case.state != "rectification_ordered" or case.round != p.round:
                return f"rectification of {name} cannot be overdue in round {p.round}: {where}"
    return None


def state_before(entries: Sequence[Entry], event: ev.AnyEvent, *, hazard_id: uuid.UUID) -> Case:
    """The case as it stood just before ``event``'s place in the timeline."""
    probe = Entry(seq=1 << 62, event=event)
    before: list[Entry] = []
    for entry in ordered([*entries, probe]):
        if entry is probe:
            break
        before.append(entry)
    return build_case(hazard_id, before)


# ---------------------------------------------------------------------------- commands


def visible_to(case: Case, *, role: str, grid_id: str | None, department_id: str | None) -> bool:
    """Whether a caller may see the case: its grid's reporters, the departments that held it, all others
    with a read-all role. A case the caller may not see is unknown to them, for reads and actions alike."""
    if role in ("operator", "supervisor"):
        return True
    if role == "reporter":
        return grid_id is not None and grid_id == case.grid_id
    return department_id is not None and (
        department_id == case.department_id or department_id in case.departments_involved
    )


def _own_time(case: Case, now: datetime) -> datetime:
    """When an event tracking emits occurred: now, but always after the latest entry it follows."""
    if case.last_occurred_at is not None and case.last_occurred_at >= now:
        return case.last_occurred_at + _TICK
    return now


def rectify(
    case: Case,
    *,
    department_id: str,
    actor: str,
    note: str,
    photos: Sequence[str],
    now: datetime,
    event_id: uuid.UUID | None = None,
) -> ev.HazardRectified:
    """The department holding the case marks it rectified, with evidence."""
    if case.state == "new" or case.department_id is None or department_id != case.department_id:
        # Never name the holder: the caller may see the case, not whom it is with now (API.md).
        raise NotPermitted(
            f"only the department holding hazard {case.hazard_id} may mark it rectified; yours does not"
        )
    if case.state != "rectification_ordered":
        raise TransitionRefused(
            f"cannot mark hazard {case.hazard_id} rectified: it is {STATE_DESCRIPTIONS[case.state]} "
            f"({case.state}); only a case awaiting rectification can be marked rectified"
        )
    return ev.HazardRectified(
        event_id=event_id or uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.order_event_id,
        payload=ev.HazardRectifiedPayload(
            department_id=department_id,
            note=note,
            photos=tuple(photos),
            rectified_by=actor,
            round=max(case.round, 1),
        ),
    )


def verify(
    case: Case,
    *,
    grid_id: str,
    actor: str,
    passed: bool,
    note: str,
    photos: Sequence[str],
    now: datetime,
    event_id: uuid.UUID | None = None,
) -> ev.HazardVerified:
    """A grid member of the case's grid records the return visit: passed or failed."""
    if case.grid_id is None or grid_id != case.grid_id:
        raise NotPermitted(f"only a reporter of the grid of hazard {case.hazard_id} may verify it")
    if case.state != "rectified":
        raise TransitionRefused(
            f"cannot verify hazard {case.hazard_id}: it is {STATE_DESCRIPTIONS[case.state]} ({case.state}); "
            f"verification needs a rectified case"
        )
    return ev.HazardVerified(
        event_id=event_id or uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.last_event_id,
        payload=ev.HazardVerifiedPayload(
            passed=passed, note=note, photos=tuple(photos), verified_by=actor, round=max(case.round, 1)
        ),
    )


# ---------------------------------------------------------------------------- urging, extensions, notes

URGEABLE: Final[dict[str, Literal["receipt", "rectification"]]] = {
    "dispatched": "receipt",
    "acknowledged": "rectification",
    "rectification_ordered": "rectification",
    "verification_failed": "rectification",
}
"""The open stages a supervisor or operator may urge (督办): a dispatch awaiting receipt, a rectification."""

_HELD: Final = frozenset(
    {"dispatched", "acknowledged", "rectification_ordered", "rectified", "verification_failed", "verified"}
)


def urge(
    case: Case, *, actor: str, note: str, now: datetime, urging_id: uuid.UUID | None = None
) -> ev.HazardUrged:
    """A supervisor or operator urges the department holding an open dispatch or rectification."""
    stage = URGEABLE.get(case.state)
    if stage is None or case.department_id is None:
        raise TransitionRefused(
            f"cannot urge hazard {case.hazard_id}: it is {STATE_DESCRIPTIONS[case.state]} ({case.state}); "
            "only an open dispatch or rectification can be urged"
        )
    return ev.HazardUrged(
        event_id=uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.last_event_id,
        payload=ev.HazardUrgedPayload(
            urging_id=urging_id or uuid.uuid4(),
            department_id=case.department_id,
            dispatch_id=case.dispatch_id if stage == "receipt" else None,
            stage=stage,
            note=note,
            urged_by=actor,
        ),
    )


def _require_holder(case: Case, department_id: str, what: str) -> None:
    if case.department_id is None or department_id != case.department_id:
        raise NotPermitted(f"only the department holding hazard {case.hazard_id} may {what}; yours does not")


def check_extension_date(
    *, requested: datetime, current: datetime, limit: timedelta = DEFAULT_EXTENSION_LIMIT
) -> None:
    """A requested deadline must be after the one in force and at most ``limit`` beyond it."""
    if requested <= current:
        raise ExtensionDateRefused(
            f"the requested deadline {requested.isoformat()} is not after the deadline in force "
            f"({current.isoformat()}); an extension moves a deadline later"
        )
    if requested - current > limit:
        raise ExtensionDateRefused(
            f"the requested deadline {requested.isoformat()} is more than {limit.days} days after the "
            f"deadline in force ({current.isoformat()})"
        )


def request_rectification_extension(
    case: Case,
    *,
    department_id: str,
    actor: str,
    deadline: datetime,
    reason: str,
    now: datetime,
    limit: timedelta = DEFAULT_EXTENSION_LIMIT,
) -> ev.HazardExtensionRequested:
    """The department holding the rectification asks for a later deadline; nothing moves until approval."""
    _require_holder(case, department_id, "ask to extend its rectification deadline")
    if case.state != "rectification_ordered" or case.rectification_deadline is None:
        raise TransitionRefused(
            f"cannot extend the rectification of hazard {case.hazard_id}: it is "
            f"{STATE_DESCRIPTIONS[case.state]} ({case.state}); only a case awaiting rectification can"
        )
    if (
        case.rectification_extension is not None
        and case.rectification_extension.status == "awaiting_approval"
    ):
        raise TransitionRefused(
            f"an extension of the rectification of hazard {case.hazard_id} already awaits a decision"
        )
    if case.rectification_overdue or now > case.rectification_deadline:
        raise TransitionRefused(
            f"the rectification deadline of hazard {case.hazard_id} has passed; "
            "an extension must be requested before it"
        )
    check_extension_date(requested=deadline, current=case.rectification_deadline, limit=limit)
    return ev.HazardExtensionRequested(
        event_id=uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.order_event_id,
        payload=ev.HazardExtensionRequestedPayload(
            stage="rectification",
            department_id=department_id,
            original_deadline=case.original_rectification_deadline or case.rectification_deadline,
            current_deadline=case.rectification_deadline,
            requested_deadline=deadline,
            reason=reason,
            by=actor,
            round=max(case.round, 1),
        ),
    )


def decide_rectification_extension(
    case: Case, *, approved: bool, actor: str, note: str, now: datetime
) -> ev.HazardExtensionDecided:
    """An operator or supervisor approves (the deadline moves) or refuses (it stays) the pending request."""
    request = case.rectification_extension
    if (
        case.state != "rectification_ordered"
        or case.rectification_deadline is None
        or case.department_id is None
        or request is None
        or request.status != "awaiting_approval"
    ):
        raise TransitionRefused(
            f"no extension of the rectification of hazard {case.hazard_id} awaits a decision"
        )
    if approved and case.rectification_overdue:
        raise TransitionRefused(
            f"the rectification of hazard {case.hazard_id} was declared overdue before the extension "
            "was decided; refuse the request instead"
        )
    return ev.HazardExtensionDecided(
        event_id=uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.last_event_id,
        payload=ev.HazardExtensionDecidedPayload(
            stage="rectification",
            department_id=case.department_id,
            original_deadline=case.original_rectification_deadline or case.rectification_deadline,
            requested_deadline=request.requested_deadline,
            approved=approved,
            deadline=request.requested_deadline if approved else case.rectification_deadline,
            note=note,
            by=actor,
            round=max(case.round, 1),
        ),
    )


def note_progress(
    case: Case, *, department_id: str, actor: str, note: str, photos: Sequence[str], now: datetime
) -> ev.HazardProgressNoted:
    """The department holding the case adds a progress note (进展), with photos if any."""
    _require_holder(case, department_id, "add progress notes to it")
    if case.state not in _HELD:
        raise TransitionRefused(
            f"cannot add a progress note to hazard {case.hazard_id}: it is "
            f"{STATE_DESCRIPTIONS[case.state]} ({case.state})"
        )
    return ev.HazardProgressNoted(
        event_id=uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.last_event_id,
        payload=ev.HazardProgressNotedPayload(
            department_id=department_id, note=note, photos=tuple(photos), noted_by=actor
        ),
    )


# ---------------------------------------------------------------------------- reactions


def _order(
    case: Case, *, round_: int, now: datetime, reference: ReferenceData
) -> ev.HazardRectificationOrdered:
    assert case.category is not None
    assert case.department_id is not None
    rule = reference.rectification_rule(case.category)
    at = _own_time(case, now)
    return ev.HazardRectificationOrdered(
        event_id=uuid.uuid4(),
        occurred_at=at,
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=case.last_event_id,
        payload=ev.HazardRectificationOrderedPayload(
            department_id=case.department_id,
            deadline=add_deadline(at, rule, reference.calendar),
            deadline_rule=ev.FrozenDeadlineRule(minutes=rule.minutes, working_time=rule.working_time),
            round=round_,
        ),
    )


def react(case: Case, *, now: datetime, reference: ReferenceData) -> ev.AnyEvent | None:
    """What tracking must publish next for this case, if anything (apply it, then ask again)."""
    match case.state:
        case "acknowledged" if case.category is not None and case.department_id is not None:
            return _order(case, round_=max(case.round, 1), now=now, reference=reference)
        case "verification_failed" if case.category is not None and case.department_id is not None:
            return _order(case, round_=case.round + 1, now=now, reference=reference)
        case "verified":
            return ev.HazardClosed(
                event_id=uuid.uuid4(),
                occurred_at=_own_time(case, now),
                hazard_id=case.hazard_id,
                producer="tracking",
                causation_id=case.last_event_id,
                payload=ev.HazardClosedPayload(
                    reason="verified",
                    department_id=case.department_id,
                    closed_by=case.verified_by or "tracking",
                ),
            )
        case "reported" if case.rectified_on_site:
            return ev.HazardClosed(
                event_id=uuid.uuid4(),
                occurred_at=_own_time(case, now),
                hazard_id=case.hazard_id,
                producer="tracking",
                causation_id=case.last_event_id,
                payload=ev.HazardClosedPayload(
                    reason="rectified_on_site", department_id=None, closed_by=case.reporter_id or "tracking"
                ),
            )
    return None


@dataclass
class Progress:
    """A case moving forward within one transaction: its entries and the events tracking emits."""

    hazard_id: uuid.UUID
    entries: list[Entry] = field(default_factory=list)
    emitted: list[ev.AnyEvent] = field(default_factory=list)
    next_seq: int = 0

    def __post_init__(self) -> None:
        self.next_seq = max((e.seq for e in self.entries), default=0) + 1
        self._case = build_case(self.hazard_id, self.entries)

    @property
    def case(self) -> Case:
        """The case as of every entry so far."""
        return self._case

    def record(self, event: ev.AnyEvent) -> Entry:
        """Add an event to the timeline and recompute the case."""
        entry = Entry(seq=self.next_seq, event=event)
        self.next_seq += 1
        last = max((e.sort_key for e in self.entries), default=None)
        its_effect_came_first = any(e.event.causation_id == event.event_id for e in self.entries)
        self.entries.append(entry)
        if last is None or (entry.sort_key > last and not its_effect_came_first):
            self._case = apply_event(self._case, event)  # in order: one step suffices
        else:
            self._case = build_case(self.hazard_id, self.entries)
        return entry

    def emit(self, event: ev.AnyEvent) -> None:
        """Record an event tracking publishes."""
        self.record(event)
        self.emitted.append(event)

    def settle(self, *, now: datetime, reference: ReferenceData, limit: int = 5) -> None:
        """Emit every reaction the case calls for (bounded: a reaction always moves the state on)."""
        for _ in range(limit):
            reaction = react(self._case, now=now, reference=reference)
            if reaction is None:
                return
            self.emit(reaction)


# ---------------------------------------------------------------------------- rectification timers


def overdue(case: Case, *, order_event_id: uuid.UUID, now: datetime) -> ev.HazardRectificationOverdue | None:
    """The overdue event when the order a timer belongs to is still the one awaiting rectification."""
    if (
        case.state != "rectification_ordered"
        or case.order_event_id != order_event_id
        or case.rectification_overdue
        or case.department_id is None
        or case.rectification_deadline is None
    ):
        return None
    return ev.HazardRectificationOverdue(
        event_id=uuid.uuid4(),
        occurred_at=_own_time(case, now),
        hazard_id=case.hazard_id,
        producer="tracking",
        causation_id=order_event_id,
        payload=ev.HazardRectificationOverduePayload(
            department_id=case.department_id, deadline=case.rectification_deadline, round=case.round
        ),
    )


# ---------------------------------------------------------------------------- relapse


@dataclass(frozen=True, slots=True)
class ClosedCase:
    """A closed case at or near a place: a relapse candidate."""

    hazard_id: uuid.UUID
    category: str
    building_id: str | None
    lat: float
    lon: float
    closed_at: datetime
    department_id: str | None


def detect_relapse(
    report: ev.HazardReported,
    candidates: Iterable[ClosedCase],
    *,
    window_days: int,
    distance_m: float,
    now: datetime,
    causation_id: uuid.UUID | None = None,
) -> ev.HazardRelapsed | None:
    """The relapse a new report is of: same category, same building or within ``distance_m``, within the window.

    The report's ``observed_at`` is when the hazard was seen again; a case closed after
    that, or more than ``window_days`` before, is no relapse. The most recently closed wins.
    """
    p = report.payload
    if p.duplicate_of is not None:
        return None
    seen_at = p.observed_at
    window = timedelta(days=window_days)
    best: tuple[ClosedCase, bool, float] | None = None
    for c in candidates:
        if c.hazard_id == report.hazard_id or c.category != p.category:
            continue
        if c.closed_at > seen_at or seen_at - c.closed_at > window:
            continue
        same_building = bool(p.location.building_id) and c.building_id == p.location.building_id
        distance = haversine_m(p.location.lat, p.location.lon, c.lat, c.lon)
        if not same_building and distance > distance_m:
            continue
        if best is None or c.closed_at > best[0].closed_at:
            best = (c, same_building, distance)
    if best is None:
        return None
    original, same_building, distance = best
    days = (seen_at - original.closed_at).total_seconds() / 86_400
    key = place_key(building_id=original.building_id, lat=original.lat, lon=original.lon)
    return ev.HazardRelapsed(
        event_id=uuid.uuid4(),
        occurred_at=max(now, report.occurred_at),
        hazard_id=report.hazard_id,
        producer="tracking",
        causation_id=causation_id or report.event_id,
        payload=ev.HazardRelapsedPayload(
            original_hazard_id=original.hazard_id,
            original_department_id=original.department_id,
            original_closed_at=original.closed_at,
            days_since_closure=round(max(days, 0.0), 3),
            same_building=same_building,
            distance_m=round(distance, 1),
            place_key=key or f"hazard:{original.hazard_id}",
        ),
    )


def is_hotspot(*, relapses: int, min_relapses: int) -> bool:
    """A place with at least ``min_relapses`` relapses is a relapse hotspot."""
    return relapses >= min_relapses


def actor_of(event: ev.AnyEvent) -> str:
    """Who did what an event records (the person or system named in it, else its producer)."""
    match event:
        case ev.HazardReported(payload=p):
            return p.reporter_id
        case ev.HazardDispatched(payload=p):
            return p.dispatched_by
        case ev.HazardAcknowledged(payload=p):
            return p.acknowledged_by
        case ev.HazardReturned(payload=p):
            return p.returned_by
        case ev.HazardRectified(payload=p):
            return p.rectified_by
        case ev.HazardVerified(payload=p):
            return p.verified_by
        case ev.HazardClosed(payload=p):
            return p.closed_by
        case ev.HazardUrged(payload=p):
            return p.urged_by
        case ev.HazardExtensionRequested(payload=p) | ev.HazardExtensionDecided(payload=p):
            return p.by
        case ev.HazardProgressNoted(payload=p):
            return p.noted_by
    return event.producer
