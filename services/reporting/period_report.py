"""The supervisor's period report (#18): the seed's tables, comparisons and sentences, as JSON, HTML and xlsx.

A half-year work report of a street grid centre states, for a period and against the period
before and the same period a year earlier: hazards found, split fire / public security / other;
by street and community; by reporter type; each campaign's found / notices issued / rectified
against its target; overdue receipts and escalations by department; rectification and relapse
rates; and short sentences summarising each. ``build`` reads the figures (the per-group rollup,
as the summary does, plus the open-overdue list from the facts) and lays them out as tables;
``render_html`` and ``render_xlsx`` draw the same tables. Every figure is a count or a rate of
README.md's definitions: the report adds no figure of its own.
"""

from __future__ import annotations

import asyncio
import html
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.reporting import domain, reports
from services.reporting.domain import Counts
from services.reporting.store import common, queries
from services.reporting.store.common import Filters, Period
from shared.reference import ReferenceData

Lang = str  # "zh" | "en"

GROUPINGS = (
    "all",
    "category",
    "street",
    "street_category",
    "community",
    "reporter_type",
    "source",
    "campaign",
    "campaign_category",
    "department",
)
"""The stored groupings the report reads (``group`` is folded from ``category``)."""

PERIOD_NAMES = {
    "current": {"zh": "本期", "en": "This period"},
    "previous": {"zh": "上期", "en": "Previous period"},
    "year_earlier": {"zh": "去年同期", "en": "Same period last year"},
}

T: Mapping[str, Mapping[str, str]] = {
    "title": {"zh": "隐患排查整治工作报告", "en": "Hazard work report"},
    "period": {"zh": "统计期间", "en": "Period"},
    "as_of": {"zh": "数据截至", "en": "Figures as of"},
    "summary": {"zh": "概述", "en": "Summary"},
    "figure": {"zh": "指标", "en": "Figure"},
    "change": {"zh": "环比", "en": "vs previous"},
    "yoy": {"zh": "同比", "en": "Year on year"},
    "share": {"zh": "占比", "en": "Share"},
    "found": {"zh": "发现隐患", "en": "Hazards found"},
    "total": {"zh": "合计", "en": "Total"},
    "reported": {"zh": "发现隐患（宗）", "en": "Hazards found"},
    "duplicates": {"zh": "重复上报（宗）", "en": "Duplicate reports"},
    "rectified": {"zh": "已整改（宗）", "en": "Rectified"},
    "rectification_rate": {"zh": "整改率", "en": "Rectification rate"},
    "notices_issued": {"zh": "发出整改通知书（份）", "en": "Rectification notices issued"},
    "notices_on_site": {"zh": "其中现场发出", "en": "of which on the spot"},
    "notices_ordered": {"zh": "其中部门责令", "en": "of which ordered by a department"},
    "rectification_overdue": {"zh": "超期未整改（宗）", "en": "Rectification overdue"},
    "closed": {"zh": "已结案（宗）", "en": "Closed"},
    "relapsed": {"zh": "回潮（宗）", "en": "Relapsed"},
    "relapse_rate": {"zh": "回潮率", "en": "Relapse rate"},
    "dispatched": {"zh": "分拨（次）", "en": "Dispatches"},
    "overdue_receipts": {"zh": "超时接收（次）", "en": "Overdue receipts"},
    "overdue_receipt_rate": {"zh": "超时接收率", "en": "Overdue-receipt rate"},
    "escalations": {"zh": "超时升级（次）", "en": "Escalations"},
    "receipt_overdue_open": {"zh": "超时未接收（次）", "en": "Overdue, not yet received"},
    "median_minutes_to_acknowledge": {"zh": "接收用时中位数（分钟）", "en": "Median minutes to acknowledge"},
    "median_hours_to_rectify": {"zh": "整改用时中位数（小时）", "en": "Median hours to rectify"},
    "t_overview": {"zh": "一、总体情况", "en": "1. Overview"},
    "t_groups": {"zh": "二、隐患类别", "en": "2. Hazards by kind"},
    "t_streets": {"zh": "三、各街道", "en": "3. By street"},
    "t_communities": {"zh": "四、各社区", "en": "4. By community"},
    "t_reporters": {"zh": "五、上报来源（人员类型）", "en": "5. By reporter type"},
    "t_sources": {"zh": "六、上报渠道", "en": "6. By channel"},
    "t_campaigns": {"zh": "七、专项行动", "en": "7. Campaigns"},
    "t_campaign_groups": {"zh": "八、专项行动隐患类别", "en": "8. Campaigns by kind"},
    "t_departments": {"zh": "九、职能部门接收与超时升级", "en": "9. Departments: receipt and escalation"},
    "t_overdue": {"zh": "十、超时未接收清单", "en": "10. Overdue receipts, still open"},
    "name": {"zh": "名称", "en": "Name"},
    "community": {"zh": "社区", "en": "Community"},
    "street": {"zh": "街道", "en": "Street"},
    "kind": {"zh": "类别", "en": "Kind"},
    "reporter_type": {"zh": "人员类型", "en": "Reporter type"},
    "source": {"zh": "渠道", "en": "Channel"},
    "campaign": {"zh": "专项行动", "en": "Campaign"},
    "window": {"zh": "时间", "en": "Window"},
    "state": {"zh": "状态", "en": "State"},
    "target": {"zh": "目标", "en": "Target"},
    "progress": {"zh": "完成率", "en": "Progress"},
    "department": {"zh": "部门", "en": "Department"},
    "hazard": {"zh": "隐患", "en": "Hazard"},
    "category": {"zh": "类别", "en": "Category"},
    "address": {"zh": "地址", "en": "Address"},
    "deadline": {"zh": "接收时限", "en": "Receipt deadline"},
    "hours_overdue": {"zh": "已超时（小时）", "en": "Hours overdue"},
    "active": {"zh": "进行中", "en": "active"},
    "ended": {"zh": "已结束", "en": "ended"},
    "upcoming": {"zh": "未开始", "en": "upcoming"},
    "none": {"zh": "无", "en": "none"},
    "print": {"zh": "打印", "en": "Print"},
}


