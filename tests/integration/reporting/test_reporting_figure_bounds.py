"""No figure is ever negative or above its whole, whatever order a hazard's events arrive in.

Issue 14 item 10: while 2,000 hazards with late departments were loading, the summary showed
``receipt_overdue_open: -12`` and ``overdue_receipt_rate: -0.0106``. Here random histories of
hazards (dispatched, acknowledged on time or late, returned and rerouted, reassigned, closed,
relapsed) are applied as the live consumer applies them — folded by ``domain.project_events``,
merged by ``repository.merge_counted`` with their rollup changes recorded — in a random order of every event, in
random batches, with the rollup refreshed after some batches and not others (a summary reads a
rollup up to ``max_staleness_s`` old). After every batch each grouping's counts, from the rollup
and from the facts, filtered and not, must respect ``domain.bound_problems``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.reporting import domain, repository, tables
from services.reporting.repository import Filters, Period
from shared import events as ev
from shared.db import create_engine
from shared.settings import DatabaseSettings
from tests.integration.reporting.reporting_helpers import shuffled_batches
from tests.support.factories import make_event, reported_payload

pytestmark = pytest.mark.integration

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 4, 9, 16, 0, tzinfo=UTC)  # 00:00 on 10 April in the city
NOW = START + timedelta(hours=30)
PERIODS = (Period(date(2026, 4, 1), date(2026, 4, 30)), Period(date(2026, 4, 10), date(2026, 4, 11)))
DEPARTMENTS = ("fire", "gas", "police")
COMMUNITIES = ("liuyue", "songbai")
PROJECTION = tuple(t.name for t in tables.PROJECTION_TABLES)


@dataclass(frozen=True)
class Story:
    """What happens to one hazard: its dispatches' fates, closure, a relapse of it."""

    offset_min: int
    community: str
    departments: tuple[str, ...]
    fates: tuple[str, ...]  # per dispatch: open, ack_on_time, ack_late, returned, reassigned
    deadline_min: int
    closed: bool
    relapsed: bool


stories = st.builds(
    Story,
    offset_min=st.integers(0, 28 * 60),
    community=st.sampled_from(COMMUNITIES),
    departments=st.lists(st.sampled_from(DEPARTMENTS), min_size=1, max_size=3).map(tuple),
    fates=st.lists(
        st.sampled_from(("open", "ack_on_time", "ack_late", "returned", "reassigned")), min_size=3, max_size=3
    ).map(tuple),
    deadline_min=st.sampled_from((30, 120, 600, 2400)),
    closed=st.booleans(),
    relapsed=st.booleans(),
)


def _at(event: ev.AnyEvent, moment: datetime) -> ev.AnyEvent:
    return event.model_copy(update={"occurred_at": moment})


