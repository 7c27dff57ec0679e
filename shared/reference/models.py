"""Immutable, validated models of the reference data and the lookups services run against it."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from datetime import date, time, timedelta
from typing import Annotated, Any, Final, Literal, Self, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from shared.reference import national
from shared.reference.errors import UnknownReference
from shared.reference.geo import point_in_polygon

_COVERAGE_LOOKAHEAD_YEARS: Final = 10
"""`Calendar.covered_until` looks no further ahead than this."""

WORKING_DAY_MINUTES_CONTEXT: Final = "working_day_minutes"
"""Validation-context key: minutes in one working day, used to read `{days: N, working_time: true}`."""

Code = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
"""A lowercase snake code: department ids, category codes."""

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=64)]
"""A lowercase id that may carry hyphens: communities, grids, rules, campaigns, holidays."""

Text = Annotated[str, Field(min_length=1, max_length=200)]
CategoryGroup = Literal["fire", "public_security", "production_safety", "other"]
Urgency = Literal["normal", "urgent"]
URGENCY_LEVELS: Final[tuple[str, ...]] = get_args(Urgency)
EscalationTarget = Literal["department", "supervisor", "district"]
OPERATORS_QUEUE: Final = "operators"
"""Not a department: where hazards go when no routing rule matches."""

_UNITS: Final = ("minutes", "hours", "days")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _private(model: BaseModel, name: str) -> Any:
    """A private attribute's value, read from pydantic's store directly.

    ``self._name`` on a pydantic model misses the ordinary lookup, then pydantic's ``__getattr__``
    asks the attribute's declaration for ``__get__`` (which raises too): two exceptions, some 3 us a
    read. The lookups below run several times per report and per dispatch (a ``grid()`` call took
    5.8 us, ``calendar.zone`` 11 us; read this way, 0.3 us).
    """
    return model.__pydantic_private__[name]  # type: ignore[index]


class DeadlineRule(_Frozen):
    """A time allowance: `minutes` of wall-clock time, or of working time when `working_time` is true."""

    minutes: Annotated[StrictInt, Field(ge=0)]
    working_time: StrictBool

    @model_validator(mode="before")
    @classmethod
    def _from_units(cls, data: Any, info: ValidationInfo) -> Any:
        """Read `{minutes|hours|days: N, working_time: bool}` into total minutes."""
        if not isinstance(data, Mapping):
            return data
        units = [unit for unit in _UNITS if unit in data]
        if len(units) != 1:
            given = ", ".join(units) if units else "none"
            raise ValueError(f"give exactly one of minutes, hours, days (given: {given})")
        unit = units[0]
        if unit == "minutes":
            return data
        value = data[unit]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{unit} must be a whole number >= 0, got {value!r}")
        rest = {key: item for key, item in data.items() if key != unit}
        if unit == "hours":
            return {**rest, "minutes": value * 60}
        if rest.get("working_time") is True:
            per_day = (info.context or {}).get(WORKING_DAY_MINUTES_CONTEXT)
            if not isinstance(per_day, int) or per_day <= 0:
                raise ValueError(
                    "days of working time need the calendar's working-day length: "
                    "load through load_reference_data, or give minutes"
                )
            return {**rest, "minutes": value * per_day}
        return {**rest, "minutes": value * 24 * 60}

    @property
    def duration(self) -> timedelta:
        """The allowance as a timedelta (of working time when `working_time`)."""
        return timedelta(minutes=self.minutes)


class Department(_Frozen):
    """A functional department (职能部门) that receives and rectifies hazards."""

    id: Code
    name_en: Text
    name_zh: Text


class UrgencyRule(_Frozen):
    """A receipt deadline that replaces the category's default at one urgency level."""

    level: Urgency
    receipt_deadline: DeadlineRule


