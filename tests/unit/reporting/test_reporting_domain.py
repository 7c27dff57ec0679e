"""The pure projection: events become fact rows that merge the same whatever the order or repetition."""

from __future__ import annotations

import random
from datetime import date
from zoneinfo import ZoneInfo

from services.reporting import domain
from services.reporting.domain import Counts
from tests.unit.reporting.reporting_scenario import D, H, build_log

TZ = ZoneInfo("Asia/Shanghai")


def _fold(events: list) -> domain.FactBatch:  # type: ignore[type-arg]
    return domain.project_events(events, tz=TZ)


def _merged_in_chunks(events: list, size: int) -> domain.FactBatch:  # type: ignore[type-arg]
    """Fold chunk by chunk and merge the chunks' rows, as batches merge into stored rows."""
    total = domain.FactBatch()
    for i in range(0, len(events), size):
        part = _fold(events[i : i + size])
        for attr, rules in (
            ("hazards", domain.HAZARD_RULES),
            ("dispatches", domain.DISPATCH_RULES),
            ("relapses", domain.RELAPSE_RULES),
        ):
            table = getattr(total, attr)
            for key, row in getattr(part, attr).items():
                table[key] = domain.merge_rows(table[key], row, rules=rules) if key in table else row
    # What the repository's UPDATE does for dispatches whose report came in another batch.
    for row in total.dispatches.values():
        hazard = total.hazards.get(row["hazard_id"])
        if hazard is not None and hazard.get("community_id") is not None and row.get("community_id") is None:
            for column in domain.PLACE_COLUMNS:
                row[column] = hazard[column]
    return total


def _normalised(batch: domain.FactBatch) -> tuple[dict, dict, dict]:  # type: ignore[type-arg]
    def clean(rows: dict) -> dict:  # type: ignore[type-arg]
        return {k: {c: v for c, v in row.items() if v is not None} for k, row in rows.items()}

    return clean(batch.hazards), clean(batch.dispatches), clean(batch.relapses)


def test_any_order_and_any_repetition_give_the_same_facts() -> None:
    events = build_log()
    reference = _normalised(_fold(events))
    rng = random.Random(6)
    for _ in range(20):
        shuffled = events + rng.sample(events, 10)  # redeliveries
        rng.shuffle(shuffled)
        assert _normalised(_fold(shuffled)) == reference
        assert _normalised(_merged_in_chunks(shuffled, rng.randint(1, 9))) == reference


def test_report_day_is_the_local_date() -> None:
    facts = _fold(build_log())
    assert facts.hazards[H[11]]["report_day"] == date(2026, 5, 1)  # 17:00Z on 30 April is 1 May in Shanghai
    assert facts.hazards[H[1]]["report_day"] == date(2026, 4, 1)


def test_reroute_supersedes_and_the_department_that_held_it_last_owns_the_hazard() -> None:
    facts = _fold(build_log())
    assert facts.dispatches[D[4]]["returned_at"] is not None
    assert facts.dispatches[D[4]]["superseded_at"] is not None  # the rerouted D5 replaced it
    assert facts.dispatches[D[7]]["superseded_at"] == facts.dispatches[D[8]]["dispatched_at"]
    assert facts.hazards[H[3]]["department_id"] == "fire"
    assert facts.hazards[H[7]]["department_id"] == "urban_management"


def test_rework_keeps_the_first_order_and_the_last_rectification() -> None:
    h1 = _fold(build_log()).hazards[H[1]]
    assert h1["order_round"] == 2
    assert (h1["rectified_at"] - h1["reported_at"]).total_seconds() == 72 * 3600
    assert (h1["ordered_at"] - h1["reported_at"]).total_seconds() == 3 * 3600 + 20 * 60


def test_dispatches_carry_their_hazards_place() -> None:
    facts = _fold(build_log())
    assert facts.dispatches[D[1]]["community_id"] == "liuyue"  # dispatched arrived before reported
    assert facts.dispatches[D[5]]["category"] == "ebike_indoor_charging"
    assert facts.dispatches[D[1]]["campaign_ids"] == ["spring-fire-2026", "rooftop-escape-routes-2026"]
    alone = _fold([e for e in build_log() if e.TYPE == "hazard.dispatched"])
    assert alone.dispatches[D[1]].get("community_id") is None
    assert H[1] not in alone.hazards_placing_stored_dispatches(), "no report: nothing to copy"
    assert H[1] in facts.hazards_placing_stored_dispatches(), "its report places dispatches stored before"


