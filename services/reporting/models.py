"""The answers of reporting's JSON routes, as the OpenAPI document describes them.

Exactly the fields each route answers (same names, same nullability, same order). The figures are
built as plain dicts by ``reports.py`` and ``period_report.py`` (a grid summary has thousands of
groups: no model is built per row on the hot path); these models describe them, and
``tests/integration/reporting/test_reporting_models.py`` validates real answers against them
(``extra="forbid"``: a field answered but not described fails there).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    """An answer's shape: nothing beyond what is described."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Label(Answer):
    """A name in English and Chinese."""

    en: str
    zh: str


class Dates(Answer):
    """A period's first and last local day (YYYY-MM-DD)."""

    from_: str = Field(alias="from")
    to: str


# ---------------------------------------------------------------- GET /api/v1/reports/summary


class Comparison(Answer):
    """A comparison period's rates, with its dates and the counts behind them."""

    from_: str = Field(alias="from")
    to: str
    overdue_receipt_rate: float | None
    rectification_rate: float | None
    relapse_rate: float | None
    dispatched: int
    reported: int
    closed: int


class SummaryFigures(Answer):
    """One group's figures (also the totals' row)."""

    reported: int
    duplicates: int
    dispatched: int
    acknowledged: int
    acknowledged_late: int
    receipt_overdue_open: int
    notices_issued: int
    rectified: int
    rectification_overdue: int
    closed: int
    relapsed: int
    notices_on_site: int
    notices_ordered: int
    escalated: int
    escalations: int
    overdue_receipts: int
    overdue_receipt_rate: float | None
    rectification_rate: float | None
    relapse_rate: float | None
    returned_after_receipt: int
    urgings: int
    extension_requests: int
    extensions_approved: int
    overdue_receipts_original: int
    median_minutes_to_acknowledge: float | None
    median_hours_to_rectify: float | None
    previous_period: Comparison
    year_earlier: Comparison


class SummaryGroup(SummaryFigures):
    """A group: its key and name, then its figures."""

    key: str
    label: Label


class SummaryFilters(Answer):
    """The filters the figures were narrowed by (null: all)."""

    community: str | None
    category: str | None


class Summary(Answer):
    """Figures per group for the period, with the previous period's and a year earlier's rates."""

    from_: str = Field(alias="from")
    to: str
    group_by: str
    filters: SummaryFilters
    as_of: str
    previous_period: Dates
    year_earlier: Dates
    groups: list[SummaryGroup]
    totals: SummaryFigures


# ---------------------------------------------------------------- GET /api/v1/reports/overdue


class OverdueDispatch(Answer):
    """An open dispatch past its receipt deadline."""

    dispatch_id: str
    hazard_id: str
    department_id: str | None
    department: Label
    category: str | None
    community_id: str | None
    grid_id: str | None
    address: str | None
    case_url: str
    dispatched_at: str | None
    receipt_deadline: str
    minutes_overdue: float


class OverdueList(Answer):
    """Dispatches past their receipt deadline, oldest deadline first."""

    as_of: str
    count: int
    items: list[OverdueDispatch]


# ---------------------------------------------------------------- GET /api/v1/reports/relapse-hotspots


class Hotspot(Answer):
    """A place and its relapses within the period."""

    place_key: str | None
    address: str | None
    community_id: str | None
    community: Label
    grid_id: str | None
    grid: Label
    relapses: int
    last_relapsed_at: str | None
    categories: list[str]


class Hotspots(Answer):
    """Places ranked by relapses."""

    from_: str = Field(alias="from")
    to: str
    min_relapses: int
    items: list[Hotspot]


# ---------------------------------------------------------------- GET /api/v1/reports/campaigns


class CampaignTargets(Answer):
    """A campaign's goals (null: not tracked)."""

    found: int | None
    notices_issued: int | None
    rectified: int | None


class CampaignProgress(Answer):
    """A campaign, its figures and its progress to each goal (null: not tracked)."""

    campaign_id: str
    label: Label
    starts_on: str
    ends_on: str
    active: bool
    state: str
    categories: list[str]
    found: int
    notices_issued: int
    notices_on_site: int
    notices_ordered: int
    rectified: int
    closed: int
    late: int
    targets: CampaignTargets
    progress: dict[str, float | None]


class Campaigns(Answer):
    """Every campaign of the reference data."""

    campaigns: list[CampaignProgress]


# ---------------------------------------------------------------- GET /api/v1/reports/timeseries


class Series(Answer):
    """One group's values, one per bucket (counts 0 and rates null where empty)."""

    key: str
    label: Label
    values: list[int | float | None]


