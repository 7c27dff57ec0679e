"""Reordered delivery to reporting alone: every event type, for new hazards, in any order (#14).

Only reporting runs, on its own topics and group, against the real PostgreSQL and broker. It is
fed complete histories of several kinds of hazards — what intake, dispatch and tracking publish,
every event type included — once in publish order (the reference) and many more times, each copy
a new hazard never applied before, with its events shuffled, some duplicated, and all hazards
interleaved. Each copy's fact rows (its hazard, its dispatches, its relapse) must equal the
in-order copy's: the projection's merge rules are meant to make order irrelevant, and every
figure is computed from these rows.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporting import domain, tables
from shared import events as ev
from shared.db import create_engine
from shared.events import dump_event
from shared.settings import DatabaseSettings
from tests.integration.reporting.reporting_helpers import running_app, settings_for
from tests.support.histories import WHOLE_SCENARIOS, Replay, Story, applied, labels, relabel
from tests.support.kafka_tools import produce, read_topic, wait_for

pytestmark = pytest.mark.integration

SHUFFLED_COPIES = 8


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


async def _facts(conn: AsyncConnection, story: Story) -> dict[str, Any]:
    """The story's fact rows, its ids and place named by role."""
    rows: dict[str, Any] = {}
    for name, table in (("hazard", tables.hazards), ("relapse", tables.relapses)):
        found = (
            (await conn.execute(sa.select(table).where(table.c.hazard_id == story.hazard_id)))
            .mappings()
            .all()
        )
        rows[name] = [{k: _plain(v) for k, v in row.items()} for row in found]
    found = (
        (
            await conn.execute(
                sa.select(tables.dispatches)
                .where(tables.dispatches.c.hazard_id == story.hazard_id)
                .order_by(tables.dispatches.c.dispatched_at, tables.dispatches.c.department_id)
            )
        )
        .mappings()
        .all()
    )
    rows["dispatches"] = [{k: _plain(v) for k, v in row.items()} for row in found]
    # A flag merged by "or" is stored NULL until a second write merges it in SQL, where it becomes
    # false; every figure reads NULL as false (COALESCE, CASE WHEN), so the two are the same fact.
    for row in rows["hazard"]:
        for column, rule in domain.HAZARD_RULES.items():
            if rule == "or" and row[column] is None:
                row[column] = False
    names = labels(story)
    names[f"liuyue-01/{story.building_id}"] = "place-key"  # reporting's hotspot place
    names[f"building:{story.building_id}"] = "relapse-place-key"  # tracking's, in hazard.relapsed
    relabelled: dict[str, Any] = relabel(rows, names)
    return relabelled


async def test_every_event_type_in_any_order_gives_the_same_facts_for_new_hazards(
    db_url: str, kafka: Any, topics: dict[str, str]
) -> None:
    replay = Replay(WHOLE_SCENARIOS, copies=SHUFFLED_COPIES, seed=1415)
    assert replay.types == set(ev.EVENT_TYPES), "every event type is in the histories"

    async with running_app(settings_for(db_url, kafka.bootstrap_servers, topics)):
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in replay.sent],
        )
        await wait_for(applied(db_url, "reporting", replay.event_ids), timeout_s=120, interval_s=0.3)

    engine = create_engine(DatabaseSettings(url=db_url))
    mismatches: list[str] = []
    try:
        async with engine.connect() as conn:
            for name, story in replay.reference.items():
                want = await _facts(conn, story)
                assert want["hazard"], f"{name}: the in-order copy has a fact row"
                for k, copy in enumerate(replay.shuffled[name]):
                    got = await _facts(conn, copy)
                    for part in ("hazard", "dispatches", "relapse"):
                        if want[part] != got[part]:
                            mismatches.append(
                                f"{name} copy {k} {part}: in order {want[part]}, shuffled {got[part]}"
                            )
    finally:
        await engine.dispose()
    assert not mismatches, "\n".join(mismatches)

    dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=3)
    assert dead == [], "no event of these histories is refused, whatever its order"
