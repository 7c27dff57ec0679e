"""A seed-shaped history (DOMAIN.md's street report, scaled down) as lifecycle events, with its own ledger.

Eighteen months of a street's hazards (2025-01-01 .. 2026-06-30): fire, public security,
production safety and other categories in the seed's proportions; grid members, building
managers, cadres' visits and the hotline; fixes on the spot; rectification notices handed out on
the spot (the water-heater campaign: every heater found gets one) and ordered by departments;
acknowledgements on time, late and never, with escalations; rectification overdue; closures and
relapses. Every hazard's plan is kept in a ``Planned`` record, and ``expected`` computes the
seed report's figures from those plans with plain Python — the oracle the period report is
checked against, sharing no code with reporting.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from shared import events as ev
from shared.reference import ReferenceData

RULE = ev.FrozenDeadlineRule(minutes=120, working_time=False)
FIRST_DAY = date(2025, 1, 1)
LAST_DAY = date(2026, 6, 30)
# (category, weight): fire ~72 %, public security ~1 %, production safety ~5 %, other ~22 % (DOMAIN.md)
CATEGORY_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("locked_rooftop_door", 16),
    ("blocked_fire_passage", 8),
    ("ebike_indoor_charging", 18),
    ("direct_vent_water_heater", 14),
    ("three_in_one_premises", 6),
    ("electrical_fire_hazard", 6),
    ("fire_equipment_missing", 4),
    ("public_security_hazard", 2),
    ("sporadic_construction_works", 5),
    ("gas_leak", 4),
    ("road_hazard", 6),
    ("illegal_structure", 8),
    ("other", 3),
)
REPORTER_WEIGHTS = (("grid_member", 70), ("building_manager", 22), ("cadre_visit", 5), ("hotline", 3))
OTHER_DEPARTMENT = "urban_management"  # the 'other' category has no owner: the operators send it here


@dataclass
class Planned:
    """One hazard's life as the generator planned it (the oracle's input)."""

    hazard_id: uuid.UUID
    day: date
    category: str
    group: str
    grid_id: str
    community_id: str
    street_id: str
    reporter_type: str
    source: str
    campaigns: tuple[str, ...]
    on_site: bool  # fixed on the spot (rectified and closed at once, never dispatched)
    notice_on_site: bool  # a rectification notice handed out on the spot
    department: str | None = None  # dispatched to
    ack: str | None = None  # on_time | late | never
    escalations: int = 0
    ordered: bool = False  # a department's rectification order
    rectified: bool = False
    rectification_overdue: bool = False
    closed: bool = False
    relapse_of: uuid.UUID | None = None
    relapsed_later: bool = False
    events: list[ev.AnyEvent] = field(default_factory=list)


def _at(day: date, hour_utc: int = 2, minutes: int = 0) -> datetime:
    """A moment of a local day (UTC+8): 02:00Z is 10:00 in the city, the same date."""
    return datetime.combine(day, time(hour_utc, minutes), tzinfo=UTC)


class _Ids:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.n = 0

    def __call__(self, kind: str) -> uuid.UUID:
        self.n += 1
        return uuid.uuid5(uuid.NAMESPACE_URL, f"seed-history/{self.seed}/{kind}/{self.n}")


def generate(
    reference: ReferenceData,
    *,
    seed: int = 18,
    per_day: float = 0.6,
    first_day: date = FIRST_DAY,
    last_day: date = LAST_DAY,
) -> list[Planned]:
    """Plans of every hazard of the history, each with its events (in the order they happened)."""
    rng = random.Random(seed)
    ids = _Ids(seed)
    categories = {c.code: c for c in reference.categories}
    grids = list(reference.grids)
    community_of = {g.id: g.community_id for g in grids}
    cats, weights = zip(*CATEGORY_WEIGHTS, strict=True)
    kinds = [kind for kind, _ in REPORTER_WEIGHTS]
    kind_weights = [weight for _, weight in REPORTER_WEIGHTS]
    plans: list[Planned] = []
    day = first_day
    # Growth year on year: the earlier months see fewer reports, so the comparisons differ.
    while day <= last_day:
        rate = per_day * (0.7 if day.year == 2025 and day.month <= 6 else 1.0)
        count = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
        for _ in range(count):
            category = rng.choices(cats, weights)[0]
            grid = rng.choice(grids)
            campaigns = tuple(
                c.id
                for c in reference.campaigns
                if category in c.categories and c.starts_on <= day <= c.ends_on
            )
            heater_campaign = "direct-vent-heaters-2026" in campaigns
            plan = Planned(
                hazard_id=ids("hazard"),
                day=day,
                category=category,
                group=str(categories[category].group),
                grid_id=grid.id,
                community_id=community_of[grid.id],
                street_id=reference.street.id,
                reporter_type=rng.choices(kinds, kind_weights)[0],
                source="batch" if rng.random() < 0.2 else "app",
                campaigns=campaigns,
                on_site=heater_campaign or rng.random() < 0.25,
                # The heater campaign: every heater found gets a notice on the spot (3,235 / 3,235).
                notice_on_site=heater_campaign or rng.random() < 0.1,
            )
            _plan_life(plan, rng, categories)
            plans.append(plan)
        day += timedelta(days=1)
    # Relapses: some closed hazards come back at the same place 10 days later.
    closed = [p for p in plans if p.closed and p.day + timedelta(days=10) <= last_day]
    for original in rng.sample(closed, k=max(1, len(closed) // 20)):
        original.relapsed_later = True
        again = Planned(
            hazard_id=ids("hazard"),
            day=original.day + timedelta(days=10),
            category=original.category,
            group=original.group,
            grid_id=original.grid_id,
            community_id=original.community_id,
            street_id=original.street_id,
            reporter_type="grid_member",
            source="app",
            campaigns=tuple(
                c.id
                for c in reference.campaigns
                if original.category in c.categories
                and c.starts_on <= original.day + timedelta(days=10) <= c.ends_on
            ),
            on_site=True,
            notice_on_site="direct-vent-heaters-2026" in original.campaigns,
            relapse_of=original.hazard_id,
        )
        again.closed = True
        again.rectified = True
        plans.append(again)
    for plan in plans:
        plan.events = list(_events(plan, ids))
    return plans


def _plan_life(plan: Planned, rng: random.Random, categories: dict[str, Any]) -> None:
    if plan.on_site:
        plan.rectified = plan.closed = True
        return
    plan.department = categories[plan.category].department_id or OTHER_DEPARTMENT
    roll = rng.random()
    plan.ack = "on_time" if roll < 0.6 else ("late" if roll < 0.85 else "never")
    plan.escalations = {"on_time": 0, "late": 1, "never": 2}[plan.ack]
    if plan.ack != "never":
        plan.ordered = rng.random() < 0.8
        if plan.ordered:
            plan.rectified = rng.random() < 0.85
            plan.rectification_overdue = not plan.rectified
            plan.closed = plan.rectified and rng.random() < 0.9


def _events(p: Planned, ids: _Ids) -> Iterable[ev.AnyEvent]:
    h = p.hazard_id
    reported_at = _at(p.day)

    def event(cls: type[ev.AnyEvent], at: datetime, producer: str, payload: Any) -> ev.AnyEvent:
        return cls(  # type: ignore[call-arg]
            event_id=ids("event"), occurred_at=at, hazard_id=h, producer=producer, payload=payload
        )

    yield event(
        ev.HazardReported,
        reported_at,
        "intake",
        ev.HazardReportedPayload(
            report_id=ids("report"),
            category=p.category,
            description="seed-shaped hazard",
            location=ev.Location(
                lat=22.64, lon=114.2, address=f"{p.grid_id} Road {h.int % 97}", building_id=None
            ),
            grid_id=p.grid_id,
            community_id=p.community_id,
            street_id=p.street_id,
            reporter_id=f"{p.reporter_type}-{p.grid_id}",
            observed_at=reported_at - timedelta(minutes=15),
            accepted_at=reported_at,
            rectified_on_site=p.on_site,
            campaign_ids=p.campaigns,
            source=p.source,
            reporter_type=p.reporter_type,
            notice_issued=p.notice_on_site,
        ),
    )
    if p.relapse_of is not None:
        yield event(
            ev.HazardRelapsed,
            reported_at + timedelta(minutes=1),
            "tracking",
            ev.HazardRelapsedPayload(
                original_hazard_id=p.relapse_of,
                original_department_id=None,
                original_closed_at=reported_at - timedelta(days=7),
                days_since_closure=7.0,
                same_building=False,
                distance_m=0.0,
                place_key=f"{p.grid_id}/{p.grid_id} Road",
            ),
        )
    if p.on_site:
        yield event(
            ev.HazardClosed,
            reported_at + timedelta(minutes=2),
            "tracking",
            ev.HazardClosedPayload(reason="rectified_on_site", department_id=None, closed_by="gm"),
        )
        return
    assert p.department is not None
    assert p.ack is not None
    dispatch_id = ids("dispatch")
    dispatched_at = reported_at + timedelta(minutes=10)
    deadline = dispatched_at + timedelta(hours=2)
    yield event(
        ev.HazardDispatched,
        dispatched_at,
        "dispatch",
        ev.HazardDispatchedPayload(
            dispatch_id=dispatch_id,
            department_id=p.department,
            rule_id=None,
            receipt_deadline=deadline,
            deadline_rule=RULE,
        ),
    )
    for level in range(1, p.escalations + 1):
        yield event(
            ev.HazardEscalated,
            deadline + timedelta(minutes=30 * level),
            "dispatch",
            ev.HazardEscalatedPayload(
                dispatch_id=dispatch_id,
                department_id=p.department,
                level=level,
                target="supervisor",
                receipt_deadline=deadline,
            ),
        )
    if p.ack == "never":
        return
    acked_at = dispatched_at + (timedelta(minutes=30) if p.ack == "on_time" else timedelta(hours=3))
    yield event(
        ev.HazardAcknowledged,
        acked_at,
        "dispatch",
        ev.HazardAcknowledgedPayload(
            dispatch_id=dispatch_id,
            department_id=p.department,
            acknowledged_at=acked_at,
            receipt_deadline=deadline,
            on_time=acked_at <= deadline,
            acknowledged_by=f"dept-{p.department}",
        ),
    )
    if not p.ordered:
        return
    ordered_at = acked_at + timedelta(hours=1)
    yield event(
        ev.HazardRectificationOrdered,
        ordered_at,
        "tracking",
        ev.HazardRectificationOrderedPayload(
            department_id=p.department, deadline=ordered_at + timedelta(days=3), deadline_rule=RULE
        ),
    )
    if p.rectification_overdue:
        yield event(
            ev.HazardRectificationOverdue,
            ordered_at + timedelta(days=3),
            "tracking",
            ev.HazardRectificationOverduePayload(
                department_id=p.department, deadline=ordered_at + timedelta(days=3)
            ),
        )
    if p.rectified:
        yield event(
            ev.HazardRectified,
            reported_at + timedelta(days=2),
            "tracking",
            ev.HazardRectifiedPayload(department_id=p.department, rectified_by=f"dept-{p.department}"),
        )
    if p.closed:
        yield event(
            ev.HazardClosed,
            reported_at + timedelta(days=3),
            "tracking",
            ev.HazardClosedPayload(reason="verified", department_id=p.department, closed_by="gm"),
        )


def events_of(plans: Sequence[Planned]) -> list[ev.AnyEvent]:
    """Every event of the history, in the order they happened (a hazard's own in its order)."""
    return sorted((e for p in plans for e in p.events), key=lambda e: e.occurred_at)


def in_period(plans: Sequence[Planned], start: date, end: date) -> list[Planned]:
    """The hazards reported in the period (all reported and dispatched on their local day)."""
    return [p for p in plans if start <= p.day <= end]


def expected(plans: Sequence[Planned], start: date, end: date) -> dict[str, Any]:
    """The seed report's figures for the period, from the plans alone."""
    ps = in_period(plans, start, end)
    dispatched = [p for p in ps if p.department is not None]
    escalation_days = [
        (p.department, p.day) for p in plans if p.department is not None for _ in range(p.escalations)
    ]
    return {
        "reported": len(ps),
        "by_group": Counter(p.group for p in ps),
        "by_community": Counter(p.community_id for p in ps),
        "by_street": Counter(p.street_id for p in ps),
        "by_reporter_type": Counter(p.reporter_type for p in ps),
        "by_source": Counter(p.source for p in ps),
        "rectified": sum(p.rectified for p in ps),
        "notices_on_site": sum(p.notice_on_site for p in ps),
        "notices_ordered": sum(p.ordered for p in ps),
        "notices_issued": sum(p.notice_on_site or p.ordered for p in ps),
        "rectification_overdue": sum(p.rectification_overdue for p in ps),
        "closed": sum(p.closed for p in ps),
        "relapsed": sum(p.closed and p.relapsed_later for p in ps),
        "dispatched": len(dispatched),
        "dispatched_by_department": Counter(p.department for p in dispatched),
        "overdue_by_department": Counter(p.department for p in dispatched if p.ack in ("late", "never")),
        "open_overdue": sum(p.ack == "never" for p in dispatched),
        "escalations_by_department": Counter(d for d, day in escalation_days if start <= day <= end),
        "campaigns": {
            c: {
                "found": sum(c in p.campaigns for p in ps),
                "notices_issued": sum(c in p.campaigns and (p.notice_on_site or p.ordered) for p in ps),
                "notices_on_site": sum(c in p.campaigns and p.notice_on_site for p in ps),
                "rectified": sum(c in p.campaigns and p.rectified for p in ps),
                "by_group": Counter(p.group for p in ps if c in p.campaigns),
            }
            for c in sorted({c for p in ps for c in p.campaigns})
        },
    }
