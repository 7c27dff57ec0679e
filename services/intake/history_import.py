"""History import (#18 item 2), the unit of work: check a file, store its good records and their
``hazard.imported`` events in ONE transaction, or nothing.

* ``on_error="refuse"`` (default): any bad row refuses the whole file, nothing is stored;
* ``on_error="skip"``: the bad rows are listed, the good ones imported.

Re-importing a file changes nothing: a record whose (derived) hazard id is already stored with the
same content is ``unchanged`` (no event); with different content it is a bad row (the history
already published is not rewritten).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.intake import history, tables
from shared.db import database_now
from shared.events import HazardImported, HazardImportedPayload, new_event_id
from shared.outbox import Outbox
from shared.reference import ReferenceData

OnError = Literal["refuse", "skip"]
_CHUNK = 5000


@dataclass
class ImportResult:
    """What became of a file."""

    import_id: uuid.UUID
    on_error: OnError
    rows: int = 0
    imported: int = 0
    unchanged: int = 0
    errors: list[history.RowError] = field(default_factory=list)
    refused: bool = False

    @property
    def rejected(self) -> int:
        return len({e.row for e in self.errors})

    def json(self) -> dict[str, Any]:
        return {
            "import_id": str(self.import_id),
            "on_error": self.on_error,
            "rows": self.rows,
            "imported": self.imported,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "errors": [e.json() for e in self.errors],
        }


async def import_history(
    sessions: async_sessionmaker[AsyncSession],
    *,
    outbox: Outbox,
    reference: ReferenceData,
    data: bytes,
    filename: str,
    on_error: OnError,
    imported_by: str,
) -> ImportResult:
    """Check and import one file (raises history.WrongColumnsError / UnreadableFileError for the whole file)."""
    import_id = uuid.uuid4()
    # The CPU-bound parts (reading, checking, building events) run in a worker thread, so that
    # intake's event loop keeps answering live reports while a large file is checked.
    rows = await asyncio.to_thread(lambda: list(history.read_rows(data, filename)))
    async with sessions() as session, session.begin():
        # One import at a time: two copies of a file sent at once must not both insert a record.
        await session.execute(sa.text("select pg_advisory_xact_lock(hashtext('intake.history_import'))"))
        now = await database_now(session)
        checked = await asyncio.to_thread(
            history.check_file, rows, reference=reference, now=now, import_id=import_id
        )
        result = ImportResult(import_id=import_id, on_error=on_error, rows=checked.rows)
        await _check_relapses(session, checked)
        stored = await _stored_hashes(session, [r.hazard_id for r in checked.records])
        fresh: list[history.Record] = []
        for record in checked.records:
            known = stored.get(record.hazard_id)
            if known is None:
                fresh.append(record)
            elif known == record.body_hash:
                result.unchanged += 1
            else:
                checked.errors.append(
                    history.RowError(
                        record.row,
                        "record_id",
                        "already imported with other content (an imported record is not rewritten)",
                        record.record_id,
                    )
                )
        result.errors = sorted(checked.errors, key=lambda e: (e.row, e.field))
        if result.errors and on_error == "refuse":
            result.refused = True
            result.unchanged = 0
            return result  # nothing written: the transaction ends without a statement
        bad = {e.row for e in result.errors}
        fresh = [r for r in fresh if r.row not in bad]
        for start in range(0, len(fresh), _CHUNK):
            await _store(session, fresh[start : start + _CHUNK], outbox=outbox, now=now, by=imported_by)
        result.imported = len(fresh)
    return result


async def _check_relapses(session: AsyncSession, checked: history.Checked) -> None:
    missing = checked.missing_relapse_targets()
    known: set[str] = set()
    if missing:
        found = await session.execute(
            sa.select(tables.imported_hazards.c.record_id).where(
                tables.imported_hazards.c.record_id.in_(sorted(missing))
            )
        )
        known = set(found.scalars())
    history.check_relapses(checked, known=known)


async def _stored_hashes(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    stored: dict[uuid.UUID, str] = {}
    t = tables.imported_hazards
    for start in range(0, len(ids), 20_000):
        found = await session.execute(
            sa.select(t.c.hazard_id, t.c.body_hash).where(
                t.c.hazard_id == sa.func.any(sa.cast(ids[start : start + 20_000], sa.ARRAY(sa.Uuid)))
            )
        )
        stored.update({row.hazard_id: row.body_hash for row in found})
    return stored


def _events(records: list[history.Record], now: Any) -> list[HazardImported]:
    return [
        HazardImported(
            event_id=new_event_id(),
            occurred_at=now,
            hazard_id=r.hazard_id,
            producer="intake",
            payload=HazardImportedPayload.model_validate(r.payload),
        )
        for r in records
    ]


async def _store(
    session: AsyncSession, records: list[history.Record], *, outbox: Outbox, now: Any, by: str
) -> None:
    if not records:
        return
    events = await asyncio.to_thread(_events, records, now)
    await session.execute(
        sa.text(
            "insert into intake.imported_hazards (hazard_id, record_id, body_hash, import_id, imported_by,"
            " observed_at, closed_at, imported_at) "
            "select u.h, u.r, u.b, cast(:import_id as uuid), :by, u.o, u.c, :now from unnest("
            "cast(:h as uuid[]), cast(:r as text[]), cast(:b as text[]), cast(:o as timestamptz[]),"
            " cast(:c as timestamptz[])) as u(h, r, b, o, c)"
        ),
        {
            "h": [r.hazard_id for r in records],
            "r": [r.record_id for r in records],
            "b": [r.body_hash for r in records],
            "o": [e.payload.observed_at for e in events],
            "c": [e.payload.closed_at for e in events],
            "import_id": events[0].payload.import_id,
            "by": by,
            "now": now,
        },
    )
    await outbox.add(session, *events)