def t(key: str, lang: Lang) -> str:
    """A label in the language (Chinese unless English is asked)."""
    return T[key]["en" if lang == "en" else "zh"]


@dataclass(frozen=True, slots=True)
class Periods:
    """The period the supervisor picked and its two comparisons."""

    current: Period
    previous: Period
    year_earlier: Period

    @classmethod
    def of(cls, start: date, end: date) -> Periods:
        """The period and its comparisons (previous: the same length before; a year earlier)."""
        return cls(
            Period(start, end),
            Period(*domain.previous_period(start, end)),
            Period(*domain.year_earlier(start, end)),
        )

    def all(self) -> tuple[Period, Period, Period]:
        """The three, in the index order of the counts (0 current, 1 previous, 2 a year earlier)."""
        return (self.current, self.previous, self.year_earlier)


def _dates(period: Period) -> dict[str, str]:
    return {"from": period.start.isoformat(), "to": period.end.isoformat()}


def _change(now: int | float | None, before: int | float | None) -> float | None:
    """Relative change (0.25: up 25 %), None when there is nothing to compare with."""
    if now is None or before is None or before == 0:
        return None
    return round((now - before) / before, 4)


def _overdue(c: Counts) -> int:
    return c.acknowledged_late + c.overdue_ended + c.receipt_overdue_open


def _figure(c: Counts, name: str) -> int | float | None:
    if name == "overdue_receipts":
        return _overdue(c)
    if name in reports.RATE_FIGURES:
        return domain.rates(c)[name]
    value: int = getattr(c, name)
    return value


async def build(
    sessions: async_sessionmaker[AsyncSession],
    *,
    reference: ReferenceData,
    start: date,
    end: date,
    now: datetime,
    case_url: str,
    overdue_limit: int = 200,
    schema: str = common.SCHEMA,
) -> dict[str, Any]:
    """The period report's data: the tables (each with its rows for the three periods) and the sentences."""
    periods = Periods.of(start, end)

    async def run(query: Callable[[AsyncSession], Any]) -> Any:
        async with sessions() as session:
            return await query(session)

    counts, overdue, ack, rect = await asyncio.gather(
        run(
            lambda db: queries.groupings_counts(
                db, groupings=GROUPINGS, periods=periods.all(), now=now, schema=schema
            )
        ),
        run(
            lambda db: queries.list_open_overdue(
                db, now=now, filters=Filters(), limit=overdue_limit, schema=schema
            )
        ),
        run(
            lambda db: queries.measure_medians(
                db, group_by="all", period=periods.current, filters=Filters(), measure="ack", schema=schema
            )
        ),
        run(
            lambda db: queries.measure_medians(
                db, group_by="all", period=periods.current, filters=Filters(), measure="rect", schema=schema
            )
        ),
    )
    return assemble(
        reference=reference,
        periods=periods,
        counts=counts,
        overdue=overdue,
        medians={"median_minutes_to_acknowledge": ack[1], "median_hours_to_rectify": rect[1]},
        now=now,
        case_url=case_url,
    )


def _by(
    counts: Mapping[tuple[str, str, int], Counts], grouping: str, key_map: Mapping[str, str] | None = None
) -> dict[str, list[Counts]]:
    """Per key of one grouping: its counts in the three periods (keys folded by ``key_map``)."""
    out: dict[str, list[Counts]] = {}
    for (g, key, period), c in counts.items():
        if g != grouping:
            continue
        k = key_map.get(key, key) if key_map else key
        slots = out.setdefault(k, [Counts(), Counts(), Counts()])
        slots[period] = slots[period] + c
    return out


def _triple(values: Sequence[int | float | None]) -> dict[str, Any]:
    """A figure in the three periods and its changes (relative; rates: the difference in points)."""
    cur, prev, last = values
    return {
        "current": cur,
        "previous": prev,
        "year_earlier": last,
        "change": _change(cur, prev),
        "yoy": _change(cur, last),
    }


def _rate_triple(values: Sequence[float | None]) -> dict[str, Any]:
    cur, prev, last = values
    return {
        "current": cur,
        "previous": prev,
        "year_earlier": last,
        "change": None if cur is None or prev is None else round(cur - prev, 4),
        "yoy": None if cur is None or last is None else round(cur - last, 4),
    }


