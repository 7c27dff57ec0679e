"""The reporting projection, pure: lifecycle events become fact rows, and fact rows merge idempotently.

Nothing here does I/O. Every event maps to partial rows of three fact tables keyed by
natural ids — ``hazards`` (hazard_id), ``dispatches`` (dispatch_id), ``relapses``
(the relapsed hazard's id) — and every column has a merge rule that is commutative
and idempotent (first non-null, min, max, or, latest-by-timestamp). So the same event
applied twice, or events applied in any order, leave the same rows: that is what makes
the live projection and a rebuild from the topic agree figure for figure.

The same rules run here (to fold one batch into one row per key) and in SQL (to merge
a batch row into the stored one), see :data:`HAZARD_RULES` and :func:`merge_rows`.

Figures (computed by the repository from these facts) are defined in
``services/reporting/README.md`` and in :mod:`services.reporting.figures`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from shared import events as ev

Rule = Literal["first", "min", "max", "or", "latest"]
Row = dict[str, Any]

HAZARD_RULES: Mapping[str, Rule] = {
    "reported_at": "first",
    "report_day": "first",
    "category": "first",
    "community_id": "first",
    "grid_id": "first",
    "street_id": "first",
    "place_key": "first",
    "campaign_ids": "first",
    "rectified_on_site": "or",
    "address": "first",
    "duplicate_of": "first",
    "reporter_type": "first",  # #18: who reported (grid member, building manager, cadre visit, hotline)
    "source": "first",  # app | batch | open311
    "notice_on_site": "or",  # #18: a rectification notice handed out on the spot by the reporter
    "unlinked": "or",  # hazard.duplicate_unlinked: a hazard of its own after all
    "department_id": "latest",  # the department that held it last (by department_at)
    "department_at": "max",
    "ordered_at": "min",
    "order_round": "max",
    "rectified_at": "max",
    "rectification_overdue": "or",
    "closed_at": "max",
    "closed_reason": "first",
}
"""Merge rule of every column of a hazard fact row (besides its key ``hazard_id``)."""

DISPATCH_RULES: Mapping[str, Rule] = {
    "hazard_id": "first",
    "department_id": "first",
    "dispatched_at": "first",
    "dispatch_day": "first",
    # The receipt deadline in force: an approved extension only ever moves it later (max), while
    # original_deadline keeps the first frozen one (min): both commutative, so any order agrees.
    "deadline": "max",
    "original_deadline": "min",
    "reason": "first",
    "previous_dispatch_id": "first",
    "acknowledged_at": "min",
    "returned_at": "min",
    "superseded_at": "min",
    # The hazard's place and category, copied from its report so dispatch figures need no join.
    "community_id": "first",
    "grid_id": "first",
    "category": "first",
    "campaign_ids": "first",
    "street_id": "first",
    "reporter_type": "first",
    "source": "first",
    "escalation_level": "max",  # #18: the highest level the dispatch was escalated to (0/None: never)
}
"""Merge rule of every column of a dispatch fact row (besides its key ``dispatch_id``)."""

PLACE_COLUMNS = (
    "community_id",
    "grid_id",
    "category",
    "campaign_ids",
    "street_id",
    "reporter_type",
    "source",
)
"""Columns of a hazard's report that its dispatch rows carry too."""

RELAPSE_RULES: Mapping[str, Rule] = {
    "original_hazard_id": "first",
    "relapsed_at": "first",
    "relapse_day": "first",
    "place_key": "first",
    "original_department_id": "first",
    "days_since_closure": "first",
}
"""Merge rule of every column of a relapse fact row (besides its key ``hazard_id``, the new hazard)."""

ACTION_RULES: Mapping[str, Rule] = {
    "kind": "first",
    "hazard_id": "first",
    "department_id": "first",
    "stage": "first",
    "action_at": "first",
    "action_day": "first",
}
"""Merge rule of every column of an action fact row (urging, extension request or decision; key ``event_id``)."""

LATEST_BY: Mapping[str, str] = {"department_id": "department_at"}
"""For ``latest`` columns: the timestamp column that decides which value is the latest."""


