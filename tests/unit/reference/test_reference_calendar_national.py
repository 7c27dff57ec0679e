"""Years the local calendar file does not list: China's public holidays come from the `holidays` package.

The statutory days off asserted here are fixed by the State Council's national holiday rules (as revised
in 2024: New Year's Eve of the lunar calendar and the first three days of the Spring Festival, New Year's
Day, ...), so they hold whatever the yearly notice adds around them.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from shared.reference import Calendar, DeadlineRule, add_deadline, is_working_day, load_reference_data

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def calendar() -> Calendar:
    return load_reference_data().calendar


def one_working_day(calendar: Calendar) -> DeadlineRule:
    return DeadlineRule.model_validate(
        {"days": 1, "working_time": True}, context={"working_day_minutes": calendar.working_day_minutes}
    )


def test_a_deadline_across_the_2027_spring_festival_skips_its_statutory_days_off(calendar: Calendar) -> None:
    # Thursday 2027-02-04 17:00 + one working day. 2027-02-05 (Friday) is the lunar New Year's Eve and
    # 2027-02-08 (Monday) the third day of the Spring Festival: both statutory days off.
    start = datetime(2027, 2, 4, 17, tzinfo=SHANGHAI)
    due = add_deadline(start, one_working_day(calendar), calendar).astimezone(SHANGHAI)
    assert due.date() > date(2027, 2, 8), f"deadline {due} falls inside the Spring Festival"
    assert due.date().weekday() < 5 or calendar.is_make_up_day(due.date())


@pytest.mark.parametrize(
    "day",
    [
        date(2027, 1, 1),  # New Year's Day, a Friday
        date(2027, 2, 5),  # lunar New Year's Eve, a Friday
        date(2027, 2, 8),  # third day of the Spring Festival, a Monday
        date(2027, 10, 1),  # National Day, a Friday
    ],
)
def test_statutory_holidays_of_2027_are_not_working_days(calendar: Calendar, day: date) -> None:
    assert not is_working_day(day, calendar)


def _days(year: int) -> list[date]:
    first = date(year, 1, 1).toordinal()
    return [date.fromordinal(n) for n in range(first, date(year + 1, 1, 1).toordinal())]


@pytest.mark.parametrize("year", [2025, 2026])
def test_the_package_agrees_with_the_listed_state_council_notices(calendar: Calendar, year: int) -> None:
    from_package = calendar.model_copy(update={"years": (), "holidays": (), "make_up_days": ()})
    assert year in calendar.years
    assert from_package.covers(date(year, 6, 1))
    differ = [d for d in _days(year) if is_working_day(d, calendar) != is_working_day(d, from_package)]
    assert differ == []


def test_a_year_listed_in_the_file_wins_over_the_package(calendar: Calendar) -> None:
    # The file lists 2026 with a local day off and without National Day: the file is the whole year.
    local_only = Calendar.model_validate(
        {
            "timezone": "Asia/Shanghai",
            "working_hours": [{"start": "09:00", "end": "17:00"}],
            "years": [2026],
            "holidays": [
                {
                    "id": "fair",
                    "name_en": "Fair",
                    "name_zh": "庙会",
                    "first_day": "2026-11-04",
                    "last_day": "2026-11-04",
                }
            ],
        }
    )
    assert not is_working_day(date(2026, 11, 4), local_only)
    assert is_working_day(date(2026, 10, 1), local_only)
    assert not is_working_day(date(2026, 10, 10), local_only)  # the notice's make-up Saturday is not listed
    assert not is_working_day(date(2027, 2, 5), local_only)  # an unlisted year still comes from the package
    assert is_working_day(date(2026, 10, 10), calendar)


def test_no_country_means_only_the_listed_years_and_weekends() -> None:
    plain = Calendar.model_validate(
        {"timezone": "Asia/Shanghai", "working_hours": [{"start": "09:00", "end": "17:00"}], "country": None}
    )
    assert is_working_day(date(2027, 2, 5), plain)
    assert plain.coverage_days(date(2026, 12, 5)) == 0
    assert plain.covered_until(date(2026, 12, 5)) is None


def test_coverage_runs_to_the_end_of_the_last_year_with_an_official_schedule(calendar: Calendar) -> None:
    # The packaged file lists 2025 and 2026; whatever the package publishes for later years extends it.
    until = calendar.covered_until(date(2026, 12, 5))
    assert until is not None
    assert until.month == 12
    assert until.day == 31
    assert until.year >= 2026
    assert calendar.coverage_days(date(2026, 12, 5)) == (until - date(2026, 12, 5)).days + 1
    assert calendar.coverage_days(date(2026, 12, 31)) == calendar.coverage_days(date(2026, 12, 5)) - 26
    with_2027 = calendar.model_copy(update={"years": (*calendar.years, 2027)})
    assert with_2027.covered_until(date(2026, 12, 5)) == max(until, date(2027, 12, 31))
    assert calendar.coverage_days(date(2024, 6, 1)) > 0  # 2024 is published in the package


def test_an_unpublished_year_is_not_covered() -> None:
    far = Calendar.model_validate(
        {"timezone": "Asia/Shanghai", "working_hours": [{"start": "09:00", "end": "17:00"}]}
    )
    assert not far.covers(date(2099, 1, 1))
    assert far.coverage_days(date(2099, 1, 1)) == 0
    assert not is_working_day(date(2099, 1, 1), far)  # its statutory days are still days off


def test_the_warning_names_the_last_covered_day_and_what_to_do(calendar: Calendar) -> None:
    from shared.reference import MIN_COVERAGE_DAYS, coverage_warning

    listed_to_2026 = calendar.model_copy(update={"country": None})
    warning = coverage_warning(listed_to_2026, date(2026, 12, 5))
    assert warning is not None
    assert "until 2026-12-31 (27 days)" in warning
    assert "calendar.yaml" in warning
    assert coverage_warning(listed_to_2026, date(2026, 10, 1)) is None
    assert listed_to_2026.coverage_days(date(2026, 11, 2)) == MIN_COVERAGE_DAYS
    assert coverage_warning(listed_to_2026, date(2026, 11, 2)) is None
    assert coverage_warning(listed_to_2026, date(2026, 11, 3)) is not None
    assert "not known for 2027" in (coverage_warning(listed_to_2026, date(2027, 1, 2)) or "")
