"""Pure parts of #18: which stored grouping answers a group_by, bucket starts, the report's wording."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from services.reporting import period_report, reports
from services.reporting.domain import Counts
from services.reporting.repository import bucket_start
from shared.reference import load_reference_data

REFERENCE = load_reference_data()


def test_single_dimensions_are_stored_groupings_and_group_is_folded_from_categories() -> None:
    assert reports.resolve_grouping(REFERENCE, "street") == ("street", ("street",), None)
    assert reports.resolve_grouping(REFERENCE, "reporter_type") == ("reporter_type", ("reporter_type",), None)
    stored, dims, key_map = reports.resolve_grouping(REFERENCE, "group")
    assert (stored, dims) == ("category", ("group",))
    assert key_map is not None
    assert key_map["direct_vent_water_heater"] == "fire"
    assert key_map["public_security_hazard"] == "public_security"
    assert key_map["sporadic_construction_works"] == "production_safety"


def test_pairs_in_either_order_and_refusals_name_what_is_accepted() -> None:
    assert reports.resolve_grouping(REFERENCE, "category,campaign")[:2] == (
        "campaign_category",
        ("campaign", "category"),
    )
    stored, dims, key_map = reports.resolve_grouping(REFERENCE, "group, street")
    assert (stored, dims) == ("street_category", ("street", "group"))
    assert key_map is not None
    assert key_map["henggang|gas_leak"] == "henggang|other"
    for bad in ("", "planet", "grid,source", "street,street", "a,b,c"):
        with pytest.raises(reports.GroupingError, match="campaign,category"):
            reports.resolve_grouping(REFERENCE, bad)


def test_folding_keys_adds_counts_per_period() -> None:
    folded = reports.fold_keys(
        {
            ("gas_leak", 0): Counts(reported=2),
            ("road_hazard", 0): Counts(reported=3),
            ("gas_leak", 2): Counts(reported=1),
        },
        {"gas_leak": "other", "road_hazard": "other"},
    )
    assert folded == {("other", 0): Counts(reported=5), ("other", 2): Counts(reported=1)}


def test_pair_labels_join_both_names() -> None:
    name = reports.grouping_labeller(REFERENCE, ("campaign", "group"))
    assert name("direct-vent-heaters-2026|fire") == {
        "en": "Direct-vent gas water heater campaign / Fire",
        "zh": "直排式燃气热水器专项整治 / 消防",
    }


@pytest.mark.parametrize(
    ("bucket", "day", "start"),
    [
        ("day", date(2026, 5, 17), date(2026, 5, 17)),
        ("week", date(2026, 5, 17), date(2026, 5, 11)),  # a Sunday: its ISO week began on Monday
        ("month", date(2026, 5, 17), date(2026, 5, 1)),
        ("quarter", date(2026, 5, 17), date(2026, 4, 1)),
        ("quarter", date(2026, 12, 31), date(2026, 10, 1)),
        ("half_year", date(2026, 6, 30), date(2026, 1, 1)),
        ("half_year", date(2026, 7, 1), date(2026, 7, 1)),
        ("year", date(2026, 12, 31), date(2026, 1, 1)),
    ],
)
def test_bucket_starts_in_the_calendar(bucket: str, day: date, start: date) -> None:
    assert bucket_start(day, bucket) == start


def _report(counts: dict[tuple[str, str, int], Counts]) -> dict[str, object]:
    return period_report.assemble(
        reference=REFERENCE,
        periods=period_report.Periods.of(date(2026, 1, 1), date(2026, 6, 30)),
        counts=counts,
        overdue=[],
        medians={"median_minutes_to_acknowledge": None, "median_hours_to_rectify": None},
        now=datetime(2026, 7, 1, tzinfo=UTC),
        case_url="http://x/{hazard_id}",
    )


def test_sentences_state_the_split_and_the_comparisons_in_both_languages() -> None:
    counts = {
        ("all", "all", 0): Counts(
            reported=19479,
            rectified=18000,
            notices_issued=3300,
            notices_on_site=3235,
            escalated=2,
            escalations=3,
        ),
        ("all", "all", 1): Counts(reported=18000),
        ("all", "all", 2): Counts(reported=20000),
        ("category", "locked_rooftop_door", 0): Counts(reported=14054),
        ("category", "public_security_hazard", 0): Counts(reported=177),
        ("category", "gas_leak", 0): Counts(reported=2000),
        ("category", "road_hazard", 0): Counts(reported=483),
    }
    report = _report(counts)
    sentences = report["sentences"]
    assert isinstance(sentences, dict)
    assert sentences["zh"][0] == (
        "2026-01-01至2026-06-30，共发现隐患19,479宗，其中消防14,054宗、治安177宗、安全生产0宗、其他2,483宗；"
        "环比上升8.2%，同比下降2.6%。"
    )
    assert sentences["en"][0].startswith(
        "From 2026-01-01 to 2026-06-30, 19,479 hazards were found, of which 14,054 fire, 177 public security"
    )
    assert "发出整改通知书3,300份，其中现场发出3,235份" in sentences["zh"][1]
    assert "超时升级3次" in sentences["zh"][3]


def test_sheet_names_are_what_excel_accepts() -> None:
    used: set[str] = set()
    long = "十、超时未接收清单/overdue:[open]*?" * 3
    first = period_report._sheet_name(long, used)
    second = period_report._sheet_name(long, used)
    assert len(first) <= 31
    assert len(second) <= 31
    assert first != second
    assert not set("[]:*?/\\") & set(first + second)


def test_the_summary_csv_only_grows_at_the_end() -> None:
    """Clients read the CSV by position: the columns of earlier releases keep their places."""
    from services.reporting.reports import summary_csv

    earlier_release = (
        "group_by,key,label_en,label_zh,reported,duplicates,dispatched,acknowledged,acknowledged_late,"
        "receipt_overdue_open,overdue_receipts,notices_issued,rectified,rectification_overdue,closed,"
        "relapsed,overdue_receipt_rate,rectification_rate,relapse_rate,median_minutes_to_acknowledge,"
        "median_hours_to_rectify,previous_overdue_receipt_rate,previous_rectification_rate,"
        "previous_relapse_rate,year_earlier_overdue_receipt_rate,year_earlier_rectification_rate,"
        "year_earlier_relapse_rate,returned_after_receipt"
    )
    header = summary_csv({"group_by": "department", "groups": []}).splitlines()[0]
    assert header.startswith(earlier_release + ",")
    assert header.split(",")[-8:] == [
        "urgings",
        "extension_requests",
        "extensions_approved",
        "overdue_receipts_original",
        "notices_on_site",
        "notices_ordered",
        "escalated",
        "escalations",
    ]