@dataclass
class FactBatch:
    """Fact rows folded from a batch of events: one row per natural key and table."""

    hazards: dict[uuid.UUID, Row] = field(default_factory=dict)
    dispatches: dict[uuid.UUID, Row] = field(default_factory=dict)
    relapses: dict[uuid.UUID, Row] = field(default_factory=dict)
    actions: dict[uuid.UUID, Row] = field(default_factory=dict)

    def touched_hazards(self) -> set[uuid.UUID]:
        """Every hazard whose figures this batch may change (including relapsed originals)."""
        ids = set(self.hazards)
        ids.update(row["hazard_id"] for row in self.dispatches.values() if row.get("hazard_id"))
        ids.update(self.relapses)
        ids.update(row["original_hazard_id"] for row in self.relapses.values())
        return ids

    def hazards_placing_stored_dispatches(self) -> set[uuid.UUID]:
        """Hazards whose place this batch brings (their report): stored dispatch rows of theirs may lack it.

        A dispatch row of the batch itself has its place already (from a report in the batch, here)
        or takes it from the stored hazard as it is merged (``store.facts.upsert_sql``).
        """
        return {h for h, row in self.hazards.items() if row.get("community_id") is not None}

    def __len__(self) -> int:
        return len(self.hazards) + len(self.dispatches) + len(self.relapses) + len(self.actions)


def local_day(moment: datetime, *, tz: ZoneInfo) -> date:
    """The local calendar date (the street's timezone) of an aware moment."""
    return moment.astimezone(tz).date()


def merge_value(rule: Rule, old: Any, new: Any) -> Any:
    """Merge two values of one column by its rule (``latest`` is handled by :func:`merge_rows`)."""
    if old is None:
        return new
    if new is None:
        return old
    if rule == "min":
        return min(old, new)
    if rule == "max":
        return max(old, new)
    if rule == "or":
        return bool(old) or bool(new)
    return old  # first (and latest, decided by the caller)


def merge_rows(old: Row, new: Row, *, rules: Mapping[str, Rule]) -> Row:
    """One row holding what both partial rows say, by the columns' merge rules."""
    merged = dict(old)
    for column, value in new.items():
        rule = rules.get(column)
        if rule is None:  # the key
            merged[column] = value
        elif rule == "latest":
            stamp = LATEST_BY[column]
            old_at, new_at = old.get(stamp), new.get(stamp)
            if value is not None and (old_at is None or (new_at is not None and new_at >= old_at)):
                merged[column] = value
            else:
                merged.setdefault(column, value)
        else:
            merged[column] = merge_value(rule, old.get(column), value)
    return merged


def _add(table: dict[uuid.UUID, Row], key: uuid.UUID, row: Row, rules: Mapping[str, Rule]) -> None:
    existing = table.get(key)
    table[key] = row if existing is None else merge_rows(existing, row, rules=rules)


def project_events(events: Iterable[ev.AnyEvent], *, tz: ZoneInfo) -> FactBatch:
    """Fold events into fact rows (pure; any order, duplicates harmless)."""
    batch = FactBatch()
    for event in events:
        apply_event(batch, event, tz=tz)
    for row in batch.dispatches.values():
        hazard = batch.hazards.get(row["hazard_id"])
        if hazard is not None and hazard.get("community_id") is not None:
            for column in PLACE_COLUMNS:
                row[column] = hazard[column]
    return batch


