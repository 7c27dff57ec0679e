"""The history import's file checks (#18 item 2), pure: header, dates, categories, places, duplicates."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openpyxl import Workbook

from services.intake import history
from shared.events import HazardImportedPayload
from shared.reference import load_reference_data

REF = load_reference_data()
NOW = datetime(2026, 6, 1, tzinfo=UTC)
HEADER = ["record_id", "observed_at", "category", "grid_id", "department_id", "dispatched_at", "closed_at"]


def check(rows: list[list[object]]) -> history.Checked:
    return history.check_file(rows, reference=REF, now=NOW, import_id=uuid.uuid4())


def test_a_good_row_becomes_a_valid_event_payload_with_a_derived_id() -> None:
    checked = check(
        [HEADER, ["R-1", "2025-03-10", "locked_rooftop_door", "liuyue-01", "fire", "2025-03-10 10:00", ""]]
    )
    assert checked.errors == []
    [record] = checked.records
    assert record.hazard_id == history.hazard_id_of("R-1") == uuid.uuid5(history.HISTORY_NS, "R-1")
    payload = HazardImportedPayload.model_validate(record.payload)
    assert payload.community_id == "liuyue"
    assert payload.street_id == REF.street.id
    # A date without an offset is the city's local time (Asia/Shanghai, +08:00).
    assert payload.observed_at == datetime(2025, 3, 9, 16, 0, tzinfo=UTC)
    assert payload.dispatched_at == datetime(2025, 3, 10, 2, 0, tzinfo=UTC)
    assert payload.closed_at is None


def test_chinese_column_labels_head_the_same_columns() -> None:
    header = [history.COLUMNS[k] for k in ("record_id", "observed_at", "category", "grid_id")]
    checked = check([header, ["R-1", "2025-03-10", "gas_leak", "liuyue-02"]])
    assert [r.record_id for r in checked.records] == ["R-1"]


def test_wrong_columns_refuse_the_file_naming_each() -> None:
    with pytest.raises(history.WrongColumnsError) as caught:
        check([["record_id", "observed", "category", "category"], ["R-1", "2025-03-10", "x", "x"]])
    problems = {p["problem"] for p in caught.value.problems}
    assert problems == {
        "unknown column 'observed'",
        "column 'category' repeated",
        "missing column 'observed_at' (发现日期)",
        "missing column 'grid_id' (网格)",
    }


def test_bad_rows_are_named_by_row_and_field() -> None:
    checked = check(
        [
            HEADER,
            ["R-1", "2025-13-40", "locked_rooftop_door", "liuyue-01", "", "", ""],
            ["R-2", "2025-03-10", "no_such_category", "liuyue-01", "", "", ""],
            ["R-3", "2025-03-10", "gas_leak", "nowhere-99", "", "", ""],
            ["R-4", "2025-03-10", "gas_leak", "liuyue-01", "", "2025-03-11", ""],
            ["R-5", "2025-03-10", "gas_leak", "liuyue-01", "fire", "", "2025-03-01"],
            ["R-6", "2027-01-01", "gas_leak", "liuyue-01", "", "", ""],
            ["R-7", "2025-03-10", "gas_leak", "liuyue-01", "", "", ""],
        ]
    )
    got = {(e.row, e.field, e.problem.split(";")[0]) for e in checked.errors}
    assert got == {
        (2, "observed_at", "not a date: write YYYY-MM-DD or YYYY-MM-DD HH:MM"),
        (3, "category", "unknown category"),
        (4, "grid_id", "unknown grid"),
        (5, "department_id", "a dispatched record needs its department"),
        (6, "closed_at", "before the observed date"),
        (7, "observed_at", "in the future"),
    }
    assert [r.record_id for r in checked.records] == ["R-7"]


def test_duplicates_inside_the_file_are_errors_on_every_occurrence() -> None:
    row = ["R-1", "2025-03-10", "gas_leak", "liuyue-01", "", "", ""]
    checked = check([HEADER, row, ["R-2", *row[1:]], row])
    assert {(e.row, e.field) for e in checked.errors} == {(2, "record_id"), (4, "record_id")}
    assert "rows 4" in checked.errors[0].problem
    assert [r.record_id for r in checked.records] == ["R-2"]


def test_a_relapse_needs_its_original_in_the_file_or_imported_before() -> None:
    header = ["record_id", "observed_at", "category", "grid_id", "relapse_of_record_id"]
    checked = check(
        [
            header,
            ["R-1", "2025-03-10", "gas_leak", "liuyue-01", ""],
            ["R-2", "2025-05-10", "gas_leak", "liuyue-01", "R-1"],
            ["R-3", "2025-05-10", "gas_leak", "liuyue-01", "OLD-9"],
            ["R-4", "2025-05-10", "gas_leak", "liuyue-01", "GONE-1"],
            ["R-5", "2025-06-10", "gas_leak", "liuyue-01", "R-4"],
        ]
    )
    assert checked.missing_relapse_targets() == {"OLD-9", "GONE-1"}
    history.check_relapses(checked, known={"OLD-9"})
    # R-5's original R-4 is bad itself, so R-5 goes too.
    assert {(e.row, e.field) for e in checked.errors} == {
        (5, "relapse_of_record_id"),
        (6, "relapse_of_record_id"),
    }
    assert [r.record_id for r in checked.records] == ["R-1", "R-2", "R-3"]
    assert checked.records[1].payload["relapse_of"] == str(history.hazard_id_of("R-1"))


def test_an_xlsx_file_reads_like_the_csv() -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(HEADER)
    sheet.append(["R-1", datetime(2025, 3, 10, 9, 30), "gas_leak", "liuyue-01", None, None, None])
    buffer = io.BytesIO()
    book.save(buffer)
    rows = list(history.read_rows(buffer.getvalue(), "history.xlsx"))
    checked = check(rows)
    assert checked.errors == []
    assert checked.records[0].payload["observed_at"] == "2025-03-10T09:30:00+08:00"
    csv_rows = list(
        history.read_rows(
            b"\xef\xbb\xbfrecord_id,observed_at,category,grid_id\nR-1,2025-03-10 09:30,gas_leak,liuyue-01\n",
            "h.csv",
        )
    )
    # The same record from either format is the same content (a re-import in the other format changes nothing).
    assert check(csv_rows).records[0].body_hash == checked.records[0].body_hash


def test_an_unreadable_file_is_named() -> None:
    with pytest.raises(history.UnreadableFileError):
        list(history.read_rows(b"\xff\xfe\x00garbage", "h.csv"))
    with pytest.raises(history.UnreadableFileError):
        list(history.read_rows(b"PK\x03\x04not a zip", "h.xlsx"))


def test_nul_and_surrogates_in_a_cell_are_a_bad_row() -> None:
    checked = check(
        [
            HEADER,
            ["R-1", "2025-03-10", "gas_leak", "liuyue-01", "", "", ""],
            ["R-\x002", "2025-03-10", "gas_leak", "liuyue-01", "", "", ""],
            ["R-3", "2025-03-10", "gas\ud800", "liuyue-01", "", "", ""],
        ]
    )
    assert {(e.row, e.field) for e in checked.errors} == {(3, "record_id"), (4, "category")}
    assert [r.record_id for r in checked.records] == ["R-1"]


@pytest.mark.parametrize("name", ["history-import-template.csv", "history-import-template.xlsx"])
def test_the_committed_templates_import_cleanly(name: str) -> None:
    path = Path(__file__).parents[3] / "docs" / "history-import" / name
    checked = check(list(history.read_rows(path.read_bytes(), name)))
    assert checked.errors == []
    assert [r.record_id for r in checked.records] == ["2025-FY-000001", "2025-FY-000002", "2025-FY-000003"]
    assert checked.records[2].payload["relapse_of"] == str(history.hazard_id_of("2025-FY-000001"))
