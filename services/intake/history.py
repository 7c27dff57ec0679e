"""History import (#18 item 2): past records from a CSV or Excel file, checked row by row (pure).

The template (``docs/history-import-template.csv`` / ``.xlsx``, described in the intake README)
has one header row and one record per row. Column names are the English keys below, or their
Chinese labels. A wrong header refuses the whole file; a bad row gets an error naming its row
number (the spreadsheet's, header = row 1), the field, and what is wrong.

Nothing here does I/O besides reading the bytes given; :mod:`services.intake.history_import`
stores the good records and their ``hazard.imported`` events in one transaction.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any, get_args
from zoneinfo import ZoneInfo

from shared import events as ev
from shared.reference import ReferenceData

HISTORY_NS = uuid.UUID("2b0f7b4e-6a49-4f0e-8d0a-18a1b2c3d4e5")
"""Namespace of an imported hazard's id: uuid5(HISTORY_NS, record_id)."""

DISPATCH_NS = uuid.UUID("6f1c9a52-3d1e-4f7a-9a53-18c0d2a1e018")
"""Namespace of an imported record's one dispatch id: uuid5(DISPATCH_NS, record_id)."""

COLUMNS: dict[str, str] = {
    "record_id": "记录编号",
    "observed_at": "发现日期",
    "category": "隐患类别",
    "grid_id": "网格",
    "community_id": "社区",
    "address": "地址",
    "building_id": "楼栋",
    "reporter_type": "上报人类型",
    "source": "来源",
    "campaign_ids": "专项行动",
    "notice_issued": "已发整改通知书",
    "department_id": "责任部门",
    "dispatched_at": "派单日期",
    "acknowledged_at": "签收日期",
    "receipt_deadline": "签收期限",
    "rectified_at": "整改日期",
    "closed_at": "销号日期",
    "relapse_of_record_id": "复发原记录编号",
}
"""Every column of the template: English key -> Chinese label (either may head the column)."""

REQUIRED = ("record_id", "observed_at", "category", "grid_id")
DATE_COLUMNS = (
    "observed_at",
    "dispatched_at",
    "acknowledged_at",
    "receipt_deadline",
    "rectified_at",
    "closed_at",
)
SOURCES = frozenset({"app", "batch", "open311", "hotline", "paper", "import"})
REPORTER_TYPES: frozenset[str] = frozenset(get_args(ev.ReporterType))
TRUE = frozenset({"1", "true", "yes", "y", "是", "有"})
FALSE = frozenset({"", "0", "false", "no", "n", "否", "无"})
MAX_FIELD = 300
MAX_ROWS = 200_000

_ALIASES = {label: key for key, label in COLUMNS.items()} | {key: key for key in COLUMNS}


class WrongColumnsError(ValueError):
    """The header is not the template's: missing, unknown or repeated columns (the file is refused)."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(p["problem"] for p in problems))
        self.problems = problems


class UnreadableFileError(ValueError):
    """Not a CSV (UTF-8) or an .xlsx workbook this importer can read."""


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem of one row: its spreadsheet row number, the field (column key), the message."""

    row: int
    field: str
    problem: str
    value: str | None = None

    def json(self) -> dict[str, Any]:
        return {"row": self.row, "field": self.field, "problem": self.problem, "value": self.value}


@dataclass(frozen=True, slots=True)
class Record:
    """One good row, normalised: what the hazard.imported event states."""

    row: int
    record_id: str
    hazard_id: uuid.UUID
    payload: dict[str, Any]
    body_hash: str
    relapse_of_record_id: str | None


@dataclass
class Checked:
    """A file's rows: the good records and every bad row's errors."""

    rows: int = 0
    records: list[Record] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)

    @property
    def bad_rows(self) -> set[int]:
        return {e.row for e in self.errors}

    def missing_relapse_targets(self) -> set[str]:
        """Record ids that good rows name as relapsed originals but this file does not hold."""
        in_file = {r.record_id for r in self.records}
        return {
            r.relapse_of_record_id
            for r in self.records
            if r.relapse_of_record_id is not None and r.relapse_of_record_id not in in_file
        }


