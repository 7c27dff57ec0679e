"""A country's public holidays and make-up working days from the maintained `holidays` package.

For China the package carries the State Council's yearly arrangement (放假调休: days off and the
weekend days worked in exchange, 调休上班) for every year whose notice it has, and for later years only
the statutory holidays with the legal in-lieu rule (a statutory day on a weekend gives the next working
day off). A year is *published* when the package has its notice; an unpublished year is an estimate:
its statutory days are right, but the notice's swaps are missing.

The package version is locked in uv.lock; a new notice (usually in November) arrives with a new
release, or earlier as a year listed in the local calendar file, which wins.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date
from typing import Final

COUNTRIES: Final = ("CN",)
"""Countries whose yearly arrangements this module reads (those with make-up working days)."""


@dataclass(frozen=True)
class YearSchedule:
    """One year of a country's days off and weekend days worked."""

    year: int
    days_off: frozenset[date]
    make_up_days: frozenset[date]
    published: bool


@functools.lru_cache(maxsize=64)
def year_schedule(country: str, year: int) -> YearSchedule:
    """The package's schedule of `year` for `country` (cached: the package is immutable at run time)."""
    if country not in COUNTRIES:
        raise ValueError(f"unsupported country {country!r}; supported: {', '.join(COUNTRIES)}")
    import holidays  # about a second to import (every country): only when a year is first needed

    # Neighbouring years too: a notice can swap a day across the turn of the year.
    found = holidays.country_holidays(country, years=(year - 1, year, year + 1))
    return YearSchedule(
        year=year,
        days_off=frozenset(day for day in found if day.year == year),
        make_up_days=frozenset(day for day in found.weekend_workdays if day.year == year),
        published=year in published_years(country),
    )


@functools.lru_cache(maxsize=8)
def published_years(country: str) -> frozenset[int]:
    """Years whose official arrangement (not only statutory days) the installed package carries."""
    import holidays

    found = holidays.country_holidays(country)
    arranged: dict[int, object] = getattr(found, "special_public_holidays", {})
    return frozenset(arranged)
