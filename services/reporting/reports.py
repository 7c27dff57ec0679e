"""The reports supervisors read, assembled from repository queries (definitions in README.md).

Summary figures of one group over a period [from, to] (local days, Asia/Shanghai, both ends
included). Hazard figures count hazards *reported* in the period; dispatch figures count
dispatches *made* in the period; states (acknowledged, rectified, closed, relapsed) are
as of now.

* reported — hazards reported, duplicates of an open hazard excluded (those are ``duplicates``)
* dispatched — dispatches made (routed, rerouted after a return, or reassigned)
* acknowledged / acknowledged_late — of those, acknowledged at all / after the receipt deadline
* receipt_overdue_open — of those, still unacknowledged, not returned or replaced, deadline passed
* overdue_receipts — acknowledged late + ended (returned or replaced) unacknowledged after the
  deadline + receipt_overdue_open: overdue time belongs to the department that held the dispatch
* overdue_receipt_rate — overdue_receipts / dispatched
* notices_issued — reported hazards with at least one rectification order (限期整改通知书)
* rectified — reported hazards rectified (on site, or a department's rectification)
* rectification_rate — rectified / reported
* closed — reported hazards closed; relapsed — closed ones a later hazard relapsed (回潮) into
* relapse_rate — relapsed / closed
* median_minutes_to_acknowledge — over acknowledged dispatches: acknowledged_at − dispatched_at
* median_hours_to_rectify — over rectified hazards not fixed on site: last rectification − report
* returned_after_receipt — dispatches made in the period that their department acknowledged and
  then returned (退单 after 签收); their receipts still count in acknowledged
* urgings, extension_requests, extensions_approved — urgings (督办) and deadline extension requests
  (延期申请, receipt and rectification) made in the period, and the approvals decided in it
* overdue_receipts_original — overdue_receipts measured against the receipt deadlines as first
  frozen (an approved extension moves the deadline the other receipt figures use)
"""

from __future__ import annotations

import asyncio
import csv
import io
import operator
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reporting import domain
from services.reporting.domain import Counts
from services.reporting.store import common, queries
from services.reporting.store.common import Filters, Period
from shared.reference import ReferenceData

GROUP_BY = ("department", "community", "grid", "category", "campaign")
DIMENSIONS = (
    "department",
    "street",
    "community",
    "grid",
    "group",
    "category",
    "campaign",
    "reporter_type",
    "source",
)
"""What a summary may group by (#18); ``group`` is the category's group (fire / public security / ...)."""
COMBINATIONS: dict[frozenset[str], tuple[str, ...]] = {
    # the dimensions together (in the key's order, joined by '|')
    frozenset({"campaign", "category"}): ("campaign", "category"),
    frozenset({"campaign", "group"}): ("campaign", "group"),
    frozenset({"street", "category"}): ("street", "category"),
    frozenset({"street", "group"}): ("street", "group"),
}
"""Groupings of two dimensions the dashboard, the CSV and the period report use."""
REPORTER_TYPES: dict[str, dict[str, str]] = {
    "grid_member": {"en": "Grid members", "zh": "网格员"},
    "building_manager": {"en": "Building managers", "zh": "楼栋长"},
    "cadre_visit": {"en": "Cadres' visits", "zh": "干部走访"},
    "hotline": {"en": "12345 hotline", "zh": "12345热线"},
    "resident": {"en": "Residents", "zh": "居民"},
}
SOURCES: dict[str, dict[str, str]] = {
    "app": {"en": "App", "zh": "移动端"},
    "batch": {"en": "Offline batch", "zh": "离线批量"},
    "open311": {"en": "Open311", "zh": "Open311"},
}
GROUP_NAMES: dict[str, dict[str, str]] = {
    "fire": {"en": "Fire", "zh": "消防"},
    "public_security": {"en": "Public security", "zh": "治安"},
    "production_safety": {"en": "Production safety", "zh": "安全生产"},
    "other": {"en": "Other", "zh": "其他"},
}


class GroupingError(ValueError):
    """A group_by the summary cannot answer."""