def check_relapses(checked: Checked, *, known: set[str]) -> None:
    """Errors for rows naming an original neither in the file nor imported before (``known``).

    Repeated until nothing changes: a row whose original was itself a bad row is bad too.
    """
    while missing := checked.missing_relapse_targets() - known:
        _drop_missing(checked, missing)


def _drop_missing(checked: Checked, missing: set[str]) -> None:
    for record in checked.records:
        if record.relapse_of_record_id in missing:
            checked.errors.append(
                RowError(
                    record.row,
                    "relapse_of_record_id",
                    "no such record in this file or imported before",
                    record.relapse_of_record_id,
                )
            )
    bad = checked.bad_rows
    checked.records = [r for r in checked.records if r.row not in bad]
    checked.errors.sort(key=lambda e: (e.row, e.field))


def hazard_id_of(record_id: str) -> uuid.UUID:
    """The imported hazard's id, derived from the record id (so a re-import finds the same hazard)."""
    return uuid.uuid5(HISTORY_NS, record_id)


# ---------------------------------------------------------------- reading


def read_rows(data: bytes, filename: str) -> Iterator[list[Any]]:
    """The file's rows (header first), from a CSV (UTF-8, BOM allowed) or an .xlsx workbook's first sheet."""
    if filename.lower().endswith(".xlsx") or data[:4] == b"PK\x03\x04":
        yield from _xlsx_rows(data)
        return
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(
            f"The file is neither an .xlsx workbook nor UTF-8 CSV (byte {exc.start} is not UTF-8)."
        ) from exc
    try:
        yield from csv.reader(io.StringIO(text, newline=""), strict=True)
    except csv.Error as exc:
        raise UnreadableFileError(f"The CSV cannot be read: {exc}.") from exc


def _xlsx_rows(data: bytes) -> Iterator[list[Any]]:
    import zipfile

    from openpyxl import load_workbook

    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
        raise UnreadableFileError(f"The workbook cannot be read: {exc}.") from exc
    try:
        sheet = book.worksheets[0]
        for values in sheet.iter_rows(values_only=True):
            yield list(values)
    finally:
        book.close()


def header_keys(header: Sequence[Any]) -> list[str]:
    """The column keys of a header row; WrongColumnsError names every missing, unknown or repeated one."""
    keys: list[str] = []
    problems: list[dict[str, Any]] = []
    for index, raw in enumerate(header, start=1):
        name = "" if raw is None else str(raw).strip()
        key = _ALIASES.get(name) or _ALIASES.get(name.lower())
        if key is None:
            if name:
                problems.append(
                    {"row": 1, "field": name, "column": index, "problem": f"unknown column {name!r}"}
                )
            keys.append("")
            continue
        if key in keys:
            problems.append({"row": 1, "field": key, "column": index, "problem": f"column {name!r} repeated"})
        keys.append(key)
    for key in REQUIRED:
        if key not in keys:
            problems.append({"row": 1, "field": key, "problem": f"missing column {key!r} ({COLUMNS[key]})"})
    if problems:
        raise WrongColumnsError(problems)
    return keys


# ---------------------------------------------------------------- checking