class Category(_Frozen):
    """A hazard category: its group, owning department, deadlines and relapse window."""

    code: Code
    name_en: Text
    name_zh: Text
    group: CategoryGroup
    department_id: Code | None
    receipt_deadline: DeadlineRule
    rectification_deadline: DeadlineRule
    relapse_window_days: Annotated[StrictInt, Field(ge=1, le=3650)] = 90
    urgency: tuple[UrgencyRule, ...] = ()

    @field_validator("urgency", mode="before")
    @classmethod
    def _urgency_mapping(cls, value: Any) -> Any:
        """Read the YAML mapping `{level: deadline rule}` into a tuple of `UrgencyRule`."""
        if isinstance(value, Mapping):
            return [{"level": level, "receipt_deadline": rule} for level, rule in value.items()]
        return value

    @model_validator(mode="after")
    def _deadlines_positive(self) -> Self:
        """Deadlines must be longer than zero; each urgency level given once."""
        if self.receipt_deadline.minutes == 0:
            raise ValueError("receipt_deadline must be longer than zero")
        if self.rectification_deadline.minutes == 0:
            raise ValueError("rectification_deadline must be longer than zero")
        levels = [rule.level for rule in self.urgency]
        if len(levels) != len(set(levels)):
            raise ValueError(f"urgency levels repeat: {', '.join(levels)}")
        if any(rule.receipt_deadline.minutes == 0 for rule in self.urgency):
            raise ValueError("urgency receipt deadlines must be longer than zero")
        return self

    def urgency_rule(self, level: str) -> DeadlineRule | None:
        """The receipt deadline override for `level`, or None when the category has none."""
        for rule in self.urgency:
            if rule.level == level:
                return rule.receipt_deadline
        return None


class Point(_Frozen):
    """A WGS84 position in degrees."""

    lat: Annotated[float, Field(ge=-90, le=90)]
    lon: Annotated[float, Field(ge=-180, le=180)]


class BoundingBox(_Frozen):
    """A latitude/longitude box in WGS84 degrees."""

    south: Annotated[float, Field(ge=-90, le=90)]
    west: Annotated[float, Field(ge=-180, le=180)]
    north: Annotated[float, Field(ge=-90, le=90)]
    east: Annotated[float, Field(ge=-180, le=180)]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        """South must lie below north and west left of east."""
        if not (self.south < self.north and self.west < self.east):
            raise ValueError("bbox needs south < north and west < east")
        return self

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point lies in the box, edges included."""
        return self.south <= lat <= self.north and self.west <= lon <= self.east

    def corners(self) -> tuple[Point, Point, Point, Point]:
        """The four corners, counter-clockwise from south-west."""
        return (
            Point(lat=self.south, lon=self.west),
            Point(lat=self.south, lon=self.east),
            Point(lat=self.north, lon=self.east),
            Point(lat=self.north, lon=self.west),
        )


class Grid(_Frozen):
    """A grid (网格), the patrol area of one grid member, inside one community."""

    id: Slug
    name_en: Text
    name_zh: Text
    community_id: Slug
    center: Point


class Community(_Frozen):
    """A community (社区) inside the street, with its grids."""

    id: Slug
    name_en: Text
    name_zh: Text
    bbox: BoundingBox
    grids: Annotated[tuple[Grid, ...], Field(min_length=1)]

    @model_validator(mode="before")
    @classmethod
    def _grids_inherit_community(cls, data: Any) -> Any:
        """Fill each grid's `community_id` from the enclosing community when the YAML leaves it out."""
        if not isinstance(data, Mapping):
            return data
        community_id = data.get("id")
        grids = data.get("grids")
        if not isinstance(grids, list | tuple):
            return data
        filled = [
            {"community_id": community_id, **grid} if isinstance(grid, Mapping) else grid for grid in grids
        ]
        return {**data, "grids": filled}

    @model_validator(mode="after")
    def _grids_belong(self) -> Self:
        """Every grid must name this community."""
        strays = [grid.id for grid in self.grids if grid.community_id != self.id]
        if strays:
            raise ValueError(f"grids {', '.join(strays)} name another community")
        return self