def resolve_grouping(
    reference: ReferenceData, group_by: str
) -> tuple[str, tuple[str, ...], dict[str, str] | None]:
    """(the stored grouping, the dimensions in key order, the map of stored keys to the asked ones or None).

    ``group`` is derived from ``category`` by the reference data (a category moved to another group
    moves its figures, history included); every other dimension and pair is stored as such.
    """
    dims = tuple(d.strip() for d in group_by.split(",") if d.strip())
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown or not dims or len(set(dims)) != len(dims):
        raise GroupingError(
            f"group_by {group_by!r}: use one of {', '.join(DIMENSIONS)}, or two joined by a comma: "
            + "; ".join(",".join(c) for c in COMBINATIONS.values())
        )
    if len(dims) == 1:
        ordered: tuple[str, ...] = dims
    elif frozenset(dims) in COMBINATIONS:
        ordered = COMBINATIONS[frozenset(dims)]
    else:
        raise GroupingError(
            f"group_by {group_by!r}: these dimensions together are not kept; pairs kept: "
            + "; ".join(",".join(c) for c in COMBINATIONS.values())
        )
    stored = "_".join("category" if d == "group" else d for d in ordered)
    if "group" not in ordered:
        return stored, ordered, None
    groups = {c.code: str(c.group) for c in reference.categories}
    if ordered == ("group",):
        return stored, ordered, groups
    first = {"campaign": [c.id for c in reference.campaigns], "street": [reference.street.id]}[ordered[0]]
    return stored, ordered, {f"{a}|{code}": f"{a}|{g}" for a in first for code, g in groups.items()}


def fold_keys(
    values: dict[tuple[str, int], Counts], key_map: dict[str, str] | None
) -> dict[tuple[str, int], Counts]:
    """Counts of stored keys summed into the asked groups (counts are additive)."""
    if key_map is None:
        return values
    out: dict[tuple[str, int], Counts] = {}
    for (key, period), counts in values.items():
        k = (key_map.get(key, key), period)
        out[k] = out.get(k, Counts()) + counts
    return out


def dimension_label(reference: ReferenceData, dimension: str, key: str) -> dict[str, str]:
    """English and Chinese names of one dimension's key."""
    if dimension == "group":
        return dict(GROUP_NAMES.get(key, {"en": key, "zh": key}))
    if dimension == "reporter_type":
        return dict(REPORTER_TYPES.get(key, {"en": key, "zh": key}))
    if dimension == "source":
        return dict(SOURCES.get(key, {"en": key, "zh": key}))
    if dimension == "street":
        street = reference.street
        return {"en": street.name_en, "zh": street.name_zh} if key == street.id else {"en": key, "zh": key}
    return label(reference, dimension, key)


def grouping_labeller(reference: ReferenceData, dims: Sequence[str]) -> Callable[[str], dict[str, str]]:
    """Names of the keys of a grouping of one or two dimensions (two: 'a / b')."""
    if len(dims) == 1:
        if dims[0] in {"group", "reporter_type", "source", "street"}:
            return lambda key: dimension_label(reference, dims[0], key)
        return labeller(reference, dims[0])
    names = [grouping_labeller(reference, (d,)) for d in dims]

    def find(key: str) -> dict[str, str]:
        parts = key.split("|", len(dims) - 1)
        if len(parts) != len(dims):
            return {"en": key, "zh": key}
        found = [n(p) for n, p in zip(names, parts, strict=True)]
        return {lang: " / ".join(f[lang] for f in found) for lang in ("en", "zh")}

    return find


NOTICE_AND_ESCALATION_FIGURES = ("notices_on_site", "notices_ordered", "escalated", "escalations")
COUNT_FIGURES = (
    "reported",
    "duplicates",
    "dispatched",
    "acknowledged",
    "acknowledged_late",
    "receipt_overdue_open",
    "overdue_receipts",
    "notices_issued",
    "rectified",
    "rectification_overdue",
    "closed",
    "relapsed",
    *NOTICE_AND_ESCALATION_FIGURES,
)
# The summary CSV's columns only ever grow at the end (clients read them by position): the figures
# added later come after the ones before them, whatever their place in COUNT_FIGURES.
_CSV_COUNTS = tuple(c for c in COUNT_FIGURES if c not in NOTICE_AND_ESCALATION_FIGURES)
RATE_FIGURES = ("overdue_receipt_rate", "rectification_rate", "relapse_rate")
MEDIAN_FIGURES = ("median_minutes_to_acknowledge", "median_hours_to_rectify")
NONE_LABEL = {"en": "Not dispatched", "zh": "未分拨"}


