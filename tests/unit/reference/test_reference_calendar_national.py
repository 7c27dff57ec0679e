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
