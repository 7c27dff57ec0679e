"""Deadline arithmetic: wall-clock and working-time rules over the packaged calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from shared.reference import (
    Calendar,
    DeadlineRule,
    ReferenceData,
    WorkingInterval,
    add_deadline,
    is_working_day,
    load_reference_data,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def calendar() -> Calendar:
    data: ReferenceData = load_reference_data()
    return data.calendar


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


def working(minutes: int) -> DeadlineRule:
    return DeadlineRule(minutes=minutes, working_time=True)


def test_wall_clock_rule_adds_the_duration_and_returns_utc(calendar: Calendar) -> None:
    due = add_deadline(local(2026, 10, 1, 10), DeadlineRule(minutes=30, working_time=False), calendar)
    assert due == datetime(2026, 10, 1, 2, 30, tzinfo=UTC)
    assert due.tzinfo is UTC


def test_wall_clock_days_run_through_weekends(calendar: Calendar) -> None:
    rule = DeadlineRule.model_validate({"days": 2, "working_time": False})
    assert add_deadline(local(2026, 11, 6, 17), rule, calendar) == local(2026, 11, 8, 17)


def test_working_time_within_one_interval(calendar: Calendar) -> None:
    # Wednesday 2026-11-04
    assert add_deadline(local(2026, 11, 4, 9), working(120), calendar) == local(2026, 11, 4, 11)


def test_working_time_skips_the_lunch_break(calendar: Calendar) -> None:
    assert add_deadline(local(2026, 11, 4, 11), working(120), calendar) == local(2026, 11, 4, 15)


def test_working_time_ending_at_closing_time_ends_there(calendar: Calendar) -> None:
    assert add_deadline(local(2026, 11, 4, 16), working(120), calendar) == local(2026, 11, 4, 18)


def test_working_time_skips_the_weekend(calendar: Calendar) -> None:
    # Friday 17:30 + 2 h: 30 min on Friday, 90 min from Monday 08:30
    assert add_deadline(local(2026, 11, 6, 17, 30), working(120), calendar) == local(2026, 11, 9, 10)


def test_working_time_skips_a_public_holiday(calendar: Calendar) -> None:
    # Wednesday 2026-09-30 17:00; National Day holiday 10-01..10-07
    assert add_deadline(local(2026, 9, 30, 17), working(120), calendar) == local(2026, 10, 8, 9, 30)


def test_make_up_saturday_counts_as_working(calendar: Calendar) -> None:
    # Friday 2026-10-09 17:00 + 2 h: 1 h on Friday, 1 h on make-up Saturday 10-10
    assert add_deadline(local(2026, 10, 9, 17), working(120), calendar) == local(2026, 10, 10, 9, 30)


def test_working_days_end_at_the_same_clock_time_n_working_days_later(calendar: Calendar) -> None:
    three_days = DeadlineRule.model_validate(
        {"days": 3, "working_time": True}, context={"working_day_minutes": calendar.working_day_minutes}
    )
    assert three_days.minutes == 1350
    # Wednesday 10:00 -> Thu, Fri, Mon 10:00
    assert add_deadline(local(2026, 11, 4, 10), three_days, calendar) == local(2026, 11, 9, 10)
    # Across National Day: Wed 09-30 10:00 -> 10-08, 10-09, make-up Sat 10-10 10:00
    assert add_deadline(local(2026, 9, 30, 10), three_days, calendar) == local(2026, 10, 10, 10)


def test_start_before_opening_counts_from_opening(calendar: Calendar) -> None:
    assert add_deadline(local(2026, 11, 4, 6), working(120), calendar) == local(2026, 11, 4, 10, 30)


def test_start_in_the_lunch_break_counts_from_the_afternoon(calendar: Calendar) -> None:
    assert add_deadline(local(2026, 11, 4, 12, 30), working(60), calendar) == local(2026, 11, 4, 15)


def test_start_in_the_evening_counts_from_the_next_working_morning(calendar: Calendar) -> None:
    assert add_deadline(local(2026, 11, 4, 20), working(120), calendar) == local(2026, 11, 5, 10, 30)


def test_start_on_a_holiday_counts_from_the_next_working_day(calendar: Calendar) -> None:
    # Spring Festival 2026-02-15..02-23; 02-24 is a Tuesday
    assert add_deadline(local(2026, 2, 16, 10), working(30), calendar) == local(2026, 2, 24, 9)


def test_start_given_in_another_timezone_is_converted(calendar: Calendar) -> None:
    start = datetime(2026, 11, 4, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
    assert add_deadline(start, working(120), calendar) == datetime(2026, 11, 4, 4, 0, tzinfo=UTC)


def test_zero_working_time_is_the_start(calendar: Calendar) -> None:
    assert add_deadline(local(2026, 11, 7, 23), working(0), calendar) == local(2026, 11, 7, 23)


def test_naive_start_is_rejected(calendar: Calendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        add_deadline(datetime(2026, 11, 4, 10), working(60), calendar)


def test_is_working_day(calendar: Calendar) -> None:
    assert is_working_day(date(2026, 11, 4), calendar)  # Wednesday
    assert not is_working_day(date(2026, 11, 7), calendar)  # Saturday
    assert not is_working_day(date(2026, 10, 1), calendar)  # National Day, Thursday
    assert is_working_day(date(2026, 10, 10), calendar)  # make-up Saturday
    assert is_working_day(date(2025, 1, 26), calendar)  # make-up Sunday
    assert not is_working_day(date(2025, 10, 8), calendar)  # 2025 National Day + Mid-Autumn, Wednesday
    assert not is_working_day(date(2027, 10, 1), calendar)  # not in the file: statutory, from the package


def test_listed_2026_schedule_matches_the_state_council_notice(calendar: Calendar) -> None:
    days_off_2026 = [d for d in _dates(2026) if d.weekday() < 5 and not is_working_day(d, calendar)]
    assert len(days_off_2026) == 19
    make_ups = [d for d in _dates(2026) if d.weekday() >= 5 and is_working_day(d, calendar)]
    assert [d.isoformat() for d in make_ups] == [
        "2026-01-04",
        "2026-02-14",
        "2026-02-28",
        "2026-05-09",
        "2026-09-20",
        "2026-10-10",
    ]


def test_a_custom_calendar_with_one_interval() -> None:
    calendar = Calendar(
        timezone="Asia/Shanghai",
        working_hours=(WorkingInterval(start=time(9), end=time(17)),),
        years=(2026,),
    )
    assert calendar.working_day_minutes == 480
    assert add_deadline(local(2026, 11, 6, 16), working(120), calendar) == local(2026, 11, 9, 10)


def _dates(year: int) -> list[date]:
    return [
        date.fromordinal(n) for n in range(date(year, 1, 1).toordinal(), date(year + 1, 1, 1).toordinal())
    ]