def label(reference: ReferenceData, group_by: str, key: str) -> dict[str, str]:
    """English and Chinese names of a group key (the key itself when the reference data lacks it)."""
    try:
        if group_by == "department":
            if key == "":
                return NONE_LABEL
            d = reference.department(key)
            return {"en": d.name_en, "zh": d.name_zh}
        if group_by == "category":
            c = reference.category(key)
            return {"en": c.name_en, "zh": c.name_zh}
        if group_by == "community":
            for community in reference.communities:
                if community.id == key:
                    return {"en": community.name_en, "zh": community.name_zh}
        if group_by == "grid":
            for grid in reference.grids:
                if grid.id == key:
                    return {"en": grid.name_en, "zh": grid.name_zh}
        if group_by == "campaign":
            for campaign in reference.campaigns:
                if campaign.id == key:
                    return {"en": campaign.name_en, "zh": campaign.name_zh}
    except Exception:  # an id the reference data no longer knows keeps its raw name
        return {"en": key, "zh": key}
    return {"en": key or "—", "zh": key or "—"}


def labeller(reference: ReferenceData, group_by: str) -> Callable[[str], dict[str, str]]:
    """``label`` for many keys of one grouping: communities, grids and campaigns are looked up in an
    index built once (a grid summary has thousands of groups; ``label`` scans the list for each),
    with the same result as ``label``: the first entry of an id, the key itself when unknown."""
    entries: Sequence[Any]
    if group_by == "community":
        entries = reference.communities
    elif group_by == "grid":
        entries = reference.grids
    elif group_by == "campaign":
        entries = reference.campaigns
    else:
        return lambda key: label(reference, group_by, key)
    index: dict[str, dict[str, str]] = {}
    for entry in entries:
        index.setdefault(entry.id, {"en": entry.name_en, "zh": entry.name_zh})

    def find(key: str) -> dict[str, str]:
        found = index.get(key)
        return dict(found) if found is not None else {"en": key or "—", "zh": key or "—"}

    return find


_STORED_FIGURES = tuple(name for name in COUNT_FIGURES if name != "overdue_receipts")
_stored_figures = operator.attrgetter(*_STORED_FIGURES)


def figures(counts: Counts) -> dict[str, Any]:
    """The count and rate figures of one group."""
    out: dict[str, Any] = dict(zip(_STORED_FIGURES, _stored_figures(counts), strict=True))
    out["overdue_receipts"] = counts.acknowledged_late + counts.overdue_ended + counts.receipt_overdue_open
    out.update(domain.rates(counts))
    return out


def period_dates(period: Period) -> dict[str, str]:
    """A period's first and last day, as the summary shows them."""
    return {"from": period.start.isoformat(), "to": period.end.isoformat()}


def comparison(counts: Counts, dates: dict[str, str]) -> dict[str, Any]:
    """The rates of a comparison period, with its dates (``period_dates``) and the counts behind them."""
    return {
        **dates,
        **domain.rates(counts),
        "dispatched": counts.dispatched,
        "reported": counts.reported,
        "closed": counts.closed,
    }


