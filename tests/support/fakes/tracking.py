"""An in-memory :class:`~services.tracking.repository.TrackingRepository`: same methods, same answers.

Rows are plain objects with the attributes the real rows carry (a case row's columns, a timer's
``order_event_id``, ``hazard_id``, ``round``, ``due_at``...), so use cases and views read them
alike. It keeps the real repository's rules that use cases rely on: a timeline entry stored
once per event id, timers fired or cancelled once, a case marked at a hotspot stays marked,
closed cases found by building or within a box around the point.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from services.tracking.domain import Case, ClosedCase, Entry
from services.tracking.repository import Hotspot, PlaceQuery, TrackingRepository
from shared import events as ev

_METRES_PER_DEGREE_LAT = 111_320.0


@dataclass
class Timer:
    """A rectification timer as the table holds it."""

    order_event_id: uuid.UUID
    hazard_id: uuid.UUID
    round: int
    due_at: datetime
    fired_at: datetime | None = None
    cancelled_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.fired_at is None and self.cancelled_at is None


@dataclass
class FakeTrackingRepository(TrackingRepository):
    """The tracking schema in dictionaries (one instance is one database)."""

    entries: dict[uuid.UUID, list[Entry]] = field(default_factory=dict)
    event_ids: set[uuid.UUID] = field(default_factory=set)
    applied: set[uuid.UUID] = field(default_factory=set)
    cases: dict[uuid.UUID, Case] = field(default_factory=dict)
    hotspot_cases: set[uuid.UUID] = field(default_factory=set)
    updated_at: dict[uuid.UUID, datetime] = field(default_factory=dict)
    timers: dict[uuid.UUID, Timer] = field(default_factory=dict)
    hotspots: dict[str, Hotspot] = field(default_factory=dict)
    notifications: dict[uuid.UUID, ev.HazardNotified] = field(default_factory=dict)
    imported: dict[uuid.UUID, ClosedCase] = field(default_factory=dict)
    locked: list[set[uuid.UUID]] = field(default_factory=list)
    _seq: int = 0

    def __post_init__(self) -> None:
        self.session = None  # type: ignore[assignment]  # nothing to bind: no database

    # ------------------------------------------------------------------ timeline and cases

    async def add_notifications(self, events: Sequence[ev.HazardNotified]) -> None:
        for event in events:
            self.notifications.setdefault(event.event_id, event)

    async def list_notifications(self, hazard_id: uuid.UUID) -> list[Any]:
        found = sorted(
            (e for e in self.notifications.values() if e.hazard_id == hazard_id),
            key=lambda e: (e.occurred_at, e.event_id),
        )
        return [
            SimpleNamespace(
                event_id=e.event_id,
                hazard_id=e.hazard_id,
                occurred_at=e.occurred_at,
                causation_id=e.causation_id,
                payload=e.payload.model_dump(mode="json"),
            )
            for e in found
        ]

    async def add_imported_closures(self, events: Sequence[ev.HazardImported]) -> None:
        for e in events:
            p = e.payload
            if p.closed_at is not None:
                self.imported.setdefault(
                    e.hazard_id,
                    ClosedCase(
                        hazard_id=e.hazard_id,
                        category=p.category,
                        building_id=p.location.building_id,
                        lat=p.location.lat,
                        lon=p.location.lon,
                        closed_at=p.closed_at,
                        department_id=p.department_id,
                    ),
                )

    async def lock_cases(self, hazard_ids: Iterable[uuid.UUID]) -> None:
        self.locked.append(set(hazard_ids))

    async def load_entries(self, hazard_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[Entry]]:
        return {h: list(self.entries.get(h, [])) for h in set(hazard_ids)}

    async def add_entries(self, events: Sequence[ev.AnyEvent]) -> None:
        for event in events:
            if event.event_id in self.event_ids:
                continue
            self._seq += 1
            self.event_ids.add(event.event_id)
            self.entries.setdefault(event.hazard_id, []).append(Entry(seq=self._seq, event=event))

    async def mark_applied(self, event_ids: Sequence[uuid.UUID]) -> None:
        self.applied.update(event_ids)

    async def save_cases(self, cases: Sequence[Case], *, hotspots: set[uuid.UUID], now: datetime) -> None:
        for case in cases:
            self.cases[case.hazard_id] = case
            self.updated_at[case.hazard_id] = now
        self.hotspot_cases.update(hotspots)

    def _row(self, case: Case) -> Any:
        return SimpleNamespace(
            hazard_id=case.hazard_id,
            state=case.state,
            category=case.category,
            grid_id=case.grid_id,
            community_id=case.community_id,
            building_id=case.building_id,
            lat=case.lat,
            lon=case.lon,
            place_key=case.place_key,
            reporter_id=case.reporter_id,
            reported_at=case.reported_at,
            rectified_on_site=case.rectified_on_site,
            department_id=case.department_id,
            departments_involved=list(case.departments_involved),
            dispatch_id=case.dispatch_id,
            receipt_deadline=case.receipt_deadline,
            round=case.round,
            order_event_id=case.order_event_id,
            rectification_deadline=case.rectification_deadline,
            rectification_overdue=case.rectification_overdue,
            rework_count=case.rework_count,
            closed_at=case.closed_at,
            closed_by=case.closed_by,
            closed_department_id=case.closed_department_id,
            close_reason=case.close_reason,
            relapse_of=case.relapse_of,
            duplicate_of=case.duplicate_of,
            hotspot=case.hazard_id in self.hotspot_cases,
            updated_at=self.updated_at.get(case.hazard_id),
        )

    async def get_case_row(self, hazard_id: uuid.UUID, *, lock: bool = False) -> Any | None:
        case = self.cases.get(hazard_id)
        return self._row(case) if case is not None else None

    def _newest_first(self, cases: Iterable[Case]) -> list[Case]:
        # reported_at desc nulls last, then hazard_id
        dated = sorted((c for c in cases if c.reported_at is not None), key=lambda c: c.hazard_id)
        dated.sort(key=lambda c: c.reported_at or datetime.min, reverse=True)
        undated = sorted((c for c in cases if c.reported_at is None), key=lambda c: c.hazard_id)
        return dated + undated

    async def list_cases(
        self,
        *,
        grid_id: str | None,
        department_id: str | None,
        reporter_id: str | None,
        states: Sequence[str],
        limit: int,
        offset: int,
        rectification_extension_awaiting: bool = False,
    ) -> list[Any]:
        found = [
            c
            for c in self.cases.values()
            if (grid_id is None or c.grid_id == grid_id)
            and (department_id is None or c.department_id == department_id)
            and (reporter_id is None or c.reporter_id == reporter_id)
            and (not states or c.state in states)
            and (
                not rectification_extension_awaiting
                or (
                    c.state == "rectification_ordered"
                    and c.rectification_extension is not None
                    and c.rectification_extension.status == "awaiting_approval"
                )
            )
        ]
        return [self._row(c) for c in self._newest_first(found)[offset : offset + limit]]

    def _linked(self, hazard_id: uuid.UUID, attribute: str) -> list[uuid.UUID]:
        linked = [c for c in self.cases.values() if getattr(c, attribute) == hazard_id]
        linked.sort(key=lambda c: (c.reported_at is None, c.reported_at or datetime.min))
        return [c.hazard_id for c in linked]

    async def list_duplicates(self, hazard_id: uuid.UUID) -> list[uuid.UUID]:
        return self._linked(hazard_id, "duplicate_of")

    async def list_relapses(self, hazard_id: uuid.UUID) -> list[uuid.UUID]:
        return self._linked(hazard_id, "relapse_of")

    # ------------------------------------------------------------------ relapse and hotspots

    async def list_closed_near(self, queries: Sequence[PlaceQuery]) -> list[list[ClosedCase]]:
        closed = [
            ClosedCase(
                hazard_id=c.hazard_id,
                category=c.category,
                building_id=c.building_id,
                lat=c.lat,
                lon=c.lon,
                closed_at=c.closed_at,
                department_id=c.closed_department_id,
            )
            for c in self.cases.values()
            if c.state == "closed"
            and c.closed_at is not None
            and c.category is not None
            and c.lat is not None
            and c.lon is not None
        ]
        candidates = [*closed, *self.imported.values()]
        found: list[list[ClosedCase]] = []
        for q in queries:
            d_lat = q.distance_m / _METRES_PER_DEGREE_LAT
            d_lon = q.distance_m / (_METRES_PER_DEGREE_LAT * max(math.cos(math.radians(q.lat)), 0.01))
            found.append(
                [
                    c
                    for c in candidates
                    if c.category == q.category
                    and c.closed_at >= q.closed_since
                    and c.hazard_id != q.hazard_id
                    and (
                        (bool(q.building_id) and c.building_id == q.building_id)
                        or (abs(c.lat - q.lat) <= d_lat and abs(c.lon - q.lon) <= d_lon)
                    )
                ]
            )
        return found

    async def count_relapse(self, relapse: ev.HazardRelapsed, *, case: Case, min_relapses: int) -> int:
        p = relapse.payload
        at = relapse.occurred_at
        known = self.hotspots.get(p.place_key)
        if known is None:
            spot = Hotspot(
                place_key=p.place_key,
                relapses=1,
                categories=[case.category] if case.category else [],
                community_id=case.community_id,
                grid_id=case.grid_id,
                first_relapse_at=at,
                last_relapse_at=at,
                last_hazard_id=relapse.hazard_id,
                flagged_at=at if min_relapses <= 1 else None,
            )
        else:
            count = known.relapses + 1
            categories = list(known.categories)
            if case.category and case.category not in categories:
                categories.append(case.category)
            spot = Hotspot(
                place_key=known.place_key,
                relapses=count,
                categories=categories,
                community_id=known.community_id,
                grid_id=known.grid_id,
                first_relapse_at=known.first_relapse_at,
                last_relapse_at=max(known.last_relapse_at, at),
                last_hazard_id=relapse.hazard_id,
                flagged_at=known.flagged_at or (at if count >= min_relapses else None),
            )
        self.hotspots[p.place_key] = spot
        return spot.relapses

    async def list_hotspots(self, *, min_relapses: int, limit: int = 100) -> list[Hotspot]:
        found = [h for h in self.hotspots.values() if h.relapses >= min_relapses]
        found.sort(key=lambda h: (h.relapses, h.last_relapse_at), reverse=True)
        return found[:limit]

    # ------------------------------------------------------------------ rectification timers

    async def add_timers(self, orders: Sequence[ev.HazardRectificationOrdered]) -> None:
        for o in orders:
            self.timers.setdefault(
                o.event_id,
                Timer(
                    order_event_id=o.event_id,
                    hazard_id=o.hazard_id,
                    round=o.payload.round,
                    due_at=o.payload.deadline,
                ),
            )

    async def reschedule_timers(self, moves: Sequence[tuple[uuid.UUID, datetime]]) -> None:
        for order_event_id, due_at in moves:
            timer = self.timers.get(order_event_id)
            if timer is not None and timer.open:
                timer.due_at = due_at

    async def cancel_timers(
        self, *, hazard_ids: Sequence[uuid.UUID], keep: Sequence[uuid.UUID], now: datetime
    ) -> None:
        for timer in self.timers.values():
            if timer.hazard_id in hazard_ids and timer.open and timer.order_event_id not in keep:
                timer.cancelled_at = now

    def _due(self, now: datetime) -> list[Timer]:
        return sorted((t for t in self.timers.values() if t.open and t.due_at <= now), key=lambda t: t.due_at)

    async def list_due_timers(self, *, now: datetime, limit: int) -> list[Any]:
        return self._due(now)[:limit]

    async def claim_timers(self, order_event_ids: Sequence[uuid.UUID], *, now: datetime) -> list[Any]:
        return [t for t in self._due(now) if t.order_event_id in order_event_ids]

    async def close_timers(
        self, *, fired: Sequence[uuid.UUID], cancelled: Sequence[uuid.UUID], now: datetime
    ) -> None:
        for order_event_id in fired:
            self.timers[order_event_id].fired_at = now
        for order_event_id in cancelled:
            self.timers[order_event_id].cancelled_at = now

    async def count_by_state(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for case in self.cases.values():
            counts[case.state] = counts.get(case.state, 0) + 1
        return counts

    # ------------------------------------------------------------------ for tests

    def open_timers(self, hazard_id: uuid.UUID) -> list[Timer]:
        """The hazard's timers still open."""
        return [t for t in self.timers.values() if t.hazard_id == hazard_id and t.open]