def apply_event(batch: FactBatch, event: ev.AnyEvent, *, tz: ZoneInfo) -> None:
    """Add the facts one event states to the batch."""
    h = event.hazard_id
    at = event.occurred_at
    if isinstance(event, ev.HazardReported):
        p = event.payload
        row: Row = {
            "hazard_id": h,
            "reported_at": p.accepted_at,
            "report_day": local_day(p.accepted_at, tz=tz),
            "category": p.category,
            "community_id": p.community_id,
            "grid_id": p.grid_id,
            "street_id": p.street_id,
            "place_key": place_key_of(p),
            "campaign_ids": list(p.campaign_ids),
            "rectified_on_site": p.rectified_on_site,
            "address": p.location.address or None,
            "duplicate_of": p.duplicate_of,
            "reporter_type": p.reporter_type,
            "source": p.source,
            "notice_on_site": p.notice_issued,
        }
        if p.rectified_on_site:
            row["rectified_at"] = p.accepted_at
        _add(batch.hazards, h, row, HAZARD_RULES)
    elif isinstance(event, ev.HazardDuplicateLinked):
        _add(
            batch.hazards, h, {"hazard_id": h, "duplicate_of": event.payload.original_hazard_id}, HAZARD_RULES
        )
    elif isinstance(event, ev.HazardDuplicateUnlinked):
        _add(batch.hazards, h, {"hazard_id": h, "unlinked": True}, HAZARD_RULES)
    elif isinstance(event, ev.HazardDispatched):
        d = event.payload
        _add(
            batch.dispatches,
            d.dispatch_id,
            {
                "dispatch_id": d.dispatch_id,
                "hazard_id": h,
                "department_id": d.department_id,
                "dispatched_at": at,
                "dispatch_day": local_day(at, tz=tz),
                "deadline": d.receipt_deadline,
                "original_deadline": d.receipt_deadline,
                "reason": d.reason,
                "previous_dispatch_id": d.previous_dispatch_id,
            },
            DISPATCH_RULES,
        )
        if d.previous_dispatch_id is not None:
            _supersede(batch, d.previous_dispatch_id, h, at)
        _add(
            batch.hazards,
            h,
            {"hazard_id": h, "department_id": d.department_id, "department_at": at},
            HAZARD_RULES,
        )
    elif isinstance(event, ev.HazardReferredToOperators):
        if event.payload.previous_dispatch_id is not None:
            _supersede(batch, event.payload.previous_dispatch_id, h, at)
    elif isinstance(event, ev.HazardAcknowledged):
        a = event.payload
        _add(
            batch.dispatches,
            a.dispatch_id,
            {
                "dispatch_id": a.dispatch_id,
                "hazard_id": h,
                "department_id": a.department_id,
                "deadline": a.receipt_deadline,
                "acknowledged_at": a.acknowledged_at,
            },
            DISPATCH_RULES,
        )
    elif isinstance(event, ev.HazardReturned):
        r = event.payload
        _add(
            batch.dispatches,
            r.dispatch_id,
            {
                "dispatch_id": r.dispatch_id,
                "hazard_id": h,
                "department_id": r.department_id,
                "returned_at": at,
            },
            DISPATCH_RULES,
        )
    elif isinstance(event, ev.HazardRectificationOrdered):
        o = event.payload
        _add(
            batch.hazards,
            h,
            {
                "hazard_id": h,
                "ordered_at": at,
                "order_round": o.round,
                "department_id": o.department_id,
                "department_at": at,
            },
            HAZARD_RULES,
        )
    elif isinstance(event, ev.HazardRectified):
        _add(
            batch.hazards,
            h,
            {
                "hazard_id": h,
                "rectified_at": at,
                "department_id": event.payload.department_id,
                "department_at": at,
            },
            HAZARD_RULES,
        )
    elif isinstance(event, ev.HazardRectificationOverdue):
        _add(batch.hazards, h, {"hazard_id": h, "rectification_overdue": True}, HAZARD_RULES)
    elif isinstance(event, ev.HazardClosed):
        _add(
            batch.hazards,
            h,
            {"hazard_id": h, "closed_at": at, "closed_reason": event.payload.reason},
            HAZARD_RULES,
        )
    elif isinstance(event, ev.HazardRelapsed):
        rp = event.payload
        _add(
            batch.relapses,
            h,
            {
                "hazard_id": h,
                "original_hazard_id": rp.original_hazard_id,
                "relapsed_at": at,
                "relapse_day": local_day(at, tz=tz),
                "place_key": rp.place_key,
                "original_department_id": rp.original_department_id,
                "days_since_closure": rp.days_since_closure,
            },
            RELAPSE_RULES,
        )
    elif isinstance(event, ev.HazardUrged | ev.HazardExtensionRequested | ev.HazardExtensionDecided):
        _apply_action(batch, event, tz=tz)
    elif isinstance(event, ev.HazardEscalated):
        e = event.payload
        # 督办 (#18): a dispatch escalates through its levels once each; the highest is how many.
        _add(
            batch.dispatches,
            e.dispatch_id,
            {
                "dispatch_id": e.dispatch_id,
                "hazard_id": h,
                "department_id": e.department_id,
                "escalation_level": e.level,
            },
            DISPATCH_RULES,
        )
    elif isinstance(event, ev.HazardImported):
        _apply_imported(batch, event, tz=tz)
    # receipt_overdue and verified state nothing the figures need: overdue is
    # computed from the frozen deadline, so a late acknowledgement stays late either way.


