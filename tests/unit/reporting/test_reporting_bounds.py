"""The bounds every reporting figure keeps (issue 14 item 10), as the property test and the fault oracle check them."""

from __future__ import annotations

from typing import Any

from services.reporting import reports
from services.reporting.domain import Counts, bound_problems
from tests.support.fault_checks import figure_problems

WHOLE = Counts(
    reported=10,
    duplicates=2,
    dispatched=8,
    acknowledged=5,
    acknowledged_late=2,
    overdue_ended=1,
    receipt_overdue_open=2,
    notices_issued=4,
    rectified=6,
    rectification_overdue=1,
    closed=5,
    relapsed=1,
)


def _summary(counts: Counts) -> dict[str, Any]:
    group = {"key": "fire", **reports.figures(counts)}
    return {"groups": [group], "totals": reports.figures(counts)}


def test_consistent_counts_have_no_problem() -> None:
    assert bound_problems(WHOLE) == []
    assert bound_problems(Counts()) == []
    assert figure_problems("department", _summary(WHOLE)) == []


def test_a_negative_open_overdue_count_and_its_rate_are_named() -> None:
    # What was seen while 2,000 hazards loaded: receipt_overdue_open -12, overdue_receipt_rate -0.0106.
    seen = Counts(dispatched=1132, receipt_overdue_open=-12)
    assert bound_problems(seen) == [
        "receipt_overdue_open = -12 < 0",
        "overdue_receipt_rate = -0.0106 outside 0..1",
    ]
    problems = figure_problems("department", _summary(seen))
    assert "department fire: receipt_overdue_open = -12 < 0" in problems
    assert "department totals: overdue_receipt_rate = -0.0106 outside 0..1" in problems


def test_parts_above_their_whole_are_named() -> None:
    assert bound_problems(Counts(reported=1, closed=1, relapsed=2)) == [
        "relapsed = 2 > closed = 1",
        "relapse_rate = 2.0 outside 0..1",
    ]
    assert bound_problems(
        Counts(dispatched=2, acknowledged=1, acknowledged_late=1, receipt_overdue_open=2)
    ) == [
        "acknowledged_late + overdue_ended + receipt_overdue_open = 3 > dispatched = 2",
        "overdue_receipt_rate = 1.5 outside 0..1",
    ]