def assemble(
    *,
    reference: ReferenceData,
    periods: Periods,
    counts: Mapping[tuple[str, str, int], Counts],
    overdue: Sequence[Mapping[str, Any]],
    medians: Mapping[str, float | None],
    now: datetime,
    case_url: str,
) -> dict[str, Any]:
    """The report's tables and facts for the sentences, from the figures read (pure)."""
    tz = ZoneInfo(reference.calendar.timezone)
    groups_of = {c.code: str(c.group) for c in reference.categories}
    group_order = [g for g in reports.GROUP_NAMES if g in set(groups_of.values())]
    total = _by(counts, "all").get("all", [Counts(), Counts(), Counts()])

    overview = []
    for name in (
        "reported",
        "rectified",
        "rectification_rate",
        "notices_issued",
        "notices_on_site",
        "notices_ordered",
        "rectification_overdue",
        "closed",
        "relapsed",
        "relapse_rate",
        "dispatched",
        "overdue_receipts",
        "overdue_receipt_rate",
        "receipt_overdue_open",
    ):
        values = [_figure(c, name) for c in total]
        row = _rate_triple(values) if name in reports.RATE_FIGURES else _triple(values)
        overview.append({"figure": name, "label": dict(T[name]), **row})
    overview.append(
        {"figure": "escalations", "label": dict(T["escalations"]), **_triple([c.escalations for c in total])}
    )
    for name, value in medians.items():
        overview.append(
            {
                "figure": name,
                "label": dict(T[name]),
                "current": None if value is None else round(value, 2),
                "previous": None,
                "year_earlier": None,
                "change": None,
                "yoy": None,
            }
        )

    by_group = _by(counts, "category", groups_of)
    found_total = [c.reported for c in total]

    def share(n: int, whole: int) -> float | None:
        return domain.ratio(n, whole)

    groups_rows = []
    for g in group_order:
        triple = [c.reported for c in by_group.get(g, [Counts()] * 3)]
        groups_rows.append(
            {
                "key": g,
                "label": dict(reports.GROUP_NAMES[g]),
                **_triple(triple),
                "share": share(triple[0], found_total[0]),
                "rectified": by_group.get(g, [Counts()])[0].rectified,
            }
        )

    street_group = _by(
        counts,
        "street_category",
        {f"{reference.street.id}|{k}": f"{reference.street.id}|{v}" for k, v in groups_of.items()},
    )
    streets_rows = []
    for key, triple_counts in sorted(_by(counts, "street").items()):
        streets_rows.append(
            {
                "key": key,
                "label": reports.dimension_label(reference, "street", key),
                **_triple([c.reported for c in triple_counts]),
                "by_group": {g: street_group.get(f"{key}|{g}", [Counts()])[0].reported for g in group_order},
                "rectification_rate": domain.rates(triple_counts[0])["rectification_rate"],
            }
        )

    community_name = reports.labeller(reference, "community")
    community_rows = []
    by_community = _by(counts, "community")
    ordered_communities = [c.id for c in reference.communities] + sorted(
        k for k in by_community if k not in {c.id for c in reference.communities}
    )
    for key in ordered_communities:
        triple_counts = by_community.get(key, [Counts(), Counts(), Counts()])
        rates_now = domain.rates(triple_counts[0])
        community_rows.append(
            {
                "key": key,
                "label": community_name(key),
                **_triple([c.reported for c in triple_counts]),
                "rectified": triple_counts[0].rectified,
                "rectification_rate": rates_now["rectification_rate"],
                "relapsed": triple_counts[0].relapsed,
                "relapse_rate": rates_now["relapse_rate"],
                "relapse_rate_yoy": domain.rates(triple_counts[2])["relapse_rate"],
            }
        )

    def simple_rows(grouping: str, order: Sequence[str]) -> list[dict[str, Any]]:
        found = _by(counts, grouping)
        keys = [k for k in order if k in found] + sorted(k for k in found if k not in order)
        return [
            {
                "key": key,
                "label": reports.dimension_label(reference, grouping, key),
                **_triple([c.reported for c in found[key]]),
                "share": share(found[key][0].reported, found_total[0]),
            }
            for key in keys
        ]

    by_campaign = _by(counts, "campaign")
    campaign_rows: list[dict[str, Any]] = []
    today = now.astimezone(tz).date()
    for campaign in reference.campaigns:
        c_now, _, c_last = by_campaign.get(campaign.id, [Counts(), Counts(), Counts()])
        outside = campaign.ends_on < periods.current.start or campaign.starts_on > periods.current.end
        if outside and c_now.reported == 0:
            continue  # outside the period and nothing counted: not this report's campaign
        targets = {k: v for k, v in campaign.targets.model_dump().items() if v}
        done = {
            "found": c_now.reported,
            "notices_issued": c_now.notices_issued,
            "rectified": c_now.rectified,
        }
        campaign_rows.append(
            {
                "key": campaign.id,
                "label": {"en": campaign.name_en, "zh": campaign.name_zh},
                "starts_on": campaign.starts_on.isoformat(),
                "ends_on": campaign.ends_on.isoformat(),
                "state": "active"
                if campaign.active_on(today)
                else ("ended" if campaign.ends_on < today else "upcoming"),
                **done,
                "notices_on_site": c_now.notices_on_site,
                "notices_ordered": c_now.notices_ordered,
                "found_year_earlier": c_last.reported,
                "targets": targets,
                "progress": {k: domain.ratio(done[k], v) for k, v in targets.items() if k in done},
            }
        )

    campaign_group = _by(
        counts,
        "campaign_category",
        {f"{c.id}|{k}": f"{c.id}|{v}" for c in reference.campaigns for k, v in groups_of.items()},
    )
    campaign_group_rows = []
    for row in campaign_rows:
        split = {g: campaign_group.get(f"{row['key']}|{g}", [Counts()])[0].reported for g in group_order}
        campaign_group_rows.append(
            {
                "key": row["key"],
                "label": row["label"],
                "found": row["found"],
                "by_group": split,
                "shares": {g: share(n, row["found"]) for g, n in split.items()},
            }
        )

    by_department = _by(counts, "department")
    department_rows: list[dict[str, Any]] = []
    keys = [d.id for d in reference.departments] + sorted(
        k for k in by_department if k not in {d.id for d in reference.departments}
    )
    for key in keys:
        triple_counts = by_department.get(key, [Counts(), Counts(), Counts()])
        if not any(c.dispatched or c.reported for c in triple_counts):
            continue
        if key == "" and not any(c.dispatched for c in triple_counts):
            continue  # never-dispatched hazards hold no receipt figures
        rates_ = [domain.rates(c)["overdue_receipt_rate"] for c in triple_counts]
        department_rows.append(
            {
                "key": key,
                "label": reports.label(reference, "department", key),
                "dispatched": triple_counts[0].dispatched,
                "acknowledged": triple_counts[0].acknowledged,
                "overdue_receipts": _overdue(triple_counts[0]),
                "receipt_overdue_open": triple_counts[0].receipt_overdue_open,
                "overdue_receipt_rate": _rate_triple(rates_),
                "escalations": _triple([c.escalations for c in triple_counts]),
                "dispatches_escalated": triple_counts[0].escalated,
                "rectification_overdue": triple_counts[0].rectification_overdue,
                "notices_ordered": triple_counts[0].notices_ordered,
            }
        )
    department_rows.sort(key=lambda r: (-r["overdue_receipts"], r["key"]))

    overdue_rows = [
        {
            "hazard_id": str(r["hazard_id"]),
            "dispatch_id": str(r["dispatch_id"]),
            "case_url": case_url.format(hazard_id=r["hazard_id"]),
            "department_id": r["department_id"],
            "department": reports.label(reference, "department", r["department_id"] or ""),
            "category": r["category"],
            "category_label": reports.label(reference, "category", r["category"]) if r["category"] else None,
            "community": community_name(r["community_id"]) if r["community_id"] else None,
            "address": r["address"],
            "deadline": r["deadline"].astimezone(tz).isoformat(),
            "hours_overdue": round((now - r["deadline"]).total_seconds() / 3600, 1),
        }
        for r in overdue
    ]

    report: dict[str, Any] = {
        "from": periods.current.start.isoformat(),
        "to": periods.current.end.isoformat(),
        "previous_period": _dates(periods.previous),
        "year_earlier": _dates(periods.year_earlier),
        "as_of": now.astimezone(tz).isoformat(),
        "timezone": reference.calendar.timezone,
        "street": {"en": reference.street.name_en, "zh": reference.street.name_zh},
        "groups_order": group_order,
        "tables": {
            "overview": overview,
            "groups": groups_rows,
            "streets": streets_rows,
            "communities": community_rows,
            "reporter_types": simple_rows("reporter_type", list(reports.REPORTER_TYPES)),
            "sources": simple_rows("source", list(reports.SOURCES)),
            "campaigns": campaign_rows,
            "campaign_groups": campaign_group_rows,
            "departments": department_rows,
            "overdue": overdue_rows,
        },
    }
    report["sentences"] = {"zh": sentences(report, "zh"), "en": sentences(report, "en")}
    return report


