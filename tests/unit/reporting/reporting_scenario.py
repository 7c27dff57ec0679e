"""A small, hand-checked event log for the reporting figures, and the figures it must give.

Times are UTC; the street's local time (Asia/Shanghai) is UTC+8, so 02:00Z is 10:00 local
on the same date. The report period is April 2026; the previous period is 2 to 31 March
2026 and the year-earlier period April 2025.

Hazards (department = the one that held it last):
  H1 liuyue-01 rooftop door, 04-01: D1 fire, acknowledged 3 h after dispatch (1 h late);
     rectified, failed verification (rework), rectified again 72 h after report; closed;
     relapses later into H5. Campaigns spring-fire + rooftop.
  H2 huale-01 e-bike, 04-05: D2 police returned after its deadline (overdue for police),
     rerouted D3 fire acknowledged on time (30 min); rectified 24 h after report; closed.
  H3 huale-02 e-bike, 04-08: D4 police returned before its deadline (not overdue),
     rerouted D5 fire never acknowledged (open and overdue).
  H4 liuyue-02 rooftop door, 04-09: rectified on site, closed at once, never dispatched.
  H5 liuyue-01 rooftop door, 04-20: relapse of H1; D6 fire acknowledged in 10 min.
  H6 huale-02 e-bike, 04-08: duplicate of H3 (not dispatched).
  H7 silian-01 sporadic works, 04-10: D7 safety_supervision reassigned after its deadline
     (overdue for safety_supervision) to D8 urban_management (deadline far ahead: open, not overdue).
  H8 liuyue-03 rooftop door, 2025-04-15: D9 fire acknowledged late (year earlier).
  H9 huale-01 e-bike, 2026-03-20: D10 fire acknowledged on time, rectified, closed (previous period).
  H11 liuyue-04 rooftop door, 2026-04-30 17:00Z = 1 May local: outside April.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from shared import events as ev

H = {n: uuid.UUID(int=0x1000 + n) for n in range(1, 12)}
D = {n: uuid.UUID(int=0x2000 + n) for n in range(1, 11)}
RULE = ev.FrozenDeadlineRule(minutes=120, working_time=False)
FAR = datetime(2099, 1, 1, tzinfo=UTC)
_seq = [0]


def _t(day: str, hhmm: str = "02:00") -> datetime:
    return datetime.fromisoformat(f"{day}T{hhmm}:00+00:00")


def _event(cls: type[ev.AnyEvent], hazard: int, at: datetime, producer: str, payload: Any) -> ev.AnyEvent:
    _seq[0] += 1
    return cls(  # type: ignore[call-arg]
        event_id=uuid.uuid5(uuid.NAMESPACE_OID, f"reporting-scenario-{_seq[0]}"),
        occurred_at=at,
        hazard_id=H[hazard],
        producer=producer,
        payload=payload,
    )


def reported(
    n: int,
    at: datetime,
    *,
    grid: str,
    category: str,
    building: str,
    campaigns: tuple[str, ...] = (),
    on_site: bool = False,
    duplicate_of: int | None = None,
) -> ev.AnyEvent:
    return _event(
        ev.HazardReported,
        n,
        at,
        "intake",
        ev.HazardReportedPayload(
            report_id=uuid.UUID(int=0x3000 + n),
            category=category,
            description="scenario hazard",
            location=ev.Location(lat=22.65, lon=114.2, address="Road 1", building_id=building),
            grid_id=grid,
            community_id=grid.rsplit("-", 1)[0],
            street_id="henggang",
            reporter_id=f"gm-{grid}",
            observed_at=at - timedelta(minutes=5),
            accepted_at=at,
            rectified_on_site=on_site,
            campaign_ids=campaigns,
            duplicate_of=H[duplicate_of] if duplicate_of else None,
        ),
    )


def dispatched(
    n: int,
    d: int,
    at: datetime,
    department: str,
    *,
    deadline: datetime | None = None,
    reason: str = "routed",
    previous: int | None = None,
) -> ev.AnyEvent:
    return _event(
        ev.HazardDispatched,
        n,
        at,
        "dispatch",
        ev.HazardDispatchedPayload(
            dispatch_id=D[d],
            department_id=department,
            rule_id=None,
            receipt_deadline=deadline or at + timedelta(hours=2),
            deadline_rule=RULE,
            reason=reason,  # type: ignore[arg-type]
            previous_dispatch_id=D[previous] if previous else None,
        ),
    )


def acknowledged(n: int, d: int, at: datetime, department: str, deadline: datetime) -> ev.AnyEvent:
    return _event(
        ev.HazardAcknowledged,
        n,
        at,
        "dispatch",
        ev.HazardAcknowledgedPayload(
            dispatch_id=D[d],
            department_id=department,
            acknowledged_at=at,
            receipt_deadline=deadline,
            on_time=at <= deadline,
            acknowledged_by=f"dept-{department}",
        ),
    )


def returned(n: int, d: int, at: datetime, department: str) -> ev.AnyEvent:
    return _event(
        ev.HazardReturned,
        n,
        at,
        "dispatch",
        ev.HazardReturnedPayload(
            dispatch_id=D[d], department_id=department, reason="not ours", returned_by="x"
        ),
    )


def ordered(n: int, at: datetime, department: str, round_: int = 1) -> ev.AnyEvent:
    return _event(
        ev.HazardRectificationOrdered,
        n,
        at,
        "tracking",
        ev.HazardRectificationOrderedPayload(
            department_id=department, deadline=at + timedelta(days=3), deadline_rule=RULE, round=round_
        ),
    )


def rectified(n: int, at: datetime, department: str, round_: int = 1) -> ev.AnyEvent:
    return _event(
        ev.HazardRectified,
        n,
        at,
        "tracking",
        ev.HazardRectifiedPayload(department_id=department, rectified_by=f"dept-{department}", round=round_),
    )


def verified(n: int, at: datetime, passed: bool, round_: int = 1) -> ev.AnyEvent:
    return _event(
        ev.HazardVerified,
        n,
        at,
        "tracking",
        ev.HazardVerifiedPayload(passed=passed, verified_by="gm", round=round_),
    )


def closed(n: int, at: datetime, reason: str = "verified", department: str | None = "fire") -> ev.AnyEvent:
    return _event(
        ev.HazardClosed,
        n,
        at,
        "tracking",
        ev.HazardClosedPayload(reason=reason, department_id=department, closed_by="gm"),  # type: ignore[arg-type]
    )


def build_log() -> list[ev.AnyEvent]:
    """The scenario's events, in the order a consumer may see them (some out of order)."""
    _seq[0] = 0
    spring, rooftop = "spring-fire-2026", "rooftop-escape-routes-2026"
    log: list[ev.AnyEvent] = []
    # H1: dispatched arrives before reported (different producers).
    t = _t("2026-04-01")
    log.append(dispatched(1, 1, t + timedelta(minutes=10), "fire"))
    log.append(
        reported(
            1,
            t,
            grid="liuyue-01",
            category="locked_rooftop_door",
            building="B-1",
            campaigns=(spring, rooftop),
        )
    )
    log.append(
        acknowledged(1, 1, t + timedelta(hours=3, minutes=10), "fire", t + timedelta(hours=2, minutes=10))
    )
    log.append(
        _event(
            ev.HazardReceiptOverdue,
            1,
            t + timedelta(hours=2, minutes=10),
            "dispatch",
            ev.HazardReceiptOverduePayload(
                dispatch_id=D[1], department_id="fire", receipt_deadline=t + timedelta(hours=2, minutes=10)
            ),
        )
    )
    log.append(ordered(1, t + timedelta(hours=3, minutes=20), "fire"))
    log.append(rectified(1, t + timedelta(hours=48), "fire"))
    log.append(verified(1, t + timedelta(hours=49), False))
    log.append(ordered(1, t + timedelta(hours=49, minutes=1), "fire", 2))
    log.append(rectified(1, t + timedelta(hours=72), "fire", 2))
    log.append(verified(1, t + timedelta(hours=73), True, 2))
    log.append(closed(1, t + timedelta(hours=73, minutes=1)))
    # H2: returned by police after the deadline, rerouted to fire.
    t = _t("2026-04-05")
    log.append(
        reported(2, t, grid="huale-01", category="ebike_indoor_charging", building="B-2", campaigns=(spring,))
    )
    log.append(dispatched(2, 2, t + timedelta(minutes=5), "police"))
    log.append(returned(2, 2, t + timedelta(hours=3), "police"))
    log.append(dispatched(2, 3, t + timedelta(hours=3, minutes=1), "fire", reason="rerouted", previous=2))
    log.append(
        acknowledged(2, 3, t + timedelta(hours=3, minutes=31), "fire", t + timedelta(hours=5, minutes=1))
    )
    log.append(ordered(2, t + timedelta(hours=3, minutes=40), "fire"))
    log.append(rectified(2, t + timedelta(hours=24), "fire"))
    log.append(verified(2, t + timedelta(hours=25), True))
    log.append(closed(2, t + timedelta(hours=25, minutes=1)))
    # H3: returned by police in time, rerouted to fire, never acknowledged.
    t = _t("2026-04-08")
    log.append(
        reported(3, t, grid="huale-02", category="ebike_indoor_charging", building="B-3", campaigns=(spring,))
    )
    log.append(dispatched(3, 4, t, "police"))
    log.append(returned(3, 4, t + timedelta(hours=1), "police"))
    log.append(dispatched(3, 5, t + timedelta(hours=1, minutes=1), "fire", reason="rerouted", previous=4))
    # H6: a duplicate of H3.
    log.append(
        reported(
            6,
            t + timedelta(hours=1),
            grid="huale-02",
            category="ebike_indoor_charging",
            building="B-3",
            campaigns=(spring,),
            duplicate_of=3,
        )
    )
    log.append(
        _event(
            ev.HazardDuplicateLinked,
            6,
            t + timedelta(hours=1),
            "intake",
            ev.HazardDuplicateLinkedPayload(original_hazard_id=H[3], distance_m=3.0, same_building=True),
        )
    )
    # H4: rectified on site.
    t = _t("2026-04-09")
    log.append(
        reported(
            4,
            t,
            grid="liuyue-02",
            category="locked_rooftop_door",
            building="B-4",
            campaigns=(spring,),
            on_site=True,
        )
    )
    log.append(closed(4, t, reason="rectified_on_site", department=None))
    # H7: reassigned by an operator after the deadline.
    t = _t("2026-04-10")
    log.append(
        reported(
            7,
            t,
            grid="silian-01",
            category="sporadic_construction_works",
            building="B-7",
            campaigns=("sporadic-works-2026",),
        )
    )
    log.append(
        dispatched(
            7, 7, t + timedelta(minutes=5), "safety_supervision", deadline=t + timedelta(hours=1, minutes=5)
        )
    )
    log.append(
        dispatched(
            7, 8, t + timedelta(hours=2), "urban_management", deadline=FAR, reason="reassigned", previous=7
        )
    )
    # H5: relapse of H1 at the same place.
    t = _t("2026-04-20")
    log.append(
        reported(
            5,
            t,
            grid="liuyue-01",
            category="locked_rooftop_door",
            building="B-1",
            campaigns=(spring, rooftop),
        )
    )
    log.append(
        _event(
            ev.HazardRelapsed,
            5,
            t + timedelta(minutes=1),
            "tracking",
            ev.HazardRelapsedPayload(
                original_hazard_id=H[1],
                original_department_id="fire",
                original_closed_at=_t("2026-04-04", "03:01"),
                days_since_closure=16.0,
                same_building=True,
                distance_m=0.0,
                place_key="liuyue-01/B-1",
            ),
        )
    )
    log.append(dispatched(5, 6, t + timedelta(minutes=5), "fire"))
    log.append(acknowledged(5, 6, t + timedelta(minutes=15), "fire", t + timedelta(hours=2, minutes=5)))
    # H8: a year earlier, acknowledged late.
    t = _t("2025-04-15")
    log.append(reported(8, t, grid="liuyue-03", category="locked_rooftop_door", building="B-8"))
    log.append(dispatched(8, 9, t, "fire"))
    log.append(acknowledged(8, 9, t + timedelta(hours=3), "fire", t + timedelta(hours=2)))
    # H9: previous period, all on time.
    t = _t("2026-03-20")
    log.append(reported(9, t, grid="huale-01", category="ebike_indoor_charging", building="B-9"))
    log.append(dispatched(9, 10, t, "fire"))
    log.append(acknowledged(9, 10, t + timedelta(minutes=20), "fire", t + timedelta(hours=2)))
    log.append(ordered(9, t + timedelta(minutes=30), "fire"))
    log.append(rectified(9, t + timedelta(hours=10), "fire"))
    log.append(closed(9, t + timedelta(hours=11)))
    # H11: 1 May local time.
    log.append(
        reported(
            11, _t("2026-04-30", "17:00"), grid="liuyue-04", category="locked_rooftop_door", building="B-11"
        )
    )
    return log


