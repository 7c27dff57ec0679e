"""Reordered delivery to dispatch alone: what it reads, for new hazards, in any order (#14).

Only dispatch runs, on its own topics and group, against the real PostgreSQL and broker. It is fed
complete histories of several kinds of hazards (all types; it reads ``hazard.reported``,
``hazard.duplicate_unlinked`` and ``hazard.relapsed``) once in publish order (the reference) and many
more times, each copy a new hazard, shuffled, some events duplicated, all hazards interleaved. Each
copy's routing must equal the in-order copy's: its hazard row (queue, referral, when reported), its
dispatches (department, rule, reason, status, deadline rule) and its relapse annotation. A duplicate
unlinked before or after its report is routed exactly once; a report fixed on site never.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dispatch import tables
from services.dispatch.handlers import INTERESTED
from shared.db import create_engine
from shared.events import dump_event
from shared.settings import DatabaseSettings
from tests.integration.dispatch.dispatch_helpers import AppFactory
from tests.support.histories import WHOLE_SCENARIOS, Replay, Story, applied, labels, relabel
from tests.support.kafka_tools import produce, read_topic, wait_for

pytestmark = pytest.mark.integration

SHUFFLED_COPIES = 8
# Stamped with the moment dispatch routed (its clock), not by the history.
OWN_TIME = {"updated_at", "created_at", "receipt_deadline", "dispatch_id", "recorded_at"}


async def _routing(conn: AsyncConnection, story: Story) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, table, order in (
        ("hazard", tables.hazards, tables.hazards.c.hazard_id),
        ("dispatches", tables.dispatches, tables.dispatches.c.department_id),
        ("relapse", tables.relapses, tables.relapses.c.hazard_id),
    ):
        found = await conn.execute(
            sa.select(table).where(table.c.hazard_id == story.hazard_id).order_by(order)
        )
        out[name] = [
            {k: str(v) if hasattr(v, "hex") else v for k, v in row.items() if k not in OWN_TIME}
            for row in found.mappings()
        ]
    relabelled: dict[str, Any] = relabel(out, labels(story))
    return relabelled


async def test_what_dispatch_reads_in_any_order_routes_new_hazards_as_in_order(
    dispatch_app: AppFactory, kafka: Any, topics: dict[str, str], db_url: str
) -> None:
    assert INTERESTED is not None
    replay = Replay(WHOLE_SCENARIOS, copies=SHUFFLED_COPIES, seed=1417)
    assert set(INTERESTED) <= replay.types, "every type dispatch reads is in the histories"

    async with dispatch_app():
        await produce(
            kafka.bootstrap_servers,
            topics["lifecycle"],
            [(str(e.hazard_id).encode(), dump_event(e)) for e in replay.sent],
        )
        read = {e.event_id for e in replay.sent if e.TYPE in INTERESTED}
        await wait_for(applied(db_url, "dispatch", read), timeout_s=120, interval_s=0.3)

    engine = create_engine(DatabaseSettings(url=db_url))
    mismatches: list[str] = []
    try:
        async with engine.connect() as conn:
            for name, story in replay.reference.items():
                want = await _routing(conn, story)
                # An imported record (#18) is history: dispatch never routes it (nor keeps it).
                routed = name not in {"duplicate", "on_site", "relapse_closed_on_site", "imported"}
                assert len(want["dispatches"]) == (1 if routed else 0), (name, want)
                assert bool(want["relapse"]) == (name == "relapse_closed_on_site"), (name, want)
                for k, copy in enumerate(replay.shuffled[name]):
                    got = await _routing(conn, copy)
                    if got != want:
                        mismatches.append(f"{name} copy {k}: in order {want}, shuffled {got}")
    finally:
        await engine.dispose()
    assert not mismatches, "\n".join(mismatches)

    dead = await read_topic(kafka.bootstrap_servers, topics["dead_letter"], timeout_s=3)
    assert dead == [], "no event of these histories is refused, whatever its order"
