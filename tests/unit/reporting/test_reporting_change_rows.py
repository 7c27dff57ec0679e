"""The change rows a batch records (#20): summed per key, they add exactly the new contributions less the old."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import date
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.reporting.store.changes import KEY_COLUMNS, SUM_COLUMNS, differences
from services.reporting.store.common import ROLLUP_COUNTS, in_uuid_order

DIMS = len(KEY_COLUMNS) - 2


def _contribution(draw: Any) -> tuple[Any, ...]:
    """One summed contribution row as ``_summed_sql`` returns it (few distinct values, so keys repeat)."""
    dims = (
        date(2026, 4, draw(st.integers(1, 2))),
        draw(st.sampled_from(["", "fire"])),
        "liuyue",
        draw(st.sampled_from(["liuyue-01", "liuyue-02"])),
        "gas_leak",
        draw(st.sampled_from([None, [], ["spring"]])),
        "fuyong",
        None,
        None,
    )
    measure = draw(st.sampled_from([None, "ack", "rect"]))
    bucket = None if measure is None else draw(st.integers(0, 2))
    n = 0 if measure is None else draw(st.integers(1, 3))
    total_us = 0 if measure is None else draw(st.integers(1, 10**9))
    counts = [draw(st.integers(0, 2)) for _ in ROLLUP_COUNTS]
    return (*dims, measure, bucket, n, total_us, *counts)


contributions = st.lists(st.composite(lambda draw: _contribution(draw))(), max_size=8)


def _folded(rows: list[tuple[Any, ...]], sign: int = 1) -> tuple[Counter[Any], Counter[Any]]:
    """What the fold adds: counts per day and dimensions, histogram sums per bucket (as the fold sums them)."""
    counts: Counter[Any] = Counter()
    hist: Counter[Any] = Counter()
    for row in rows:
        dims = tuple(tuple(v) if isinstance(v, list) else v for v in row[:DIMS])
        for name, value in zip(ROLLUP_COUNTS, row[DIMS + 4 :], strict=True):
            counts[(dims, name)] += sign * value
        if row[DIMS] is not None:
            hist[(dims, row[DIMS], row[DIMS + 1], "n")] += sign * row[DIMS + 2]
            hist[(dims, row[DIMS], row[DIMS + 1], "us")] += sign * row[DIMS + 3]
    return counts, hist


def _nonzero(sums: Counter[Any]) -> dict[Any, int]:
    return {k: v for k, v in sums.items() if v}


@given(before=contributions, after=contributions)
def test_the_change_rows_add_exactly_the_new_contributions_less_the_old(
    before: list[tuple[Any, ...]], after: list[tuple[Any, ...]]
) -> None:
    rows = differences(before, after)
    assert all(len(row) == len(KEY_COLUMNS) + len(SUM_COLUMNS) for row in rows)
    assert all(any(row[DIMS + 2 :]) for row in rows), "no row of zeros is written"
    keys = [row[: len(KEY_COLUMNS)] for row in rows]
    assert len(keys) == len(set(keys)), "one row per key"
    recorded_counts, recorded_hist = _folded(rows)
    old_counts, old_hist = _folded(before, -1)
    new_counts, new_hist = _folded(after)
    expected_counts, expected_hist = new_counts, new_hist
    expected_counts.update(old_counts)
    expected_hist.update(old_hist)
    assert _nonzero(recorded_counts) == _nonzero(expected_counts)
    assert _nonzero(recorded_hist) == _nonzero(expected_hist)


def test_a_rectification_records_one_row_of_what_moved() -> None:
    dims: tuple[Any, ...] = (
        date(2026, 4, 2),
        "fire",
        "liuyue",
        "liuyue-01",
        "gas_leak",
        [],
        "fuyong",
        None,
        None,
    )
    zeros = [0] * len(ROLLUP_COUNTS)
    reported = list(zeros)
    reported[ROLLUP_COUNTS.index("reported")] = 1
    rectified = list(reported)
    rectified[ROLLUP_COUNTS.index("rectified")] = 1
    before = [(*dims, None, None, 0, 0, *reported)]
    after = [(*dims, "rect", 7, 1, 3_600_000_000, *rectified)]
    moved = list(zeros)
    moved[ROLLUP_COUNTS.index("rectified")] = 1
    assert differences(before, after) == [(*dims[:5], (), *dims[6:], "rect", 7, 1, 3_600_000_000, *moved)]
    assert differences(after, after) == [], "nothing moved: nothing recorded"


@given(st.lists(st.uuids(), max_size=60))
def test_hazards_are_locked_in_the_order_sorted_gives(ids: list[uuid.UUID]) -> None:
    assert in_uuid_order(set(ids)) == sorted(set(ids))