def _apply_action(
    batch: FactBatch,
    event: ev.HazardUrged | ev.HazardExtensionRequested | ev.HazardExtensionDecided,
    *,
    tz: ZoneInfo,
) -> None:
    """An urging or an extension request or decision: an action row; an approved receipt extension
    also moves its dispatch's deadline (the original stays in ``original_deadline``)."""
    p = event.payload
    if isinstance(event, ev.HazardUrged):
        kind = "urged"
    elif isinstance(event, ev.HazardExtensionRequested):
        kind = "extension_requested"
    else:
        kind = "extension_approved" if event.payload.approved else "extension_refused"
    _add(
        batch.actions,
        event.event_id,
        {
            "event_id": event.event_id,
            "kind": kind,
            "hazard_id": event.hazard_id,
            "department_id": p.department_id,
            "stage": p.stage,
            "action_at": event.occurred_at,
            "action_day": local_day(event.occurred_at, tz=tz),
        },
        ACTION_RULES,
    )
    if isinstance(event, ev.HazardExtensionDecided):
        d = event.payload
        if d.approved and d.stage == "receipt" and d.dispatch_id is not None:
            _add(
                batch.dispatches,
                d.dispatch_id,
                {
                    "dispatch_id": d.dispatch_id,
                    "hazard_id": event.hazard_id,
                    "department_id": d.department_id,
                    "deadline": d.deadline,
                    "original_deadline": d.original_deadline,
                },
                DISPATCH_RULES,
            )


IMPORT_DISPATCH_NS = uuid.UUID("6f1c9a52-3d1e-4f7a-9a53-18c0d2a1e018")
"""Namespace of an imported hazard's one dispatch id (uuid5 of the hazard id)."""


def _apply_imported(batch: FactBatch, event: ev.HazardImported, *, tz: ZoneInfo) -> None:
    """A past record (#18): the report, its dispatch and receipt, rectification, closure and relapse,
    each at the date the record states, so the figures count it like a live hazard of those dates."""
    h = event.hazard_id
    p = event.payload
    loc = p.location
    place = (
        f"{p.grid_id}/{loc.building_id}"
        if loc.building_id
        else (f"{p.grid_id}/{loc.address}" if loc.address else p.grid_id)
    )
    row: Row = {
        "hazard_id": h,
        "reported_at": p.observed_at,
        "report_day": local_day(p.observed_at, tz=tz),
        "category": p.category,
        "community_id": p.community_id,
        "grid_id": p.grid_id,
        "street_id": p.street_id,
        "place_key": place,
        "campaign_ids": list(p.campaign_ids),
        "rectified_on_site": False,
        "address": loc.address or None,
        "reporter_type": p.reporter_type,
        "source": p.source,
        "notice_on_site": p.notice_issued,
        "rectified_at": p.rectified_at,
        "closed_at": p.closed_at,
        "closed_reason": None if p.closed_at is None else "imported",
    }
    if p.department_id is not None:
        row["department_id"] = p.department_id
        row["department_at"] = p.dispatched_at or p.observed_at
    _add(batch.hazards, h, row, HAZARD_RULES)
    if p.department_id is not None and p.dispatched_at is not None:
        dispatch_id = p.dispatch_id or uuid.uuid5(IMPORT_DISPATCH_NS, str(h))
        _add(
            batch.dispatches,
            dispatch_id,
            {
                "dispatch_id": dispatch_id,
                "hazard_id": h,
                "department_id": p.department_id,
                "dispatched_at": p.dispatched_at,
                "dispatch_day": local_day(p.dispatched_at, tz=tz),
                "deadline": p.receipt_deadline,
                "original_deadline": p.receipt_deadline,
                "reason": "imported",
                "acknowledged_at": p.acknowledged_at,
            },
            DISPATCH_RULES,
        )
    if p.relapse_of is not None:
        _add(
            batch.relapses,
            h,
            {
                "hazard_id": h,
                "original_hazard_id": p.relapse_of,
                "relapsed_at": p.observed_at,
                "relapse_day": local_day(p.observed_at, tz=tz),
                "place_key": place,
                "original_department_id": None,
                "days_since_closure": None,
            },
            RELAPSE_RULES,
        )


