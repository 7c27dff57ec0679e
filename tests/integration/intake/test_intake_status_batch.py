"""A batch of lifecycle changes applied at once leaves the Open311 view as applying them one by one does."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import repository as repo
from services.intake.domain import StatusChange
from services.intake.tables import reports
from tests.integration.intake.intake_helpers import LAT, AppFactory, auth, report

COLUMNS = (
    "hazard_id, status, status_notes, agency_responsible, expected_datetime, closed_at, "
    "last_event_at, updated_datetime"
)


async def one_change(
    session: AsyncSession, *, hazard_id: uuid.UUID, change: StatusChange, at: datetime
) -> None:
    """The reference: one event's change, one hazard at a time, as intake applied them until the
    batch statements replaced it (the same rule written as single-row SQLAlchemy updates)."""
    bump = {
        "last_event_at": sa.func.greatest(reports.c.last_event_at, at),
        "updated_datetime": sa.func.greatest(reports.c.updated_datetime, at),
    }
    if change.closes:
        values: dict[str, Any] = {
            "status": "closed",
            "closed_at": sa.func.coalesce(reports.c.closed_at, at),
            "status_notes": change.notes,
            "expected_datetime": None,
            "agency_responsible": sa.func.coalesce(change.agency, reports.c.agency_responsible),
            **bump,
        }
        await session.execute(sa.update(reports).where(reports.c.hazard_id == hazard_id).values(**values))
        # Reports linked to it as duplicates are settled with it.
        await session.execute(
            sa.update(reports)
            .where(reports.c.duplicate_of == hazard_id, reports.c.status == "open")
            .values(
                status="closed",
                closed_at=at,
                status_notes=f"Closed with request {hazard_id}, which this report duplicated.",
                expected_datetime=None,
                **bump,
            )
        )
        return
    current = sa.and_(
        reports.c.status == "open",
        sa.or_(reports.c.last_event_at.is_(None), reports.c.last_event_at <= at),
    )
    values = {"status_notes": sa.case((current, change.notes), else_=reports.c.status_notes), **bump}
    if change.agency is not None:
        values["agency_responsible"] = sa.case((current, change.agency), else_=reports.c.agency_responsible)
    if change.expected is not None or change.clear_expected:
        values["expected_datetime"] = sa.case(
            (current, sa.literal(change.expected, sa.DateTime(timezone=True))),
            else_=reports.c.expected_datetime,
        )
    await session.execute(sa.update(reports).where(reports.c.hazard_id == hazard_id).values(**values))


async def view_after(
    app: FastAPI, hazard_ids: list[uuid.UUID], apply: Any
) -> tuple[list[tuple[Any, ...]], int]:
    """The rows after ``apply(session)``, and the statements it ran; rolled back afterwards."""
    statements = 0

    def count(*_: Any) -> None:
        nonlocal statements
        statements += 1

    async with app.state.runtime.sessions() as session:
        engine = session.bind.sync_engine if hasattr(session.bind, "sync_engine") else session.bind
        sa.event.listen(engine, "before_cursor_execute", count)
        try:
            await session.begin()
            await apply(session)
            applied = statements
            rows = (
                await session.execute(
                    sa.text(
                        f"select {COLUMNS} from intake.reports where hazard_id = any(:ids) order by hazard_id"
                    ),
                    {"ids": hazard_ids},
                )
            ).all()
            await session.rollback()
        finally:
            sa.event.remove(engine, "before_cursor_execute", count)
    return [tuple(row) for row in rows], applied


async def both_ways(
    app: FastAPI, hazard_ids: list[uuid.UUID], changes: list[repo.Change]
) -> tuple[tuple[list[tuple[Any, ...]], int], tuple[list[tuple[Any, ...]], int]]:
    """The rows and statements after applying ``changes`` one by one, then (from the same start) as a batch."""

    async def one_by_one(session: Any) -> None:
        for hazard_id, change, moment in changes:
            await one_change(session, hazard_id=hazard_id, change=change, at=moment)

    async def batched(session: Any) -> None:
        await repo.apply_status_changes(session, changes)

    return await view_after(app, hazard_ids, one_by_one), await view_after(app, hazard_ids, batched)


async def test_a_batch_of_changes_equals_applying_them_one_by_one(intake_app: AppFactory) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with intake_app(outbox={"enabled": False}, broker=False) as (app, client):
        posted = []
        # The first three at one building (the 2nd and 3rd are linked to the 1st), the others apart.
        places = [("ly01-b0011", 0.0), ("ly01-b0011", 0.0), ("ly01-b0011", 0.0), ("ly01-b0012", 0.002)]
        places.append(("ly01-b0013", -0.002))
        for building, shift in places:
            body = report(location={"building_id": building, "lat": LAT + shift})
            response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
            assert response.status_code == 201, response.text
            posted.append(response.json())
        closing, duplicate, plain, reordered, single = (uuid.UUID(p["hazard_id"]) for p in posted)
        assert [p["duplicate_of"] for p in posted] == [None, str(closing), str(closing), None, None]

        def at(minutes: int) -> datetime:
            return t0 + timedelta(minutes=minutes)

        changes = [
            # Dispatched, closed, then a late event that must neither reopen nor rewrite the notes.
            (closing, StatusChange(notes="dispatched", agency="Fire", expected=at(120)), at(1)),
            (reordered, StatusChange(notes="ordered", agency="Police", expected=at(300)), at(5)),
            (plain, StatusChange(notes="dispatched", agency="Fire", expected=at(60)), at(2)),
            (closing, StatusChange(notes="closed", closes=True), at(10)),
            # Older than the order already applied: bumps nothing, changes nothing.
            (reordered, StatusChange(notes="acknowledged", agency="Fire"), at(3)),
            (closing, StatusChange(notes="late dispatch", agency="Police", expected=at(500)), at(4)),
            (reordered, StatusChange(notes="rectified", clear_expected=True), at(8)),
            (single, StatusChange(notes="referred", agency=None), at(6)),
            (plain, StatusChange(notes="acknowledged"), at(7)),
        ]
        ids = [closing, duplicate, reordered, single, plain]
        (expected, sequential_statements), (got, batched_statements) = await both_ways(app, ids, changes)

    assert got == expected
    by_id = {row[0]: row for row in got}
    assert by_id[closing][1:3] == ("closed", "closed")
    assert by_id[duplicate][1] == "closed"
    assert by_id[reordered][2:5] == ("rectified", "Police", None)
    # A linked report with an event of its own before the close: that event first, then the close.
    assert by_id[plain][1] == "closed"
    assert by_id[plain][3] == "Fire"
    assert by_id[single][2] == "referred"
    # A linked report changes in the batch, so each close is a barrier (found by one query): before
    # the close one round of 3; the close, the unlinking of reports seen after it (#21) and its
    # duplicates: 3; after it: rounds of 4 and 1.
    assert sequential_statements == len(changes) + 1  # the close also settles its duplicates
    assert batched_statements == 1 + 1 + 3 + 2


async def test_closes_in_a_batch_go_together_when_no_linked_report_changes_in_it(
    intake_app: AppFactory,
) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with intake_app(outbox={"enabled": False}, broker=False) as (app, client):
        ids: list[uuid.UUID] = []
        # Four originals far apart, each with a report linked to it as a duplicate.
        for i in range(4):
            for _ in range(2):
                body = report(location={"building_id": f"ly01-b002{i}", "lat": LAT + 0.002 * i})
                response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
                assert response.status_code == 201, response.text
                ids.append(uuid.UUID(response.json()["hazard_id"]))
        a, b, c, d = ids[0::2]

        def at(minutes: int) -> datetime:
            return t0 + timedelta(minutes=minutes)

        changes = [
            (a, StatusChange(notes="dispatched", agency="Fire", expected=at(60)), at(1)),
            (b, StatusChange(notes="fixed on site", closes=True), at(1)),
            (a, StatusChange(notes="closed", closes=True), at(9)),
            (c, StatusChange(notes="dispatched", agency="Police", expected=at(90)), at(2)),
            (d, StatusChange(notes="closed", agency="Fire", closes=True), at(3)),
            (c, StatusChange(notes="closed", closes=True), at(8)),
            (b, StatusChange(notes="late dispatch", agency="Police", expected=at(500)), at(0)),
            (d, StatusChange(notes="closed again", closes=True), at(4)),
        ]
        (expected, _), (got, statements) = await both_ways(app, ids, changes)

    assert got == expected
    assert all(row[1] == "closed" for row in got)
    by_id = {row[0]: row for row in got}
    assert by_id[d][5] == at(3), "closed once: a second close keeps the first closing time"
    assert by_id[ids[1]][2] == f"Closed with request {a}, which this report duplicated."
    # The check for linked reports; round 1: 2 closes (one statement, one unlinking reports seen after
    # the close (#21), one for their duplicates) and 2 others (one); round 2: 3 closes (three) and b's
    # late change alone (one).
    assert statements == 1 + (3 + 1) + (3 + 1)


async def test_the_views_updates_from_lifecycle_events_are_hot_until_the_close(
    intake_app: AppFactory,
) -> None:
    # intake_0013 (#20): no index names a column these updates change, and pages keep room, so the
    # decision and every later event rewrite the row in place (HOT); a close changes the status,
    # which the open-duplicate indexes name.
    t0 = datetime.now(UTC).replace(microsecond=0)
    async with intake_app(outbox={"enabled": False}, broker=False) as (app, client):
        hazard_ids = []
        for n in range(3):
            body = report(location={"building_id": f"ly01-b00{20 + n}", "lat": LAT + 0.002 * n})
            response = await client.post("/api/v1/hazards", json=body, headers=auth("tok-gm1"))
            assert response.status_code == 201, response.text
            hazard_ids.append(uuid.UUID(response.json()["hazard_id"]))

        def at(minutes: int) -> datetime:
            return t0 + timedelta(minutes=minutes)

        rounds: list[list[repo.Change]] = [
            [
                (h, StatusChange(notes="dispatched", agency="Fire", expected=at(60)), at(1))
                for h in hazard_ids
            ],
            [(h, StatusChange(notes="acknowledged", agency="Fire"), at(2)) for h in hazard_ids],
            [(hazard_ids[0], StatusChange(notes="closed", closes=True), at(3))],
        ]
        written = []
        async with app.state.runtime.sessions() as session, session.begin():
            for changes in rounds:
                await repo.apply_status_changes(session, changes)
                counts = await session.execute(
                    sa.text(
                        "select n_tup_upd, n_tup_hot_upd from pg_stat_xact_user_tables "
                        "where schemaname = 'intake' and relname = 'reports'"
                    )
                )
                written.append(tuple(counts.one()))
    # Cumulative (updated, of which HOT) after each round.
    assert written == [(3, 3), (6, 6), (7, 6)]