def test_relapse_and_duplicate_facts() -> None:
    facts = _fold(build_log())
    assert facts.relapses[H[5]]["original_hazard_id"] == H[1]
    assert facts.hazards[H[6]]["duplicate_of"] == H[3]
    assert H[1] in facts.touched_hazards()


def test_merge_rules() -> None:
    assert domain.merge_value("min", 3, 2) == 2
    assert domain.merge_value("max", 3, None) == 3
    assert domain.merge_value("first", None, "a") == "a"
    assert domain.merge_value("first", "a", "b") == "a"
    assert domain.merge_value("or", False, True) is True


def test_rates_and_median() -> None:
    counts = Counts(
        dispatched=8, acknowledged_late=1, overdue_ended=2, receipt_overdue_open=1, reported=6, rectified=3
    )
    assert domain.rates(counts) == {
        "overdue_receipt_rate": 0.5,
        "rectification_rate": 0.5,
        "relapse_rate": None,
    }
    assert domain.median([180, 30, 10]) == 30
    assert domain.median([72, 24]) == 48
    assert domain.median([]) is None


def test_periods() -> None:
    assert domain.previous_period(date(2026, 4, 1), date(2026, 4, 30)) == (
        date(2026, 3, 2),
        date(2026, 3, 31),
    )
    assert domain.year_earlier(date(2028, 2, 29), date(2028, 3, 1)) == (date(2027, 2, 28), date(2027, 3, 1))
    assert domain.period_problems(date(2026, 4, 2), date(2026, 4, 1))
    assert domain.period_problems(date(2020, 1, 1), date(2026, 1, 1))
    assert domain.period_problems(date(2026, 1, 1), date(2026, 1, 1)) == []


def test_days_at_the_ends_of_the_calendar_are_refused_by_name() -> None:
    # They overflowed the default period and the comparison periods (a 500 before).
    assert domain.day_problems(**{"from": date(1, 1, 1), "to": None}) == [
        ("from", "0001-01-01 is outside 1900-01-01..2999-12-31")
    ]
    assert [f for f, _ in domain.day_problems(**{"from": date(2026, 1, 1), "to": date(9999, 12, 31)})] == [
        "to"
    ]
    assert domain.day_problems(**{"from": domain.EARLIEST_DAY, "to": domain.LATEST_DAY}) == []


def _histogram(values: list[float], *, floor: float) -> list[tuple[int, int, float]]:
    """Per-value histogram rows, the way the rollup stores them before merging."""
    return [(domain.histogram_bucket(v, floor=floor), 1, v) for v in values]


def test_histogram_median_is_exact_for_small_logs() -> None:
    assert domain.histogram_median(_histogram([180, 30, 10], floor=1.0)) == 30
    assert domain.histogram_median(_histogram([72, 24], floor=0.1)) == 48
    assert domain.histogram_median(_histogram([30, 30, 30, 180], floor=1.0)) == 30
    assert domain.histogram_median([]) is None
    # Rows of several days merge: the same buckets add up.
    assert domain.histogram_median([(5, 1, 3.0), (5, 2, 6.0), (9, 1, 20.0)]) == 3.0


def test_histogram_buckets_are_monotonic_and_about_nine_percent_wide() -> None:
    assert domain.histogram_bucket(0.5, floor=1.0) == 0
    assert domain.histogram_bucket(1.0, floor=1.0) == 1
    assert domain.histogram_bucket(2.0, floor=1.0) == 1 + domain.HIST_PER_OCTAVE
    values = [1.0 * 1.01**i for i in range(1000)]
    buckets = [domain.histogram_bucket(v, floor=1.0) for v in values]
    assert buckets == sorted(buckets)


def test_histogram_median_is_within_the_documented_precision() -> None:
    rng = random.Random(6)
    for _ in range(200):
        n = rng.randint(1, 400)
        values = [rng.lognormvariate(3.5, 1.2) for _ in range(n)]
        exact = domain.median(values)
        approx = domain.histogram_median(_histogram(values, floor=1.0))
        assert exact is not None
        assert approx is not None
        if exact >= 1.0:
            assert abs(approx - exact) / exact < 2 ** (1 / domain.HIST_PER_OCTAVE) - 1
