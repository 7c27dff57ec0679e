"""The rollup kept by recorded changes (#20) is always exactly the rollup recomputed from the facts.

Each batch records the old and new contributions of the hazard and dispatch rows it changes, the
refresher folds them in. Here random histories of a few hazards (reported, possibly as a duplicate
later unlinked; dispatched, escalated, returned and dispatched again to another department,
acknowledged on time or late; rectification ordered, rectified, overdue, closed; relapsed into a
new report; an imported past record) are applied in a random order of every event, in random
batches, each in its own transaction as the live consumer applies them, with refreshes after some
batches: the same hazards change again and again across refreshes, their department moves back and
forth as late events arrive, and a dispatch or a hazard appears on its day only once its report
is in. After every refresh the five rollup tables must equal, row for row, a rollup rebuilt from
the facts. Then: two transactions changing one hazard at once (a relapse recorded while the
original's closure is) leave it counted exactly, and two refreshers running beside the consumers
never count a change twice.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reporting import domain, repository, tables
from shared import events as ev
from shared.db import create_engine
from shared.settings import DatabaseSettings
from tests.integration.reporting.reporting_helpers import shuffled_batches
from tests.support.factories import make_event, reported_payload

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
# 00:00 on Sunday 29 March in the city: the histories cross an ISO week's and a month's edge.
START = datetime(2026, 3, 28, 16, 0, tzinfo=UTC)
DEPARTMENTS = ("fire", "gas", "police")
COMMUNITIES = ("liuyue", "songbai")
ROLLUP_TABLES = ("rollup", "rollup_groups", "rollup_hist", "rollup_groups_span", "rollup_hist_span")
PROJECTION = ", ".join(f"reporting.{t.name}" for t in tables.PROJECTION_TABLES)

stories = st.fixed_dictionaries(
    {
        "offset_min": st.integers(0, 3 * 24 * 60),
        "community": st.sampled_from(COMMUNITIES),
        "campaign": st.booleans(),
        "departments": st.lists(st.sampled_from(DEPARTMENTS), min_size=1, max_size=3),
        "acked": st.sampled_from(("no", "on_time", "late")),
        "escalated": st.booleans(),
        "rectified": st.sampled_from(("no", "ordered", "rectified", "overdue")),
        "closed": st.booleans(),
        "relapsed": st.booleans(),
        "duplicate": st.sampled_from(("no", "linked", "unlinked")),
        "imported": st.booleans(),
    }
)


def _at(event: ev.AnyEvent, moment: datetime) -> ev.AnyEvent:
    return event.model_copy(update={"occurred_at": moment})


def _report(hazard: uuid.UUID, at: datetime, story: dict[str, Any], **more: Any) -> ev.AnyEvent:
    payload = reported_payload(
        report_id=uuid.uuid4(),
        community_id=story["community"],
        grid_id=f"{story['community']}-01",
        accepted_at=at,
        observed_at=at - timedelta(minutes=5),
        campaign_ids=("spring",) if story["campaign"] else (),
        **more,
    )
    return _at(make_event("hazard.reported", hazard_id=hazard), at).model_copy(update={"payload": payload})


def history(story: dict[str, Any], index: int) -> list[ev.AnyEvent]:
    """Every event of one hazard (and of a hazard relapsing into it, or of an imported record)."""
    h = uuid.UUID(int=index + 1)
    t = START + timedelta(minutes=story["offset_min"])
    out = [_report(h, t, story)]
    previous: uuid.UUID | None = None
    department = story["departments"][0]
    for n, department in enumerate(story["departments"]):
        t += timedelta(hours=7 * n + 1)  # later dispatches may fall on the next days
        dispatch = uuid.UUID(int=(index + 1) * 100 + n)
        deadline = t + timedelta(hours=2)
        reason = "routed" if previous is None else "rerouted"
        out.append(
            _at(
                make_event(
                    "hazard.dispatched",
                    hazard_id=h,
                    dispatch_id=dispatch,
                    department_id=department,
                    receipt_deadline=deadline,
                    reason=reason,
                    previous_dispatch_id=previous,
                ),
                t,
            )
        )
        if story["escalated"]:
            out.append(
                _at(
                    make_event(
                        "hazard.escalated", hazard_id=h, dispatch_id=dispatch, department_id=department
                    ),
                    t,
                )
            )
        if n < len(story["departments"]) - 1:
            t += timedelta(minutes=30)
            out.append(
                _at(
                    make_event(
                        "hazard.returned", hazard_id=h, dispatch_id=dispatch, department_id=department
                    ),
                    t,
                )
            )
            previous = dispatch
            continue
        if story["acked"] != "no":
            acked = t + timedelta(minutes=45 if story["acked"] == "on_time" else 200)
            out.append(
                _at(
                    make_event(
                        "hazard.acknowledged",
                        hazard_id=h,
                        dispatch_id=dispatch,
                        department_id=department,
                        acknowledged_at=acked,
                        receipt_deadline=deadline,
                        on_time=story["acked"] == "on_time",
                    ),
                    acked,
                )
            )
            t = acked
    if story["rectified"] != "no":
        t += timedelta(hours=3)
        out.append(_at(make_event("hazard.rectification_ordered", hazard_id=h, department_id=department), t))
        kind = {"rectified": "hazard.rectified", "overdue": "hazard.rectification_overdue"}.get(
            story["rectified"]
        )
        if kind:
            t += timedelta(hours=5 + index)
            # Another department rectifies: the hazard's department moves with the latest event.
            out.append(_at(make_event(kind, hazard_id=h, department_id=DEPARTMENTS[index % 3]), t))
    if story["closed"]:
        t += timedelta(hours=2)
        out.append(_at(make_event("hazard.closed", hazard_id=h, department_id=department), t))
        if story["relapsed"]:
            again = uuid.UUID(int=10_000 + index)
            later = t + timedelta(hours=4)
            out.append(_report(again, later, story))
            out.append(
                _at(
                    make_event(
                        "hazard.relapsed",
                        hazard_id=again,
                        original_hazard_id=h,
                        original_department_id=department,
                        original_closed_at=t,
                        days_since_closure=4 / 24,
                    ),
                    later,
                )
            )
    if story["duplicate"] != "no":
        copy = uuid.UUID(int=20_000 + index)
        at = START + timedelta(minutes=story["offset_min"] + 20)
        out.append(_report(copy, at, story, duplicate_of=h))
        if story["duplicate"] == "unlinked":
            out.append(
                _at(
                    make_event(
                        "hazard.duplicate_unlinked",
                        hazard_id=copy,
                        original_hazard_id=h,
                        original_closed_at=at - timedelta(minutes=10),
                        observed_at=at,
                        community_id=story["community"],
                        grid_id=f"{story['community']}-01",
                    ),
                    at + timedelta(hours=1),
                )
            )
    if story["imported"]:
        out.append(
            make_event(
                "hazard.imported",
                hazard_id=uuid.UUID(int=30_000 + index),
                dispatch_id=uuid.UUID(int=40_000 + index),
                community_id=story["community"],
                grid_id=f"{story['community']}-01",
                department_id=DEPARTMENTS[index % 3],
            )
        )
    return out


@st.composite
def deliveries(draw: Any) -> tuple[list[list[ev.AnyEvent]], list[bool]]:
    """Every event of some hazards in a random order, cut into random batches, each refreshed after or not."""
    events = [e for i, s in enumerate(draw(st.lists(stories, min_size=1, max_size=6))) for e in history(s, i)]
    return shuffled_batches(draw, events, max_cuts=10)


async def _snapshot(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table in ROLLUP_TABLES:
        rows = (await conn.execute(sa.text(f"SELECT * FROM reporting.{table}"))).all()
        out[table] = sorted(tuple(r) for r in rows)
    return out


async def _assert_a_recount(engine: Any, *, when: str) -> dict[str, list[tuple[Any, ...]]]:
    """The live rollup equals, row for row, one rebuilt from the facts (the rebuild is rolled back)."""
    async with engine.connect() as conn:
        pending = (await conn.execute(sa.text("SELECT count(*) FROM reporting.rollup_changes"))).scalar_one()
        assert pending == 0, f"{when}: the refresh folded every recorded change"
        live = await _snapshot(conn)
        await repository.rebuild_rollup(conn)
        rebuilt = await _snapshot(conn)
        await conn.rollback()
    for table in ROLLUP_TABLES:
        assert live[table] == rebuilt[table], f"{when}: {table} differs from a recount of the facts"
    return live


async def _apply(engine: Any, events: list[ev.AnyEvent]) -> None:
    """One batch as the live consumer applies it: one transaction, facts and their rollup changes."""
    async with engine.begin() as conn:
        await repository.merge_counted(conn, domain.project_events(events, tz=TZ))


async def _refresh(engine: Any) -> int:
    async with engine.begin() as conn:
        return await repository.refresh_rollup(conn)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries())
async def test_the_rollup_kept_by_changes_equals_a_recount_after_every_refresh(
    db_url: str, delivery: tuple[list[list[ev.AnyEvent]], list[bool]]
) -> None:
    batches, refreshed = delivery
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {PROJECTION}"))
        for n, (events, refresh) in enumerate(zip(batches, refreshed, strict=True)):
            await _apply(engine, events)
            if refresh:
                await _refresh(engine)
                await _assert_a_recount(engine, when=f"after batch {n + 1}/{len(batches)}")
        await _refresh(engine)
        live = await _assert_a_recount(engine, when="at the end")
        assert live["rollup_groups"], "the histories counted something"
    finally:
        await engine.dispose()


async def test_a_relapse_recorded_while_its_original_closes_is_counted_exactly(db_url: str) -> None:
    story = {"community": "liuyue", "campaign": False}
    original, again = uuid.uuid4(), uuid.uuid4()
    reported_at = START + timedelta(hours=3)
    closed_at = reported_at + timedelta(hours=20)
    report = _report(original, reported_at, story)
    closed = _at(make_event("hazard.closed", hazard_id=original), closed_at)
    relapse = [
        _report(again, closed_at + timedelta(hours=5), story),
        _at(
            make_event(
                "hazard.relapsed",
                hazard_id=again,
                original_hazard_id=original,
                original_closed_at=closed_at,
                days_since_closure=5 / 24,
            ),
            closed_at + timedelta(hours=5),
        ),
    ]
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {PROJECTION}"))
        await _apply(engine, [report])
        # Two replicas at once: one applies the closure (its partition), the other the relapse
        # naming the same original (another partition). Each alone would not see the other's
        # uncommitted facts; the second waits for the first and then sees them.
        async with engine.begin() as closing:
            await repository.merge_counted(closing, domain.project_events([closed], tz=TZ))
            relapsing = asyncio.create_task(_apply(engine, relapse))
            await asyncio.sleep(0.5)
            assert not relapsing.done(), "the relapse waits for the transaction holding its original"
        await asyncio.wait_for(relapsing, timeout=30)
        await _refresh(engine)
        await _assert_a_recount(engine, when="after both")
        async with engine.connect() as conn:
            relapsed = await conn.execute(
                sa.text("SELECT sum(relapsed) FROM reporting.rollup_groups WHERE grouping = 'all'")
            )
            assert relapsed.scalar_one() == 1, "the closed original counts as relapsed"
    finally:
        await engine.dispose()


async def test_two_refreshers_beside_the_consumers_never_count_a_change_twice(db_url: str) -> None:
    events = [
        e
        for i in range(24)
        for e in history(
            {
                "offset_min": 97 * i,
                "community": COMMUNITIES[i % 2],
                "campaign": i % 3 == 0,
                "departments": list(DEPARTMENTS[: 1 + i % 3]),
                "acked": ("no", "on_time", "late")[i % 3],
                "escalated": i % 4 == 0,
                "rectified": ("no", "ordered", "rectified", "overdue")[i % 4],
                "closed": i % 2 == 0,
                "relapsed": i % 4 == 0,
                "duplicate": ("no", "linked", "unlinked")[i % 3],
                "imported": i % 5 == 0,
            },
            i,
        )
    ]
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    stop = asyncio.Event()

    async def refresher() -> int:
        brought = 0
        while not stop.is_set():
            brought += await _refresh(engine)
            await asyncio.sleep(0.005)
        return brought

    async def consumer(part: list[ev.AnyEvent]) -> None:
        for start in range(0, len(part), 7):
            await _apply(engine, part[start : start + 7])

    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {PROJECTION}"))
        refreshers = [asyncio.create_task(refresher()) for _ in range(2)]
        # Two consumers, every other event each: the same hazards change in both at once (as
        # when a partition moves between replicas mid-batch), so their locks are exercised too.
        await asyncio.gather(consumer(events[0::2]), consumer(events[1::2]))
        stop.set()
        brought = await asyncio.gather(*refreshers)
        assert sum(brought) > 0, "the refreshers folded changes while the consumers ran"
        await _refresh(engine)
        await _assert_a_recount(engine, when="after the load")
    finally:
        await engine.dispose()