def check_file(
    rows: Iterable[list[Any]],
    *,
    reference: ReferenceData,
    now: datetime,
    import_id: uuid.UUID,
) -> Checked:
    """Check every row; duplicates of a record id inside the file are errors on every occurrence.

    A ``relapse_of_record_id`` naming no record of the file is checked afterwards against the
    records imported before (:meth:`Checked.missing_relapse_targets`, :func:`check_relapses`).
    """
    iterator = iter(rows)
    try:
        header = next(iterator)
    except StopIteration:
        raise WrongColumnsError(
            [{"row": 1, "field": "", "problem": "the file is empty (no header row)"}]
        ) from None
    keys = header_keys(header)
    tz = ZoneInfo(reference.calendar.timezone)
    checker = _RowChecker(reference=reference, now=now, tz=tz, import_id=import_id)
    out = Checked()
    candidates: list[Record] = []
    first_row: dict[str, list[int]] = {}
    for number, values in enumerate(iterator, start=2):
        if all(v is None or (isinstance(v, str) and not v.strip()) for v in values):
            continue  # blank lines (Excel often keeps some at the end)
        out.rows += 1
        if out.rows > MAX_ROWS:
            raise WrongColumnsError(
                [{"row": number, "field": "", "problem": f"more than {MAX_ROWS} rows: split the file"}]
            )
        if len(values) > len(keys) and any(v not in (None, "") for v in values[len(keys) :]):
            out.errors.append(
                RowError(number, "", f"{len(values)} cells, the header has {len(keys)} columns")
            )
            continue
        cells = {k: values[i] if i < len(values) else None for i, k in enumerate(keys) if k}
        record, errors = checker.check(number, cells)
        out.errors.extend(errors)
        if record is not None:
            candidates.append(record)
        record_id = _text(cells.get("record_id"))
        if record_id:
            first_row.setdefault(record_id, []).append(number)
    duplicated = {rid: rows_ for rid, rows_ in first_row.items() if len(rows_) > 1}
    for rid, numbers in duplicated.items():
        for number in numbers:
            others = ", ".join(str(n) for n in numbers if n != number)
            out.errors.append(
                RowError(number, "record_id", f"record id repeated in the file (rows {others})", rid)
            )
    for record in candidates:
        if record.relapse_of_record_id == record.record_id:
            out.errors.append(
                RowError(
                    record.row, "relapse_of_record_id", "a record cannot relapse itself", record.record_id
                )
            )
    bad = out.bad_rows
    out.records = [r for r in candidates if r.row not in bad]
    out.errors.sort(key=lambda e: (e.row, e.field))
    return out


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