def _supersede(batch: FactBatch, dispatch_id: uuid.UUID, hazard_id: uuid.UUID, at: datetime) -> None:
    _add(
        batch.dispatches,
        dispatch_id,
        {"dispatch_id": dispatch_id, "hazard_id": hazard_id, "superseded_at": at},
        DISPATCH_RULES,
    )


def place_key_of(payload: ev.HazardReportedPayload) -> str:
    """Where a hazard is, for hotspots: the building when known, else the grid and address."""
    loc = payload.location
    if loc.building_id:
        return f"{payload.grid_id}/{loc.building_id}"
    return f"{payload.grid_id}/{loc.address}" if loc.address else payload.grid_id


# ---------------------------------------------------------------- figures from counts


@dataclass(frozen=True, slots=True)
class Counts:
    """The additive counts of one group in one period (see the README for each definition)."""

    reported: int = 0
    duplicates: int = 0
    dispatched: int = 0
    acknowledged: int = 0
    acknowledged_late: int = 0
    overdue_ended: int = 0
    receipt_overdue_open: int = 0
    notices_issued: int = 0
    rectified: int = 0
    rectification_overdue: int = 0
    closed: int = 0
    relapsed: int = 0
    notices_on_site: int = 0
    notices_ordered: int = 0
    escalated: int = 0
    escalations: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(**{name: getattr(self, name) + getattr(other, name) for name in COUNT_FIELDS})


COUNT_FIELDS: tuple[str, ...] = tuple(Counts.__dataclass_fields__)


def ratio(numerator: int, denominator: int) -> float | None:
    """numerator / denominator rounded to 4 places, or None when there is nothing to divide."""
    return round(numerator / denominator, 4) if denominator else None


def rates(counts: Counts) -> dict[str, float | None]:
    """The three rates of a group.

    * overdue_receipt_rate = (acknowledged late + ended unacknowledged after the deadline
      + open unacknowledged past the deadline) / dispatched
    * rectification_rate = rectified / reported
    * relapse_rate = relapsed / closed
    """
    overdue = counts.acknowledged_late + counts.overdue_ended + counts.receipt_overdue_open
    return {
        "overdue_receipt_rate": ratio(overdue, counts.dispatched),
        "rectification_rate": ratio(counts.rectified, counts.reported),
        "relapse_rate": ratio(counts.relapsed, counts.closed),
    }


PARTS_OF: Mapping[str, tuple[tuple[str, ...], str]] = {
    # name of the check: (counts that are disjoint parts, the count they are part of)
    "acknowledged": (("acknowledged",), "dispatched"),
    "acknowledged_late": (("acknowledged_late",), "acknowledged"),
    "overdue_receipt": (("acknowledged_late", "overdue_ended", "receipt_overdue_open"), "dispatched"),
    "notices_issued": (("notices_issued",), "reported"),
    "notices_on_site": (("notices_on_site",), "notices_issued"),
    "notices_ordered": (("notices_ordered",), "notices_issued"),
    "escalated": (("escalated",), "dispatched"),
    "rectified": (("rectified",), "reported"),
    "rectification_overdue": (("rectification_overdue",), "reported"),
    "closed": (("closed",), "reported"),
    "relapsed": (("relapsed",), "closed"),
}
"""Every count that is a part of another in the same group and period (so each rate is in 0..1)."""


def bound_problems(counts: Counts) -> list[str]:
    """What is wrong with a group's counts: a negative count, or parts above their whole (empty: fine)."""
    problems = [f"{name} = {getattr(counts, name)} < 0" for name in COUNT_FIELDS if getattr(counts, name) < 0]
    for parts, whole in PARTS_OF.values():
        total = sum(getattr(counts, p) for p in parts)
        if total > getattr(counts, whole):
            problems.append(f"{' + '.join(parts)} = {total} > {whole} = {getattr(counts, whole)}")
    for name, value in rates(counts).items():
        if value is not None and not 0 <= value <= 1:
            problems.append(f"{name} = {value} outside 0..1")
    return problems