class Street(_Frozen):
    """The street (街道) one grid management center serves: its area and communities."""

    id: Slug
    name_en: Text
    name_zh: Text
    district_en: Text
    district_zh: Text
    city_en: Text
    city_zh: Text
    area: Annotated[tuple[Point, ...], Field(min_length=3)]
    communities: Annotated[tuple[Community, ...], Field(min_length=1)]

    def contains(self, lat: float, lon: float) -> bool:
        """Whether the point lies inside the street's area polygon (edges included)."""
        return point_in_polygon(lat, lon, _private(self, "_polygon"))

    _polygon: list[tuple[float, float]] = PrivateAttr(default_factory=list)

    def model_post_init(self, context: Any, /) -> None:
        """The area as (lat, lon) pairs, built once (every report is checked against it)."""
        self._polygon = [(point.lat, point.lon) for point in self.area]


class RoutingRule(_Frozen):
    """One routing rule; the first rule matching a hazard's category and place names its department."""

    id: Slug
    category: Code
    community_id: Slug | None = None
    grid_id: Slug | None = None
    department_id: Code

    def matches(self, category: str, community_id: str | None, grid_id: str | None) -> bool:
        """Whether this rule applies to a hazard of `category` at the community and grid."""
        return (
            self.category == category
            and (self.community_id is None or self.community_id == community_id)
            and (self.grid_id is None or self.grid_id == grid_id)
        )


class CampaignTargets(_Frozen):
    """A campaign's numeric goals; a goal left out is not tracked."""

    found: Annotated[StrictInt, Field(ge=0)] | None = None
    notices_issued: Annotated[StrictInt, Field(ge=0)] | None = None
    rectified: Annotated[StrictInt, Field(ge=0)] | None = None


class Campaign(_Frozen):
    """A special campaign (专项行动): a date window, target categories and targets."""

    id: Slug
    name_en: Text
    name_zh: Text
    starts_on: date
    ends_on: date
    categories: Annotated[tuple[Code, ...], Field(min_length=1)]
    targets: CampaignTargets = CampaignTargets()

    @model_validator(mode="after")
    def _window(self) -> Self:
        """The window must not end before it starts."""
        if self.ends_on < self.starts_on:
            raise ValueError(f"ends_on {self.ends_on} is before starts_on {self.starts_on}")
        return self

    def active_on(self, on: date) -> bool:
        """Whether `on` falls inside the campaign window, both ends included."""
        return self.starts_on <= on <= self.ends_on


class EscalationStep(_Frozen):
    """One step of the overdue-receipt escalation chain, `after` the receipt deadline passed."""

    level: Annotated[StrictInt, Field(ge=1)]
    after: DeadlineRule
    target: EscalationTarget
    name_en: Text
    name_zh: Text


class WorkingInterval(_Frozen):
    """One interval of working hours within a working day, in the calendar's timezone."""

    start: time
    end: time

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        """Accept only quoted 'HH:MM' strings (YAML reads an unquoted 14:00 as the number 840)."""
        if isinstance(value, time):
            return value
        if isinstance(value, str) and _CLOCK.match(value):
            return value
        raise ValueError(f"write times as quoted 'HH:MM' strings, got {value!r}")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        """The interval must end after it starts."""
        if self.end <= self.start:
            raise ValueError(
                f"working interval ends ({self.end:%H:%M}) before it starts ({self.start:%H:%M})"
            )
        return self

    @property
    def minutes(self) -> int:
        """Length of the interval in minutes."""
        return (self.end.hour * 60 + self.end.minute) - (self.start.hour * 60 + self.start.minute)