@dataclass
class _RowChecker:
    reference: ReferenceData
    now: datetime
    tz: ZoneInfo
    import_id: uuid.UUID

    def __post_init__(self) -> None:
        ref = self.reference
        self.categories = {c.code for c in ref.categories}
        self.grids = {g.id: g for g in ref.grids}
        self.communities = {c.id for c in ref.communities}
        self.departments = {d.id for d in ref.departments}
        self.campaigns = {c.id for c in ref.campaigns}

    def _date(self, value: Any) -> datetime:
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime.combine(value, time(0))
        else:
            text = _text(value)
            if len(text) == 10:
                moment = datetime.combine(date.fromisoformat(text.replace("/", "-")), time(0))
            else:
                moment = datetime.fromisoformat(text.replace("/", "-"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.tz)
        return moment

    def check(self, number: int, cells: dict[str, Any]) -> tuple[Record | None, list[RowError]]:
        errors: list[RowError] = []

        def bad(field_: str, problem: str) -> None:
            raw = cells.get(field_)
            errors.append(RowError(number, field_, problem, None if raw is None else _text(raw)[:100]))

        for key, raw in cells.items():
            if isinstance(raw, str) and len(raw) > MAX_FIELD:
                bad(key, f"longer than {MAX_FIELD} characters")
            elif isinstance(raw, str) and ("\x00" in raw or not _encodable(raw)):
                bad(key, "must not contain NUL characters or unpaired surrogates: text cannot hold them")
        if errors:
            return None, errors
        record_id = _text(cells.get("record_id"))
        if not record_id:
            bad("record_id", "required")
        elif len(record_id) > 64:
            bad("record_id", "longer than 64 characters")
        dates: dict[str, datetime | None] = {}
        for key in DATE_COLUMNS:
            raw = cells.get(key)
            if raw is None or _text(raw) == "":
                dates[key] = None
                if key == "observed_at":
                    bad(key, "required")
                continue
            try:
                dates[key] = self._date(raw)
            except (ValueError, TypeError):
                dates[key] = None
                bad(key, "not a date: write YYYY-MM-DD or YYYY-MM-DD HH:MM")
                continue
            stamp = dates[key]
            if key != "receipt_deadline" and stamp is not None and stamp > self.now:
                bad(key, "in the future")
        observed = dates["observed_at"]
        if observed is not None:
            for key in ("dispatched_at", "acknowledged_at", "rectified_at", "closed_at"):
                stamp = dates[key]
                if stamp is not None and stamp < observed:
                    bad(key, "before the observed date")
        if dates["acknowledged_at"] is not None and dates["dispatched_at"] is None:
            bad("acknowledged_at", "an acknowledgement needs a dispatched date")
        if dates["receipt_deadline"] is not None and dates["dispatched_at"] is None:
            bad("receipt_deadline", "a receipt deadline needs a dispatched date")
        dispatched, acknowledged = dates["dispatched_at"], dates["acknowledged_at"]
        if dispatched is not None and acknowledged is not None and acknowledged < dispatched:
            bad("acknowledged_at", "before the dispatched date")
        category = _text(cells.get("category"))
        if not category:
            bad("category", "required")
        elif category not in self.categories:
            bad("category", f"unknown category; known: {', '.join(sorted(self.categories))}")
        grid_id = _text(cells.get("grid_id"))
        grid = self.grids.get(grid_id)
        community_id = _text(cells.get("community_id"))
        if not grid_id:
            bad("grid_id", "required")
        elif grid is None:
            bad("grid_id", "unknown grid")
        if community_id and community_id not in self.communities:
            bad("community_id", "unknown community")
        elif community_id and grid is not None and grid.community_id != community_id:
            bad("community_id", f"grid {grid_id} is in community {grid.community_id}")
        reporter_type = _text(cells.get("reporter_type")) or "grid_member"
        if reporter_type not in REPORTER_TYPES:
            bad("reporter_type", f"unknown reporter type; known: {', '.join(sorted(REPORTER_TYPES))}")
        source = _text(cells.get("source")) or "import"
        if source not in SOURCES:
            bad("source", f"unknown source; known: {', '.join(sorted(SOURCES))}")
        campaigns = tuple(
            sorted(
                {
                    c.strip()
                    for c in _text(cells.get("campaign_ids")).replace(";", ",").split(",")
                    if c.strip()
                }
            )
        )
        unknown = [c for c in campaigns if c not in self.campaigns]
        if unknown:
            bad("campaign_ids", f"unknown campaign {', '.join(unknown)}")
        notice_text = _text(cells.get("notice_issued")).lower()
        if notice_text not in TRUE | FALSE:
            bad("notice_issued", "write yes/no (是/否)")
        department_id = _text(cells.get("department_id")) or None
        if department_id is not None and department_id not in self.departments:
            bad("department_id", "unknown department")
        if dispatched is not None and department_id is None:
            bad("department_id", "a dispatched record needs its department")
        relapse_of = _text(cells.get("relapse_of_record_id")) or None
        if errors or grid is None or observed is None:
            return None, errors
        address = _text(cells.get("address"))
        building = _text(cells.get("building_id")) or None
        if building is not None and len(building) > 64:
            return None, [RowError(number, "building_id", "longer than 64 characters", building[:100])]
        payload: dict[str, Any] = {
            "record_id": record_id,
            "import_id": str(self.import_id),
            "category": category,
            "location": {
                "lat": grid.center.lat,
                "lon": grid.center.lon,
                "address": address,
                "building_id": building,
            },
            "grid_id": grid.id,
            "community_id": grid.community_id,
            "street_id": self.reference.street.id,
            "observed_at": observed.isoformat(),
            "reporter_type": reporter_type,
            "source": source,
            "campaign_ids": list(campaigns),
            "notice_issued": notice_text in TRUE and notice_text != "",
            "department_id": department_id,
            "dispatch_id": None if dispatched is None else str(uuid.uuid5(DISPATCH_NS, record_id)),
            "relapse_of": None if relapse_of is None else str(hazard_id_of(relapse_of)),
            "relapse_of_record_id": relapse_of,
        }
        for key in DATE_COLUMNS[1:]:
            stamp = dates[key]
            payload[key] = None if stamp is None else stamp.isoformat()
        hashed = {k: v for k, v in payload.items() if k != "import_id"}
        body_hash = hashlib.sha256(json.dumps(hashed, sort_keys=True).encode()).hexdigest()
        return (
            Record(
                row=number,
                record_id=record_id,
                hazard_id=hazard_id_of(record_id),
                payload=payload,
                body_hash=body_hash,
                relapse_of_record_id=relapse_of,
            ),
            [],
        )