def _cmp(rates: tuple[float | None, float | None, float | None]) -> dict[str, float | None]:
    return dict(zip(("overdue_receipt_rate", "rectification_rate", "relapse_rate"), rates, strict=True))


def _row(**figures: Any) -> dict[str, Any]:
    base = {
        "reported": 0,
        "duplicates": 0,
        "dispatched": 0,
        "acknowledged": 0,
        "acknowledged_late": 0,
        "receipt_overdue_open": 0,
        "overdue_receipts": 0,
        "notices_issued": 0,
        "rectified": 0,
        "rectification_overdue": 0,
        "closed": 0,
        "relapsed": 0,
        "overdue_receipt_rate": None,
        "rectification_rate": None,
        "relapse_rate": None,
        "median_minutes_to_acknowledge": None,
        "median_hours_to_rectify": None,
    }
    base.update(figures)
    return base


EMPTY = (None, None, None)

EXPECTED: dict[str, dict[str, Any]] = {
    # group_by -> key -> (current figures, previous-period rates, year-earlier rates)
    "department": {
        "": (
            _row(reported=1, duplicates=1, rectified=1, closed=1, rectification_rate=1.0, relapse_rate=0.0),
            EMPTY,
            EMPTY,
        ),
        "fire": (
            _row(
                reported=4,
                dispatched=4,
                acknowledged=3,
                acknowledged_late=1,
                receipt_overdue_open=1,
                overdue_receipts=2,
                notices_issued=2,
                rectified=2,
                closed=2,
                relapsed=1,
                overdue_receipt_rate=0.5,
                rectification_rate=0.5,
                relapse_rate=0.5,
                median_minutes_to_acknowledge=30.0,
                median_hours_to_rectify=48.0,
            ),
            (0.0, 1.0, 0.0),
            (1.0, 0.0, None),
        ),
        "police": (_row(dispatched=2, overdue_receipts=1, overdue_receipt_rate=0.5), EMPTY, EMPTY),
        "safety_supervision": (
            _row(dispatched=1, overdue_receipts=1, overdue_receipt_rate=1.0),
            EMPTY,
            EMPTY,
        ),
        "urban_management": (
            _row(reported=1, dispatched=1, overdue_receipt_rate=0.0, rectification_rate=0.0),
            EMPTY,
            EMPTY,
        ),
    },
    "community": {
        "liuyue": (
            _row(
                reported=3,
                dispatched=2,
                acknowledged=2,
                acknowledged_late=1,
                overdue_receipts=1,
                notices_issued=1,
                rectified=2,
                closed=2,
                relapsed=1,
                overdue_receipt_rate=0.5,
                rectification_rate=0.6667,
                relapse_rate=0.5,
                median_minutes_to_acknowledge=95.0,
                median_hours_to_rectify=72.0,
            ),
            EMPTY,
            (1.0, 0.0, None),
        ),
        "huale": (
            _row(
                reported=2,
                duplicates=1,
                dispatched=4,
                acknowledged=1,
                receipt_overdue_open=1,
                overdue_receipts=2,
                notices_issued=1,
                rectified=1,
                closed=1,
                overdue_receipt_rate=0.5,
                rectification_rate=0.5,
                relapse_rate=0.0,
                median_minutes_to_acknowledge=30.0,
                median_hours_to_rectify=24.0,
            ),
            (0.0, 1.0, 0.0),
            EMPTY,
        ),
        "silian": (
            _row(
                reported=1, dispatched=2, overdue_receipts=1, overdue_receipt_rate=0.5, rectification_rate=0.0
            ),
            EMPTY,
            EMPTY,
        ),
    },
    "campaign": {
        "spring-fire-2026": (
            _row(
                reported=5,
                duplicates=1,
                dispatched=6,
                acknowledged=3,
                acknowledged_late=1,
                receipt_overdue_open=1,
                overdue_receipts=3,
                notices_issued=2,
                rectified=3,
                closed=3,
                relapsed=1,
                overdue_receipt_rate=0.5,
                rectification_rate=0.6,
                relapse_rate=0.3333,
                median_minutes_to_acknowledge=30.0,
                median_hours_to_rectify=48.0,
            ),
            EMPTY,
            EMPTY,
        ),
        "rooftop-escape-routes-2026": (
            _row(
                reported=2,
                dispatched=2,
                acknowledged=2,
                acknowledged_late=1,
                overdue_receipts=1,
                notices_issued=1,
                rectified=1,
                closed=1,
                relapsed=1,
                overdue_receipt_rate=0.5,
                rectification_rate=0.5,
                relapse_rate=1.0,
                median_minutes_to_acknowledge=95.0,
                median_hours_to_rectify=72.0,
            ),
            EMPTY,
            EMPTY,
        ),
        "sporadic-works-2026": (
            _row(
                reported=1, dispatched=2, overdue_receipts=1, overdue_receipt_rate=0.5, rectification_rate=0.0
            ),
            EMPTY,
            EMPTY,
        ),
    },
}

EXPECTED_TOTALS = (
    _row(
        reported=6,
        duplicates=1,
        dispatched=8,
        acknowledged=3,
        acknowledged_late=1,
        receipt_overdue_open=1,
        overdue_receipts=4,
        notices_issued=2,
        rectified=3,
        closed=3,
        relapsed=1,
        overdue_receipt_rate=0.5,
        rectification_rate=0.5,
        relapse_rate=0.3333,
        median_minutes_to_acknowledge=30.0,
        median_hours_to_rectify=48.0,
    ),
    (0.0, 1.0, 0.0),
    (1.0, 0.0, None),
)


def figures_of(group: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(current figures, previous-period rates, year-earlier rates) of a summary row."""
    current = {k: group[k] for k in _row()}
    rate_keys = ("overdue_receipt_rate", "rectification_rate", "relapse_rate")
    return (
        current,
        {k: group["previous_period"][k] for k in rate_keys},
        {k: group["year_earlier"][k] for k in rate_keys},
    )


def expected_of(
    entry: tuple[dict[str, Any], Any, Any],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The expectation in the same shape as :func:`figures_of`."""
    current, previous, last_year = entry
    return current, _cmp(previous), _cmp(last_year)