class Timeseries(Answer):
    """A figure per group over time."""

    metric: str
    group_by: str
    bucket: str
    from_: str = Field(alias="from")
    to: str
    buckets: list[str]
    series: list[Series]


# ---------------------------------------------------------------- GET /api/v1/reports/reference


class Named(Answer):
    """An id with its English and Chinese names."""

    id: str
    en: str
    zh: str


class ReportingReference(Answer):
    """Names for the dashboard's filters."""

    timezone: str
    communities: list[Named]
    categories: list[Named]
    departments: list[Named]


# ---------------------------------------------------------------- GET /api/v1/reports/period (JSON)


class Triple(Answer):
    """A figure in the period, the previous period and a year earlier, and its changes."""

    current: int | float | None
    previous: int | float | None
    year_earlier: int | float | None
    change: float | None
    yoy: float | None


class OverviewRow(Triple):
    """A figure of the overview table."""

    figure: str
    label: Label


class CountRow(Triple):
    """A group's hazards found in the three periods."""

    key: str
    label: Label


class GroupRow(CountRow):
    """A category group: found, its share of all, rectified."""

    share: float | None
    rectified: int


class StreetRow(CountRow):
    """The street: found, found per category group, rectification rate."""

    by_group: dict[str, int]
    rectification_rate: float | None


class CommunityRow(CountRow):
    """A community: found, rectified, relapses and their rates."""

    rectified: int
    rectification_rate: float | None
    relapsed: int
    relapse_rate: float | None
    relapse_rate_yoy: float | None


class ShareRow(CountRow):
    """A reporter type or channel: found and its share of all."""

    share: float | None


class PeriodCampaignRow(Answer):
    """A campaign of the period: its figures and progress to its goals."""

    key: str
    label: Label
    starts_on: str
    ends_on: str
    state: str
    found: int
    notices_issued: int
    rectified: int
    notices_on_site: int
    notices_ordered: int
    found_year_earlier: int
    targets: dict[str, int]
    progress: dict[str, float | None]


class CampaignGroupRow(Answer):
    """A campaign's hazards found per category group, and their shares."""

    key: str
    label: Label
    found: int
    by_group: dict[str, int]
    shares: dict[str, float | None]


class DepartmentRow(Answer):
    """A department's receipt figures."""

    key: str
    label: Label
    dispatched: int
    acknowledged: int
    overdue_receipts: int
    receipt_overdue_open: int
    overdue_receipt_rate: Triple
    escalations: Triple
    dispatches_escalated: int
    rectification_overdue: int
    notices_ordered: int


class OverdueRow(Answer):
    """An open dispatch past its receipt deadline."""

    hazard_id: str
    dispatch_id: str
    case_url: str
    department_id: str | None
    department: Label
    category: str | None
    category_label: Label | None
    community: Label | None
    address: str | None
    deadline: str
    hours_overdue: float


class PeriodTables(Answer):
    """The report's tables."""

    overview: list[OverviewRow]
    groups: list[GroupRow]
    streets: list[StreetRow]
    communities: list[CommunityRow]
    reporter_types: list[ShareRow]
    sources: list[ShareRow]
    campaigns: list[PeriodCampaignRow]
    campaign_groups: list[CampaignGroupRow]
    departments: list[DepartmentRow]
    overdue: list[OverdueRow]


class Sentences(Answer):
    """The report's sentences in each language."""

    zh: list[str]
    en: list[str]


class PeriodReport(Answer):
    """The supervisor's period report (JSON): tables, comparisons and sentences."""

    from_: str = Field(alias="from")
    to: str
    previous_period: Dates
    year_earlier: Dates
    as_of: str
    timezone: str
    street: Label
    groups_order: list[str]
    tables: PeriodTables
    sentences: Sentences


# ---------------------------------------------------------------- people (#17)


class WhoAmI(Answer):
    """Who a bearer token is."""

    principal: str
    role: str
    grid_id: str | None
    department_id: str | None


class AppConfig(Answer):
    """Where the people pages find each API, and how often they poll."""

    intake: str
    dispatch: str
    tracking: str
    reporting: str
    dashboard: str
    poll_ms: int


class AppCategory(Answer):
    """A category as the grid member's picker shows it."""

    id: str
    zh: str
    en: str
    group: str
    urgency: list[str]


class Point(Answer):
    """A place on the map."""

    lat: float
    lon: float


class AppGrid(Answer):
    """A grid and its centre."""

    id: str
    zh: str
    en: str
    community_id: str
    center: Point


class AppReference(Answer):
    """The public names the people pages show."""

    timezone: str
    groups: list[str]
    categories: list[AppCategory]
    departments: list[Named]
    communities: list[Named]
    grids: list[AppGrid]
