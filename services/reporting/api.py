"""HTTP routes of the reporting service: the supervisors' figures (JSON and CSV) and the dashboard page."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from services.reporting import domain, models, period_report, reports, service
from services.reporting.settings import DashboardSettings, ReportingSettings
from services.reporting.store import queries
from services.reporting.store.common import Filters, Period
from shared.auth import Principal, require
from shared.errors import ApiError
from shared.reference import ReferenceData
from shared.service import ServiceRuntime

STATIC_DIR = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
"""The dashboard loads only its own files and talks only to this service (the token never leaves it)."""

router = APIRouter()
reader = require("supervisor", "operator")

SeriesGroupBy = Literal[
    "department", "community", "category", "street", "reporter_type", "source", "campaign"
]
Bucket = Literal["day", "week", "month", "quarter", "half_year", "year"]
SERIES_METRICS = (*reports.COUNT_FIGURES, *reports.RATE_FIGURES)


def _runtime(request: Request) -> ServiceRuntime[Any]:
    runtime: ServiceRuntime[Any] = request.app.state.runtime
    return runtime


def _now(request: Request) -> datetime:
    clock = getattr(request.app.state, "clock", None)
    return clock() if clock is not None else datetime.now(UTC)


Runtime = Annotated[ServiceRuntime[Any], Depends(_runtime)]
Now = Annotated[datetime, Depends(_now)]
"""The request's time (the app's clock when a test set one)."""
Reader = Annotated[Principal, Depends(reader)]


def _period(reference: ReferenceData, start: date | None, end: date | None, now: datetime) -> Period:
    # Days far out (year 1, year 9999) would overflow the default period and the comparisons: 500.
    problems = domain.day_problems(**{"from": start, "to": end})
    if not problems:
        end = end or now.astimezone(ZoneInfo(reference.calendar.timezone)).date()
        start = start or end - timedelta(days=29)
        problems = [("from", p) for p in domain.period_problems(start, end)]
        if not problems:
            return Period(start, end)
    raise ApiError(
        422,
        "invalid_period",
        "The period is not acceptable.",
        [{"field": field, "problem": problem} for field, problem in problems],
    )


def _filters(reference: ReferenceData, community: str | None, category: str | None) -> Filters:
    details = []
    if community is not None and community not in {c.id for c in reference.communities}:
        known = ", ".join(c.id for c in reference.communities)
        details.append({"field": "community", "problem": f"unknown community {community!r}; known: {known}"})
    if category is not None and category not in {c.code for c in reference.categories}:
        details.append({"field": "category", "problem": f"unknown category {category!r}"})
    if details:
        raise ApiError(
            422, "invalid_filter", "A filter names something the reference data does not know.", details
        )
    return Filters(community_id=community, category=category)


def _grouping(reference: ReferenceData, group_by: str) -> None:
    try:
        reports.resolve_grouping(reference, group_by)
    except reports.GroupingError as exc:
        raise ApiError(
            422,
            "invalid_group_by",
            "group_by is not acceptable.",
            [{"field": "group_by", "problem": str(exc)}],
        ) from None


async def _refresh(runtime: ServiceRuntime[Any]) -> None:
    """Bring the rollup up to date first when it lags more than allowed (service.refresh_if_stale)."""
    settings = runtime.settings
    bound = settings.projection.max_staleness_s if isinstance(settings, ReportingSettings) else 0.0
    async with runtime.work() as uow:
        await service.refresh_if_stale(uow, max_staleness_s=bound)


FromQ = Annotated[date | None, Query(alias="from", description="First local day (YYYY-MM-DD), included")]
ToQ = Annotated[date | None, Query(alias="to", description="Last local day (YYYY-MM-DD), included")]
CommunityQ = Annotated[str | None, Query(description="Only this community")]
CategoryQ = Annotated[str | None, Query(description="Only this category")]


@router.get(
    "/api/v1/reports/summary",
    tags=["reports"],
    summary="Figures per group, with comparisons (JSON or CSV)",
    response_model=models.Summary,
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def get_summary(
    runtime: Runtime,
    now: Now,
    principal: Reader,
    group_by: Annotated[
        str,
        Query(
            max_length=100,
            description="One of department, street, community, grid, group, category, campaign, reporter_type, "
            "source; or a pair: campaign,category | campaign,group | street,category | street,group",
        ),
    ] = "department",
    start: FromQ = None,
    end: ToQ = None,
    community: CommunityQ = None,
    category: CategoryQ = None,
    format: Literal["json", "csv"] = "json",
) -> Response:
    """Per group: counts, rates, medians, and the rates of the previous period and a year earlier."""
    period = _period(runtime.reference, start, end, now)
    filters = _filters(runtime.reference, community, category)
    _grouping(runtime.reference, group_by)
    await _refresh(runtime)
    report = await reports.summary(
        runtime.sessions,
        reference=runtime.reference,
        start=period.start,
        end=period.end,
        group_by=group_by,
        filters=filters,
        now=now,
    )
    if format == "csv":
        name = f"summary-{report['group_by'].replace(',', '-')}-{period.start}-{period.end}.csv"
        return Response(
            reports.summary_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSONResponse(report)


@router.get(
    "/api/v1/reports/overdue",
    tags=["reports"],
    summary="Open dispatches past their receipt deadline",
    response_model=models.OverdueList,
)
async def get_overdue(
    runtime: Runtime,
    now: Now,
    principal: Reader,
    community: CommunityQ = None,
    category: CategoryQ = None,
    department_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> dict[str, Any]:
    """Dispatches past their receipt deadline and not acknowledged, oldest deadline first."""
    base = _filters(runtime.reference, community, category)
    filters = Filters(community_id=base.community_id, category=base.category, department_id=department_id)
    settings = runtime.settings
    case_url = (
        settings.dashboard if isinstance(settings, ReportingSettings) else DashboardSettings()
    ).case_url
    async with runtime.sessions() as session:
        rows = await queries.list_open_overdue(session, now=now, filters=filters, limit=limit)
    items = reports.overdue_items(runtime.reference, rows, now=now, case_url=case_url)
    return {"as_of": now.isoformat(), "count": len(items), "items": items}


@router.get(
    "/api/v1/reports/relapse-hotspots",
    tags=["reports"],
    summary="Places ranked by relapses",
    response_model=models.Hotspots,
)
async def get_relapse_hotspots(
    runtime: Runtime,
    now: Now,
    principal: Reader,
    start: FromQ = None,
    end: ToQ = None,
    community: CommunityQ = None,
    category: CategoryQ = None,
    min_relapses: Annotated[int | None, Query(ge=1, le=1_000_000)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> dict[str, Any]:
    """Places (building or address within a grid) with the most relapses in the period."""
    period = _period(runtime.reference, start, end, now)
    filters = _filters(runtime.reference, community, category)
    threshold = min_relapses or runtime.reference.hotspot_min_relapses
    async with runtime.sessions() as session:
        rows = await queries.list_relapse_hotspots(
            session, period=period, filters=filters, min_relapses=threshold, limit=limit
        )
    items = reports.hotspot_items(runtime.reference, rows)
    return {
        "from": period.start.isoformat(),
        "to": period.end.isoformat(),
        "min_relapses": threshold,
        "items": items,
    }


@router.get(
    "/api/v1/reports/campaigns",
    tags=["reports"],
    summary="Campaign progress against targets",
    response_model=models.Campaigns,
)
async def get_campaigns(
    runtime: Runtime,
    now: Now,
    principal: Reader,
    community: CommunityQ = None,
) -> dict[str, Any]:
    """Every campaign: hazards found, notices issued, rectified, closed, and progress to its targets."""
    filters = _filters(runtime.reference, community, None)
    campaigns = runtime.reference.campaigns
    since = min((c.starts_on for c in campaigns), default=date(2000, 1, 1)) - timedelta(days=1)
    async with runtime.sessions() as session:
        counts = await queries.campaign_counts(
            session, since=since, filters=filters, ends_on={c.id: c.ends_on for c in campaigns}
        )
    today = now.astimezone(ZoneInfo(runtime.reference.calendar.timezone)).date()
    return {"campaigns": reports.campaign_progress(runtime.reference, counts, today=today)}


@router.get(
    "/api/v1/reports/timeseries",
    tags=["reports"],
    summary="A figure per group over time",
    response_model=models.Timeseries,
)
async def get_timeseries(
    runtime: Runtime,
    now: Now,
    principal: Reader,
    metric: str = "overdue_receipts",
    group_by: SeriesGroupBy = "department",
    bucket: Bucket = "day",
    start: FromQ = None,
    end: ToQ = None,
    community: CommunityQ = None,
    category: CategoryQ = None,
) -> dict[str, Any]:
    """One series per group: the metric in each day or week (weeks start on Monday)."""
    if metric not in SERIES_METRICS:
        raise ApiError(
            422,
            "invalid_metric",
            f"Unknown metric {metric!r}.",
            [{"field": "metric", "problem": f"use one of: {', '.join(SERIES_METRICS)}"}],
        )
    period = _period(runtime.reference, start, end, now)
    filters = _filters(runtime.reference, community, category)
    if (community or category) and group_by not in ("department", "community", "category"):
        raise ApiError(
            422,
            "invalid_group_by",
            "A filtered series groups by department, community or category only.",
            [{"field": "group_by", "problem": f"{group_by!r} with a community or category filter"}],
        )
    await _refresh(runtime)
    async with runtime.sessions() as session:
        series = await queries.daily_series(
            session, group_by=group_by, period=period, filters=filters, bucket=bucket, now=now
        )
    buckets = _buckets(period, bucket)
    values = reports.series_values(series, metric=metric, buckets=buckets)
    return {
        "metric": metric,
        "group_by": group_by,
        "bucket": bucket,
        "from": period.start.isoformat(),
        "to": period.end.isoformat(),
        "buckets": [b.isoformat() for b in buckets],
        "series": [
            {"key": key, "label": reports.dimension_label(runtime.reference, group_by, key), "values": vals}
            for key, vals in values.items()
        ],
    }


def _buckets(period: Period, bucket: str) -> list[date]:
    """The start of every bucket the period touches (the first may start before the period)."""
    out: list[date] = []
    day = period.start
    while day <= period.end:
        start = queries.bucket_start(day, bucket)
        if not out or out[-1] != start:
            out.append(start)
        day += timedelta(days=1)
    return out


@router.get(
    "/api/v1/reports/period",
    tags=["reports"],
    summary="The supervisor's period report: tables, comparisons and sentences (JSON, HTML or xlsx)",
    response_model=models.PeriodReport,
    responses={
        200: {
            "content": {
                "application/json": {},
                "text/html": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
            }
        }
    },
)
async def get_period_report(
    runtime: Runtime,
    now: Now,
    principal: Reader,
    start: FromQ = None,
    end: ToQ = None,
    format: Literal["json", "html", "xlsx"] = "json",
    lang: Literal["zh", "en"] = "zh",
    overdue_limit: Annotated[int, Query(ge=0, le=5000, description="Rows of the open-overdue list")] = 200,
) -> Response:
    """The period's figures beside the previous period and a year earlier, as the seed's report lays them out."""
    period = _period(runtime.reference, start, end, now)
    settings = runtime.settings
    case_url = (
        settings.dashboard if isinstance(settings, ReportingSettings) else DashboardSettings()
    ).case_url
    await _refresh(runtime)
    report = await period_report.build(
        runtime.sessions,
        reference=runtime.reference,
        start=period.start,
        end=period.end,
        now=now,
        case_url=case_url,
        overdue_limit=overdue_limit,
    )
    name = f"period-report-{period.start}-{period.end}-{lang}"
    if format == "html":
        return Response(
            period_report.render_html(report, lang),
            media_type="text/html; charset=utf-8",
            headers={"Content-Disposition": f'inline; filename="{name}.html"'},
        )
    if format == "xlsx":
        return Response(
            period_report.render_xlsx(report, lang),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": f'attachment; filename="{name}.xlsx"'},
        )
    return JSONResponse(report)


@router.get(
    "/api/v1/reports/reference",
    tags=["reports"],
    summary="Names for the dashboard's filters",
    response_model=models.ReportingReference,
)
async def get_reference(runtime: Runtime, principal: Reader) -> dict[str, Any]:
    """Communities, categories, departments and campaigns with English and Chinese names."""
    ref = runtime.reference
    return {
        "timezone": ref.calendar.timezone,
        "communities": [{"id": c.id, "en": c.name_en, "zh": c.name_zh} for c in ref.communities],
        "categories": [{"id": c.code, "en": c.name_en, "zh": c.name_zh} for c in ref.categories],
        "departments": [{"id": d.id, "en": d.name_en, "zh": d.name_zh} for d in ref.departments],
    }


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    """The dashboard page shell (no data, no token: the page asks for a token and calls the API)."""
    return FileResponse(
        STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
    )