async def summary(
    sessions: async_sessionmaker[AsyncSession],
    *,
    reference: ReferenceData,
    start: date,
    end: date,
    group_by: str,
    filters: Filters,
    now: datetime,
    use_rollup: bool = True,
    schema: str = common.SCHEMA,
) -> dict[str, Any]:
    """The summary table: figures per group for the period, with previous-period and year-earlier rates.

    ``group_by``: one dimension of DIMENSIONS or a pair of COMBINATIONS (see resolve_grouping).
    """
    asked = group_by
    group_by, dims, key_map = resolve_grouping(reference, asked)
    current = Period(start, end)
    previous = Period(*domain.previous_period(start, end))
    last_year = Period(*domain.year_earlier(start, end))
    periods = (current, previous, last_year)

    async def run(query: Callable[[AsyncSession], Awaitable[Any]]) -> Any:
        async with sessions() as session:
            return await query(session)

    def counts_of(by: str) -> Callable[[AsyncSession], Awaitable[Any]]:
        return lambda db: queries.period_counts(
            db, group_by=by, periods=periods, filters=filters, now=now, schema=schema, use_rollup=use_rollup
        )

    def medians_of(measure: str) -> Callable[[AsyncSession], Awaitable[Any]]:
        return lambda db: queries.measure_medians(
            db,
            group_by=group_by,
            period=current,
            filters=filters,
            measure=measure,
            schema=schema,
            use_rollup=use_rollup,
            key_map=key_map,
        )

    # Every hazard and dispatch is in exactly one department, community or category group, so the
    # totals are the groups' sums there; a hazard may be in several campaigns, and grids skip nulls.
    summed = group_by in {"department", "community", "category", "reporter_type", "source"}
    # The queries are independent: run them on separate connections at once.
    # (Each measure's medians, per group and in total, are one query: the two run side by side.)
    results = await asyncio.gather(
        run(counts_of(group_by)),
        run(medians_of("ack")),
        run(medians_of("rect")),
        run(
            lambda db: queries.returns_after_receipt(
                db, group_by=group_by, period=current, filters=filters, schema=schema
            )
        ),
        run(
            lambda db: queries.action_figures(
                db, group_by=group_by, period=current, filters=filters, now=now, schema=schema
            )
        ),
        *(() if summed else (run(counts_of("all")),)),
    )
    counts: dict[tuple[str, int], Counts] = fold_keys(results[0], key_map)
    (ack, ack_total), (rect, rect_total) = results[1], results[2]
    returns_after_receipt, returns_after_receipt_total = results[3]
    actions, actions_total = results[4]
    if key_map is not None:
        folded: dict[str, int] = {}
        for key, n in returns_after_receipt.items():
            folded[key_map.get(key, key)] = folded.get(key_map.get(key, key), 0) + n
        returns_after_receipt = folded
        folded_actions: dict[str, dict[str, int]] = {}
        for key, figures_of_key in actions.items():
            into = folded_actions.setdefault(key_map.get(key, key), {})
            for name, n in figures_of_key.items():
                into[name] = into.get(name, 0) + n
        actions = folded_actions
    group_medians = {key: (ack.get(key), rect.get(key)) for key in set(ack) | set(rect)}
    total_medians = {"all": (ack_total, rect_total)}
    if summed:
        total_counts: dict[tuple[str, int], Counts] = {}
        for (_, period_index), value in counts.items():
            key = ("all", period_index)
            total_counts[key] = total_counts.get(key, Counts()) + value
    else:
        total_counts = results[5]
    keys = sorted({key for key, _ in counts} | set(group_medians))

    # The comparison periods' dates, formatted once rather than for each of thousands of groups.
    previous_dates, last_year_dates = period_dates(previous), period_dates(last_year)
    none = Counts()

    def row(
        key: str,
        by: dict[tuple[str, int], Counts],
        meds: dict[str, Any],
        returned_after_receipt: int,
        acts: dict[str, int],
    ) -> dict[str, Any]:
        ack, rect = meds.get(key, (None, None))
        shown = figures(by.get((key, 0), none))
        return {
            **shown,
            "returned_after_receipt": returned_after_receipt,
            "urgings": acts.get("urgings", 0),
            "extension_requests": acts.get("extension_requests", 0),
            "extensions_approved": acts.get("extensions_approved", 0),
            "overdue_receipts_original": shown["overdue_receipts"] + acts.get("extra_overdue_original", 0),
            "median_minutes_to_acknowledge": _round(ack),
            "median_hours_to_rectify": _round(rect),
            "previous_period": comparison(by.get((key, 1), none), previous_dates),
            "year_earlier": comparison(by.get((key, 2), none), last_year_dates),
        }

    name = grouping_labeller(reference, dims)
    keys = sorted(set(keys) | set(returns_after_receipt) | set(actions))
    groups = [
        {
            "key": key,
            "label": name(key),
            **row(key, counts, group_medians, returns_after_receipt.get(key, 0), actions.get(key, {})),
        }
        for key in keys
    ]
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "group_by": ",".join(dims) if asked.strip() not in GROUP_BY else asked.strip(),
        "filters": {"community": filters.community_id, "category": filters.category},
        "as_of": now.isoformat(),
        "previous_period": dict(previous_dates),
        "year_earlier": dict(last_year_dates),
        "groups": groups,
        "totals": row("all", total_counts, total_medians, returns_after_receipt_total, actions_total),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def summary_csv(report: dict[str, Any]) -> str:
    """The summary's groups as CSV, one row per group, comparison rates in prefixed columns."""
    columns = [
        "group_by",
        "key",
        "label_en",
        "label_zh",
        *_CSV_COUNTS,
        *RATE_FIGURES,
        *MEDIAN_FIGURES,
        *(f"previous_{r}" for r in RATE_FIGURES),
        *(f"year_earlier_{r}" for r in RATE_FIGURES),
        "returned_after_receipt",
        *queries.ACTION_FIGURES,
        *NOTICE_AND_ESCALATION_FIGURES,
    ]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for group in report["groups"]:
        writer.writerow(
            [
                report["group_by"],
                group["key"],
                group["label"]["en"],
                group["label"]["zh"],
                *(group[c] for c in _CSV_COUNTS),
                *(_cell(group[r]) for r in RATE_FIGURES),
                *(_cell(group[m]) for m in MEDIAN_FIGURES),
                *(_cell(group["previous_period"][r]) for r in RATE_FIGURES),
                *(_cell(group["year_earlier"][r]) for r in RATE_FIGURES),
                group["returned_after_receipt"],
                *(group[f] for f in queries.ACTION_FIGURES),
                *(group[f] for f in NOTICE_AND_ESCALATION_FIGURES),
            ]
        )
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def campaign_progress(
    reference: ReferenceData, counts: dict[str, dict[str, int]], *, today: date
) -> list[dict[str, Any]]:
    """Every campaign of the reference data with its progress against its targets."""
    result = []
    for campaign in reference.campaigns:
        done = {
            "found": 0,
            "notices_issued": 0,
            "notices_on_site": 0,
            "notices_ordered": 0,
            "rectified": 0,
            "closed": 0,
            "late": 0,
        }
        done.update(counts.get(campaign.id, {}))
        targets = campaign.targets.model_dump()
        result.append(
            {
                "campaign_id": campaign.id,
                "label": {"en": campaign.name_en, "zh": campaign.name_zh},
                "starts_on": campaign.starts_on.isoformat(),
                "ends_on": campaign.ends_on.isoformat(),
                "active": campaign.active_on(today),
                # ended: the figures are final (what the campaign found in its window), not progress.
                "state": "active"
                if campaign.active_on(today)
                else ("ended" if campaign.ends_on < today else "upcoming"),
                "categories": list(campaign.categories),
                # late: reports naming the campaign after its last day, accepted and counted apart.
                **done,
                "targets": targets,
                "progress": {
                    name: (domain.ratio(done[name], target) if target else None)
                    for name, target in targets.items()
                },
            }
        )
    return result