def median(values: Sequence[float]) -> float | None:
    """The median (mean of the two middle values for an even count), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return float(ordered[mid])
    return (ordered[mid - 1] + ordered[mid]) / 2


HIST_PER_OCTAVE = 8
"""Histogram buckets per doubling: a bucket spans a factor 2**(1/8) (about 9 %)."""
HIST_FLOOR = {"ack": 1.0, "rect": 0.1}
"""Lower edge of bucket 1 per measure (ack: minutes, rect: hours); bucket 0 holds everything below."""


def histogram_bucket(value: float, *, floor: float) -> int:
    """The bucket of a duration (the same formula as repository's SQL); monotonic in the value."""
    if value < floor:
        return 0
    return 1 + math.floor(math.log(value / floor) / math.log(2) * HIST_PER_OCTAVE)


def histogram_median(buckets: Iterable[tuple[int, int, float]]) -> float | None:
    """Median of a merged histogram of (bucket, count, sum of values) rows, None when empty.

    The middle value(s) are located by cumulative count; each stands in as the mean of its bucket,
    so the median is exact when the middle values are alone in their buckets (or equal to their
    bucket's other values), and otherwise within the bucket's width (< 9.1 %) of the exact one.
    """
    merged: dict[int, list[float]] = {}
    for bucket, n, total in buckets:
        slot = merged.setdefault(bucket, [0, 0.0])
        slot[0] += n
        slot[1] += total
    keys = list(merged)
    return merged_median(keys, [int(merged[b][0]) for b in keys], [merged[b][1] for b in keys])


def merged_median(buckets: Sequence[int], ns: Sequence[int], totals: Sequence[float]) -> float | None:
    """histogram_median of a histogram whose buckets are each given once, in any order, as columns
    (a summary locates thousands of them: no tuples, no merging)."""
    count = sum(ns)
    if count == 0:
        return None
    low, high = (count - 1) // 2, count // 2
    seen = 0
    lower = 0.0
    # Positions in bucket order (sorting ints, not (bucket, n, total) tuples).
    for i in sorted(range(len(buckets)), key=buckets.__getitem__):
        n = ns[i]
        if seen <= low < seen + n:
            lower = totals[i] / n
        if high < seen + n:  # low <= high: the lower one is found by now
            return (lower + totals[i] / n) / 2
        seen += n
    raise AssertionError("rank beyond the histogram")  # pragma: no cover


# ---------------------------------------------------------------- periods

MAX_SPAN_DAYS = 3 * 366
"""The longest period a report may cover."""


def previous_period(start: date, end: date) -> tuple[date, date]:
    """The period of the same length that ends the day before ``start``."""
    length = end - start
    prev_end = start - timedelta(days=1)
    return prev_end - length, prev_end


def year_earlier(start: date, end: date) -> tuple[date, date]:
    """The same dates a year before (29 February becomes 28 February)."""
    return _minus_year(start), _minus_year(end)


def _minus_year(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:
        return day.replace(year=day.year - 1, day=28)


EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(2999, 12, 31)
"""The days a report's period may name: comparisons reach three years back, well inside Python's dates."""


def day_problems(**days: date | None) -> list[tuple[str, str]]:
    """(field, problem) for each given day outside EARLIEST_DAY..LATEST_DAY."""
    return [
        (field, f"{day} is outside {EARLIEST_DAY}..{LATEST_DAY}")
        for field, day in days.items()
        if day is not None and not EARLIEST_DAY <= day <= LATEST_DAY
    ]


def period_problems(start: date, end: date) -> list[str]:
    """What is wrong with a requested period (empty when it is acceptable)."""
    problems = []
    if start > end:
        problems.append(f"'from' ({start}) must not be after 'to' ({end})")
    elif (end - start).days + 1 > MAX_SPAN_DAYS:
        problems.append(
            f"the period covers {(end - start).days + 1} days; at most {MAX_SPAN_DAYS} are allowed"
        )
    return problems
