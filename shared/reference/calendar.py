"""Working-time deadline arithmetic over the reference calendar.

Rules:
- A day is a working day if it is a make-up day (调休上班), or a Monday-Friday that is not a public
  holiday. A year in the calendar file's `years` is taken from the file alone; any other year from
  the `holidays` package (China: the State Council's notices it carries, else statutory days only).
- The calendar *covers* a day when its year's official schedule is known (file or published notice).
  Less than `MIN_COVERAGE_DAYS` ahead is a readiness warning and the `hazard_calendar_coverage_days`
  metric's alert: deadlines past the covered range may miss the notice's holidays and make-up days.
- Working time runs only inside the calendar's working-hour intervals, in the calendar's timezone.
- A working-time rule of N minutes ends when N minutes of working time have passed since `start`;
  a start outside working hours begins counting at the next working interval. A rule that ends
  exactly at the end of an interval ends there (18:00), not at the next interval's start.
- `{days: N, working_time: true}` is read at load time as N x (minutes in one working day) of
  working time, so from inside working hours it ends at the same clock time N working days later.
- Wall-clock rules add the duration in absolute time (UTC), ignoring the calendar.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from shared.reference.models import Calendar, DeadlineRule

MAX_SEARCH_DAYS = 3660
"""Give up after this many calendar days without finding enough working time."""

MIN_COVERAGE_DAYS = 60
"""Warn when the official schedule is known for fewer days ahead than this (today included)."""


def coverage_warning(calendar: Calendar, today: date) -> str | None:
    """A sentence for operators when fewer than `MIN_COVERAGE_DAYS` days ahead are covered, else None."""
    days = calendar.coverage_days(today)
    if days >= MIN_COVERAGE_DAYS:
        return None
    until = calendar.covered_until(today)
    known = f"known only until {until} ({days} days)" if until is not None else f"not known for {today.year}"
    return (
        f"public holidays and make-up days are {known}; deadlines later than that count only statutory "
        f"holidays: add the next year to calendar.yaml or update the holidays package "
        f"(need {MIN_COVERAGE_DAYS} days)"
    )


def is_working_day(day: date, calendar: Calendar) -> bool:
    """Whether `day` is a working day: a make-up day, or a weekday that is not a holiday."""
    if calendar.is_make_up_day(day):
        return True
    return day.weekday() < 5 and not calendar.is_holiday(day)


def add_deadline(start: datetime, rule: DeadlineRule, calendar: Calendar) -> datetime:
    """The moment (aware, UTC) at which `rule`'s allowance counted from aware `start` runs out."""
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError(f"start must be timezone-aware, got naive {start.isoformat()}")
    start_utc = start.astimezone(UTC)
    if not rule.working_time or rule.minutes == 0:
        return start_utc + rule.duration
    return _add_working_time(start_utc, rule.duration, calendar)


def _add_working_time(start: datetime, amount: timedelta, calendar: Calendar) -> datetime:
    """Walk working intervals from `start` (UTC) until `amount` of working time has passed."""
    zone = calendar.zone
    first_day = start.astimezone(zone).date()
    remaining = amount
    cursor = start
    for offset in range(MAX_SEARCH_DAYS):
        day = first_day + timedelta(days=offset)
        if not is_working_day(day, calendar):
            continue
        for interval in calendar.working_hours:
            opens = datetime.combine(day, interval.start, tzinfo=zone).astimezone(UTC)
            closes = datetime.combine(day, interval.end, tzinfo=zone).astimezone(UTC)
            begin = max(opens, cursor)
            if begin >= closes:
                continue
            available = closes - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
            cursor = closes
    raise ValueError(f"no {amount} of working time within {MAX_SEARCH_DAYS} days of {start.isoformat()}")