def series_values(
    series: dict[tuple[str, date], Counts], *, metric: str, buckets: Sequence[date]
) -> dict[str, list[float | int | None]]:
    """Per group key, the metric's value in each bucket (counts 0 and rates None where empty)."""
    keys = sorted({key for key, _ in series})
    out: dict[str, list[float | int | None]] = {}
    for key in keys:
        values: list[float | int | None] = []
        for bucket in buckets:
            values.append(figures(series.get((key, bucket), Counts())).get(metric))
        out[key] = values
    return out


def overdue_items(
    reference: ReferenceData, rows: Sequence[Mapping[str, Any]], *, now: datetime, case_url: str
) -> list[dict[str, Any]]:
    """The overdue list's items (``GET /api/v1/reports/overdue``) from ``queries.list_open_overdue``'s rows."""
    return [
        {
            "dispatch_id": str(r["dispatch_id"]),
            "hazard_id": str(r["hazard_id"]),
            "department_id": r["department_id"],
            "department": label(reference, "department", r["department_id"] or ""),
            "category": r["category"],
            "community_id": r["community_id"],
            "grid_id": r["grid_id"],
            "address": r["address"],
            "case_url": case_url.format(hazard_id=r["hazard_id"]),
            "dispatched_at": r["dispatched_at"].isoformat() if r["dispatched_at"] else None,
            "receipt_deadline": r["deadline"].isoformat(),
            "minutes_overdue": round((now - r["deadline"]).total_seconds() / 60, 1),
        }
        for r in rows
    ]


def hotspot_items(reference: ReferenceData, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The relapse hotspots' items from ``queries.list_relapse_hotspots``' rows."""
    return [
        {
            "place_key": r["place_key"],
            "address": r["address"],
            "community_id": r["community_id"],
            "community": label(reference, "community", r["community_id"] or ""),
            "grid_id": r["grid_id"],
            "grid": label(reference, "grid", r["grid_id"] or ""),
            "relapses": int(r["relapses"]),
            "last_relapsed_at": r["last_relapsed_at"].isoformat() if r["last_relapsed_at"] else None,
            "categories": sorted(r["categories"] or []),
        }
        for r in rows
    ]