class Holiday(_Frozen):
    """A public holiday period (法定节假日 with its 调休 days off), both ends included."""

    id: Slug
    name_en: Text
    name_zh: Text
    first_day: date
    last_day: date

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        """The period must not end before it starts."""
        if self.last_day < self.first_day:
            raise ValueError(f"last_day {self.last_day} is before first_day {self.first_day}")
        return self

    def days(self) -> Iterator[date]:
        """Every date of the period."""
        day = self.first_day
        while day <= self.last_day:
            yield day
            day += timedelta(days=1)


class MakeUpDay(_Frozen):
    """A weekend day worked in exchange for a holiday (调休上班)."""

    day: date
    name_en: Text
    name_zh: Text


class Calendar(_Frozen):
    """Working hours, public holidays and make-up working days for deadline arithmetic.

    A year listed in `years` is taken from this file alone (local overrides win). Any other year
    comes from the `holidays` package for `country` (None: weekends only), see
    :mod:`shared.reference.national`.
    """

    timezone: Text
    working_hours: Annotated[tuple[WorkingInterval, ...], Field(min_length=1)]
    years: tuple[StrictInt, ...] = ()
    country: Literal["CN"] | None = "CN"
    holidays: tuple[Holiday, ...] = ()
    make_up_days: tuple[MakeUpDay, ...] = ()

    _zone: ZoneInfo | None = PrivateAttr(default=None)
    _holiday_dates: frozenset[date] = PrivateAttr(default=frozenset())
    _make_up_dates: frozenset[date] = PrivateAttr(default=frozenset())

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        """The timezone must be an IANA name this machine knows."""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(
                f"unknown timezone {value!r} (needs an IANA name such as Asia/Shanghai)"
            ) from exc
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Intervals ordered and disjoint; dates inside `years`; make-up days are weekend non-holidays."""
        problems: list[str] = []
        for before, after in itertools.pairwise(self.working_hours):
            if after.start < before.end:
                problems.append(
                    f"working interval {after.start:%H:%M}-{after.end:%H:%M} overlaps or precedes "
                    f"{before.start:%H:%M}-{before.end:%H:%M}; list intervals in order"
                )
        if len(set(self.years)) != len(self.years):
            problems.append("years repeat")
        holiday_of: dict[date, str] = {}
        for holiday in self.holidays:
            for day in holiday.days():
                if day.year not in self.years:
                    problems.append(
                        f"holiday {holiday.id!r}: {day} is outside the covered years {list(self.years)}"
                    )
                    break
                if day in holiday_of:
                    problems.append(f"holiday {holiday.id!r}: {day} is also in holiday {holiday_of[day]!r}")
                    break
                holiday_of[day] = holiday.id
        seen: set[date] = set()
        for make_up in self.make_up_days:
            day = make_up.day
            if day in seen:
                problems.append(f"make-up day {day} is listed twice")
            seen.add(day)
            if day.year not in self.years:
                problems.append(f"make-up day {day} is outside the covered years {list(self.years)}")
            if day.weekday() < 5:
                problems.append(f"make-up day {day} is a {day:%A}; make-up days are weekend days worked")
            if day in holiday_of:
                problems.append(f"make-up day {day} is also a holiday (in {holiday_of[day]!r})")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def model_post_init(self, context: Any, /) -> None:
        """Build the zone and date sets once."""
        self._zone = ZoneInfo(self.timezone)
        self._holiday_dates = frozenset(day for holiday in self.holidays for day in holiday.days())
        self._make_up_dates = frozenset(make_up.day for make_up in self.make_up_days)

    @property
    def zone(self) -> ZoneInfo:
        """The calendar's timezone."""
        zone: ZoneInfo | None = _private(self, "_zone")
        if zone is None:
            zone = self._zone = ZoneInfo(self.timezone)
        return zone

    @property
    def working_day_minutes(self) -> int:
        """Minutes of working time in one full working day."""
        return sum(interval.minutes for interval in self.working_hours)

    def is_holiday(self, day: date) -> bool:
        """Whether `day` is a public holiday: listed here for its year, else from the package."""
        if day.year in self.years:
            return day in _private(self, "_holiday_dates")
        if self.country is None:
            return False
        return day in national.year_schedule(self.country, day.year).days_off

    def is_make_up_day(self, day: date) -> bool:
        """Whether `day` is a make-up working day: listed here for its year, else from the package."""
        if day.year in self.years:
            return day in _private(self, "_make_up_dates")
        if self.country is None:
            return False
        return day in national.year_schedule(self.country, day.year).make_up_days

    def covers(self, day: date) -> bool:
        """Whether `day`'s year has its official schedule: listed here, or published in the package."""
        if day.year in self.years:
            return True
        return self.country is not None and national.year_schedule(self.country, day.year).published

    def covered_until(self, today: date) -> date | None:
        """The last day of the unbroken run of covered years from `today`; None when `today` is not covered."""
        if not self.covers(today):
            return None
        year = today.year
        while year < today.year + _COVERAGE_LOOKAHEAD_YEARS and self.covers(date(year + 1, 1, 1)):
            year += 1
        return date(year, 12, 31)

    def coverage_days(self, today: date) -> int:
        """Days from `today` (included) through the last covered day: 0 when `today` is not covered."""
        until = self.covered_until(today)
        return 0 if until is None else (until - today).days + 1