def history(story: Story, index: int) -> list[ev.AnyEvent]:
    """Every event of one hazard (and of the hazard that relapses into it), in the order they happened."""
    h = uuid.UUID(int=index + 1)
    reported_at = START + timedelta(minutes=story.offset_min)
    report = reported_payload(
        report_id=uuid.uuid4(),
        community_id=story.community,
        grid_id=f"{story.community}-01",
        accepted_at=reported_at,
        observed_at=reported_at - timedelta(minutes=5),
    )
    out: list[ev.AnyEvent] = [_at(make_event("hazard.reported", hazard_id=h), reported_at)]
    out[0] = out[0].model_copy(update={"payload": report})
    t = reported_at + timedelta(minutes=2)
    previous: uuid.UUID | None = None
    department = story.departments[0]
    for n, fate in enumerate(story.fates):
        department = story.departments[n % len(story.departments)]
        dispatch_id = uuid.UUID(int=(index + 1) * 100 + n)
        deadline = t + timedelta(minutes=story.deadline_min)
        reason = "routed" if previous is None else ("reassigned" if fate == "reassigned" else "rerouted")
        out.append(
            _at(
                make_event(
                    "hazard.dispatched",
                    hazard_id=h,
                    dispatch_id=dispatch_id,
                    department_id=department,
                    receipt_deadline=deadline,
                    reason=reason,
                    previous_dispatch_id=previous,
                ),
                t,
            )
        )
        if fate in {"ack_on_time", "ack_late"}:
            acked = t + timedelta(
                minutes=story.deadline_min // 2 if fate == "ack_on_time" else story.deadline_min + 7
            )
            out.append(
                _at(
                    make_event(
                        "hazard.acknowledged",
                        hazard_id=h,
                        dispatch_id=dispatch_id,
                        department_id=department,
                        acknowledged_at=acked,
                        receipt_deadline=deadline,
                        on_time=fate == "ack_on_time",
                    ),
                    acked,
                )
            )
            t = acked
            break
        if fate == "open":
            break
        t = t + timedelta(minutes=story.deadline_min // 3 + 11 * n)
        if fate == "returned":
            out.append(
                _at(
                    make_event(
                        "hazard.returned", hazard_id=h, dispatch_id=dispatch_id, department_id=department
                    ),
                    t,
                )
            )
        previous = dispatch_id
    if story.closed:
        closed_at = t + timedelta(hours=3)
        out.append(_at(make_event("hazard.closed", hazard_id=h, department_id=department), closed_at))
        if story.relapsed:
            again = uuid.UUID(int=10_000 + index)
            later = closed_at + timedelta(hours=2)
            report = report.model_copy(update={"report_id": uuid.uuid4(), "accepted_at": later})
            out.append(
                _at(make_event("hazard.reported", hazard_id=again), later).model_copy(
                    update={"payload": report}
                )
            )
            out.append(
                _at(
                    make_event(
                        "hazard.relapsed",
                        hazard_id=again,
                        original_hazard_id=h,
                        original_department_id=department,
                        original_closed_at=closed_at,
                        days_since_closure=2 / 24,
                    ),
                    later,
                )
            )
    return out


@st.composite
def deliveries(draw: Any) -> tuple[list[list[ev.AnyEvent]], list[bool]]:
    """Every event of some hazards in a random order, cut into random batches, each refreshed or not."""
    events = [e for i, s in enumerate(draw(st.lists(stories, min_size=1, max_size=8))) for e in history(s, i)]
    return shuffled_batches(draw, events, max_cuts=6)


async def _check_figures(conn: Any, *, when: str) -> None:
    problems: list[str] = []
    for use_rollup in (True, False):
        for by in ("department", "community", "grid", "category", "campaign", "all"):
            for filters in (Filters(), Filters(community_id="liuyue")):
                counts = await repository.period_counts(
                    conn, group_by=by, periods=PERIODS, filters=filters, now=NOW, use_rollup=use_rollup
                )
                for (key, period), c in counts.items():
                    problems += [
                        f"{'rollup' if use_rollup else 'facts'} {by} {key} p{period} {filters}: {p}"
                        for p in domain.bound_problems(c)
                    ]
    for by in ("department", "community", "category"):
        for filters in (Filters(), Filters(community_id="liuyue")):
            for bucket in ("day", "week"):
                series = await repository.daily_series(
                    conn, group_by=by, period=PERIODS[0], filters=filters, bucket=bucket, now=NOW
                )
                for (key, day), c in series.items():
                    problems += [
                        f"series {by} {bucket} {key} {day} {filters}: {p}" for p in domain.bound_problems(c)
                    ]
    assert problems == [], f"{when}: {problems[:8]}"


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(delivery=deliveries())
async def test_no_count_or_rate_leaves_its_bounds_in_any_event_order(
    db_url: str, delivery: tuple[list[list[ev.AnyEvent]], list[bool]]
) -> None:
    batches, refreshed = delivery
    engine = create_engine(DatabaseSettings(url=db_url))  # type: ignore[arg-type]
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {', '.join(f'reporting.{t}' for t in PROJECTION)}"))
        for n, (events, refresh) in enumerate(zip(batches, refreshed, strict=True)):
            async with engine.begin() as conn:  # as the live handler, one transaction per batch
                await repository.merge_counted(conn, domain.project_events(events, tz=TZ))
            if refresh:
                async with engine.begin() as conn:
                    await repository.refresh_rollup(conn)
            async with engine.connect() as conn:
                await _check_figures(conn, when=f"after batch {n + 1}/{len(batches)}")
        async with engine.begin() as conn:
            await repository.refresh_rollup(conn)
        async with engine.connect() as conn:
            await _check_figures(conn, when="after the last refresh")
    finally:
        await engine.dispose()