# ---------------------------------------------------------------- sentences


def _n(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _trend(change: float | None, lang: Lang) -> str:
    if change is None:
        return "无可比数据" if lang == "zh" else "no comparable figure"
    if round(change * 100, 1) == 0:
        change = 0.0  # below a tenth of a percent: said as unchanged, not "up 0.0%"
    if lang == "zh":
        return (
            f"上升{change * 100:.1f}%"
            if change > 0
            else (f"下降{-change * 100:.1f}%" if change < 0 else "持平")
        )
    return (
        f"up {change * 100:.1f}%"
        if change > 0
        else (f"down {-change * 100:.1f}%" if change < 0 else "unchanged")
    )


def _points(change: float | None, lang: Lang) -> str:
    if change is None:
        return "无可比数据" if lang == "zh" else "no comparable figure"
    pts = round(change * 100, 1)
    if lang == "zh":
        return f"上升{pts:.1f}个百分点" if pts > 0 else (f"下降{-pts:.1f}个百分点" if pts < 0 else "持平")
    return f"up {pts:.1f} points" if pts > 0 else (f"down {-pts:.1f} points" if pts < 0 else "unchanged")


def sentences(report: Mapping[str, Any], lang: Lang) -> list[str]:
    """Short sentences summarising each table, as the seed's report writes them."""
    tables = report["tables"]
    ov = {row["figure"]: row for row in tables["overview"]}
    zh = lang != "en"
    out: list[str] = []
    name = "zh" if zh else "en"
    found = ov["reported"]
    parts = [
        f"{r['label'][name]}{_n(r['current'])}宗" if zh else f"{_n(r['current'])} {r['label'][name].lower()}"
        for r in tables["groups"]
    ]
    if zh:
        out.append(
            f"{report['from']}至{report['to']}，共发现隐患{_n(found['current'])}宗"
            + (f"，其中{'、'.join(parts)}" if parts else "")
            + f"；环比{_trend(found['change'], lang)}，同比{_trend(found['yoy'], lang)}。"
        )
    else:
        out.append(
            f"From {report['from']} to {report['to']}, {_n(found['current'])} hazards were found"
            + (f", of which {', '.join(parts)}" if parts else "")
            + f"; {_trend(found['change'], lang)} on the previous period, {_trend(found['yoy'], lang)} year on year."
        )
    rect, rate = ov["rectified"], ov["rectification_rate"]
    notices, on_site, ordered = ov["notices_issued"], ov["notices_on_site"], ov["notices_ordered"]
    overdue_rect = ov["rectification_overdue"]
    if zh:
        out.append(
            f"已整改{_n(rect['current'])}宗，整改率{_pct(rate['current'])}（同比{_points(rate['yoy'], lang)}）；"
            f"发出整改通知书{_n(notices['current'])}份，其中现场发出{_n(on_site['current'])}份、"
            f"部门责令{_n(ordered['current'])}份；超期未整改{_n(overdue_rect['current'])}宗。"
        )
    else:
        out.append(
            f"{_n(rect['current'])} rectified, a rectification rate of {_pct(rate['current'])} "
            f"({_points(rate['yoy'], lang)} year on year); {_n(notices['current'])} rectification notices issued, "
            f"{_n(on_site['current'])} on the spot and {_n(ordered['current'])} ordered by departments; "
            f"{_n(overdue_rect['current'])} past their rectification deadline."
        )
    relapsed, relapse_rate = ov["relapsed"], ov["relapse_rate"]
    if zh:
        out.append(
            f"已结案{_n(ov['closed']['current'])}宗，回潮{_n(relapsed['current'])}宗，回潮率{_pct(relapse_rate['current'])}"
            f"（去年同期{_pct(relapse_rate['year_earlier'])}）。"
        )
    else:
        out.append(
            f"{_n(ov['closed']['current'])} closed, {_n(relapsed['current'])} relapsed: a relapse rate of "
            f"{_pct(relapse_rate['current'])} ({_pct(relapse_rate['year_earlier'])} a year earlier)."
        )
    disp, late, late_rate, esc = (
        ov["dispatched"],
        ov["overdue_receipts"],
        ov["overdue_receipt_rate"],
        ov["escalations"],
    )
    worst = [r for r in tables["departments"] if r["overdue_receipts"] > 0][:3]
    worst_text = ("、" if zh else ", ").join(
        f"{r['label'][name]}{_n(r['overdue_receipts'])}次"
        if zh
        else f"{r['label'][name]} ({_n(r['overdue_receipts'])})"
        for r in worst
    )
    if zh:
        out.append(
            f"分拨{_n(disp['current'])}次，超时接收{_n(late['current'])}次，超时接收率{_pct(late_rate['current'])}"
            f"（环比{_points(late_rate['change'], lang)}）；超时升级{_n(esc['current'])}次"
            + (f"；超时接收较多的部门：{worst_text}" if worst_text else "")
            + "。"
        )
    else:
        out.append(
            f"{_n(disp['current'])} dispatches, {_n(late['current'])} received late or not at all: an overdue-receipt "
            f"rate of {_pct(late_rate['current'])} ({_points(late_rate['change'], lang)} on the previous period); "
            f"{_n(esc['current'])} escalations"
            + (f"; most overdue receipts: {worst_text}" if worst_text else "")
            + "."
        )
    reporters = [r for r in tables["reporter_types"] if r["current"]]
    if reporters:
        if zh:
            out.append(
                "按上报人员："
                + "，".join(f"{r['label']['zh']}上报{_n(r['current'])}宗" for r in reporters)
                + "。"
            )
        else:
            out.append(
                "By reporter: "
                + ", ".join(f"{r['label']['en'].lower()} {_n(r['current'])}" for r in reporters)
                + "."
            )
    for c in tables["campaigns"]:
        target = c["targets"]
        if zh:
            text = (
                f"{c['label']['zh']}：发现隐患{_n(c['found'])}宗，发出整改通知书{_n(c['notices_issued'])}份，"
                f"整改{_n(c['rectified'])}宗"
            )
            if target:
                text += (
                    "（目标："
                    + "，".join(
                        f"{t(k, lang).split('（')[0]}{_n(v)}，完成{_pct(c['progress'].get(k))}"
                        for k, v in target.items()
                    )
                    + "）"
                )
        else:
            text = (
                f"{c['label']['en']}: {_n(c['found'])} found, {_n(c['notices_issued'])} rectification notices issued, "
                f"{_n(c['rectified'])} rectified"
            )
            if target:
                text += (
                    " (targets: "
                    + ", ".join(
                        f"{k.replace('_', ' ')} {_n(v)}, {_pct(c['progress'].get(k))} done"
                        for k, v in target.items()
                    )
                    + ")"
                )
        out.append(text + ("。" if zh else "."))
    open_overdue = len(tables["overdue"])
    out.append(
        f"截至{report['as_of'][:16].replace('T', ' ')}，仍有{_n(open_overdue)}次分拨超时未接收，清单见表十。"
        if zh
        else f"As of {report['as_of'][:16].replace('T', ' ')}, {_n(open_overdue)} dispatches are past their receipt "
        "deadline and not yet received (table 10)."
    )
    return out


# ---------------------------------------------------------------- tables as rows of cells


Cell = str | int | float | None


@dataclass(frozen=True, slots=True)
class Table:
    """One table of the report, as a header and rows of cells (rates as fractions), for HTML and xlsx."""

    key: str
    title: str
    header: list[str]
    rows: list[list[Cell]]
    percent_columns: frozenset[int] = frozenset()
    links: Mapping[int, int] | None = None  # column -> column holding its URL (not shown)


def layout(report: Mapping[str, Any], lang: Lang) -> list[Table]:
    """The report's tables in order, each a header and rows, in the language."""
    n = "en" if lang == "en" else "zh"
    tables = report["tables"]
    p = [PERIOD_NAMES[k][n] for k in ("current", "previous", "year_earlier")]
    out: list[Table] = []
    out.append(
        Table(
            "overview",
            t("t_overview", lang),
            [t("figure", lang), *p, t("change", lang), t("yoy", lang)],
            [
                [r["label"][n], r["current"], r["previous"], r["year_earlier"], r["change"], r["yoy"]]
                for r in tables["overview"]
            ],
            frozenset({4, 5}),
        )
    )
    out.append(
        Table(
            "groups",
            t("t_groups", lang),
            [t("kind", lang), *p, t("change", lang), t("yoy", lang), t("share", lang)],
            [
                [
                    r["label"][n],
                    r["current"],
                    r["previous"],
                    r["year_earlier"],
                    r["change"],
                    r["yoy"],
                    r["share"],
                ]
                for r in tables["groups"]
            ],
            frozenset({4, 5, 6}),
        )
    )
    group_names = [reports.GROUP_NAMES[g][n] for g in report["groups_order"]]
    out.append(
        Table(
            "streets",
            t("t_streets", lang),
            [t("street", lang), *p, t("yoy", lang), *group_names, t("rectification_rate", lang)],
            [
                [
                    r["label"][n],
                    r["current"],
                    r["previous"],
                    r["year_earlier"],
                    r["yoy"],
                    *(r["by_group"][g] for g in report["groups_order"]),
                    r["rectification_rate"],
                ]
                for r in tables["streets"]
            ],
            frozenset({4, 5 + len(group_names)}),
        )
    )
    out.append(
        Table(
            "communities",
            t("t_communities", lang),
            [
                t("community", lang),
                *p,
                t("yoy", lang),
                t("rectified", lang),
                t("rectification_rate", lang),
                t("relapsed", lang),
                t("relapse_rate", lang),
                f"{t('relapse_rate', lang)}（{p[2]}）"
                if n == "zh"
                else f"{t('relapse_rate', lang)} ({p[2]})",
            ],
            [
                [
                    r["label"][n],
                    r["current"],
                    r["previous"],
                    r["year_earlier"],
                    r["yoy"],
                    r["rectified"],
                    r["rectification_rate"],
                    r["relapsed"],
                    r["relapse_rate"],
                    r["relapse_rate_yoy"],
                ]
                for r in tables["communities"]
            ],
            frozenset({4, 6, 8, 9}),
        )
    )
    for key, title, dim in (
        ("reporter_types", "t_reporters", "reporter_type"),
        ("sources", "t_sources", "source"),
    ):
        out.append(
            Table(
                key,
                t(title, lang),
                [t(dim, lang), *p, t("yoy", lang), t("share", lang)],
                [
                    [r["label"][n], r["current"], r["previous"], r["year_earlier"], r["yoy"], r["share"]]
                    for r in tables[key]
                ],
                frozenset({4, 5}),
            )
        )
    out.append(
        Table(
            "campaigns",
            t("t_campaigns", lang),
            [
                t("campaign", lang),
                t("window", lang),
                t("state", lang),
                t("found", lang),
                t("notices_issued", lang),
                t("notices_on_site", lang),
                t("notices_ordered", lang),
                t("rectified", lang),
                t("target", lang),
                t("progress", lang),
                f"{t('found', lang)}（{p[2]}）" if n == "zh" else f"{t('found', lang)} ({p[2]})",
            ],
            [
                [
                    r["label"][n],
                    f"{r['starts_on']} – {r['ends_on']}",
                    t(r["state"], lang),
                    r["found"],
                    r["notices_issued"],
                    r["notices_on_site"],
                    r["notices_ordered"],
                    r["rectified"],
                    "; ".join(f"{t(k, lang) if k in T else k} {v:,}" for k, v in r["targets"].items()),
                    "; ".join(f"{t(k, lang) if k in T else k} {_pct(v)}" for k, v in r["progress"].items()),
                    r["found_year_earlier"],
                ]
                for r in tables["campaigns"]
            ],
        )
    )
    out.append(
        Table(
            "campaign_groups",
            t("t_campaign_groups", lang),
            [
                t("campaign", lang),
                t("found", lang),
                *group_names,
                *(f"{g} {t('share', lang)}" for g in group_names),
            ],
            [
                [
                    r["label"][n],
                    r["found"],
                    *(r["by_group"][g] for g in report["groups_order"]),
                    *(r["shares"][g] for g in report["groups_order"]),
                ]
                for r in tables["campaign_groups"]
            ],
            frozenset(range(2 + len(group_names), 2 + 2 * len(group_names))),
        )
    )
    out.append(
        Table(
            "departments",
            t("t_departments", lang),
            [
                t("department", lang),
                t("dispatched", lang),
                t("overdue_receipts", lang),
                t("receipt_overdue_open", lang),
                t("overdue_receipt_rate", lang),
                f"{t('overdue_receipt_rate', lang)}（{p[1]}）"
                if n == "zh"
                else f"{t('overdue_receipt_rate', lang)} ({p[1]})",
                f"{t('overdue_receipt_rate', lang)}（{p[2]}）"
                if n == "zh"
                else f"{t('overdue_receipt_rate', lang)} ({p[2]})",
                t("escalations", lang),
                f"{t('escalations', lang)}（{p[2]}）" if n == "zh" else f"{t('escalations', lang)} ({p[2]})",
                t("rectification_overdue", lang),
            ],
            [
                [
                    r["label"][n],
                    r["dispatched"],
                    r["overdue_receipts"],
                    r["receipt_overdue_open"],
                    r["overdue_receipt_rate"]["current"],
                    r["overdue_receipt_rate"]["previous"],
                    r["overdue_receipt_rate"]["year_earlier"],
                    r["escalations"]["current"],
                    r["escalations"]["year_earlier"],
                    r["rectification_overdue"],
                ]
                for r in tables["departments"]
            ],
            frozenset({4, 5, 6}),
        )
    )
    out.append(
        Table(
            "overdue",
            t("t_overdue", lang),
            [
                t("hazard", lang),
                t("department", lang),
                t("category", lang),
                t("community", lang),
                t("address", lang),
                t("deadline", lang),
                t("hours_overdue", lang),
                "URL",
            ],
            [
                [
                    r["hazard_id"],
                    r["department"][n],
                    r["category_label"][n] if r["category_label"] else r["category"],
                    r["community"][n] if r["community"] else None,
                    r["address"],
                    r["deadline"][:16].replace("T", " "),
                    r["hours_overdue"],
                    r["case_url"],
                ]
                for r in tables["overdue"]
            ],
            links={0: 7},
        )
    )
    return out


def _rate_rows(table: Table, report: Mapping[str, Any]) -> set[int]:
    """Rows of the overview whose values are rates (shown as percentages, changes in points)."""
    if table.key != "overview":
        return set()
    rates_ = set(reports.RATE_FIGURES)
    return {i for i, r in enumerate(report["tables"]["overview"]) if r["figure"] in rates_}


def _cell_text(value: Cell, percent: bool) -> str:
    if value is None:
        return "—"
    if percent and isinstance(value, int | float):
        return f"{value * 100:.1f}%"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:"Noto Sans CJK SC","WenQuanYi Micro Hei","Microsoft YaHei",sans-serif;margin:24px;color:#1b1b1b}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:22px 0 6px;border-bottom:1px solid #bbb}
.meta{color:#555;font-size:13px}.sentences{background:#f4f6f8;padding:10px 16px;border-radius:6px}
.sentences li{margin:4px 0;line-height:1.5}table{border-collapse:collapse;width:100%;font-size:12.5px}
th,td{border:1px solid #ccc;padding:4px 6px;text-align:right}th{background:#eef1f4}
td:first-child,th:first-child{text-align:left}td.text{text-align:left}
a{color:#0b57d0}@media print{body{margin:8mm}.noprint{display:none}h2{break-after:avoid}table{break-inside:auto}}
"""


def render_html(report: Mapping[str, Any], lang: Lang) -> str:
    """The report as one printable HTML page (its own styles, nothing fetched)."""
    n = "en" if lang == "en" else "zh"
    e = html.escape
    title = f"{report['street'][n]} {t('title', lang)}"
    head = (
        f'<!doctype html><html lang="{"en" if n == "en" else "zh-CN"}"><head><meta charset="utf-8">'
        f"<title>{e(title)} {e(report['from'])} – {e(report['to'])}</title><style>{_CSS}</style></head><body>"
    )
    parts = [
        head,
        f"<h1>{e(title)}</h1>",
        f'<p class="meta">{e(t("period", lang))}: {e(report["from"])} – {e(report["to"])}; '
        f"{e(PERIOD_NAMES['previous'][n])}: {e(report['previous_period']['from'])} – {e(report['previous_period']['to'])}; "
        f"{e(PERIOD_NAMES['year_earlier'][n])}: {e(report['year_earlier']['from'])} – {e(report['year_earlier']['to'])}; "
        f"{e(t('as_of', lang))} {e(report['as_of'][:16].replace('T', ' '))} ({e(report['timezone'])})</p>",
        f'<h2>{e(t("summary", lang))}</h2><ul class="sentences">',
        *(f"<li>{e(s)}</li>" for s in report["sentences"][n]),
        "</ul>",
    ]
    for table in layout(report, lang):
        rate_rows = _rate_rows(table, report)
        link_targets = set((table.links or {}).values())
        parts.append(f'<h2 id="{e(table.key)}">{e(table.title)}</h2><table><thead><tr>')
        parts.extend(f"<th>{e(h)}</th>" for i, h in enumerate(table.header) if i not in link_targets)
        parts.append("</tr></thead><tbody>")
        if not table.rows:
            parts.append(f'<tr><td colspan="{len(table.header)}">{e(t("none", lang))}</td></tr>')
        for r_i, row in enumerate(table.rows):
            parts.append("<tr>")
            for i, value in enumerate(row):
                if i in link_targets:
                    continue
                percent = i in table.percent_columns or (r_i in rate_rows and i in (1, 2, 3, 4, 5))
                text = _cell_text(value, percent)
                if r_i in rate_rows and i in (4, 5) and isinstance(value, int | float):
                    text = f"{value * 100:+.1f} pt"
                css = ' class="text"' if isinstance(value, str) else ""
                if table.links and i in table.links and row[table.links[i]]:
                    parts.append(f'<td{css}><a href="{e(str(row[table.links[i]]))}">{e(text)}</a></td>')
                else:
                    parts.append(f"<td{css}>{e(text)}</td>")
            parts.append("</tr>")
        parts.append("</tbody></table>")
    parts.append("</body></html>")
    return "".join(parts)


# ---------------------------------------------------------------- xlsx


def render_xlsx(report: Mapping[str, Any], lang: Lang) -> bytes:
    """The report as an Excel workbook: the sentences first, then one sheet per table.

    Written in openpyxl's write-only mode (rows streamed, styles only on the cells that need one):
    the ordinary mode spent most of a city-year report's time on per-cell bookkeeping.
    """
    from openpyxl import Workbook  # imported here: only this format needs it
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font

    bold, title_font, link_font = (
        Font(bold=True),
        Font(bold=True, size=14),
        Font(color="0B57D0", underline="single"),
    )
    n = "en" if lang == "en" else "zh"
    book = Workbook(write_only=True)
    summary = book.create_sheet(t("summary", lang)[:31])
    summary.column_dimensions["A"].width = 120
    heading = WriteOnlyCell(summary, value=f"{report['street'][n]} {t('title', lang)}")
    heading.font = title_font
    summary.append([heading])
    summary.append([t("period", lang), report["from"], report["to"]])
    summary.append(
        [PERIOD_NAMES["previous"][n], report["previous_period"]["from"], report["previous_period"]["to"]]
    )
    summary.append(
        [PERIOD_NAMES["year_earlier"][n], report["year_earlier"]["from"], report["year_earlier"]["to"]]
    )
    summary.append([t("as_of", lang), report["as_of"]])
    summary.append([])
    for sentence in report["sentences"][n]:
        summary.append([sentence])
    used: set[str] = {summary.title}
    for table in layout(report, lang):
        sheet = book.create_sheet(_sheet_name(table.title, used))
        link_targets = set((table.links or {}).values())
        for i, _ in enumerate(table.header):
            sheet.column_dimensions[_column_letter(i)].width = 40 if i == 0 or i in link_targets else 16
        header = []
        for h in table.header:
            cell = WriteOnlyCell(sheet, value=h)
            cell.font = bold
            header.append(cell)
        sheet.append(header)
        rate_rows = _rate_rows(table, report)
        for r_i, row in enumerate(table.rows):
            out: list[Any] = []
            for i, value in enumerate(row):
                percent = i in table.percent_columns or (r_i in rate_rows and i in (1, 2, 3, 4, 5))
                link = row[table.links[i]] if table.links and i in table.links else None
                if (percent and isinstance(value, int | float)) or link:
                    cell = WriteOnlyCell(sheet, value=value)
                    if percent and isinstance(value, int | float):
                        cell.number_format = "0.0%"
                    if link:
                        cell.hyperlink = str(link)
                        cell.font = link_font
                    out.append(cell)
                else:
                    out.append(value)
            sheet.append(out)
    stream = io.BytesIO()
    book.save(stream)
    return stream.getvalue()


def _column_letter(index: int) -> str:
    """The spreadsheet column of a 0-based index (A, B, ..., Z, AA, ...)."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def _sheet_name(title: str, used: set[str]) -> str:
    """A sheet name Excel accepts (31 characters, none of []:*?/\\), unique in the book."""
    clean = "".join("-" if ch in "[]:*?/\\" else ch for ch in title)[:31]
    name, i = clean, 2
    while name in used:
        suffix = f" ({i})"
        name, i = clean[: 31 - len(suffix)] + suffix, i + 1
    used.add(name)
    return name