class Thresholds(_Frozen):
    """Numbers the services tune: duplicate radius and hotspot threshold."""

    duplicate_distance_m: Annotated[float, Field(gt=0, le=10_000)]
    hotspot_min_relapses: Annotated[StrictInt, Field(ge=1)]


class ReferenceData(_Frozen):
    """All reference data of one street, with indexed, pure lookups."""

    departments: tuple[Department, ...]
    categories: tuple[Category, ...]
    street: Street
    routing_rules: tuple[RoutingRule, ...]
    campaigns: tuple[Campaign, ...]
    escalation: tuple[EscalationStep, ...]
    calendar: Calendar
    thresholds: Thresholds

    _departments: dict[str, Department] = PrivateAttr(default_factory=dict)
    _categories: dict[str, Category] = PrivateAttr(default_factory=dict)
    _communities: dict[str, Community] = PrivateAttr(default_factory=dict)
    _grids: dict[str, Grid] = PrivateAttr(default_factory=dict)
    _rules: dict[str, tuple[RoutingRule, ...]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Build the lookup indexes once; on repeated ids the first entry wins."""
        self._departments = {}
        for department in self.departments:
            self._departments.setdefault(department.id, department)
        self._categories = {}
        for category in self.categories:
            self._categories.setdefault(category.code, category)
        self._communities = {}
        self._grids = {}
        for community in self.street.communities:
            self._communities.setdefault(community.id, community)
            for grid in community.grids:
                self._grids.setdefault(grid.id, grid)
        rules: dict[str, list[RoutingRule]] = {}
        for rule in self.routing_rules:
            rules.setdefault(rule.category, []).append(rule)
        self._rules = {category: tuple(found) for category, found in rules.items()}

    def refresh(
        self,
        *,
        departments: tuple[Department, ...],
        routing_rules: tuple[RoutingRule, ...],
        campaigns: tuple[Campaign, ...],
    ) -> None:
        """Replace the administered parts in place (runtime administration, :mod:`shared.admin_sync`).

        Every holder of this object (handlers, services, the API) sees the change at once; nothing
        awaits in between, so a request or batch sees either the old or the new data, never a mix.
        """
        object.__setattr__(self, "departments", tuple(departments))
        object.__setattr__(self, "routing_rules", tuple(routing_rules))
        object.__setattr__(self, "campaigns", tuple(campaigns))
        self.model_post_init(None)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy, rebuilding the indexes so an `update` is seen by the lookups."""
        copied = super().model_copy(update=update, deep=deep)
        copied.model_post_init(None)
        return copied

    @property
    def communities(self) -> tuple[Community, ...]:
        """The street's communities, in file order."""
        return self.street.communities

    @property
    def grids(self) -> tuple[Grid, ...]:
        """Every grid of the street, community by community."""
        return tuple(grid for community in self.street.communities for grid in community.grids)

    @property
    def duplicate_distance_m(self) -> float:
        """Reports of the same category closer than this many metres may be duplicates."""
        return self.thresholds.duplicate_distance_m

    @property
    def hotspot_min_relapses(self) -> int:
        """A place with at least this many relapses is a relapse hotspot."""
        return self.thresholds.hotspot_min_relapses

    @property
    def escalation_steps(self) -> tuple[EscalationStep, ...]:
        """The overdue-receipt escalation chain, by increasing level."""
        return self.escalation

    def department(self, department_id: str) -> Department:
        """The department with this id."""
        found: dict[str, Department] = _private(self, "_departments")
        try:
            return found[department_id]
        except KeyError:
            raise UnknownReference("department", department_id, found) from None

    def category(self, code: str) -> Category:
        """The category with this code."""
        found: dict[str, Category] = _private(self, "_categories")
        try:
            return found[code]
        except KeyError:
            raise UnknownReference("category", code, found) from None

    def community(self, community_id: str) -> Community:
        """The community with this id."""
        found: dict[str, Community] = _private(self, "_communities")
        try:
            return found[community_id]
        except KeyError:
            raise UnknownReference("community", community_id, found) from None

    def grid(self, grid_id: str) -> Grid:
        """The grid with this id."""
        found: dict[str, Grid] = _private(self, "_grids")
        try:
            return found[grid_id]
        except KeyError:
            raise UnknownReference("grid", grid_id, found) from None

    def community_of_grid(self, grid_id: str) -> Community:
        """The community the grid belongs to."""
        communities: dict[str, Community] = _private(self, "_communities")
        return communities[self.grid(grid_id).community_id]

    def route(
        self,
        category_code: str,
        community_id: str | None = None,
        grid_id: str | None = None,
        exclude_departments: frozenset[str] = frozenset(),
    ) -> RoutingRule | None:
        """The first rule matching category and place whose department is not excluded; None = operators."""
        self.category(category_code)
        if grid_id is not None:
            grid_community = self.grid(grid_id).community_id
            if community_id is None:
                community_id = grid_community
            elif community_id != grid_community:
                raise ValueError(f"grid {grid_id!r} is in community {grid_community!r}, not {community_id!r}")
        elif community_id is not None:
            self.community(community_id)
        rules: dict[str, tuple[RoutingRule, ...]] = _private(self, "_rules")
        for rule in rules.get(category_code, ()):
            if rule.department_id in exclude_departments:
                continue
            if rule.matches(category_code, community_id, grid_id):
                return rule
        return None

    def campaigns_active(self, on: date, category_code: str | None = None) -> list[Campaign]:
        """Campaigns running on `on` (and covering the category, when one is given), in file order."""
        if category_code is not None:
            self.category(category_code)
        return [
            campaign
            for campaign in self.campaigns
            if campaign.active_on(on) and (category_code is None or category_code in campaign.categories)
        ]

    def street_contains(self, lat: float, lon: float) -> bool:
        """Whether the WGS84 point lies inside the street's area."""
        return self.street.contains(lat, lon)

    def receipt_rule(self, category_code: str, urgency: str | None = None) -> DeadlineRule:
        """The receipt deadline for the category at the urgency level (None or no override: the default)."""
        category = self.category(category_code)
        if urgency is None:
            return category.receipt_deadline
        if urgency not in URGENCY_LEVELS:
            raise ValueError(f"unknown urgency {urgency!r}; known levels: {', '.join(URGENCY_LEVELS)}")
        override = category.urgency_rule(urgency)
        return override if override is not None else category.receipt_deadline

    def rectification_rule(self, category_code: str) -> DeadlineRule:
        """The rectification deadline for the category."""
        return self.category(category_code).rectification_deadline
